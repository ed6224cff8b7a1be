"""SIGKILL a real `cnnc train` at random instants, resume it, and check that the result is exactly
the uninterrupted run's.

    python tools/kill_window.py --trials 50

Each trial starts `cnnc train` (a small model on the digits, a few short epochs, one file save
after each) and kills it with SIGKILL after a random delay, again and again on each resume,
until a run completes. After every kill the folder must be resumable (`--resume` when a state
was committed, a fresh start otherwise), and the finished folder must hold the uninterrupted
run's weights bit for bit and the same epoch records. SIGKILL cannot be caught: this checks the
commit protocol itself (one rename a epoch), not a signal handler.

tests/test_run_folder.py runs it with two trials; the in-process test there also kills at every
single rename of a save.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "input 8x8x1; conv 4 3 relu; pool 2; flatten; dense 10 softmax\n"
MAX_KILLS = 8  # per trial; then the run is left to finish
FLAGS = ["--data", "digits", "--limit", "400", "--batch-size", "16", "--seed", "3"]


def cnnc(args, cwd, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "cnnc", "train", "m.cnn", *FLAGS, *args],
                            cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kw)


def records(path: Path):
    from cnnc.train.engine import read_metrics

    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")}
            for r in read_metrics(path, strict=True)]


def same_run(a: Path, b: Path) -> str | None:
    """None when folder a holds exactly what folder b holds; else what differs."""
    import numpy as np

    from cnnc.train.checkpoint import load_safetensors

    for name in ("state.safetensors", "last.safetensors", "best.safetensors"):
        ta, ma = load_safetensors(a / name)
        tb, mb = load_safetensors(b / name)
        if ma.get("epoch") != mb.get("epoch"):
            return f"{name}: epoch {ma.get('epoch')} instead of {mb.get('epoch')}"
        if sorted(ta) != sorted(tb) or any(not np.array_equal(ta[k], tb[k]) for k in tb):
            return f"{name}: different tensors"
    if records(a / "metrics.jsonl") != records(b / "metrics.jsonl"):
        return "metrics.jsonl: different records"
    return None


def trial(folder: Path, epochs: int, span: float, rng: random.Random, reference: Path):
    """Kill and resume until the run completes; (kills, problem or None)."""
    out = folder / "run"
    kills = 0
    for attempt in range(MAX_KILLS + 1):
        resume = (out / "state.safetensors").exists()
        args = ["--epochs", str(epochs), "--out", "run"]
        args.append("--resume" if resume else "--overwrite")
        proc = cnnc(args, folder)
        try:
            # the last attempt runs to the end: on a loaded machine a run may take longer than
            # the reference did, and the check is what the kills left, not how many there were
            proc.wait(timeout=rng.uniform(0.0, span) if attempt < MAX_KILLS else None)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            continue
        err = proc.stderr.read()
        if proc.returncode != 0:
            return kills, f"exit {proc.returncode} after {kills} kills: {err.strip()[-500:]}"
        return kills, same_run(out, reference)
    return kills, "never completed"  # not reached: the last attempt is not killed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "m.cnn").write_text(MODEL)
        started = time.perf_counter()
        ref = cnnc(["--epochs", str(args.epochs), "--out", "ref"], base)
        if ref.wait() != 0:
            print(ref.stderr.read())
            return 1
        span = (time.perf_counter() - started) * 1.2  # kills land anywhere in a whole run
        total_kills, failures = 0, []
        for t in range(args.trials):
            folder = base / f"t{t}"
            folder.mkdir()
            shutil.copy(base / "m.cnn", folder / "m.cnn")
            kills, problem = trial(folder, args.epochs, span, rng, base / "ref")
            total_kills += kills
            if problem:
                failures.append((t, problem))
        print(f"{'trials':>8}{'SIGKILLs':>10}{'identical to uninterrupted':>28}{'failures':>10}")
        print(f"{args.trials:>8}{total_kills:>10}{args.trials - len(failures):>28}"
              f"{len(failures):>10}")
        for t, problem in failures:
            print(f"trial {t}: {problem}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
