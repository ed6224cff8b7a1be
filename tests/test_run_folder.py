"""A run's folder under stress: a kill between any two file operations of a save, SIGTERM and
SIGHUP, two trainings into one folder, a folder that holds a run, damaged state, divergence.
What must hold: the folder always resumes to the exact result of an uninterrupted run, and
nothing a user had is lost without an explicit flag (issue 12)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_engine import CONFIG, FakeSession, fake_data, fake_model

from cnnc.diagnostics import CnncError
from cnnc.train import checkpoint, engine
from cnnc.train.checkpoint import load_safetensors, save_safetensors
from cnnc.train.engine import read_metrics, train
from cnnc.train.rundir import RUN_FILES, check_out_dir, locked

ROOT = Path(__file__).resolve().parents[1]


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (not even `except Exception`)."""


def _files(folder: Path) -> dict[str, bytes]:
    """The run's files: checkpoints and metrics (run.json and curves.svg describe the latest
    command, and are rewritten by each)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if p.is_file() and p.name in RUN_FILES}


def _run_to_end(out: Path, epochs: int, resume: bool):
    session = FakeSession()
    result = train(fake_model(), session, fake_data(), CONFIG.merged(epochs=epochs), out_dir=out,
                   resume=resume)
    return result, session


def test_a_kill_between_any_two_file_operations_resumes_exactly(tmp_path, monkeypatch):
    """Every rename of a save (state, last, best, metrics) and every write before it is a place a
    SIGKILL can land; after each, a resume must reach the uninterrupted run's files."""
    _run_to_end(tmp_path / "ref", 4, False)
    reference = _files(tmp_path / "ref")
    real_replace = os.replace
    # how many renames a 4-epoch run makes, so that every one of them is tried
    calls = []
    monkeypatch.setattr(checkpoint.os, "replace", lambda a, b: (calls.append(b),
                                                                real_replace(a, b))[1])
    _run_to_end(tmp_path / "count", 4, False)
    renames = len(calls)
    assert renames >= 4 * 3
    for kill_at in range(renames):
        out = tmp_path / f"k{kill_at}"
        count = [0]

        def replace(a, b, count=count, kill_at=kill_at):
            if count[0] == kill_at:
                raise Killed
            count[0] += 1
            real_replace(a, b)

        monkeypatch.setattr(checkpoint.os, "replace", replace)
        with pytest.raises(Killed):
            _run_to_end(out, 4, False)
        monkeypatch.setattr(checkpoint.os, "replace", real_replace)
        resume = (out / "state.safetensors").exists()
        if not resume:  # killed before the first commit: nothing was a run yet
            assert not (out / "last.safetensors").exists()
        _run_to_end(out, 4, resume)
        got = _files(out)
        assert got.keys() == reference.keys(), kill_at
        for name in got:
            if name.endswith(".safetensors"):
                a, am = load_safetensors(out / name)
                b, bm = load_safetensors(tmp_path / "ref" / name)
                assert am["epoch"] == bm["epoch"], (kill_at, name)
                assert all(np.array_equal(a[k], b[k]) for k in b), (kill_at, name)
            else:
                ra = [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")}
                      for r in read_metrics(out / name)]
                rb = [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")}
                      for r in read_metrics(tmp_path / "ref" / name)]
                assert ra == rb, kill_at


def test_resume_repairs_copies_an_epoch_behind_the_commit(tmp_path):
    _run_to_end(tmp_path, 2, False)
    old_last = (tmp_path / "last.safetensors").read_bytes()
    _run_to_end(tmp_path, 3, True)
    # a kill right after the commit of epoch 3: last.safetensors still holds epoch 2
    (tmp_path / "last.safetensors").write_bytes(old_last)
    result, _ = _run_to_end(tmp_path, 3, True)
    assert result.completed_epoch == 3
    assert load_safetensors(tmp_path / "last.safetensors")[1]["epoch"] == "3"


def _edit_state(folder: Path, **meta):
    tensors, old = load_safetensors(folder / "state.safetensors")
    new = {**old, **meta}
    new = {k: v for k, v in new.items() if v is not None}
    save_safetensors(folder / "state.safetensors", tensors, new)


