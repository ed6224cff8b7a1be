"""`cnnc train` and `cnnc eval` end to end, through the real command line in subprocesses, on the
embedded digits (a few seconds a run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cnnc.train.checkpoint import load_safetensors

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = "examples/quickstart.cnn"
KEYS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds",
        "images_per_second"]


def cnnc(*args, env=None, timeout=120):
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", **(env or {})}
    full_env.pop("CNNC_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "cnnc", *map(str, args)], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def records(folder):
    """metrics.jsonl's records after its header line."""
    lines = [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
    assert list(lines[0]) == ["header"]
    return lines[1:]


def assert_clean_failure(proc):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    """An uninterrupted 4-epoch run of the quickstart model (its file says 10; 4 is plenty)."""
    out = tmp_path_factory.mktemp("quickstart")
    proc = cnnc("train", QUICKSTART, "--backend", "numpy", "--epochs", 4, "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def test_quickstart_trains_saves_and_evaluates(quickstart_run):
    out, proc = quickstart_run
    recs = records(out)
    assert [list(r) for r in recs[:-1]] == [KEYS] * 4
    assert [r["epoch"] for r in recs[:-1]] == [1, 2, 3, 4]
    assert all(r["images_per_second"] > 0 and r["seconds"] > 0 for r in recs[:-1])
    final = recs[-1]
    assert final["weights"] == "last" and final["test_images"] == 359
    assert final["test_accuracy"] >= 0.95
    for name in ("last", "best"):
        tensors, meta = load_safetensors(out / f"{name}.safetensors")
        assert all(a.dtype == np.float32 for a in tensors.values())
        assert "conv_1.weight" in tensors and meta["model_file"] == "quickstart.cnn"
        assert meta["backend"] == "numpy"
    assert f"test_accuracy {final['test_accuracy']:.4f}" in proc.stdout
    # eval reads the same weights back: the last ones give exactly the recorded figures
    ev = cnnc("eval", QUICKSTART, "--weights", out / "last.safetensors", "--json")
    assert ev.returncode == 0, ev.stderr
    got = json.loads(ev.stdout)
    assert set(got) == {"loss", "accuracy", "images"} and got["images"] == 359
    # the same weights, data and arithmetic: measured equal to the last bit over 3 seeds
    assert got["accuracy"] == final["test_accuracy"] and got["loss"] == final["test_loss"]
    best = cnnc("eval", QUICKSTART, "--weights", out / "best.safetensors")
    assert best.returncode == 0 and "(359 images)" in best.stdout
    assert float(best.stdout.split("test_accuracy")[1].split()[0]) >= 0.95


def test_output_to_a_pipe_is_one_plain_line_per_epoch(quickstart_run):
    _, proc = quickstart_run
    assert "\x1b" not in proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in lines] == ["1/4", "2/4", "3/4", "4/4"]
    for ln in lines:
        for word in ("train_loss", "train_acc", "val_loss", "val_acc", "img/s"):
            assert word in ln
    assert proc.stdout.splitlines()[0].startswith("quickstart: ")  # the header


def test_resume_continues_exactly_where_it_stopped(quickstart_run, tmp_path):
    full, _ = quickstart_run
    first = cnnc("train", QUICKSTART, "--epochs", 2, "--out", tmp_path)
    assert first.returncode == 0, first.stderr
    second = cnnc("train", QUICKSTART, "--epochs", 4, "--out", tmp_path, "--resume")
    assert second.returncode == 0, second.stderr
    assert [ln.split()[1] for ln in second.stdout.splitlines()
            if ln.startswith("epoch ")] == ["3/4", "4/4"]
    a, _ = load_safetensors(full / "last.safetensors")
    b, _ = load_safetensors(tmp_path / "last.safetensors")
    assert a.keys() == b.keys()
    # a resumed run takes the uninterrupted run's steps: bit for bit (measured over 3 seeds)
    for k in a:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)
    ra, rb = records(full), records(tmp_path)
    assert [r.get("epoch") for r in rb] == [1, 2, 3, 4, None]
    for x, y in zip(ra[:-1], rb[:-1]):  # the epochs; the last record is the test's
        assert x["train_loss"] == y["train_loss"]
    assert ra[-1]["test_accuracy"] == rb[-1]["test_accuracy"]


