"""NumPy reference kernels: float64 finite-difference gradient checks, and forward + backward
agreement with torch.nn.functional in float32."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optional_torch import TF, torch  # a stand-in that skips when torch is absent

from cnnc.backends.numpy import kernels as K
from cnnc.backends.numpy.losses import mean_squared_error, sigmoid_binary_cross_entropy, softmax_cross_entropy

# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _rng(seed=0):
    return np.random.default_rng(seed)


FD_STEP = 1e-6


def numeric_grad(f, x, eps=FD_STEP):
    """Central differences of the scalar f() with respect to every element of x (in place)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g


def gradcheck(forward, backward, arrays: dict, *, seed=1, rtol=1e-6, atol=1e-8):
    """Check backward against finite differences of L = sum(forward(**arrays) * R).

    ``forward(**arrays) -> (y, cache)``; ``backward(R, cache) -> dict name -> gradient`` for
    the names to check (every entry of ``arrays`` the dict mentions).
    """
    y, cache = forward(**arrays)
    R = _rng(seed).standard_normal(y.shape)  # a random "upstream gradient"
    analytic = backward(R, cache)
    assert set(analytic) <= set(arrays)
    # The difference quotient divides the rounding of two evaluations of L by 2h: about
    # eps * sum|y R| / h of noise, which grows with the loss. Measured: at most 0.35 of that
    # over the kernel tests' gradient checks (the max-pool cases' large inputs made it 3.7e-8,
    # 64% of the fixed atol 1e-8 that was here); 4x it leaves a margin of 11 and stays orders
    # of magnitude below a wrong gradient.
    atol = max(atol, 4 * np.finfo(np.float64).eps * float(np.sum(np.abs(y * R))) / FD_STEP)
    for name, ga in analytic.items():
        x = arrays[name]
        assert ga.shape == x.shape, name
        assert ga.dtype == np.float64, name

        def loss():
            return float(np.sum(forward(**arrays)[0] * R))

        gn = numeric_grad(loss, x)
        np.testing.assert_allclose(ga, gn, rtol=rtol, atol=atol, err_msg=f"gradient of {name}")


def away_from(x, points, margin=1e-3):
    """Nudge values of x that lie within margin of a kink so finite differences are valid."""
    x = x.copy()
    for p in points:
        close = np.abs(x - p) < margin
        x[close] = p + 10 * margin * np.sign(x[close] - p + 1e-12)
    return x


def t(a, grad=False):
    return torch.tensor(a, requires_grad=grad)


def assert_close32(a, b, rtol=1e-4, atol=1e-5, msg=""):
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else b
    assert a.dtype == np.float32, msg
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=msg)


def maxpool_out(size, k, s, p_total, ceil):
    """Output size as the shape checker would compute it (torch's rule for ceil mode)."""
    eff = size + p_total - k
    o = (eff + (s - 1 if ceil else 0)) // s + 1
    if ceil and (o - 1) * s >= size + p_total // 2:  # last window must start inside input/left pad
        o -= 1
    return o


# ----------------------------------------------------------------------------------------------
# convolution
# ----------------------------------------------------------------------------------------------

