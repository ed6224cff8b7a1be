"""--precision: bfloat16 (or float16) autocast with float32 weights on the torch backend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from optional_torch import needs_torch, torch  # a stand-in that skips when torch is absent

import cnnc
from cnnc.data import load_dataset
from cnnc.diagnostics import CnncError

ROOT = Path(__file__).resolve().parents[1]
BF16_ROUNDING = 2.0 ** -8  # bfloat16's unit roundoff 2^-p, p = 8 bits of significand (7 stored)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@needs_torch
def test_bf16_autocast_is_on_and_weights_stay_float32(digits):
    model = cnnc.compile(str(ROOT / "examples/digits_bn.cnn"))
    fp32 = model.to_backend("torch", device="cpu", precision="fp32", seed=1)
    bf16 = model.to_backend("torch", device="cpu", precision="bf16", seed=1)
    assert bf16.amp and bf16.precision == "bf16" and not fp32.amp
    x = digits.test_x[:64]
    diff = float(np.abs(fp32.predict(x) - bf16.predict(x)).max())
    # Measured 1.1e-3 to 2.2e-3 on three seeds: a few bf16 roundings of the probabilities.
    # Float32 alone differs by ~1e-7, so more than 1e-5 shows the autocast ran; 16 roundings
    # is the most the model's six layers should accumulate.
    assert 1e-5 < diff < 16 * BF16_ROUNDING
    from cnnc.train.config import TrainConfig

    bf16.configure_optimizer(TrainConfig(optimizer="adam", lr=1e-2, batch_size=64))
    data = bf16.put(digits.train_x, digits.train_y)
    losses = [float(bf16.train_step(data, np.arange(i, i + 64))[0]) for i in range(0, 640, 64)]
    assert losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in bf16.module.parameters())
    assert all(v.dtype == np.float32 for v in bf16.get_weights().values())


@needs_torch
def test_auto_measures_and_says_why():
    model = cnnc.compile(str(ROOT / "examples/quickstart.cnn"))
    session = model.to_backend("torch", device="cpu", precision="auto")
    assert session.precision in ("bf16", "fp32")
    assert "auto: a bf16 matmul runs" in session.precision_note
    from cnnc.backends.torch.session import bf16_speedup

    speedup = bf16_speedup(torch.device("cpu"))
    assert (session.precision == "bf16") == (speedup >= 1.5)


@needs_torch
def test_precisions_that_cannot_run_here_are_errors():
    model = cnnc.compile(str(ROOT / "examples/quickstart.cnn"))
    with pytest.raises(CnncError, match="float16 autocast is for GPUs"):
        model.to_backend("torch", device="cpu", precision="fp16")
    with pytest.raises(CnncError, match="unknown precision"):
        model.to_backend("torch", device="cpu", precision="fp8")


def test_train_section_and_flag():
    model = cnnc.compile("input 8x8x1; flatten; dense 10 softmax\ntrain:\n    precision bf16\n")
    assert model.ok and model.train_config.precision == "bf16"
    bad = cnnc.compile("input 8x8x1; flatten; dense 10 softmax\ntrain:\n    precision fp64\n")
    assert not bad.ok
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "cnnc", "train", "examples/quickstart.cnn",
                        "--precision", "bf16", "--epochs", "1", "--out", "-"], cwd=ROOT,
                       env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "float32 reference" in r.stderr
