"""Training memory: cnnc's prediction (cnnc/analysis/memory.py) beside what PyTorch really uses.

For each model and batch size, one training step of cnnc's torch backend on the CPU (contiguous
layout, SGD with momentum) runs in a fresh process, measured two ways:

- resident: the process's resident-memory high-water mark over the step (VmHWM, reset just
  before it through /proc/self/clear_refs), above the resident size before it, plus what the
  model held before the step (parameters, buffers, gradients, optimizer state). glibc is told to
  serve every block over 64 KiB straight from the kernel and to return it on free
  (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_), so resident memory follows what is live.
  This sees every allocation, oneDNN's own included. It is the figure compared.
- profiler: torch.profiler's memory events (profile_memory=True) over the step, on top of what
  the model held before it (the last gradients left out: the step frees them first, a free the
  profiler cannot record, and allocates them again). It misses what oneDNN allocates itself,
  so it can read low (AlexNet at batch 8: below its own parameters, gradients and momentum).

The prediction is made from the checked graph alone, before anything runs.

    python benchmarks/memory.py                 # the zoo and the examples, two batch sizes each
    python benchmarks/memory.py --models examples/zoo/resnet18.cnn --batches 4 16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DEFAULT = {"examples/zoo/resnet18.cnn": (2, 8), "examples/zoo/mobilenet_v2.cnn": (2, 8),
           "examples/zoo/alexnet.cnn": (2, 8), "examples/zoo/vgg16.cnn": (1, 4),
           "examples/zoo/efficientnet_b0.cnn": (2, 8),
           "examples/zoo/mobilenet_v3_large.cnn": (2, 8),
           "examples/zoo/convnext_tiny.cnn": (1, 4),
           "examples/fashion_cnn.cnn": (64, 256), "examples/fashion_bn.cnn": (64, 256),
           "examples/inception_block.cnn": (64, 256)}
ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def measure(path: str, batch: int) -> dict:
    """Run in the child: one warm-up step, then the measured one, both ways."""
    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity, profile

    import cnnc
    from cnnc.train.config import TrainConfig

    model = cnnc.compile(path)
    model.raise_for_errors()
    session = model.to_backend("torch", device="cpu", channels_last=False)
    session.configure_optimizer(TrainConfig(optimizer="sgd", lr=1e-3, momentum=0.9,
                                            batch_size=batch))
    rng = np.random.default_rng(0)
    x = rng.random((batch, *model.input_shape), dtype=np.float32)
    y = rng.integers(0, model.output_shape[0], batch)
    data = session.put(x, y)
    idx = np.arange(batch)
    float(session.train_step(data, idx)[0])  # the optimizer's state now exists

    def nbytes(t) -> int:
        return t.numel() * t.element_size()

    model_bytes = sum(nbytes(t) for t in session.module.state_dict().values())
    model_bytes += sum(nbytes(v) for st in session.optimizer.state.values()
                       for v in st.values() if torch.is_tensor(v) and v.dim())
    grads = sum(nbytes(p.grad) for p in session.module.parameters() if p.grad is not None)

    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark
    float(session.train_step(data, idx)[0])
    resident = model_bytes + grads + _status("VmHWM") - before

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        float(session.train_step(data, idx)[0])
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and str(e.device_type()).endswith("CPU"))
    now = peak = 0
    for _, n in events:
        now += n
        peak = max(peak, now)
    return {"resident": resident, "profiler": model_bytes + peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--batches", nargs="*", type=int)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]))))
        return
    import torch

    import cnnc
    from cnnc.analysis.memory import training
    from cnnc.analysis.summary import human_bytes

    cases = {m: tuple(args.batches) if args.batches else DEFAULT.get(m, (2, 8))
             for m in (args.models or DEFAULT)}
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, contiguous "
          f"layout, SGD with momentum; glibc {ENV}\n")
    print(f"{'model':<32} {'batch':>5} {'predicted':>11} {'resident':>11} {'ratio':>6} "
          f"{'profiler':>11}")
    worst = 0.0
    for path, batches in cases.items():
        model = cnnc.compile(str(ROOT / path))
        model.raise_for_errors()
        for batch in batches:
            predicted = training(model.graph, batch, "sgd", 0.9).total_bytes
            out = subprocess.run([sys.executable, __file__, "--child", str(ROOT / path),
                                  str(batch)], env={**os.environ, **ENV}, capture_output=True,
                                 text=True, check=True)
            got = json.loads(out.stdout.strip().splitlines()[-1])
            ratio = predicted / got["resident"]
            worst = max(worst, abs(ratio - 1))
            print(f"{path:<32} {batch:>5} {human_bytes(predicted):>11} "
                  f"{human_bytes(got['resident']):>11} {ratio:>6.3f} "
                  f"{human_bytes(got['profiler']):>11}", flush=True)
    print(f"\nlargest difference from the resident measurement: {worst:.1%}")


if __name__ == "__main__":
    main()