@pytest.mark.parametrize("edit, words", [
    ({"next_epoch": "abc"}, "next_epoch is 'abc'"),
    ({"next_epoch": "0"}, "next_epoch is '0'"),
    ({"config": "not json"}, "config is not a JSON dict"),
    ({"history": "[1, 2"}, "history is not a JSON list"),
    ({"history": "[]"}, "history does not hold every epoch"),
    ({"best_metric": "nan"}, "best_metric is 'nan'"),
    ({"best_epoch": "-1"}, "best_epoch is '-1'"),
    ({"params": "5"}, "params is not a JSON dict"),  # these two found by fuzzing
    ({"params": "{"}, "params is not a JSON dict"),
])
def test_edited_state_metadata_is_a_clear_error(tmp_path, edit, words):
    _run_to_end(tmp_path, 2, False)
    _edit_state(tmp_path, **edit)
    with pytest.raises(CnncError, match="cannot resume") as err:
        _run_to_end(tmp_path, 3, True)
    assert words in err.value.message


def test_empty_optimizer_state_is_refused(tmp_path):
    _run_to_end(tmp_path, 2, False)
    tensors, meta = load_safetensors(tmp_path / "state.safetensors")
    save_safetensors(tmp_path / "state.safetensors",
                     {k: v for k, v in tensors.items() if not k.startswith("optimizer.")}, meta)
    with pytest.raises(CnncError, match="holds no optimizer state"):
        _run_to_end(tmp_path, 3, True)


def test_a_metrics_folder_is_an_error_not_a_crash(tmp_path):
    _run_to_end(tmp_path, 2, False)
    (tmp_path / "metrics.jsonl").unlink()
    (tmp_path / "metrics.jsonl").mkdir()
    with pytest.raises(CnncError, match="cannot read"):
        _run_to_end(tmp_path, 3, True)


# ---------------------------------------------------------------------------------------------
# The folder: checks and the lock


def test_out_dir_checks(tmp_path):
    (tmp_path / "file").write_text("x")
    for out, words in [("", "needs a folder name"), (str(tmp_path / "file"), "is a file"),
                       (str(tmp_path / "file" / "sub"), "is a file"),
                       ("/dev/null", "is a file")]:
        with pytest.raises(CnncError, match=words):
            check_out_dir(out)
    check_out_dir(str(tmp_path / "new" / "run"))  # created, writable
    assert (tmp_path / "new" / "run").is_dir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_out_dir_fails_before_training(tmp_path):
    _run_to_end(tmp_path / "run", 1, False)
    os.chmod(tmp_path / "run", 0o555)
    try:
        with pytest.raises(CnncError, match="cannot write"):
            check_out_dir(str(tmp_path / "run"), resume=True)
    finally:
        os.chmod(tmp_path / "run", 0o755)


def test_a_folder_in_use_is_locked(tmp_path):
    with locked(tmp_path):
        with locked(tmp_path):  # the same process may nest
            pass
        code = ("import sys; from cnnc.train.rundir import locked\n"
                "from cnnc.diagnostics import CnncError\n"
                "try:\n    with locked(sys.argv[1]): print('got it')\n"
                "except CnncError as e: print(e.message)\n")
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                              text=True, cwd=ROOT, timeout=600,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert proc.stdout.strip() == f"{tmp_path} is in use by another training (process " \
                                      f"{os.getpid()})"
    with locked(tmp_path):  # released
        pass


