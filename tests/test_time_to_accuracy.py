"""benchmarks/time_to_accuracy.py's arithmetic: what is counted, and ratios to a target a
contender never reached given only as lower bounds (the trainings themselves are the script's)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tta():
    spec = importlib.util.spec_from_file_location("time_to_accuracy",
                                                  ROOT / "benchmarks" / "time_to_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def make(tta, name, stamps, accuracies, train=10.0, scoring=1.0):
    run = tta.Run(name, "recipe", [])
    run.stamps = list(stamps)
    run.returncode = 0
    tta.finish(run, [{"epoch": i + 1, "test_accuracy": a, "train_seconds": train,
                      "test_seconds": scoring} for i, a in enumerate(accuracies)])
    return run


def test_the_scoring_after_each_epoch_is_not_counted(tta):
    run = make(tta, "cnnc", [15.0, 26.0, 37.0], [0.90, 0.931, 0.935])
    assert [e["at"] for e in run.epochs] == [14.0, 24.0, 34.0]
    assert run.startup == 4.0  # before the first step: 14 s in, 10 s of it training
    assert run.time_to(0.93) == 24.0 and run.time_to(0.99) is None
    assert run.best()["epoch"] == 3 and run.ran_for == 34.0


def test_a_target_never_reached_gives_a_lower_bound(tta):
    cnnc = make(tta, "cnnc", [15.0, 26.0], [0.91, 0.931])
    hand = make(tta, "hand-written PyTorch", [16.0, 28.0], [0.90, 0.932])
    keras = make(tta, "seeds' Keras recipe", [50.0, 101.0, 152.0], [0.90, 0.92, 0.915])
    lines = tta.report([cnnc, hand, keras], 0.93)
    text = "\n".join(lines)
    assert "| cnnc |" in text and "24.0 | 1.00x |" in text
    assert "| 26.0 | 1.08x |" in text  # hand-written: 28 - 2 s of scoring, over cnnc's 24
    # Keras ran 152 - 3 = 149 s without reaching 0.93: cnnc is at least 149 / 24 times faster
    assert "not reached (> 149.0) | > 6.21x |" in text
    assert "at least 6.21x faster" in text
    # its best, 0.92 after epoch 2 (99 s), against cnnc's first epoch at or above it (24 s)
    assert "to the seeds' best accuracy, 0.9200: Keras 99.0 s, cnnc 24.0 s: cnnc 4.12x" in text
