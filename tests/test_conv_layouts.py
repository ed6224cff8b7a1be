"""The NumPy convolution's three column layouts (channel-major for groups > 1; sample-major and
position-major for groups == 1, chosen by the shape) must each be the exact reference: every
layout is forced on random configurations and compared with PyTorch in float64, checked against
finite differences, and the layouts compared with each other in float32."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optional_torch import TF, torch  # a stand-in that skips when torch is absent
from test_numpy_kernels import gradcheck

from cnnc.backends.numpy.kernels import conv as conv_module
from cnnc.backends.numpy.kernels import conv2d_backward, conv2d_forward

LAYOUTS = ("sample", "position")


@contextmanager
def forced(name):
    """Every ungrouped convolution inside takes the layout `name`."""
    original = conv_module._ungrouped_layout
    conv_module._ungrouped_layout = lambda C, KW, OW: name
    try:
        yield
    finally:
        conv_module._ungrouped_layout = original


@pytest.fixture(params=LAYOUTS)
def layout(request):
    with forced(request.param):
        yield request.param


def test_layout_choice_follows_the_longer_run():
    # the benchmark model: a grey 28x28 first layer, then 32 channels at 14x14
    assert conv_module._ungrouped_layout(1, 3, 28) == "sample"
    assert conv_module._ungrouped_layout(32, 3, 14) == "position"
    assert conv_module._ungrouped_layout(3, 3, 32) == "sample"  # RGB first layer
    assert conv_module._ungrouped_layout(64, 1, 7) == "position"


@st.composite
def ungrouped_configs(draw):
    KH, KW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    H = draw(st.integers(max(1, dil[0] * (KH - 1) + 1 - pads[0] - pads[1]), 7))
    W = draw(st.integers(max(1, dil[1] * (KW - 1) + 1 - pads[2] - pads[3]), 7))
    return dict(N=draw(st.integers(1, 3)), C=draw(st.integers(1, 5)), H=H, W=W,
                F=draw(st.integers(5, 7)),  # over 4 filters: never the depthwise path
                KH=KH, KW=KW, stride=stride, pads=pads, dil=dil, bias=draw(st.booleans()),
                seed=draw(st.integers(0, 1000)))


def _run(cfg, dtype, need_dx=True):
    r = np.random.default_rng(cfg["seed"])
    x = r.standard_normal((cfg["N"], cfg["C"], cfg["H"], cfg["W"])).astype(dtype)
    w = r.standard_normal((cfg["F"], cfg["C"], cfg["KH"], cfg["KW"])).astype(dtype)
    b = r.standard_normal(cfg["F"]).astype(dtype) if cfg["bias"] else None
    y, cache = conv2d_forward(x, w, b, stride=cfg["stride"], pads=cfg["pads"], dilation=cfg["dil"])
    dy = r.standard_normal(y.shape).astype(dtype)
    return (x, w, b, dy), (y, *conv2d_backward(dy, cache, need_dx=need_dx))


@pytest.mark.parametrize("name", LAYOUTS)
@settings(max_examples=40, deadline=None)
@given(cfg=ungrouped_configs())
def test_each_layout_matches_torch_float64(name, cfg):
    with forced(name):
        (x, w, b, dy), (y, dx, dw, db) = _run(cfg, np.float64)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True) if b is not None else None
    pt, pb, pl, pr = cfg["pads"]
    yt = TF.conv2d(TF.pad(xt, (pl, pr, pt, pb)), wt, bt, stride=cfg["stride"], dilation=cfg["dil"])
    yt.backward(torch.tensor(dy))
    # float64 throughout: the same tolerance as the other kernels' random configurations
    for ours, theirs in ((y, yt), (dx, xt.grad), (dw, wt.grad)) + (((db, bt.grad),) if b is not None else ()):
        assert ours.dtype == np.float64 and ours.flags.c_contiguous
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", [
    # N, C, H, W, F, KH, KW, stride, pads, dilation
    (2, 3, 5, 6, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (2, 2, 7, 6, 5, 3, 2, (2, 1), (1, 0, 2, 1), (1, 2)),
])
def test_each_layout_gradcheck(layout, case):
    N, C, H, W, F, KH, KW, stride, pads, dil = case
    r = np.random.default_rng(5)
    arrays = {"x": r.standard_normal((N, C, H, W)), "w": r.standard_normal((F, C, KH, KW)),
              "b": r.standard_normal(F)}

    def fwd(x, w, b):
        return conv2d_forward(x, w, b, stride=stride, pads=pads, dilation=dil)

    def bwd(dy, cache):
        dx, dw, db = conv2d_backward(dy, cache)
        return {"x": dx, "w": dw, "b": db}

    gradcheck(fwd, bwd, arrays)


@settings(max_examples=25, deadline=None)
@given(cfg=ungrouped_configs())
def test_layouts_agree_in_float32(cfg):
    results = {}
    for name in LAYOUTS:
        with forced(name):
            results[name] = _run(cfg, np.float32)[1]
    for a, b in zip(results["sample"], results["position"]):
        if a is None:
            assert b is None
            continue
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
        # the two differ only in the order of float32 sums; over 400 random configurations
        # the largest difference measured was 3.2e-7 of the scale
        scale = max(1.0, float(np.abs(a).max()))
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-6 * scale)


def test_results_are_fresh_arrays(layout):
    # nothing returned may share the kernels' scratch memory with a later call's results
    cfg = dict(N=2, C=3, H=6, W=6, F=5, KH=3, KW=3, stride=(1, 1), pads=(1, 1, 1, 1), dil=(1, 1),
               bias=True, seed=3)
    _, first = _run(cfg, np.float32)
    kept = [a.copy() for a in first]
    _run(dict(cfg, seed=4), np.float32)
    for a, b in zip(first, kept):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kernel, pads", [(3, (1, 1, 1, 1)), (1, (0, 0, 0, 0))])
def test_cache_survives_other_layers(layout, kernel, pads):
    # A layer's cache must not live in scratch memory that the next layer's call reuses (a 1x1
    # unpadded convolution's columns are a contiguous view of its padded input): backward after
    # another forward gives the same gradients as right after its own forward.
    r = np.random.default_rng(6)
    x = r.standard_normal((2, 3, 5, 5)).astype(np.float32)
    w = r.standard_normal((6, 3, kernel, kernel)).astype(np.float32)
    y, cache = conv2d_forward(x, w, None, pads=pads)
    dy = r.standard_normal(y.shape).astype(np.float32)
    expected = [a.copy() for a in conv2d_backward(dy, cache)[:2]]
    conv2d_forward(r.standard_normal((2, 3, 5, 5)).astype(np.float32), w, None, pads=pads)
    for got, want in zip(conv2d_backward(dy, cache)[:2], expected):
        np.testing.assert_array_equal(got, want)
