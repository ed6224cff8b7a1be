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


def test_each_hand_written_run_is_compared_with_cnnc_of_its_seed(tta):
    runs = []
    # seed 0: cnnc crosses at its second epoch, the script at its first; seed 1: cnnc at its
    # first, the script at its third; seed 2: both at their second
    for seed, c_acc, h_acc in [(0, [0.92, 0.931], [0.93, 0.94]),
                               (1, [0.935, 0.94, 0.94], [0.91, 0.92, 0.931]),
                               (2, [0.90, 0.95], [0.90, 0.95])]:
        c = make(tta, "cnnc", [15.0, 26.0, 37.0][:len(c_acc)], c_acc)  # at 14, 24, 34 s
        h = make(tta, "hand-written PyTorch", [14.0, 28.0, 42.0][:len(h_acc)], h_acc,
                 train=12.0)  # at 13, 26, 39 s
        c.seed = h.seed = seed
        runs += [c, h]
    text = "\n".join(tta.report(runs, 0.93))
    assert [r.time_to(0.93) for r in runs] == [24.0, 13.0, 14.0, 39.0, 24.0, 26.0]
    assert "| hand-written PyTorch | 0 |" in text and "| 13.0 | 0.54x |" in text
    assert "| 39.0 | 2.79x |" in text  # against cnnc's seed 1 (14 s), not seed 0's
    # the medians: cnnc 24 (14, 24, 24), the script 26 (13, 26, 39)
    assert "median seconds to 0.93 over seeds 0, 1, 2: cnnc 24.0, hand-written 26.0: " \
           "cnnc takes 0.92x" in text
    # per epoch: cnnc's 7 epochs of 10 s against the script's 7 of 12 s
    assert "training time an epoch: cnnc 10.0 s (7 epochs), hand-written 12.0 s (7 epochs): " \
           "cnnc takes 0.83x" in text


def test_a_run_that_never_gets_there_counts_as_the_slowest(tta):
    reached, early, never = (make(tta, "cnnc", [11.0, 22.0], accuracies) for accuracies in
                             ([0.9, 0.931], [0.931, 0.94], [0.9, 0.92]))
    assert (reached.time_to(0.93), early.time_to(0.93), never.time_to(0.93)) == (20.0, 10.0, None)
    assert tta.median_time([reached, never, early], 0.93) == 20.0  # 10, 20, never
    assert tta.median_time([reached, early], 0.93) == 15.0
    assert tta.median_time([reached, never], 0.93) is None  # the middle of 20 and never
    assert tta.median_time([never, never, reached], 0.93) is None


def test_the_accuracy_of_an_epoch_line(tta):
    line = ("epoch 3/15  train_loss 0.2451  train_acc 0.9103  test_loss 0.2581  test_acc 0.9072  "
            "2,482 img/s  24.2s")
    assert tta._cnnc_accuracy(line) == 0.9072
    assert tta._cnnc_accuracy("epoch 3/15  train_loss 0.2451  1,000 img/s  2.0s") is None
    assert tta._cnnc_accuracy("precision: bf16 autocast") is None
    assert tta._json_accuracy('{"epoch": 2, "train_seconds": 3.0, "test_accuracy": 0.9}') == 0.9
    assert tta._json_accuracy('{"parameters": 10}') is None


@pytest.mark.parametrize("name", ["fashion_fast", "fashion_bn"])
def test_the_hand_written_models_are_the_examples(tta, name):
    # The benchmark compares cnnc with a script "of the same recipe": the script's model must
    # be the example's, layer for layer, and the example's recipe one the script implements.
    pytest.importorskip("torch")
    import cnnc

    assert name in tta.HAND_WRITTEN
    spec = importlib.util.spec_from_file_location("fashion_fast_torch",
                                                  ROOT / "benchmarks" / "fashion_fast_torch.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    net = script.MODELS[name]()
    path = ROOT / "examples" / f"{name}.cnn"
    summary = cnnc.compile(str(path)).summary()
    assert sum(p.numel() for p in net.parameters()) == summary.trainable_params
    shapes = sorted(tuple(p.shape) for p in net.parameters())
    model, config = tta.read_recipe(str(path))  # exits if the script cannot run the recipe
    assert config.val_split == 0 and config.optimizer == "adam"
    assert shapes == sorted(tuple(p.shape) for p in
                            model.to_backend("torch").module.parameters())
