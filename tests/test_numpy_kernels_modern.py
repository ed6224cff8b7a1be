"""NumPy kernels of the ops modern ImageNet models need (squeeze-and-excitation's `mul`,
hardswish/hardsigmoid at their kinks, layer norm, layer scale, stochastic depth): float64
finite-difference gradient checks, and forward + backward against torch in float32."""

from __future__ import annotations

import numpy as np
import pytest
from optional_torch import TF  # a stand-in that skips when torch is absent
from test_numpy_kernels import _rng, assert_close32, gradcheck, t

from cnnc.backends.numpy import kernels as K

# ----------------------------------------------------------------------------------------------
# hardswish / hardsigmoid exactly at their kinks (the finite-difference checks stay away from
# them, see test_numpy_kernels.ACTS): the derivative torch gives there is the one to match
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["hardswish", "hardsigmoid"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hard_activations_at_their_kinks_match_torch(kind, dtype):
    x = np.array([-3.0, 3.0, -3.5, 3.5, -2.999, 2.999, 0.0, -1.0, 1.5], dtype=dtype)
    y, cache = K.activation_forward(x, kind)
    dx = K.activation_backward(np.ones_like(x), cache)
    assert y.dtype == dx.dtype == dtype
    xt = t(x, True)
    getattr(TF, kind)(xt).sum().backward()
    np.testing.assert_array_equal(y, getattr(TF, kind)(t(x)).numpy())
    # torch's CPU hardsigmoid backward multiplies by 1/6 rounded to float32, in float64 too: in
    # float64 the two agree to float32's rounding of 1/6 (relative 3e-8), elsewhere exactly
    rtol = 3e-8 if kind == "hardsigmoid" and dtype == np.float64 else 1e-7
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=rtol, atol=0)


# ----------------------------------------------------------------------------------------------
# mul: equal shapes, a 1x1xC gate, a flat C gate, three operands
# ----------------------------------------------------------------------------------------------

MUL_SHAPES = {
    "equal": [(2, 3, 4, 5), (2, 3, 4, 5)],
    "gate 1x1xC first": [(2, 3, 1, 1), (2, 3, 4, 5)],
    "gate 1x1xC second": [(2, 3, 4, 5), (2, 3, 1, 1)],
    "flat gate": [(2, 3), (2, 3, 4, 5)],
    "spatial map HxWx1": [(2, 3, 4, 5), (2, 1, 4, 5)],
    "three": [(2, 3, 1, 1), (2, 3, 4, 5), (2, 3, 4, 5)],
    "flat": [(3, 6), (3, 6)],
}


@pytest.mark.parametrize("case", list(MUL_SHAPES))
def test_mul_gradcheck(case):
    r = _rng(31)
    names = "abc"[:len(MUL_SHAPES[case])]
    arrays = {n: r.standard_normal(s) for n, s in zip(names, MUL_SHAPES[case])}

    def fwd(**xs):
        return K.mul_forward(*xs.values())

    def bwd(dy, cache):
        return dict(zip(names, K.mul_backward(dy, cache)))

    gradcheck(fwd, bwd, arrays)


