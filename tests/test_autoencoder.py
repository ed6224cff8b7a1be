"""Reconstruction: `loss mse` on a model whose output has its input's shape trains it to
reproduce the input (an autoencoder), on both backends, from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_backend_agreement import compare

import cnnc
from cnnc.backends.base import plan_loss
from cnnc.diagnostics import CnncError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "autoencoder.cnn"


def test_the_plan_reconstructs_only_an_output_of_the_inputs_shape():
    same = cnnc.compile("input 4x4x1\nconv 2 3 pad=1\ndeconv 1 3 pad=1 sigmoid\n")
    plan = plan_loss(same, "mse")
    assert plan.reconstruct and not plan.has_accuracy and not plan.fused
    with pytest.raises(CnncError) as e:  # auto cannot guess a reconstruction
        plan_loss(same, "auto")
    assert "--loss mse" in e.value.hint
    other = cnnc.compile("input 4x4x1\nconv 2 3 pad=1\n")
    with pytest.raises(CnncError) as e:
        plan_loss(other, "mse")
    assert "4x4x2" in str(e.value) and "4x4x1" in str(e.value)
    flat = cnnc.compile("input 4x4x1\nflatten\ndense 3\n")
    assert not plan_loss(flat, "mse").reconstruct  # mse against one-hot labels, as before


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("training", [True, False])
def test_reconstruction_gradients_agree(dtype, training):
    text = ("input 5x4x2\nconv 3 3x3 stride=2 pad=1 relu\nbn\n"
            "deconv 4 3x3 stride=2 pad=1 output_padding=0x1 tanh\nupsample 1 bilinear\n"
            "conv 2 1x1 sigmoid\n")
    compare(text, training=training, loss="mse", dtype=dtype)


def _train(backend: str, out: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "cnnc", "train", str(EXAMPLE), "--backend",
                           backend, "--epochs", "3", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "test_accuracy -" in proc.stdout + proc.stderr
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_the_example_trains_from_the_command_line(backend, tmp_path):
    records = _train(backend, tmp_path / backend)
    epochs = [r for r in records if "train_loss" in r]  # (a header record comes first)
    final = records[-1]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert all(r["train_accuracy"] is None and r["val_accuracy"] is None for r in epochs)
    losses = [r["train_loss"] for r in epochs]
    assert losses[2] < losses[1] < losses[0], losses
    # Predicting every pixel's mean over the data set scores 0.073 (the digits' mean
    # per-pixel variance); three epochs reconstruct well below that (measured: about 0.012)
    assert final["test_accuracy"] is None and final["test_loss"] < 0.03
    assert (tmp_path / backend / "best.safetensors").exists()
    assert (tmp_path / backend / "curves.svg").exists()  # drawn without accuracies
