"""Distributed training with the torch backend: `torchrun --nproc_per_node=2` on CPU (gloo).

    python -m torch.distributed.run --nproc_per_node=2 -m cnnc train examples/quickstart.cnn \\
        --backend torch --epochs 2 --out DIR

Each rank trains on its share of every epoch's batches; DistributedDataParallel averages the
gradients, so the weights stay identical on every rank; metrics are summed across ranks and
only rank 0 prints and writes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():  # pragma: no cover
    pytest.skip("this PyTorch has no torch.distributed", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], tmp_path, nproc: int = 2, timeout: int = 240):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                        "LOCAL_WORLD_SIZE", "GROUP_RANK", "TORCHELASTIC_RUN_ID")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"  # two processes on a small machine
    env["NO_COLOR"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_cnnc_train_under_torchrun(tmp_path):
    out = tmp_path / "run"
    proc = torchrun(["-m", "cnnc", "train", str(ROOT / "examples/quickstart.cnn"),
                     "--backend", "torch", "--device", "cpu", "--epochs", "2",
                     "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # one set of output: rank 0 alone prints and writes
    assert proc.stdout.count("epoch 1/2") == 1, proc.stdout
    assert proc.stdout.count("epoch 2/2") == 1, proc.stdout
    assert proc.stdout.count("test_accuracy") == 1, proc.stdout
    assert "batch 32 per process x 2 processes" in proc.stdout  # the header says how it runs
    assert sorted(p.name for p in out.iterdir()) == [
        "best.safetensors", "curves.svg", "last.safetensors", "metrics.jsonl", "model.cnn",
        "run.json", "state.safetensors"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert list(records.pop(0)) == ["header"]
    assert [r.get("epoch") for r in records[:2]] == [1, 2] and len(records) == 3
    assert records[1]["train_loss"] < records[0]["train_loss"]
    assert records[-1]["test_accuracy"] > 0.9  # 8x8 digits after two epochs
    assert records[-1]["test_images"] == 359  # the test split, summed over both ranks

    # the weights load into a single-process session and score the same
    proc = subprocess.run([sys.executable, "-m", "cnnc", "eval",
                           str(ROOT / "examples/quickstart.cnn"), "--weights",
                           str(out / "last.safetensors"), "--backend", "numpy", "--json"],
                          cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accuracy"] == pytest.approx(records[-1]["test_accuracy"],
                                                                abs=1 / 359)


SCRIPT = textwrap.dedent("""
    import hashlib, json, os, sys
    import numpy as np
    import cnnc
    from cnnc.data import load_dataset
    from cnnc.train.config import TrainConfig

    model = cnnc.compile(sys.argv[1])
    session = model.to_backend("torch", seed=0, device="cpu")
    assert session.world_size == 2, session.world_size
    ds = load_dataset("digits")
    session.configure_optimizer(TrainConfig(optimizer="adam", lr=1e-2, batch_size=32))
    data = session.put(ds.train_x, ds.train_y)
    rows = np.random.default_rng(0).permutation(len(ds.train_x))
    rows = rows[:len(rows) - len(rows) % 2][session.rank::2]
    for i in range(0, len(rows) - 31, 32):
        session.train_step(data, rows[i:i + 32])
    digest = hashlib.sha256()
    params = {n for n, _ in session.module.named_parameters()}
    for k, v in session.get_weights().items():
        if k in params:
            digest.update(k.encode()); digest.update(np.ascontiguousarray(v).tobytes())
    sums = session.all_reduce_sum([session.rank + 1.0, 10.0])
    with open(f"rank{session.rank}.json", "w") as f:
        json.dump({"rank": session.rank, "layout": session.layout,
                   "weights": digest.hexdigest(), "sums": sums}, f)
""")


def test_session_under_torchrun_keeps_ranks_in_step(tmp_path):
    """DDP keeps the parameters identical on every rank; all_reduce_sum sums.

    (Batchnorm's running statistics are rank 0's at every forward -- DDP broadcasts buffers --
    and then move with each rank's own batch, so after the last step they may differ; rank 0's
    are the ones saved.)"""
    script = tmp_path / "ddp_session.py"
    script.write_text(SCRIPT)
    model = tmp_path / "m.cnn"
    model.write_text("input 8x8x1\nconv 8 3x3 pad=same bias=false; bn; relu\npool 2\n"
                     "flatten\ndense 10 softmax\n")
    proc = torchrun([str(script), str(model)], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(r["rank"] for r in lines) == [0, 1]
    assert lines[0]["weights"] == lines[1]["weights"]
    assert lines[0]["layout"] == lines[1]["layout"]  # rank 0's timing decides for all
    assert all(r["sums"] == [3.0, 20.0] for r in lines)
