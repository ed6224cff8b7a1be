"""`cnnc train --test-each-epoch`: the test split scored after every epoch, through the real
command line (the embedded digits, a few seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_epoch_record_holds_the_test_figures(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "cnnc", "train", "examples/quickstart.cnn",
                           "--backend", "numpy", "--epochs", "2", "--test-each-epoch",
                           "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs, final = lines[1:-1], lines[-1]
    assert [r["epoch"] for r in epochs] == [1, 2]
    for r in epochs:
        assert {"test_loss", "test_accuracy", "test_seconds"} <= set(r)
        assert 0 <= r["test_accuracy"] <= 1 and r["test_seconds"] > 0 and r["seconds"] > 0
    # the last epoch's figures are the final record's: the same weights, the same images
    assert epochs[-1]["test_accuracy"] == final["test_accuracy"]
    assert epochs[-1]["test_loss"] == final["test_loss"]
    epoch_lines = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2
    assert all(" test_acc " in line for line in epoch_lines)
    assert f"test_acc {epochs[0]['test_accuracy']:.4f}" in epoch_lines[0]
    # the curves still mark the final test figure, not an epoch's
    assert (tmp_path / "curves.svg").is_file()