@pytest.mark.parametrize("case", list(MUL_SHAPES))
def test_mul_matches_torch(case):
    r = _rng(32)
    xs = [r.standard_normal(s).astype(np.float32) for s in MUL_SHAPES[case]]
    y, cache = K.mul_forward(*xs)
    dy = r.standard_normal(y.shape).astype(np.float32)
    grads = K.mul_backward(dy, cache)
    ts = [t(x, True) for x in xs]
    out = max(x.ndim for x in xs)
    yt = ts[0].view(*ts[0].shape, 1, 1) if ts[0].ndim < out else ts[0]
    for x in ts[1:]:
        yt = yt * (x.view(*x.shape, 1, 1) if x.ndim < out else x)
    yt.backward(t(dy))
    assert_close32(y, yt, atol=1e-6)
    for g, x in zip(grads, ts):
        assert g.shape == tuple(x.shape)
        assert_close32(g, x.grad, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# layer norm
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 4])
def test_layernorm_gradcheck(ndim):
    r = _rng(33)
    shape = (3, 5) if ndim == 2 else (2, 4, 3, 2)
    c = shape[1]
    arrays = {"x": r.standard_normal(shape) * 2 + 1, "gamma": r.standard_normal(c),
              "beta": r.standard_normal(c)}

    def fwd(x, gamma, beta):
        return K.layernorm_forward(x, gamma, beta, eps=1e-6)

    def bwd(dy, cache):
        dx, dg, db = K.layernorm_backward(dy, cache)
        return {"x": dx, "gamma": dg, "beta": db}

    gradcheck(fwd, bwd, arrays, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("ndim", [2, 4])
@pytest.mark.parametrize("eps", [1e-5, 1e-6])
def test_layernorm_matches_torch(ndim, eps):
    """Over features: F.layer_norm; over the channels of an image: torchvision's LayerNorm2d
    (channels moved last, F.layer_norm, moved back)."""
    r = _rng(34)
    shape = (6, 7) if ndim == 2 else (3, 7, 4, 5)
    x = (r.standard_normal(shape) * 3 + 2).astype(np.float32)
    gamma, beta = r.standard_normal(7).astype(np.float32), r.standard_normal(7).astype(np.float32)
    y, cache = K.layernorm_forward(x, gamma, beta, eps=eps)
    dy = r.standard_normal(y.shape).astype(np.float32)
    dx, dg, db = K.layernorm_backward(dy, cache)
    xt, gt, bt = t(x, True), t(gamma, True), t(beta, True)
    if ndim == 4:
        yt = TF.layer_norm(xt.permute(0, 2, 3, 1), (7,), gt, bt, eps).permute(0, 3, 1, 2)
    else:
        yt = TF.layer_norm(xt, (7,), gt, bt, eps)
    yt.backward(t(dy))
    assert y.dtype == dx.dtype == np.float32
    assert_close32(y, yt, atol=2e-5)
    assert_close32(dx, xt.grad, rtol=2e-4, atol=2e-5, msg="dx")
    assert_close32(dg, gt.grad, atol=2e-5, msg="dgamma")
    assert_close32(db, bt.grad, atol=2e-5, msg="dbeta")


# ----------------------------------------------------------------------------------------------
# layer scale
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 4])
def test_layerscale_gradcheck_and_torch(ndim):
    r = _rng(35)
    shape = (3, 4) if ndim == 2 else (2, 4, 3, 2)
    arrays = {"x": r.standard_normal(shape), "scale": r.standard_normal(4)}

    def bwd(dy, cache):
        dx, ds = K.layerscale_backward(dy, cache)
        return {"x": dx, "scale": ds}

    gradcheck(K.layerscale_forward, bwd, arrays)
    x32, s32 = arrays["x"].astype(np.float32), arrays["scale"].astype(np.float32)
    y, cache = K.layerscale_forward(x32, s32)
    dy = r.standard_normal(y.shape).astype(np.float32)
    dx, ds = K.layerscale_backward(dy, cache)
    xt, st = t(x32, True), t(s32, True)
    # torchvision's ConvNeXt: a (C, 1, 1) parameter times the branch
    yt = xt * (st.view(-1, 1, 1) if ndim == 4 else st)
    yt.backward(t(dy))
    assert_close32(y, yt, atol=1e-6)
    assert_close32(dx, xt.grad, atol=1e-6)
    assert_close32(ds, st.grad, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# stochastic depth
# ----------------------------------------------------------------------------------------------


def test_stochastic_depth_gradcheck():
    x = _rng(36).standard_normal((6, 3, 2, 2))

    def fwd(x):  # a fresh generator with one seed: the same examples dropped every time
        return K.stochastic_depth_forward(x, 0.5, np.random.default_rng(7), True)

    gradcheck(fwd, lambda dy, c: {"x": K.stochastic_depth_backward(dy, c)}, {"x": x})


@pytest.mark.parametrize("ndim", [2, 4])
def test_stochastic_depth_drops_whole_examples(ndim):
    """torchvision's "row" mode: one draw per example, survivors scaled by 1/(1-p)."""
    shape = (4000, 3, 2, 2) if ndim == 4 else (4000, 5)
    x = np.ones(shape, np.float32)
    y, cache = K.stochastic_depth_forward(x, 0.25, np.random.default_rng(0), True)
    assert y.dtype == np.float32
    per_example = y.reshape(len(y), -1)
    dropped = (per_example == 0).all(axis=1)
    kept = (per_example == np.float32(1 / 0.75)).all(axis=1)
    assert (dropped | kept).all()  # every example is either wholly dropped or wholly kept
    assert abs(dropped.mean() - 0.25) < 0.03
    assert abs(y.mean() - 1.0) < 0.03  # the expectation is preserved
    dy = np.full(shape, 2.0, np.float32)
    np.testing.assert_array_equal(K.stochastic_depth_backward(dy, cache), 2 * y)


def test_stochastic_depth_batch_mode_and_eval():
    x = np.ones((50, 3), np.float32)
    seen = set()
    for seed in range(20):
        y, _ = K.stochastic_depth_forward(x, 0.5, np.random.default_rng(seed), True, mode="batch")
        assert len(np.unique(y)) == 1  # one draw for the whole batch
        seen.add(float(y[0, 0]))
    assert seen == {0.0, 2.0}
    ye, ce = K.stochastic_depth_forward(x, 0.5, np.random.default_rng(0), False)
    assert ye is x and K.stochastic_depth_backward(x, ce) is x  # evaluation: the identity
    y0, _ = K.stochastic_depth_forward(x, 0.0, np.random.default_rng(0), True)
    assert y0 is x
