"""Keras spellings cnnc accepts because they are unambiguous (the others get golden diagnostics
whose hints show the cnnc spelling: tests/diagnostics/keras_*.cnn)."""

from __future__ import annotations

import numpy as np
import pytest

import cnnc
from cnnc.syntax.keras_habits import rewrite, statement_hint


@pytest.mark.parametrize("head", ["maxpool", "pool", "avgpool", "pool avg"])
def test_pool_without_a_size_is_2x2_stride_2_as_in_keras(head):
    torch = pytest.importorskip("torch")
    model = cnnc.compile(f"input 27x26x3\n{head}\nflatten\ndense 4").raise_for_errors()
    pool = model.graph.layers()[1]
    cls = torch.nn.MaxPool2d if "avg" not in head else torch.nn.AvgPool2d
    expected = cls(2)(torch.zeros(1, 3, 27, 26)).shape  # PyTorch's 2x2 window, stride 2
    assert pool.shape == (expected[2], expected[3], expected[1]) == (13, 13, 3)
    assert model.summary().rows[1].description.endswith(" 2x2")


def test_pool_without_a_size_runs_alike_on_both_backends():
    pytest.importorskip("torch")
    model = cnnc.compile("input 27x26x3\nmaxpool\nconv 2 1\navgpool\nflatten\ndense 4")
    x = np.random.default_rng(0).random((2, 27, 26, 3), dtype=np.float32)
    sessions = [model.raise_for_errors().to_backend(b, seed=0) for b in ("numpy", "torch")]
    outs = [s.predict(x) for s in sessions]
    # The backends sum in different orders; float32's worst-case rounding of a sum of n
    # products is n * eps * sum(|products|): bounded here layer by layer (measured: ~1e-7).
    w = {k: np.abs(v).astype(np.float64) for k, v in sessions[0].get_weights().items()}
    conv = 3 * np.finfo(np.float32).eps * w["conv_1.weight"].sum(axis=(1, 2, 3)).max()
    pooled = w["conv_1.weight"].sum(axis=(1, 2, 3)).max()  # |conv output| <= this (x in [0, 1])
    dense = 72 * np.finfo(np.float32).eps * pooled * w["dense_1.weight"].sum(axis=1).max()
    bound = dense + conv * w["dense_1.weight"].sum(axis=1).max()
    np.testing.assert_allclose(outs[0], outs[1], rtol=0, atol=bound)


def test_rewrite_spells_keras_habits_the_cnnc_way():
    assert rewrite("conv 32 (3, 3) padding='same' activation=tf.nn.relu") == \
        "conv 32 3x3 pad=same activation=relu"
    assert rewrite("MaxPooling2D (2,2) strides=2") == "maxpool 2x2 stride=2"
    assert rewrite("x = Activation 'relu'") == "x = relu"
    assert rewrite("dense 10 activation=keras.activations.swish") == "dense 10 activation=silu"
    assert statement_hint("conv 32 3x3 relu  # fine") is None