def _cli(*args, cwd, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "cnnc", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


MODEL = "input 8x8x1; conv 4 3 relu; flatten; dense 10\n"


def test_cli_refuses_a_second_training_and_an_existing_run(tmp_path):
    (tmp_path / "m.cnn").write_text(MODEL)
    args = ["train", "m.cnn", "--data", "digits", "--limit", "200", "--out", "run"]
    with locked(tmp_path / "run"):
        proc = _cli(*args, "--epochs", "1", cwd=tmp_path)
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 1 and "is in use by another training" in err, err
    proc = _cli(*args, "--epochs", "1", cwd=tmp_path)
    assert proc.wait(timeout=600) == 0
    before = _files(tmp_path / "run")
    proc = _cli(*args, "--epochs", "1", cwd=tmp_path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1 and "already holds a training run" in err
    assert "--overwrite" in err and _files(tmp_path / "run") == before
    proc = _cli(*args, "--epochs", "1", "--overwrite", cwd=tmp_path)
    assert proc.wait(timeout=600) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_like_ctrl_c(tmp_path, sig):
    (tmp_path / "m.cnn").write_text(MODEL)
    proc = _cli("train", "m.cnn", "--data", "digits", "--epochs", "1000", "--out", "run",
                "--batch-size", "8", cwd=tmp_path)
    deadline = time.monotonic() + 600
    while not (tmp_path / "run" / "state.safetensors").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err and "--resume" in err
    meta = load_safetensors(tmp_path / "run" / "state.safetensors")[1]
    done = int(meta["next_epoch"]) - 1
    assert load_safetensors(tmp_path / "run" / "last.safetensors")[1]["epoch"] == str(done)
    assert len(read_metrics(tmp_path / "run" / "metrics.jsonl")) == done


# ---------------------------------------------------------------------------------------------
# Divergence


class Exploding(FakeSession):
    """A loss that grows 10x a batch from the start of epoch `at`."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def train_step(self, data, idx):
        loss, correct = super().train_step(data, idx)
        if self.epoch >= self.at:
            return np.float32(10.0 ** self.batch_in_epoch), correct
        return loss, correct


def test_a_loss_far_beyond_its_start_is_divergence_and_keeps_the_good_epoch(tmp_path):
    train(fake_model(), FakeSession(), fake_data(), CONFIG.merged(epochs=2), out_dir=tmp_path)
    good = _files(tmp_path)
    with pytest.raises(engine.Diverged) as err:
        train(fake_model(), Exploding(at=3), fake_data(), CONFIG.merged(epochs=4),
              out_dir=tmp_path, resume=True)
    assert err.value.code == "diverged"
    assert "in epoch 3, batch 4 of 5" in err.value.message  # 1e4 > 1000 x max(first, 1)
    assert any("the rule" in n for n in err.value.notes)
    assert _files(tmp_path) == good  # the good checkpoint is untouched


def test_a_loss_that_stays_within_the_rule_is_not_divergence(tmp_path):
    class Noisy(FakeSession):
        def train_step(self, data, idx):
            loss, correct = super().train_step(data, idx)
            return np.float32(900.0 if self.batch_in_epoch == 2 else 1.0), correct

    result = train(fake_model(), Noisy(), fake_data(), CONFIG.merged(epochs=2))
    assert result.completed_epoch == 2


def test_cli_resume_with_a_huge_learning_rate_keeps_the_good_weights(tmp_path):
    (tmp_path / "m.cnn").write_text(MODEL)
    args = ["train", "m.cnn", "--data", "digits", "--limit", "300", "--out", "run"]
    assert _cli(*args, "--epochs", "2", cwd=tmp_path).wait(timeout=600) == 0
    good = _files(tmp_path / "run")
    proc = _cli(*args, "--epochs", "4", "--resume", "--lr", "1e6", cwd=tmp_path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1 and "[diverged]" in err and "Traceback" not in err, err
    assert _files(tmp_path / "run") == good


def test_torch_batchnorm_trains_one_value_per_channel_like_numpy():
    pytest.importorskip("torch")
    import cnnc
    from cnnc.train.config import TrainConfig

    model = cnnc.compile("input 4x4x2; conv 3 3 pad=same; gap keepdims=true; bn; flatten; "
                         "dense 3 softmax")
    x = np.random.default_rng(0).random((1, 4, 4, 2), dtype=np.float32)
    y = np.array([1])
    sessions = [model.to_backend("numpy", seed=0), model.to_backend("torch", seed=0,
                                                                    device="cpu")]
    for s in sessions:
        s.configure_optimizer(TrainConfig(optimizer="sgd", lr=0.1))
        data = s.put(x, y)
        for _ in range(3):
            s.train_step(data, np.array([0]))
    a, b = (s.get_weights() for s in sessions)
    # float32 rounding of three SGD steps on values of order 1: measured differences are
    # 3e-8 at most; 1e-6 is 30 float32 ulps of 1.
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-6
    assert np.isfinite(b["batchnorm_1.running_var"]).all()


def test_kill_window_script_reduced():
    """tools/kill_window.py (SIGKILL at random instants, resume, compare with an uninterrupted
    run) in a reduced form: one trial of two epochs."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "kill_window.py"), "--trials",
                           "1", "--epochs", "2", "--seed", "1"], capture_output=True, text=True,
                          timeout=900, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split("\n")[1].split()[-1] == "0"  # no failures


def test_resume_reads_a_state_written_before_it_held_the_weights(tmp_path):
    """Folders written by earlier versions: the state has no weights and no records; the
    weights come from last.safetensors and the records from metrics.jsonl."""
    _run_to_end(tmp_path / "ref", 3, False)
    _run_to_end(tmp_path / "old", 2, False)
    tensors, meta = load_safetensors(tmp_path / "old" / "state.safetensors")
    save_safetensors(tmp_path / "old" / "state.safetensors",
                     {k: v for k, v in tensors.items() if not k.startswith("weights.")},
                     {k: v for k, v in meta.items() if k not in ("history", "reference_loss")})
    _run_to_end(tmp_path / "old", 3, True)
    a, _ = load_safetensors(tmp_path / "old" / "last.safetensors")
    b, _ = load_safetensors(tmp_path / "ref" / "last.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in b)
