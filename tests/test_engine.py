"""The training engine with a fake backend: batches, metrics, checkpoints, resume, NaN, Ctrl-C,
distributed sharding. Fast: the fake Session does arithmetic on a few numbers."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from cnnc.backends.base import Session
from cnnc.data import Dataset
from cnnc.diagnostics import CODES, CnncError
from cnnc.train import engine
from cnnc.train.checkpoint import load_safetensors
from cnnc.train.config import TrainConfig
from cnnc.train.engine import EPOCH_KEYS, epoch_permutation, rank_rows, read_metrics, split_indices, train
from cnnc.train.progress import PlainReporter, Reporter, epoch_line, make_reporter


class FakeSession(Session):
    """Weights move by a deterministic function of the rows each step sees, so two runs agree
    exactly when, and only when, they saw the same batches in the same order."""

    backend = "fake"

    def __init__(self, *, nan_at=None, interrupt_at=None):
        self.w = np.zeros(3, np.float32)
        self.steps = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.seen: list[tuple[int, list[int]]] = []  # (epoch, rows of the split)
        self.nan_at = nan_at  # (epoch, batch) whose loss is NaN
        self.interrupt_at = interrupt_at  # (epoch, batch) that raises KeyboardInterrupt
        self.lr = None

    def put(self, x, y):
        return (np.asarray(x), np.asarray(y))

    def configure_optimizer(self, config):
        self.lr = config.lr

    def set_lr(self, lr):
        self.lr = lr

    def begin_epoch(self, epoch):
        self.epoch, self.batch_in_epoch = epoch, 0

    def train_step(self, data, idx):
        self.batch_in_epoch += 1
        if self.interrupt_at == (self.epoch, self.batch_in_epoch):
            raise KeyboardInterrupt
        x, y = data
        self.seen.append((self.epoch, [int(i) for i in idx]))
        self.steps += 1
        self.w = (self.w * np.float32(0.9) + np.float32(x[idx].mean()) + np.float32(self.steps)
                  ).astype(np.float32)
        loss = 1.0 / (self.steps + 1)
        if self.nan_at == (self.epoch, self.batch_in_epoch):
            loss = float("nan")
        correct = int((y[idx] == 1).sum())
        return np.float32(loss), np.int64(correct)  # device-scalar-like, as a backend may

    def evaluate(self, data, batch_size=256):
        x, y = data
        return float(np.abs(self.w).sum() % 1.0), int((y == 1).sum())

    def predict(self, x, batch_size=256):
        return np.zeros((len(x), 2), np.float32)

    def get_weights(self):
        return {"dense_1.weight": self.w.copy()}

    def set_weights(self, tensors, source="weights"):
        self.w = np.array(tensors["dense_1.weight"], np.float32)

    def get_optimizer_state(self):
        return {"step": np.asarray(self.steps, np.int64)}

    def set_optimizer_state(self, state):
        self.steps = int(state["step"])


def fake_model(source="input 2x2x1\nflatten\ndense 2 softmax\n"):
    return SimpleNamespace(source=source, file="fake.cnn")


def fake_data(n=50, test=10):
    rng = np.random.default_rng(0)
    return Dataset("fake", rng.random((n, 2, 2, 1), dtype=np.float32),
                   (np.arange(n) % 2).astype(np.int64),
                   rng.random((test, 2, 2, 1), dtype=np.float32),
                   (np.arange(test) % 2).astype(np.int64), 2, "fake data")


CONFIG = TrainConfig(epochs=3, batch_size=8, val_split=0.2, seed=3)


# ---------------------------------------------------------------------------------------------
# Splits and batches


def test_split_is_deterministic_disjoint_and_complete():
    tr, va = split_indices(100, 0.1, 7)
    assert len(va) == 10 and len(tr) == 90
    assert set(tr).isdisjoint(va) and set(tr) | set(va) == set(range(100))
    tr2, va2 = split_indices(100, 0.1, 7)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert not np.array_equal(va, split_indices(100, 0.1, 8)[1])
    tr0, va0 = split_indices(100, 0.0, 7)
    assert len(va0) == 0 and np.array_equal(tr0, np.arange(100))
    assert len(split_indices(2, 0.01, 0)[1]) == 1 and len(split_indices(1, 0.5, 0)[0]) == 1


def test_epoch_order_depends_only_on_seed_and_epoch():
    a = epoch_permutation(30, 1, 4)
    assert np.array_equal(a, epoch_permutation(30, 1, 4))
    assert sorted(a) == list(range(30))
    assert not np.array_equal(a, epoch_permutation(30, 1, 5))
    assert not np.array_equal(a, epoch_permutation(30, 2, 4))


def test_rank_shards_are_disjoint_and_equal():
    perm = epoch_permutation(23, 0, 1)
    shards = [rank_rows(perm, r, 3) for r in range(3)]
    assert {len(s) for s in shards} == {7}
    assert sorted(np.concatenate(shards)) == sorted(perm[:21])
    assert np.array_equal(rank_rows(perm, 0, 1), perm)


# ---------------------------------------------------------------------------------------------
# A whole run


def test_run_writes_metrics_and_checkpoints(tmp_path):
    session = FakeSession()
    result = train(fake_model(), session, fake_data(), CONFIG, out_dir=tmp_path)
    assert not result.interrupted and result.completed_epoch == 3
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [tuple(r) for r in records[:3]] == [EPOCH_KEYS] * 3
    assert [r["epoch"] for r in records[:3]] == [1, 2, 3]
    test = records[-1]
    assert test["weights"] == "last" and test["test_images"] == 10
    assert {"test_loss", "test_accuracy"} <= set(test) and "epoch" not in test
    assert test == result.test
    # 40 training rows, batches of 8: 5 batches an epoch, each row once
    by_epoch = {}
    for e, rows in session.seen:
        by_epoch.setdefault(e, []).extend(rows)
    assert all(len(rows) == 40 and len(set(rows)) == 40 for rows in by_epoch.values())
    # the train loss is the mean of the per-batch losses weighted by batch size
    assert records[0]["train_loss"] == pytest.approx(np.mean([1 / (s + 1) for s in range(1, 6)]))
    assert records[0]["train_accuracy"] == pytest.approx(0.5, abs=0.15)
    w, meta = load_safetensors(tmp_path / "last.safetensors")
    assert meta["epoch"] == "3" and meta["backend"] == "fake" and meta["model_file"] == "fake.cnn"
    assert len(meta["model_sha256"]) == 64 and meta["cnnc_version"]
    assert w["dense_1.weight"].dtype == np.float32
    np.testing.assert_array_equal(w["dense_1.weight"], session.w)
    best_epoch = min(records[:3], key=lambda r: r["val_loss"])["epoch"]
    assert result.best_epoch == best_epoch
    assert load_safetensors(tmp_path / "best.safetensors")[1]["epoch"] == str(best_epoch)
    opt, smeta = load_safetensors(tmp_path / "state.safetensors")
    assert int(opt["optimizer.step"]) == 15 and smeta["next_epoch"] == "4"
    assert json.loads(smeta["config"])["batch_size"] == 8


def test_no_validation_judges_best_on_training_loss(tmp_path):
    result = train(fake_model(), FakeSession(), fake_data(),
                   CONFIG.merged(val_split=0.0), out_dir=tmp_path)
    records = read_metrics(tmp_path / "metrics.jsonl")[:3]
    assert all(r["val_loss"] is None and r["val_accuracy"] is None for r in records)
    assert result.best_key == "train_loss" and result.best_epoch == 3  # the loss keeps falling


def test_without_out_dir_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = train(fake_model(), FakeSession(), fake_data(), CONFIG)
    assert result.completed_epoch == 3 and result.test is not None
    assert list(tmp_path.iterdir()) == []


def test_resume_repeats_the_uninterrupted_batches(tmp_path):
    full = FakeSession()
    train(fake_model(), full, fake_data(), CONFIG.merged(epochs=4), out_dir=tmp_path / "a")
    part = FakeSession()
    train(fake_model(), part, fake_data(), CONFIG.merged(epochs=2), out_dir=tmp_path / "b")
    rest = FakeSession()
    result = train(fake_model(), rest, fake_data(), CONFIG.merged(epochs=4),
                   out_dir=tmp_path / "b", resume=True)
    assert result.first_epoch == 3
    assert part.seen + rest.seen == full.seen
    np.testing.assert_array_equal(rest.w, full.w)
    a = read_metrics(tmp_path / "a" / "metrics.jsonl")
    b = read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r.get("epoch") for r in b] == [1, 2, 3, 4, None]
    for ra, rb in zip(a, b):
        assert ra.get("train_loss") == rb.get("train_loss")
        assert ra.get("val_loss") == rb.get("val_loss")
    assert a[-1]["test_loss"] == b[-1]["test_loss"]


def test_resume_truncates_records_after_the_saved_epoch(tmp_path):
    train(fake_model(), FakeSession(), fake_data(), CONFIG.merged(epochs=2), out_dir=tmp_path)
    metrics = tmp_path / "metrics.jsonl"
    # a later epoch's record that never made it into the state
    metrics.write_text(metrics.read_text() + json.dumps({"epoch": 3, "train_loss": 9.0}) + "\n")
    train(fake_model(), FakeSession(), fake_data(), CONFIG.merged(epochs=3), out_dir=tmp_path,
          resume=True)
    records = read_metrics(metrics)
    assert [r.get("epoch") for r in records] == [1, 2, 3, None]
    assert records[2]["train_loss"] != 9.0


@pytest.mark.parametrize("damage", ["torn", "garbage", "not-utf8"])
def test_resume_refuses_damaged_metrics_and_leaves_them(tmp_path, damage):
    train(fake_model(), FakeSession(), fake_data(), CONFIG.merged(epochs=3), out_dir=tmp_path)
    metrics = tmp_path / "metrics.jsonl"
    lines = metrics.read_bytes().splitlines(keepends=True)
    bad = {"torn": b'{"epo', "garbage": b"garbage\n", "not-utf8": b"\xff\xfe\n"}[damage]
    damaged = b"".join(lines[:1] + [bad] + lines[1:])
    metrics.write_bytes(damaged)
    with pytest.raises(CnncError, match="line 2 is not a JSON record") as err:
        train(fake_model(), FakeSession(), fake_data(), CONFIG.merged(epochs=4),
              out_dir=tmp_path, resume=True)
    assert "move the file away" in err.value.hint
    assert metrics.read_bytes() == damaged  # nothing rewritten, nothing lost
    metrics.unlink()  # the hint's fix: the state holds every record
    train(fake_model(), FakeSession(), fake_data(), CONFIG.merged(epochs=4), out_dir=tmp_path,
          resume=True)
    assert [r.get("epoch") for r in read_metrics(metrics)] == [1, 2, 3, 4, None]


def test_resume_refuses_a_changed_model_or_missing_files(tmp_path):
    with pytest.raises(CnncError, match="cannot resume") as err:
        train(fake_model(), FakeSession(), fake_data(), CONFIG, out_dir=tmp_path, resume=True)
    assert "--out" in err.value.hint and "without --resume" in err.value.hint
    train(fake_model(), FakeSession(), fake_data(), CONFIG.merged(epochs=1), out_dir=tmp_path)
    with pytest.raises(CnncError, match="has changed") as err:
        train(fake_model("input 2x2x1\nflatten\ndense 2 softmax  # edited\n"), FakeSession(),
              fake_data(), CONFIG, out_dir=tmp_path, resume=True)
    assert err.value.hint
    with pytest.raises(CnncError, match="optimizer"):
        train(fake_model(), FakeSession(), fake_data(), CONFIG.merged(optimizer="sgd"),
              out_dir=tmp_path, resume=True)
    with pytest.raises(CnncError, match="--out"):
        train(fake_model(), FakeSession(), fake_data(), CONFIG, resume=True)


def test_resume_warns_about_changed_settings(tmp_path):
    train(fake_model(), FakeSession(), fake_data(), CONFIG.merged(epochs=1), out_dir=tmp_path)
    said = []
    session = FakeSession()
    train(fake_model(), session, fake_data(), CONFIG.merged(epochs=2, lr=0.5),
          out_dir=tmp_path, resume=True, log=said.append)
    assert any("lr" in s and "0.5" in s for s in said)
    assert session.lr == 0.5  # the new learning rate wins over the saved one


def test_resume_when_done_only_evaluates(tmp_path):
    train(fake_model(), FakeSession(), fake_data(), CONFIG.merged(epochs=2), out_dir=tmp_path)
    session = FakeSession()
    result = train(fake_model(), session, fake_data(), CONFIG.merged(epochs=2),
                   out_dir=tmp_path, resume=True)
    assert session.seen == [] and result.first_epoch == 3 and result.test is not None
    assert [r.get("epoch") for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, None]


def test_a_fresh_run_clears_an_old_one_only_when_told(tmp_path):
    train(fake_model(), FakeSession(), fake_data(), CONFIG.merged(epochs=2), out_dir=tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(CnncError, match="already holds a training run") as err:
        train(fake_model(), FakeSession(), fake_data(), CONFIG, out_dir=tmp_path)
    assert "--resume" in err.value.hint and "--overwrite" in err.value.hint
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    result = train(fake_model(), FakeSession(interrupt_at=(1, 2)), fake_data(), CONFIG,
                   out_dir=tmp_path, overwrite=True)
    assert result.interrupted and result.completed_epoch == 0
    assert not (tmp_path / "state.safetensors").exists()  # no stale run to resume by mistake
    assert read_metrics(tmp_path / "metrics.jsonl") == []


# ---------------------------------------------------------------------------------------------
# Divergence and Ctrl-C


def test_nan_loss_stops_with_epoch_and_batch(tmp_path):
    session = FakeSession(nan_at=(2, 3))
    with pytest.raises(CnncError) as err:
        train(fake_model(), session, fake_data(), CONFIG, out_dir=tmp_path)
    e = err.value
    assert e.code == "diverged" and "diverged" in CODES
    assert "epoch 2" in e.message and "batch 3" in e.message and "NaN" in e.message
    assert "learning rate" in e.hint
    assert any("last good epoch" in n for n in e.notes)
    assert load_safetensors(tmp_path / "last.safetensors")[1]["epoch"] == "1"
    assert load_safetensors(tmp_path / "state.safetensors")[1]["next_epoch"] == "2"
    assert [r["epoch"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1]


def test_ctrl_c_keeps_the_last_completed_epoch_and_resumes_exactly(tmp_path):
    full = FakeSession()
    train(fake_model(), full, fake_data(), CONFIG, out_dir=tmp_path / "full")
    cut = FakeSession(interrupt_at=(2, 3))
    result = train(fake_model(), cut, fake_data(), CONFIG, out_dir=tmp_path / "cut")
    assert result.interrupted and result.interrupted_epoch == 2 and result.completed_epoch == 1
    assert result.test is None
    assert load_safetensors(tmp_path / "cut" / "state.safetensors")[1]["next_epoch"] == "2"
    rest = FakeSession()
    train(fake_model(), rest, fake_data(), CONFIG, out_dir=tmp_path / "cut", resume=True)
    np.testing.assert_array_equal(rest.w, full.w)
    assert rest.seen == [s for s in full.seen if s[0] >= 2]


def test_sigint_is_held_while_files_are_written():
    events = []
    with pytest.raises(KeyboardInterrupt):
        with engine._hold_sigint():
            os.kill(os.getpid(), signal.SIGINT)
            events.append("after the signal")  # reached: the signal waited
    assert events == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ---------------------------------------------------------------------------------------------
# Distributed hooks


class RankSession(FakeSession):
    def __init__(self, rank, world, barrier, box):
        super().__init__()
        self.rank, self.world_size = rank, world
        self.barrier, self.box = barrier, box

    def all_reduce_sum(self, values):
        self.box[self.rank] = list(values)
        self.barrier.wait()
        total = [sum(v) for v in zip(*self.box.values())]
        self.barrier.wait()
        return total


def test_ranks_share_each_epoch_and_only_rank_0_writes(tmp_path):
    world, barrier, box = 2, threading.Barrier(2), {}
    sessions = [RankSession(r, world, barrier, box) for r in range(world)]
    reporters = [RecordingReporter() for _ in range(world)]
    results, errors = {}, []

    def run(rank):
        try:
            results[rank] = train(fake_model(), sessions[rank], fake_data(50), CONFIG,
                                  out_dir=tmp_path, reporter=reporters[rank])
        except BaseException as e:  # pragma: no cover - shown below
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    # epoch 1: the two ranks saw disjoint halves of the 40 training rows
    rows = [sorted(i for e, b in s.seen if e == 1 for i in b) for s in sessions]
    assert len(rows[0]) == len(rows[1]) == 20 and set(rows[0]).isdisjoint(rows[1])
    assert [b for e, b in sessions[0].seen if e == 1][0] == \
        list(epoch_permutation(40, CONFIG.seed, 1)[0:16:2])
    # metrics are summed over ranks: the same on both, counting all 40 images
    def figures(result):
        return [{k: r[k] for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")}
                for r in result.history]

    assert figures(results[0]) == figures(results[1])
    train_rows = split_indices(50, CONFIG.val_split, CONFIG.seed)[0]
    ones = sum(int(np.sum(train_rows[rows[r]] % 2 == 1)) for r in range(2))  # label = row % 2
    assert results[0].history[0]["train_accuracy"] * 40 == pytest.approx(ones)
    assert results[0].test["test_images"] == 10
    assert reporters[0].records and not reporters[1].records and not reporters[1].started
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 4


class RecordingReporter(Reporter):
    def __init__(self):
        self.started, self.records, self.batches = False, [], []

    def start(self, first_epoch, epochs, batches):
        self.started = True

    def batch(self, epoch, done, batches, stats):
        self.batches.append((epoch, done, batches))

    def epoch_end(self, record):
        self.records.append(record)


# ---------------------------------------------------------------------------------------------
# Progress output


def test_reporter_calls_and_plain_lines():
    rec = RecordingReporter()
    train(fake_model(), FakeSession(), fake_data(), CONFIG, reporter=rec)
    assert rec.batches[:5] == [(1, b, 5) for b in range(1, 6)]
    assert [r["epoch"] for r in rec.records] == [1, 2, 3]
    stream = io.StringIO()
    assert isinstance(make_reporter(stream), PlainReporter)
    rep = PlainReporter(stream)
    rep.start(1, 10, 5)
    rep.epoch_end({"epoch": 3, "train_loss": 0.12345, "train_accuracy": 0.965,
                   "val_loss": 0.2, "val_accuracy": 0.94, "seconds": 2.1,
                   "images_per_second": 1234.4})
    assert stream.getvalue() == ("epoch 3/10  train_loss 0.1235  train_acc 0.9650  "
                                 "val_loss 0.2000  val_acc 0.9400  1,234 img/s  2.1s\n")
    line = epoch_line({"epoch": 1, "train_loss": math.nan, "train_accuracy": 0.5,
                       "val_loss": None, "val_accuracy": None, "seconds": 75,
                       "images_per_second": 10}, 2)
    assert line == "epoch 1/2  train_loss nan  train_acc 0.5000  10 img/s  1m15s"


# ---------------------------------------------------------------------------------------------
# Learning-rate schedule


class RecordingSession(FakeSession):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.rates = []

    def train_step(self, data, idx):
        self.rates.append(self.lr)
        return super().train_step(data, idx)


def test_cosine_schedule_is_pytorchs_cosine_annealing():
    torch = pytest.importorskip("torch")
    config = TrainConfig(epochs=3, batch_size=8, val_split=0.2, seed=3, schedule="cosine", lr=0.1)
    session = RecordingSession()
    train(fake_model(), session, fake_data(), config)
    steps = len(session.rates)  # 40 training rows, batch 8: 5 steps an epoch
    assert steps == 15
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    expected = []
    for _ in range(steps):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(session.rates, expected, rtol=1e-12)
    assert session.rates[0] == 0.1 and session.rates[-1] < 0.01


def test_constant_schedule_never_touches_the_rate():
    session = RecordingSession()
    train(fake_model(), session, fake_data(), CONFIG)
    assert set(session.rates) == {CONFIG.lr}


def test_cosine_resume_continues_the_same_rates(tmp_path):
    config = TrainConfig(epochs=3, batch_size=8, val_split=0.2, seed=3, schedule="cosine")
    full = RecordingSession()
    train(fake_model(), full, fake_data(), config, out_dir=tmp_path / "full")
    cut = RecordingSession(interrupt_at=(2, 3))
    train(fake_model(), cut, fake_data(), config, out_dir=tmp_path / "cut")
    rest = RecordingSession()
    train(fake_model(), rest, fake_data(), config, out_dir=tmp_path / "cut", resume=True)
    assert rest.rates == full.rates[5:]  # epochs 2 and 3, rate for rate
    np.testing.assert_array_equal(rest.w, full.w)


def test_cosine_resume_with_more_epochs_warns(tmp_path):
    config = TrainConfig(epochs=2, batch_size=8, val_split=0.2, seed=3, schedule="cosine")
    train(fake_model(), FakeSession(), fake_data(), config, out_dir=tmp_path)
    warnings = []
    train(fake_model(), FakeSession(), fake_data(), config.merged(epochs=3), out_dir=tmp_path,
          resume=True, log=warnings.append)
    assert any("epochs 2 -> 3" in w for w in warnings), warnings


def test_ctrl_c_on_seeing_an_epoch_line_keeps_that_epoch(tmp_path):
    """A user who presses Ctrl-C on seeing "epoch 1/3 ..." gets epoch 1 saved: the line is
    printed inside the same held-back window as the files (it used to come just before it, and
    a Ctrl-C there said "no epoch was completed")."""
    import os
    import signal

    class CtrlCOnTheLine(RecordingReporter):
        def epoch_end(self, record):
            super().epoch_end(record)
            if len(self.records) == 1:
                os.kill(os.getpid(), signal.SIGINT)

    reporter = CtrlCOnTheLine()
    result = train(fake_model(), FakeSession(), fake_data(), CONFIG, out_dir=tmp_path,
                   reporter=reporter)
    assert result.interrupted and result.completed_epoch == 1
    assert [r["epoch"] for r in reporter.records] == [1]
    assert load_safetensors(tmp_path / "state.safetensors")[1]["next_epoch"] == "2"
    assert [r["epoch"] for r in engine.read_metrics(tmp_path / "metrics.jsonl")] == [1]


def test_ctrl_c_while_an_epoch_is_saved_counts_that_epoch(tmp_path, monkeypatch):
    """A Ctrl-C that arrives while epoch 1's files are written waits for them, and the run then
    knows epoch 1 is saved (it says so, and resume starts at epoch 2)."""
    import os
    import signal

    real = engine.write_metrics
    calls = []

    def interrupted_write(path, records, header=None):
        if not calls:
            os.kill(os.getpid(), signal.SIGINT)  # held back until the files are all written
        calls.append(path)
        real(path, records, header)

    monkeypatch.setattr(engine, "write_metrics", interrupted_write)
    result = train(fake_model(), FakeSession(), fake_data(), CONFIG, out_dir=tmp_path)
    assert result.interrupted and result.completed_epoch == 1
    assert load_safetensors(tmp_path / "state.safetensors")[1]["next_epoch"] == "2"
