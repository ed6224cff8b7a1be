"""Portability rules (cnnc check --target): each fires where it should, and the difference it
warns about is real, shown here on PyTorch's own layers. The TensorFlow/Keras rules are shown on
Keras 3's layers in tests/test_portability_keras.py, the Caffe rules against Caffe's source in
tests/test_portability_caffe.py; docs/portability.md cites the sources. cnnc's NumPy reference
gives the model's meaning; the warning's fix-it must reproduce it.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnc
from cnnc.analysis.portability import findings

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


def fired(text: str, targets=("torch", "tf", "onnx", "caffe")) -> dict:
    model = cnnc.compile(text)
    model.raise_for_errors()
    out: dict = {}
    for layer, f in findings(model.graph, targets):
        out.setdefault((f.rule, f.target), []).append((layer.name, f))
    return out


def reference(text: str, x: np.ndarray, weights: dict | None = None) -> np.ndarray:
    """cnnc's meaning: the NumPy reference's output (float64, NCHW) for NCHW x. (A flatten is
    appended, as a session runs models with one output per class; it flattens channel-major,
    so a reshape gives the image back.)"""
    model = cnnc.compile(text + "\nflatten")
    h, w, c = model.graph[model.graph.layers()[-1].inputs[0]].shape
    session = model.to_backend("numpy", dtype="float64", loss="mse")
    if weights:
        current = session.get_weights()
        current.update(weights)
        session.set_weights(current)
    return session.predict(x.transpose(0, 2, 3, 1)).reshape(len(x), c, h, w)


# predict() hands its float64 result back as float32: one rounding, half an ulp at most.
ROUNDED = dict(rtol=float(np.finfo(np.float32).eps), atol=0.0)


def test_uneven_same_padding_differs_in_pytorch_and_the_fix_matches():
    text = "input 8x8x1\nconv 1 3x3 stride=2 pad=same bias=false"
    found = fired(text)
    assert ("uneven-padding", "torch") in found and ("uneven-padding", "caffe") in found
    hint = found[("uneven-padding", "torch")][0][1].hint
    assert "nn.ZeroPad2d((0, 1, 0, 1))" in hint
    x = np.random.default_rng(0).normal(size=(1, 1, 8, 8))
    w = np.random.default_rng(1).normal(size=(1, 1, 3, 3))
    want = reference(text, x, {"conv_1.weight": w})
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False).double()
    conv.weight.data = torch.from_numpy(w)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        symmetric = conv(xt).numpy()  # the obvious PyTorch spelling
        conv.padding = (0, 0)
        fixed = conv(nn.ZeroPad2d((0, 1, 0, 1))(xt)).numpy()
    assert symmetric.shape == want.shape and np.abs(symmetric - want).max() > 1e-3
    np.testing.assert_allclose(fixed, want, **ROUNDED)


def test_same_with_stride_is_refused_by_pytorch_and_the_fix_matches():
    text = "input 16x16x1\nconv 1 4x4 stride=2 pad=same bias=false"
    found = fired(text)
    hint = found[("same-with-stride", "torch")][0][1].hint
    assert "padding=(1, 1)" in hint
    with pytest.raises((ValueError, RuntimeError)):
        nn.Conv2d(1, 1, 4, stride=2, padding="same")
    x = np.random.default_rng(2).normal(size=(1, 1, 16, 16))
    w = np.random.default_rng(3).normal(size=(1, 1, 4, 4))
    conv = nn.Conv2d(1, 1, 4, stride=2, padding=(1, 1), bias=False).double()
    conv.weight.data = torch.from_numpy(w)
    with torch.no_grad():
        got = conv(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, reference(text, x, {"conv_1.weight": w}), **ROUNDED)


def test_count_pad_default_differs_in_pytorch_and_the_fix_matches():
    text = "input 6x6x2\npool avg 3 stride=1 pad=1"
    found = fired(text)
    assert ("count-pad", "torch") in found and ("count-pad", "caffe") in found
    x = np.random.default_rng(4).normal(size=(1, 2, 6, 6))
    want = reference(text, x)
    xt = torch.from_numpy(x)
    default = nn.AvgPool2d(3, 1, 1)(xt).numpy()
    fixed = nn.AvgPool2d(3, 1, 1, count_include_pad=False)(xt).numpy()
    assert np.abs(default - want).max() > 1e-3
    np.testing.assert_allclose(fixed, want, **ROUNDED)
    assert not fired("input 6x6x2\npool avg 3 stride=1 pad=1 count_pad=true", ("torch",))


def test_uneven_average_pooling_zero_padded_in_pytorch_counts_the_zeros():
    text = "input 6x6x2\npool avg 3 stride=2 pad=same"  # pads 0x1x0x1
    hint = fired(text)[("uneven-padding", "torch")][0][1].hint
    assert "nn.ZeroPad2d((0, 1, 0, 1))" in hint and "zeros count" in hint
    x = np.random.default_rng(7).normal(size=(1, 2, 6, 6))
    padded = nn.AvgPool2d(3, 2)(nn.ZeroPad2d((0, 1, 0, 1))(torch.from_numpy(x))).numpy()
    want = reference(text, x)
    assert np.abs(padded - want).max() > 1e-3
    # only the last row and column of windows reach the padding; the rest agree
    np.testing.assert_allclose(padded[:, :, :-1, :-1], want[:, :, :-1, :-1], **ROUNDED)


def test_flatten_order_matters_for_ported_dense_weights():
    found = fired("input 4x4x3\nflatten\ndense 5")
    assert ("flatten-order", "tf") in found
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.normal(size=(2, 3, 4, 4)))
    w = torch.from_numpy(rng.normal(size=(5, 48)))
    chw = x.flatten(1) @ w.T  # PyTorch and cnnc: (C, H, W) order
    hwc = x.permute(0, 2, 3, 1).flatten(1) @ w.T  # Keras: (H, W, C) order, same weights
    assert (chw - hwc).abs().max() > 1e-3
    # the fix: permute the weight columns from (C, H, W) to (H, W, C)
    w_hwc = w.reshape(5, 3, 4, 4).permute(0, 2, 3, 1).reshape(5, 48)
    torch.testing.assert_close(x.permute(0, 2, 3, 1).flatten(1) @ w_hwc.T, chw, rtol=1e-12,
                               atol=1e-12)
    assert not fired("input 4x4x3\ngap\ndense 5", ("tf",))


def test_batchnorm_conventions_change_the_output_and_the_running_mean():
    found = fired("input 4x4x2\nbn")
    assert found[("batchnorm-conventions", "tf")][0][1].hint.startswith(
        "BatchNormalization(epsilon=1e-05, momentum=0.9)")
    x = torch.from_numpy(np.random.default_rng(6).normal(0, 0.01, size=(4, 2, 4, 4)))
    ours = nn.BatchNorm2d(2, eps=1e-5, momentum=0.1).double()
    keras_defaults = nn.BatchNorm2d(2, eps=1e-3, momentum=0.1).double()
    assert (ours(x) - keras_defaults(x)).abs().max() > 1e-2  # eps matters on small variances
    # Keras's momentum=0.99 keeps 99% of the old average; read as PyTorch's, it keeps 1%
    ours, misread = nn.BatchNorm2d(2).double(), nn.BatchNorm2d(2, momentum=0.99).double()
    ours(x + 1.0), misread(x + 1.0)  # one training batch of mean 1 from a running mean of 0
    assert torch.allclose(ours.running_mean, torch.full((2,), 0.1, dtype=torch.float64),
                          atol=1e-2)
    assert torch.allclose(misread.running_mean, torch.full((2,), 0.99, dtype=torch.float64),
                          atol=1e-2)


def test_caffe_rounds_pooling_up():
    found = fired("input 9x9x1\npool max 3 stride=2")  # floor 4, ceil 4: no warning
    assert ("ceil-rounding", "caffe") not in found
    found = fired("input 8x8x1\npool max 3 stride=2")
    message = found[("ceil-rounding", "caffe")][0][1].message
    x = torch.zeros(1, 1, 8, 8)
    up = nn.MaxPool2d(3, 2, ceil_mode=True)(x).shape[2]  # Caffe's rounding
    down = nn.MaxPool2d(3, 2)(x).shape[2]
    assert (up, down) == (4, 3) and f"{up}x{up}" in message and f"{down}x{down}" in message
    assert ("ceil-rounding", "tf") in fired("input 8x8x1\npool max 3 stride=2 ceil=true")


def test_zero_padding_wins_a_max_pool_over_negative_values():
    found = fired("input 4x4x1\npool max 3 stride=1 pad=1")
    assert ("max-pool-zero-padding", "tf") in found
    x = -torch.rand(1, 1, 4, 4) - 0.5
    padded_max = nn.MaxPool2d(3, 1, 1)(x)  # -inf padding: cnnc's meaning
    zero_then_max = nn.MaxPool2d(3, 1)(F.pad(x, (1, 1, 1, 1)))  # ZeroPadding2D + valid pool
    assert (zero_then_max - padded_max).abs().max() > 0.4
    assert not fired("input 4x4x1\npool max 3 stride=1 pad=same", ("tf",))


def test_leaky_relu_default_slopes_differ():
    found = fired("input 4x4x1\nleaky_relu")
    assert found[("leaky-relu-slope", "tf")][0][1].hint == "LeakyReLU(negative_slope=0.01)"
    x = -torch.ones(3)
    assert nn.LeakyReLU()(x)[0] == -0.01 and nn.LeakyReLU(0.3)(x)[0] == pytest.approx(-0.3)


def test_no_rule_fires_for_onnx():
    # ONNX states every convention explicitly (pads per side, ceil_mode, count_include_pad)
    assert not fired("input 8x8x2\nconv 4 3 relu\npool 2", ("onnx",))
    assert not fired("input 8x8x2\nconv 4 3 stride=2 pad=same gelu\npool avg 3 pad=1\nbn"
                     "\nflatten\ndense 3", ("onnx",))


def test_check_target_cli(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    path = tmp_path / "m.cnn"
    path.write_text("input 8x8x1\nconv 4 3x3 stride=2 pad=same\nflatten\ndense 10\n")
    env = {**os.environ, "PYTHONPATH": str(root)}
    r = subprocess.run([sys.executable, "-m", "cnnc", "check", str(path), "--target", "torch",
                        "--json"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] and [d["code"] for d in out["diagnostics"]] == ["portability"]
    assert out["diagnostics"][0]["line"] == 2
    r = subprocess.run([sys.executable, "-m", "cnnc", "check", str(path), "--target", "mxnet"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "torch, tf, onnx, caffe" in r.stderr
