"""NumPy kernels of the channel and resampling ops (split part, channel shuffle, nearest and
bilinear upsampling, transposed convolution): float64 finite-difference gradient checks, and
forward + backward against torch.nn.functional on random configurations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optional_torch import TF, torch  # a stand-in that skips when torch is absent
from test_numpy_kernels import gradcheck

from cnnc.backends.numpy import kernels as K

# float64 against float64: the two implementations sum the same products in other orders, so
# they differ by a few units in the last place of the largest partial sum (measured: < 1e-13
# on these sizes); 1e-10 leaves room for longer sums without hiding a wrong tap (an error of
# order 1).
ATOL64 = 1e-10


def _torch_grads(fn, arrays: dict, R):
    ts = {k: torch.tensor(v, requires_grad=True) for k, v in arrays.items()}
    out = fn(**ts)
    (out * torch.tensor(R)).sum().backward()
    return out.detach().numpy(), {k: t.grad.numpy() for k, t in ts.items()}


# -- channel split part and shuffle --------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 6, 3, 2), (3, 5)])
def test_channel_slice_gradcheck(shape):
    x = np.random.default_rng(0).standard_normal(shape)
    gradcheck(lambda x: K.channel_slice_forward(x, 1, 4),
              lambda R, c: {"x": K.channel_slice_backward(R, c)}, {"x": x})


@pytest.mark.parametrize("shape,groups", [((2, 6, 3, 2), 2), ((2, 6, 1, 1), 3), ((3, 8), 4),
                                          ((1, 5, 2, 2), 1), ((1, 5, 2, 2), 5)])
def test_channel_shuffle_gradcheck_and_torch(shape, groups):
    x = np.random.default_rng(1).standard_normal(shape)
    gradcheck(lambda x: K.channel_shuffle_forward(x, groups),
              lambda R, c: {"x": K.channel_shuffle_backward(R, c)}, {"x": x})
    y, _ = K.channel_shuffle_forward(x, groups)
    np.testing.assert_array_equal(y, TF.channel_shuffle(torch.tensor(x), groups).numpy()
                                  if len(shape) == 4 else
                                  TF.channel_shuffle(torch.tensor(x)[..., None, None],
                                                     groups)[..., 0, 0].numpy())


def test_channel_shuffle_is_shufflenets():
    # torchvision's channel_shuffle, written out: view (N, g, C/g, H, W), transpose, flatten
    x = np.arange(2 * 12 * 2 * 2, dtype=np.float64).reshape(2, 12, 2, 2)
    ref = x.reshape(2, 3, 4, 2, 2).transpose(0, 2, 1, 3, 4).reshape(2, 12, 2, 2)
    np.testing.assert_array_equal(K.channel_shuffle_forward(x, 3)[0], ref)


# -- upsampling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [(1, 1), (2, 2), (3, 1), (2, 3)])
def test_upsample_nearest_gradcheck(scale):
    x = np.random.default_rng(2).standard_normal((2, 2, 3, 2))
    gradcheck(lambda x: K.upsample_nearest_forward(x, scale),
              lambda R, c: {"x": K.upsample_nearest_backward(R, c)}, {"x": x})


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("scale,hw", [((2, 2), (3, 2)), ((3, 2), (1, 4)), ((1, 1), (2, 2)),
                                      ((4, 3), (2, 1))])
def test_upsample_bilinear_gradcheck(scale, hw, align_corners):
    x = np.random.default_rng(3).standard_normal((2, 2, *hw))
    gradcheck(lambda x: K.upsample_bilinear_forward(x, scale, align_corners),
              lambda R, c: {"x": K.upsample_bilinear_backward(R, c)}, {"x": x})


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 4), st.integers(1, 4),
       st.sampled_from(["nearest", "bilinear", "bilinear-corners"]),
       st.sampled_from(["float32", "float64"]))
def test_upsample_matches_torch(h, w, sh, sw, mode, dtype):
    rng = np.random.default_rng(h * 100 + w * 10 + sh)
    x = rng.standard_normal((2, 3, h, w)).astype(dtype)
    if mode == "nearest":
        y, cache = K.upsample_nearest_forward(x, (sh, sw))
        back = K.upsample_nearest_backward
        ref_fn = lambda x: TF.interpolate(x, scale_factor=(sh, sw), mode="nearest")  # noqa: E731
    else:
        corners = mode == "bilinear-corners"
        y, cache = K.upsample_bilinear_forward(x, (sh, sw), corners)
        back = K.upsample_bilinear_backward
        ref_fn = lambda x: TF.interpolate(x, scale_factor=(sh, sw), mode="bilinear",  # noqa: E731
                                          align_corners=corners)
    assert y.dtype == x.dtype
    R = rng.standard_normal(y.shape).astype(dtype)
    ref, grads = _torch_grads(ref_fn, {"x": x}, R)
    # float32: each output mixes at most 4 values with weights <= 1, each gradient at most
    # (4 * 4) values per axis pair: errors stay within a few float32 ulps of values of order 10
    atol = ATOL64 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(y, ref, atol=atol, rtol=0)
    np.testing.assert_allclose(back(R, cache), grads["x"], atol=atol * 10, rtol=0)


# -- transposed convolution ----------------------------------------------------------------------

DECONV_CASES = [
    # (N, Cin, H, W), Fg, kernel, stride, pads (t, b, l, r), output_padding, dilation, groups
    ((2, 2, 3, 3), 2, (3, 3), (1, 1), (0, 0, 0, 0), (0, 0), (1, 1), 1),
    ((1, 2, 3, 2), 3, (3, 2), (2, 2), (1, 1, 0, 0), (1, 0), (1, 1), 1),
    ((2, 4, 2, 3), 1, (2, 3), (2, 1), (0, 1, 1, 0), (1, 0), (1, 2), 2),
    ((1, 3, 2, 2), 2, (3, 3), (3, 2), (2, 2, 1, 1), (2, 1), (2, 1), 3),
    ((1, 2, 1, 1), 1, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), (1, 1), 1),  # bias-only rows
]


@pytest.mark.parametrize("case", DECONV_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose_gradcheck(case, bias):
    shape, fg, (kh, kw), stride, pads, op, dil, groups = case
    rng = np.random.default_rng(4)
    arrays = {"x": rng.standard_normal(shape),
              "w": rng.standard_normal((shape[1], fg, kh, kw))}
    if bias:
        arrays["b"] = rng.standard_normal(fg * groups)

    def fwd(x, w, b=None):
        return K.conv_transpose2d_forward(x, w, b, stride=stride, pads=pads, output_padding=op,
                                          dilation=dil, groups=groups)

    def bwd(R, cache):
        dx, dw, db = K.conv_transpose2d_backward(R, cache)
        return {"x": dx, "w": dw, **({"b": db} if bias else {})}

    gradcheck(fwd, bwd, arrays)


@st.composite
def deconv_configs(draw):
    groups = draw(st.integers(1, 3))
    cin, fg = groups * draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    oph = draw(st.integers(0, max(sh, dh) - 1))
    opw = draw(st.integers(0, max(sw, dw) - 1))
    return (cin, fg, h, w, (kh, kw), (sh, sw), (dh, dw), (ph, pw), (oph, opw), groups)


@settings(max_examples=60, deadline=None)
@given(deconv_configs(), st.sampled_from(["float32", "float64"]))
def test_conv_transpose_random_configs_match_torch(cfg, dtype):
    cin, fg, h, w, k, s, d, p, op, groups = cfg
    out_h = K.conv_transpose_output_size(h, k[0], s[0], (p[0], p[0]), op[0], d[0])
    out_w = K.conv_transpose_output_size(w, k[1], s[1], (p[1], p[1]), op[1], d[1])
    if out_h < 1 or out_w < 1:
        # torch refuses it, or returns an empty tensor
        try:
            y = TF.conv_transpose2d(torch.zeros(1, cin, h, w), torch.zeros(cin, fg, *k),
                                    stride=s, padding=p, output_padding=op, dilation=d,
                                    groups=groups)
        except RuntimeError:
            return
        assert y.numel() == 0
        return
    rng = np.random.default_rng(sum(k) + 7 * h + 11 * w)
    arrays = {"x": rng.standard_normal((2, cin, h, w)).astype(dtype),
              "w": rng.standard_normal((cin, fg, *k)).astype(dtype),
              "b": rng.standard_normal(fg * groups).astype(dtype)}
    y, cache = K.conv_transpose2d_forward(**arrays, stride=s, pads=(p[0], p[0], p[1], p[1]),
                                          output_padding=op, dilation=d, groups=groups)
    R = rng.standard_normal(y.shape).astype(dtype)
    ref, grads = _torch_grads(
        lambda x, w, b: TF.conv_transpose2d(x, w, b, stride=s, padding=p, output_padding=op,
                                            dilation=d, groups=groups), arrays, R)
    assert y.shape == ref.shape and y.dtype == np.dtype(dtype)
    dx, dw, db = K.conv_transpose2d_backward(R, cache)
    # float32 against float64 truth, measured over 1000 such configurations: worst 1.9e-6
    # (output), 4.4e-6 (dx), 2.9e-6 (dw), 6.5e-6 (db); torch's float32 has noise of its own
    atol = ATOL64 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(y, ref, atol=atol, rtol=0)
    np.testing.assert_allclose(dx, grads["x"], atol=atol, rtol=0)
    np.testing.assert_allclose(dw, grads["w"], atol=atol * 5, rtol=0)
    np.testing.assert_allclose(db, grads["b"], atol=atol * 5, rtol=0)


def test_conv_transpose_need_dx_false():
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((1, 2, 3, 3)), rng.standard_normal((2, 2, 3, 3))
    y, cache = K.conv_transpose2d_forward(x, w, stride=(2, 2))
    dx, dw, db = K.conv_transpose2d_backward(np.ones_like(y), cache, need_dx=False)
    assert dx is None and db is None and dw.shape == w.shape