CONV_CASES = {
    # name: (N, C, H, W, F, KH, KW, stride, pads, dilation, groups, bias)
    "plain": (2, 3, 5, 6, 4, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1), 1, True),
    "same_pad": (2, 2, 5, 5, 3, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, True),
    "asym_pad": (1, 2, 5, 4, 3, 2, 3, (1, 1), (0, 1, 2, 0), (1, 1), 1, True),
    "stride": (2, 2, 7, 6, 3, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1, False),
    "stride_h_only": (1, 2, 7, 5, 2, 3, 2, (2, 1), (1, 0, 0, 1), (1, 1), 1, True),
    "stride_w_only": (1, 2, 5, 7, 2, 2, 3, (1, 3), (0, 0, 1, 1), (1, 1), 1, True),
    "dilation": (1, 2, 7, 7, 3, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), 1, True),
    "dilation_stride": (1, 2, 8, 9, 2, 2, 3, (2, 2), (1, 0, 1, 2), (3, 2), 1, True),
    "groups": (2, 4, 5, 5, 6, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 2, True),
    "depthwise": (2, 3, 5, 5, 3, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 3, True),
    "depthwise_mult2": (1, 2, 6, 5, 4, 3, 3, (2, 1), (1, 1, 0, 1), (1, 1), 2, False),
    "one_by_one": (2, 3, 4, 4, 2, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1, True),
    "depthwise_stride_dilation": (2, 4, 7, 8, 4, 3, 3, (2, 2), (1, 1, 2, 2), (1, 2), 4, True),
    "depthwise_mult8": (1, 2, 5, 5, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 2, True),  # im2col path
    "grey_input": (2, 1, 6, 6, 6, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, True),  # C = 1, many filters
}


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d_gradcheck(case):
    N, C, H, W, F, KH, KW, stride, pads, dil, groups, bias = CONV_CASES[case]
    r = _rng(2)
    arrays = {"x": r.standard_normal((N, C, H, W)), "w": r.standard_normal((F, C // groups, KH, KW))}
    if bias:
        arrays["b"] = r.standard_normal(F)

    def fwd(x, w, b=None):
        return K.conv2d_forward(x, w, b, stride=stride, pads=pads, dilation=dil, groups=groups)

    def bwd(dy, cache):
        dx, dw, db = K.conv2d_backward(dy, cache)
        assert (db is None) == (not bias)
        return {"x": dx, "w": dw, **({"b": db} if bias else {})}

    gradcheck(fwd, bwd, arrays)


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d_matches_torch(case):
    N, C, H, W, F, KH, KW, stride, pads, dil, groups, bias = CONV_CASES[case]
    r = _rng(3)
    x = r.standard_normal((N, C, H, W), dtype=np.float32)
    w = r.standard_normal((F, C // groups, KH, KW), dtype=np.float32)
    b = r.standard_normal(F, dtype=np.float32) if bias else None
    y, cache = K.conv2d_forward(x, w, b, stride=stride, pads=pads, dilation=dil, groups=groups)
    dy = r.standard_normal(y.shape, dtype=np.float32)
    dx, dw, db = K.conv2d_backward(dy, cache)

    xt, wt = t(x, True), t(w, True)
    bt = t(b, True) if bias else None
    pt, pb, pl, pr = pads
    yt = TF.conv2d(TF.pad(xt, (pl, pr, pt, pb)), wt, bt, stride=stride, dilation=dil, groups=groups)
    yt.backward(t(dy))
    assert y.shape == tuple(yt.shape)
    assert_close32(y, yt, msg="y")
    assert_close32(dx, xt.grad, msg="dx")
    assert_close32(dw, wt.grad, msg="dw")
    if bias:
        assert_close32(db, bt.grad, msg="db")


def test_conv2d_need_dx_false_and_no_aliasing():
    r = _rng(4)
    x = r.standard_normal((2, 3, 6, 6), dtype=np.float32)
    w = r.standard_normal((4, 3, 3, 3), dtype=np.float32)
    y1, c1 = K.conv2d_forward(x, w, None, pads=(1, 1, 1, 1))
    dy = r.standard_normal(y1.shape, dtype=np.float32)
    dx_full, dw_full, _ = K.conv2d_backward(dy, c1)
    dx, dw, db = K.conv2d_backward(dy, c1, need_dx=False)
    assert dx is None and db is None
    np.testing.assert_array_equal(dw, dw_full)
    # Results must not share the kernels' internal scratch memory: another layer's call must
    # leave earlier outputs untouched.
    y1_copy, dx_copy = y1.copy(), dx_full.copy()
    y2, c2 = K.conv2d_forward(r.standard_normal((2, 3, 6, 6), dtype=np.float32), w, None, pads=(1, 1, 1, 1))
    K.conv2d_backward(dy, c2)
    np.testing.assert_array_equal(y1, y1_copy)
    np.testing.assert_array_equal(dx_full, dx_copy)
    # batch of one: transposes are trivially contiguous there, results must still be fresh arrays
    y3, c3 = K.conv2d_forward(x[:1], w[:, :, :1, :1], None)
    d3, _, _ = K.conv2d_backward(np.ones_like(y3), c3)
    assert not np.shares_memory(y3, d3)


def test_conv2d_float32_stays_float32():
    x = np.ones((1, 2, 4, 4), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    y, c = K.conv2d_forward(x, w, np.zeros(3, np.float32), pads=(1, 1, 1, 1))
    assert y.dtype == np.float32
    assert all(g.dtype == np.float32 for g in K.conv2d_backward(y, c))


# ----------------------------------------------------------------------------------------------
# pooling
# ----------------------------------------------------------------------------------------------

POOL_CASES = {
    # name: (H, W, kernel, stride, pads, extra) -- extra=1 gives the ceil-mode output size
    "2x2": (6, 6, (2, 2), (2, 2), (0, 0, 0, 0), 0),
    "ceil_overhang": (7, 7, (2, 2), (2, 2), (0, 0, 0, 0), 1),
    "pad_3x3_s2": (7, 6, (3, 3), (2, 2), (1, 1, 1, 1), 0),
    "pad_ceil": (8, 8, (3, 3), (2, 2), (1, 1, 1, 1), 1),
    "overlap_s1": (5, 5, (3, 3), (1, 1), (1, 1, 1, 1), 0),
    "asym": (5, 6, (2, 3), (1, 2), (0, 1, 1, 0), 0),
}


def _pool_out(H, W, kernel, stride, pads, extra):
    (KH, KW), (sh, sw), (pt, pb, pl, pr) = kernel, stride, pads
    return ((H + pt + pb - KH) // sh + 1 + extra, (W + pl + pr - KW) // sw + 1 + extra)


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_maxpool_gradcheck(case):
    H, W, kernel, stride, pads, extra = POOL_CASES[case]
    out_hw = _pool_out(H, W, kernel, stride, pads, extra)
    # distinct values, so the max is unique and finite differences are valid
    x = _rng(5).permutation(2 * 2 * H * W).reshape(2, 2, H, W) / 7.0

    def fwd(x):
        return K.maxpool2d_forward(x, kernel=kernel, stride=stride, pads=pads, out_hw=out_hw)

    gradcheck(fwd, lambda dy, c: {"x": K.maxpool2d_backward(dy, c)}, {"x": x})


@pytest.mark.parametrize("count_pad", [False, True])
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_avgpool_gradcheck(case, count_pad):
    H, W, kernel, stride, pads, extra = POOL_CASES[case]
    out_hw = _pool_out(H, W, kernel, stride, pads, extra)
    x = _rng(6).standard_normal((2, 2, H, W))

    def fwd(x):
        return K.avgpool2d_forward(x, kernel=kernel, stride=stride, pads=pads, out_hw=out_hw, count_pad=count_pad)

    gradcheck(fwd, lambda dy, c: {"x": K.avgpool2d_backward(dy, c)}, {"x": x})


TORCH_POOL_CASES = [
    # (H, W, k, s, p, ceil) -- torch only takes symmetric padding
    (8, 8, 2, 2, 0, False),
    (7, 7, 2, 2, 0, True),
    (9, 8, 3, 2, 1, True),
    (6, 7, 3, 1, 1, False),
    (7, 5, 3, 3, 1, True),
    (10, 10, 3, 2, 0, True),
]


@pytest.mark.parametrize("H,W,k,s,p,ceil", TORCH_POOL_CASES)
def test_maxpool_matches_torch_with_ties(H, W, k, s, p, ceil):
    r = _rng(7)
    x = np.maximum(r.standard_normal((2, 3, H, W), dtype=np.float32), 0)  # many zeros: ties
    x[:, :, : H // 2, : W // 2] = 0  # a whole region of equal values
    x[0, 0, -2:, -2:] = 1.5  # a tie at a non-zero value
    out_hw = (maxpool_out(H, k, s, 2 * p, ceil), maxpool_out(W, k, s, 2 * p, ceil))
    y, cache = K.maxpool2d_forward(x, kernel=(k, k), stride=(s, s), pads=(p,) * 4, out_hw=out_hw)
    dy = r.standard_normal(y.shape, dtype=np.float32)
    dx = K.maxpool2d_backward(dy, cache)

    xt = t(x, True)
    yt = TF.max_pool2d(xt, k, s, p, ceil_mode=ceil)
    yt.backward(t(dy))
    assert y.shape == tuple(yt.shape)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    # the gradient goes to the FIRST maximum of each window, as in torch
    assert_close32(dx, xt.grad, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("count_pad", [False, True])
@pytest.mark.parametrize("H,W,k,s,p,ceil", TORCH_POOL_CASES)
def test_avgpool_matches_torch(H, W, k, s, p, ceil, count_pad):
    r = _rng(8)
    x = r.standard_normal((2, 3, H, W), dtype=np.float32)
    out_hw = (maxpool_out(H, k, s, 2 * p, ceil), maxpool_out(W, k, s, 2 * p, ceil))
    y, cache = K.avgpool2d_forward(x, kernel=(k, k), stride=(s, s), pads=(p,) * 4, out_hw=out_hw, count_pad=count_pad)
    dy = r.standard_normal(y.shape, dtype=np.float32)
    dx = K.avgpool2d_backward(dy, cache)

    xt = t(x, True)
    yt = TF.avg_pool2d(xt, k, s, p, ceil_mode=ceil, count_include_pad=count_pad)
    yt.backward(t(dy))
    assert y.shape == tuple(yt.shape)
    assert_close32(y, yt)
    assert_close32(dx, xt.grad)


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_global_pool(mode):
    x = _rng(9).permutation(2 * 3 * 4 * 5).reshape(2, 3, 4, 5) / 3.0
    fwd = lambda x: K.global_pool_forward(x, mode=mode)  # noqa: E731
    gradcheck(fwd, lambda dy, c: {"x": K.global_pool_backward(dy, c)}, {"x": x})

    x32 = np.maximum(_rng(10).standard_normal((2, 3, 4, 5), dtype=np.float32), 0)
    x32[0, 0] = 0  # an all-tie channel
    y, cache = K.global_pool_forward(x32, mode=mode)
    dy = _rng(11).standard_normal(y.shape, dtype=np.float32)
    dx = K.global_pool_backward(dy, cache)
    xt = t(x32, True)
    yt = TF.adaptive_avg_pool2d(xt, 1) if mode == "avg" else TF.adaptive_max_pool2d(xt, 1)
    yt.flatten(1).backward(t(dy))
    assert y.shape == (2, 3)
    assert_close32(y, yt.flatten(1))
    assert_close32(dx, xt.grad)


# ----------------------------------------------------------------------------------------------
# dense, activations
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_dense(bias):
    r = _rng(12)
    arrays = {"x": r.standard_normal((3, 5)), "w": r.standard_normal((4, 5))}
    if bias:
        arrays["b"] = r.standard_normal(4)

    def bwd(dy, cache):
        dx, dw, db = K.dense_backward(dy, cache)
        return {"x": dx, "w": dw, **({"b": db} if bias else {})}

    gradcheck(lambda x, w, b=None: K.dense_forward(x, w, b), bwd, arrays)

    x, w = arrays["x"].astype(np.float32), arrays["w"].astype(np.float32)
    b = arrays["b"].astype(np.float32) if bias else None
    y, c = K.dense_forward(x, w, b)
    dy = r.standard_normal(y.shape, dtype=np.float32)
    dx, dw, db = K.dense_backward(dy, c)
    xt, wt = t(x, True), t(w, True)
    bt = t(b, True) if bias else None
    yt = TF.linear(xt, wt, bt)
    yt.backward(t(dy))
    assert_close32(y, yt)
    assert_close32(dx, xt.grad)
    assert_close32(dw, wt.grad)
    if bias:
        assert_close32(db, bt.grad)


ACTS = {
    # kind: (params, kinks to stay away from in finite differences, torch function)
    "relu": ({}, [0.0], TF.relu),
    "relu6": ({}, [0.0, 6.0], TF.relu6),
    "tanh": ({}, [], torch.tanh),
    "sigmoid": ({}, [], torch.sigmoid),
    "softmax": ({}, [], lambda x: TF.softmax(x, dim=1)),
    "leaky_relu": ({"slope": 0.2}, [0.0], lambda x: TF.leaky_relu(x, 0.2)),
    "leaky_relu_default": ({}, [0.0], TF.leaky_relu),
    "elu": ({"alpha": 1.3}, [0.0], lambda x: TF.elu(x, 1.3)),
    "elu_default": ({}, [0.0], TF.elu),
    "gelu": ({}, [], TF.gelu),
    "silu": ({}, [], TF.silu),
    "hardsigmoid": ({}, [-3.0, 3.0], TF.hardsigmoid),
    "hardswish": ({}, [-3.0, 3.0], TF.hardswish),
}


@pytest.mark.parametrize("name", list(ACTS))
@pytest.mark.parametrize("ndim", [2, 4])
def test_activation_gradcheck(name, ndim):
    params, kinks, _ = ACTS[name]
    kind = name.replace("_default", "")
    shape = (3, 4) if ndim == 2 else (2, 3, 2, 2)
    x = away_from(4 * _rng(13).standard_normal(shape), kinks)  # spans relu6's 6 and gelu's tails

    def fwd(x):
        return K.activation_forward(x, kind, **params)

    gradcheck(fwd, lambda dy, c: {"x": K.activation_backward(dy, c)}, {"x": x})


@pytest.mark.parametrize("name", list(ACTS))
def test_activation_matches_torch(name):
    params, _, torch_fn = ACTS[name]
    kind = name.replace("_default", "")
    r = _rng(14)
    x = (4 * r.standard_normal((4, 5, 3, 3))).astype(np.float32)
    x[0, 0, 0, :] = [0.0, 6.0, -30.0]  # kinks and a far tail: gradients must match there too
    y, cache = K.activation_forward(x, kind, **params)
    dy = r.standard_normal(y.shape, dtype=np.float32)
    dx = K.activation_backward(dy, cache)
    xt = t(x, True)
    yt = torch_fn(xt)
    yt.backward(t(dy))
    # Both in float32. Where an activation takes nearly equal numbers apart (gelu's left tail,
    # 1 - tanh^2) the rounding is on the scale of max(1, |x|), not of the result, and backward
    # multiplies it by dy. Measured over 50 inputs drawn like this one: every activation within
    # 2.4 eps x max(1, |x|) of PyTorch forward and 2.1 eps x max(1, |x|) x max(1, |dy|) backward
    # (softmax: the largest of the position's channels); 16 eps is 7x that.
    sx, sdy = (np.maximum(1, np.abs(v).astype(np.float64)) for v in (x, dy))
    if kind == "softmax":  # over the channels
        sx, sdy = sx.max(axis=1, keepdims=True), sdy.max(axis=1, keepdims=True)
    eps = float(np.finfo(np.float32).eps)
    for what, got, want, scale in (("y", y, yt, sx), ("dx", dx, xt.grad, sx * sdy)):
        assert got.dtype == np.float32, what
        err = np.abs(got.astype(np.float64) - want.detach().numpy()) / (eps * scale)
        assert err.max() <= 16, f"{what} differs by {err.max():.3g} eps at {np.argmax(err)}"


def test_sigmoid_keeps_relative_precision_in_the_tails():
    x = np.array([-80.0, -30.0, -10.0, 10.0, 30.0, 80.0], dtype=np.float32)
    y, _ = K.activation_forward(x, "sigmoid")
    np.testing.assert_allclose(y, torch.sigmoid(torch.tensor(x)).numpy(), rtol=1e-5, atol=0)
    z = np.array([-80.0, -30.0], dtype=np.float32)
    _, g = sigmoid_binary_cross_entropy(z, np.array([0, 0]))  # tiny gradients, but not zero
    zt = t(z, True)
    TF.binary_cross_entropy_with_logits(zt, torch.zeros(2)).backward()
    np.testing.assert_allclose(g, zt.grad.numpy(), rtol=1e-5, atol=0)


def test_erf_accuracy():
    import math

    z = np.concatenate([np.linspace(-7, 7, 2001), [0.0, 1e-9, -1e-9, 30.0, -30.0]])
    ref = np.array([math.erf(v) for v in z])
    np.testing.assert_allclose(K.erf(z), ref, rtol=0, atol=5e-14)
    np.testing.assert_allclose(K.erf(z.astype(np.float32)), ref, rtol=0, atol=1e-6)
    refc = np.array([math.erfc(v) for v in z])
    np.testing.assert_allclose(K.erfc(z), refc, rtol=1e-12, atol=0)  # relative, also in the tail
    small = np.array([1e-12, -3e-7, 0.01, 0.3, -0.49, 0.5, 0.7])
    np.testing.assert_allclose(K.erf(small), [math.erf(v) for v in small], rtol=1e-13, atol=0)
    assert K.erf(np.array([0, 1])).dtype == np.float64  # integers are computed in float64


def test_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation"):
        K.activation_forward(np.zeros(3), "swish2")


# ----------------------------------------------------------------------------------------------
# dropout, batchnorm
# ----------------------------------------------------------------------------------------------


def test_dropout():
    x = _rng(15).standard_normal((4, 3, 2, 2))

    def fwd(x):  # a fresh generator with the same seed: the same mask every evaluation
        return K.dropout_forward(x, 0.4, np.random.default_rng(123), True)

    gradcheck(fwd, lambda dy, c: {"x": K.dropout_backward(dy, c)}, {"x": x})

    y, _ = fwd(x)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.6)  # inverted dropout: survivors scaled
    big = np.ones((200, 500), np.float32)
    yb, cb = K.dropout_forward(big, 0.3, np.random.default_rng(0), True)
    assert yb.dtype == np.float32
    assert abs((yb == 0).mean() - 0.3) < 0.01
    assert abs(yb.mean() - 1.0) < 0.01  # expectation preserved
    ye, ce = K.dropout_forward(big, 0.3, np.random.default_rng(0), False)  # eval: identity
    np.testing.assert_array_equal(ye, big)
    np.testing.assert_array_equal(K.dropout_backward(big, ce), big)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("ndim", [2, 4])
def test_batchnorm_gradcheck(ndim, training):
    r = _rng(16)
    shape = (5, 3) if ndim == 2 else (3, 3, 2, 2)
    arrays = {"x": r.standard_normal(shape) * 2 + 1, "gamma": r.standard_normal(3), "beta": r.standard_normal(3)}
    rm, rv = r.standard_normal(3), r.random(3) + 0.5

    def fwd(x, gamma, beta):  # fresh copies of the running stats: they are updated in place
        return K.batchnorm_forward(x, gamma, beta, rm.copy(), rv.copy(), training=training)

    def bwd(dy, cache):
        dx, dg, db = K.batchnorm_backward(dy, cache)
        return {"x": dx, "gamma": dg, "beta": db}

    gradcheck(fwd, bwd, arrays, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("ndim", [2, 4])
def test_batchnorm_matches_torch(ndim):
    r = _rng(17)
    shape = (8, 4) if ndim == 2 else (4, 4, 3, 3)
    x = (r.standard_normal(shape) * 3 + 2).astype(np.float32)
    gamma, beta = r.standard_normal(4).astype(np.float32), r.standard_normal(4).astype(np.float32)
    rm, rv = r.standard_normal(4).astype(np.float32), (r.random(4) + 0.5).astype(np.float32)
    rm_t, rv_t = torch.tensor(rm), torch.tensor(rv)
    for training in (True, True, False):  # two training steps (running stats compound), then eval
        y, cache = K.batchnorm_forward(x, gamma, beta, rm, rv, training=training, momentum=0.2)
        dy = r.standard_normal(y.shape).astype(np.float32)
        dx, dg, db = K.batchnorm_backward(dy, cache)
        xt, gt, bt = t(x, True), t(gamma, True), t(beta, True)
        yt = TF.batch_norm(xt, rm_t, rv_t, gt, bt, training=training, momentum=0.2, eps=1e-5)
        yt.backward(t(dy))
        assert_close32(y, yt, msg=f"y training={training}")
        assert_close32(dx, xt.grad, rtol=2e-4, atol=2e-5, msg="dx")
        assert_close32(dg, gt.grad, msg="dgamma")
        assert_close32(db, bt.grad, msg="dbeta")
        assert_close32(rm, rm_t, msg="running_mean")  # updated in place, as torch does
        assert_close32(rv, rv_t, msg="running_var (unbiased)")
        x = x * 0.5 + 1


# ----------------------------------------------------------------------------------------------
# flatten, add, concat
# ----------------------------------------------------------------------------------------------


def test_flatten_matches_torch_order():
    x = _rng(18).standard_normal((2, 3, 4, 5))
    gradcheck(K.flatten_forward, lambda dy, c: {"x": K.flatten_backward(dy, c)}, {"x": x})
    y, _ = K.flatten_forward(x)
    np.testing.assert_array_equal(y, torch.flatten(torch.tensor(x), 1).numpy())


def test_add():
    r = _rng(19)
    arrays = {name: r.standard_normal((2, 3, 2, 2)) for name in ("a", "b", "c")}

    def bwd(dy, cache):
        return dict(zip("abc", K.add_backward(dy, cache)))

    gradcheck(lambda a, b, c: K.add_forward(a, b, c), bwd, arrays)
    y, _ = K.add_forward(arrays["a"], arrays["b"])
    np.testing.assert_array_equal(y, arrays["a"] + arrays["b"])


@pytest.mark.parametrize("ndim", [2, 4])
def test_concat(ndim):
    r = _rng(20)
    shapes = [(2, 1), (2, 3), (2, 2)] if ndim == 2 else [(2, 1, 3, 2), (2, 3, 3, 2), (2, 2, 3, 2)]
    arrays = {name: r.standard_normal(s) for name, s in zip("abc", shapes)}

    def bwd(dy, cache):
        return dict(zip("abc", K.concat_backward(dy, cache)))

    gradcheck(lambda a, b, c: K.concat_forward(a, b, c), bwd, arrays)
    y, _ = K.concat_forward(*arrays.values())
    np.testing.assert_array_equal(y, torch.cat([torch.tensor(a) for a in arrays.values()], 1).numpy())


# ----------------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------------


def _loss_gradcheck(loss_fn, pred, target):
    _, g = loss_fn(pred, target)
    gn = numeric_grad(lambda: loss_fn(pred, target)[0], pred)
    np.testing.assert_allclose(g, gn, rtol=1e-6, atol=1e-9)


def test_softmax_cross_entropy():
    r = _rng(21)
    logits, labels = r.standard_normal((5, 4)) * 3, r.integers(0, 4, 5)
    _loss_gradcheck(softmax_cross_entropy, logits, labels)

    l32 = (r.standard_normal((16, 10)) * 5).astype(np.float32)
    l32[0, 3] = 1000.0  # would overflow a naive exp
    y = r.integers(0, 10, 16)
    loss, g = softmax_cross_entropy(l32, y)
    lt = t(l32, True)
    ref = TF.cross_entropy(lt, torch.tensor(y))
    ref.backward()
    assert isinstance(loss, float) and np.isfinite(loss)
    assert abs(loss - ref.item()) < 1e-4 * max(1, abs(ref.item()))
    assert_close32(g, lt.grad, atol=1e-7)


@pytest.mark.parametrize("shape", [(6, 1), (6,)])
def test_sigmoid_binary_cross_entropy(shape):
    r = _rng(22)
    logits, targets = r.standard_normal(shape) * 3, r.integers(0, 2, 6)
    _loss_gradcheck(sigmoid_binary_cross_entropy, logits, targets)

    z = (r.standard_normal(shape) * 4).astype(np.float32)
    z.reshape(-1)[:2] = [80.0, -80.0]  # extremes: stable formulation needed
    tg = r.integers(0, 2, 6)
    loss, g = sigmoid_binary_cross_entropy(z, tg)
    zt = t(z, True)
    ref = TF.binary_cross_entropy_with_logits(zt, torch.tensor(tg, dtype=torch.float32).reshape(shape))
    ref.backward()
    assert abs(loss - ref.item()) < 1e-4 * max(1, abs(ref.item()))
    assert g.shape == z.shape
    assert_close32(g, zt.grad, atol=1e-7)


def test_mean_squared_error():
    r = _rng(23)
    pred, target = r.standard_normal((4, 3)), r.standard_normal((4, 3))
    _loss_gradcheck(mean_squared_error, pred, target)

    p32, t32 = pred.astype(np.float32), target.astype(np.float32)
    loss, g = mean_squared_error(p32, t32)
    pt_ = t(p32, True)
    ref = TF.mse_loss(pt_, torch.tensor(t32))
    ref.backward()
    assert abs(loss - ref.item()) < 1e-5
    assert_close32(g, pt_.grad, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# a composed step: the pieces fit together like a tiny CNN
# ----------------------------------------------------------------------------------------------


def test_tiny_cnn_matches_torch():
    r = _rng(24)
    x = r.standard_normal((3, 2, 8, 8), dtype=np.float32)
    labels = r.integers(0, 5, 3)
    w1, b1 = (r.standard_normal((4, 2, 3, 3)) * 0.3).astype(np.float32), np.zeros(4, np.float32)
    w2, b2 = (r.standard_normal((5, 4 * 4 * 4)) * 0.1).astype(np.float32), np.zeros(5, np.float32)

    h, c1 = K.conv2d_forward(x, w1, b1, pads=(1, 1, 1, 1))
    h, c2 = K.activation_forward(h, "relu")
    h, c3 = K.maxpool2d_forward(h, kernel=(2, 2), stride=(2, 2), pads=(0, 0, 0, 0), out_hw=(4, 4))
    h, c4 = K.flatten_forward(h)
    logits, c5 = K.dense_forward(h, w2, b2)
    loss, d = softmax_cross_entropy(logits, labels)
    d, dw2, db2 = K.dense_backward(d, c5)
    d = K.maxpool2d_backward(K.flatten_backward(d, c4), c3)
    _, dw1, db1 = K.conv2d_backward(K.activation_backward(d, c2), c1, need_dx=False)

    tw1, tb1, tw2, tb2 = (t(a, True) for a in (w1, b1, w2, b2))
    ht = TF.max_pool2d(TF.relu(TF.conv2d(t(x), tw1, tb1, padding=1)), 2)
    lt = TF.cross_entropy(TF.linear(ht.flatten(1), tw2, tb2), torch.tensor(labels))
    lt.backward()
    assert abs(loss - lt.item()) < 1e-5
    for a, b in ((dw1, tw1), (db1, tb1), (dw2, tw2), (db2, tb2)):
        assert_close32(a, b.grad, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# property-based: random configurations against torch (float64, so any mismatch is a bug)
# ----------------------------------------------------------------------------------------------


@st.composite
def conv_configs(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    C = groups * draw(st.integers(1, 2))
    F = groups * draw(st.integers(1, 2))
    KH, KW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    H = draw(st.integers(max(1, dil[0] * (KH - 1) + 1 - pads[0] - pads[1]), 7))
    W = draw(st.integers(max(1, dil[1] * (KW - 1) + 1 - pads[2] - pads[3]), 7))
    return dict(N=draw(st.integers(1, 2)), C=C, H=H, W=W, F=F, KH=KH, KW=KW, stride=stride, pads=pads,
                dil=dil, groups=groups, bias=draw(st.booleans()), seed=draw(st.integers(0, 1000)))


@settings(max_examples=60, deadline=None)
@given(conv_configs())
def test_conv2d_random_configs_match_torch(cfg):
    r = _rng(cfg["seed"])
    x = r.standard_normal((cfg["N"], cfg["C"], cfg["H"], cfg["W"]))
    w = r.standard_normal((cfg["F"], cfg["C"] // cfg["groups"], cfg["KH"], cfg["KW"]))
    b = r.standard_normal(cfg["F"]) if cfg["bias"] else None
    kw = dict(stride=cfg["stride"], dilation=cfg["dil"], groups=cfg["groups"])
    y, cache = K.conv2d_forward(x, w, b, pads=cfg["pads"], **kw)
    dy = r.standard_normal(y.shape)
    dx, dw, db = K.conv2d_backward(dy, cache)

    xt, wt = t(x, True), t(w, True)
    bt = t(b, True) if cfg["bias"] else None
    pt, pb, pl, pr = cfg["pads"]
    yt = TF.conv2d(TF.pad(xt, (pl, pr, pt, pb)), wt, bt, **kw)
    yt.backward(t(dy))
    # float64 on both sides, the same sums in other orders: measured at most 1.8e-15 apart over
    # 60 configurations (values up to 10); 1e-12 is 500x that, and a wrong tap is off by ~1
    tol = dict(rtol=0, atol=1e-12)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol)
    np.testing.assert_allclose(dw, wt.grad.numpy(), **tol)
    if cfg["bias"]:
        np.testing.assert_allclose(db, bt.grad.numpy(), **tol)


@st.composite
def pool_configs(draw):
    k = draw(st.integers(1, 4))
    s = draw(st.integers(1, 3))
    p = draw(st.integers(0, k // 2))  # torch requires pad <= kernel / 2
    H, W = draw(st.integers(k, 9)), draw(st.integers(k, 9))
    return dict(k=k, s=s, p=p, H=H, W=W, ceil=draw(st.booleans()), count_pad=draw(st.booleans()),
                ties=draw(st.booleans()), seed=draw(st.integers(0, 1000)))


@settings(max_examples=80, deadline=None)
@given(pool_configs())
def test_pools_random_configs_match_torch(cfg):
    r = _rng(cfg["seed"])
    k, s, p, ceil = cfg["k"], cfg["s"], cfg["p"], cfg["ceil"]
    x = r.standard_normal((2, 2, cfg["H"], cfg["W"]))
    if cfg["ties"]:
        x = np.round(np.maximum(x, 0))  # lots of exactly equal values
    out_hw = (maxpool_out(cfg["H"], k, s, 2 * p, ceil), maxpool_out(cfg["W"], k, s, 2 * p, ceil))
    opts = dict(kernel=(k, k), stride=(s, s), pads=(p,) * 4, out_hw=out_hw)

    y, cache = K.maxpool2d_forward(x, **opts)
    dy = r.standard_normal(y.shape)
    xt = t(x, True)
    yt = TF.max_pool2d(xt, k, s, p, ceil_mode=ceil)
    yt.backward(t(dy))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    # float64: overlapping windows add their gradients in other orders, and average pooling
    # sums; measured at most 8.9e-16 apart over 80 configurations (values up to 6), 1e-12 is
    # 1000x that
    np.testing.assert_allclose(K.maxpool2d_backward(dy, cache), xt.grad.numpy(), rtol=1e-12, atol=1e-12)

    y, cache = K.avgpool2d_forward(x, count_pad=cfg["count_pad"], **opts)
    xt = t(x, True)
    yt = TF.avg_pool2d(xt, k, s, p, ceil_mode=ceil, count_include_pad=cfg["count_pad"])
    yt.backward(t(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(K.avgpool2d_backward(dy, cache), xt.grad.numpy(), rtol=1e-12, atol=1e-12)