def test_resume_refuses_an_edited_model(tmp_path):
    model = tmp_path / "m.cnn"
    model.write_text("input 8x8x1\nflatten\ndense 10 softmax\n")
    out = tmp_path / "run"
    first = cnnc("train", model, "--epochs", 1, "--limit", 200, "--out", out)
    assert first.returncode == 0, first.stderr
    assert "180 train / 20 val / 359 test" in first.stdout  # --limit 200, 10% held out
    model.write_text("input 8x8x1\nflatten\ndense 10 softmax  # edited\n")
    proc = cnnc("train", model, "--epochs", 2, "--out", out, "--resume")
    assert_clean_failure(proc)
    assert "cannot resume" in proc.stderr and "hint:" in proc.stderr
    proc = cnnc("train", model, "--out", tmp_path / "empty", "--resume")
    assert_clean_failure(proc)
    assert "not exist" in proc.stderr and "without --resume" in proc.stderr
    assert "resuming" not in proc.stdout  # refused before loading anything


def test_ctrl_c_stops_cleanly_and_resume_works(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # the shapes data (2,000 images) makes epochs long enough to interrupt one
    args = [sys.executable, "-m", "cnnc", "train", QUICKSTART, "--data", "shapes",
            "--epochs", "30", "--out", str(out)]
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        metrics = out / "metrics.jsonl"
        while not (metrics.exists() and len(metrics.read_text().splitlines()) > 1):  # an epoch
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no epoch finished in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stderr and "--resume" in stderr and "--data shapes" in stderr
    done = int(load_safetensors(out / "state.safetensors")[1]["next_epoch"]) - 1
    assert done >= 1
    assert load_safetensors(out / "last.safetensors")[1]["epoch"] == str(done)
    assert [r["epoch"] for r in records(out)] == list(range(1, done + 1))
    resumed = cnnc("train", QUICKSTART, "--data", "shapes", "--epochs", done + 1, "--out", out,
                   "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert [r.get("epoch") for r in records(out)] == [*range(1, done + 2), None]


def test_a_diverging_run_stops_with_epoch_and_batch(tmp_path):
    proc = cnnc("train", QUICKSTART, "--optimizer", "sgd", "--lr", "1e20", "--epochs", 2,
                "--out", tmp_path)
    assert_clean_failure(proc)
    assert "epoch 1, batch" in proc.stderr and "NaN" in proc.stderr
    assert "lower the learning rate" in proc.stderr and "[diverged]" in proc.stderr


def test_data_that_does_not_fit_points_at_the_input_line(tmp_path):
    model = tmp_path / "big.cnn"
    model.write_text("# a 28x28 model\n\ninput 28x28x1\nconv 8 3x3 relu\npool 2\nflatten\n"
                     "dense 10 softmax\n")
    proc = cnnc("train", model, "--data", "digits")
    assert_clean_failure(proc)
    assert f"{model}:3:1: error:" in proc.stderr
    assert "8x8x1" in proc.stderr and "28x28x1" in proc.stderr
    assert "input 28x28x1" in proc.stderr and "^" in proc.stderr  # the line and its caret


@pytest.mark.parametrize("where", ["flag", "file"])
def test_a_missing_data_set_says_where_it_looked(tmp_path, where):
    empty = tmp_path / "empty"
    empty.mkdir()
    model = tmp_path / "m.cnn"
    text = "input 28x28x1\nflatten\ndense 10 softmax\n"
    if where == "file":
        text += "train:\n    data mnist\n"
    model.write_text(text)
    env = {"CNNC_DATA": str(empty), "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "c")}
    flags = ["--data", "mnist"] if where == "flag" else []
    proc = cnnc("train", model, *flags, env=env)
    assert_clean_failure(proc)
    assert "'mnist' was not found" in proc.stderr and str(empty) in proc.stderr
    line = "1:1" if where == "flag" else "5:5"  # the input line, or the `data` setting
    assert f"{model}:{line}: error:" in proc.stderr


def test_eval_refuses_weights_of_another_model(quickstart_run, tmp_path):
    out, _ = quickstart_run
    model = tmp_path / "other.cnn"
    model.write_text("input 8x8x1\nconv 8 3x3 relu\nflatten\ndense 10 softmax\n")
    proc = cnnc("eval", model, "--weights", out / "last.safetensors")
    assert_clean_failure(proc)
    assert "do not fit" in proc.stderr and "conv_1.weight" in proc.stderr
    proc = cnnc("eval", model, "--weights", tmp_path / "missing.safetensors")
    assert_clean_failure(proc)
    assert "does not exist" in proc.stderr
