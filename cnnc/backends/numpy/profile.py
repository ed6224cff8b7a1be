"""Per-layer times of the NumPy session's training step, for `cnnc bench` (cnnc/train/bench.py).

    with LayerProfiler(session) as prof:
        session.train_step(data, idx)            # the step `cnnc train` runs, unchanged
    prof.forward, prof.backward, prof.optimizer  # seconds, summed over the steps run inside

The graph runner (session.py) takes each layer's kernels from `session.steps`: (forward,
backward, fused activation). Inside the block every one of those functions is wrapped with a
clock, so a layer's time is its kernel's and its fused activation's, forward and backward; the
optimizer's `step` likewise. What remains of a step (the loss, summing the gradients of tensors
read twice, the runner's own bookkeeping) is left for cnnc bench to report as unattributed.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np

_RATE: dict = {}


def matmul_rate() -> float:
    """FLOP/s of a 1024 x 1024 float32 matmul with NumPy's BLAS (what the conv and dense
    kernels run on): the best of five timings, measured once per process."""
    if "fp32" not in _RATE:
        n = 1024
        rng = np.random.default_rng(0)
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        a @ b
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        _RATE["fp32"] = 2.0 * n ** 3 / max(best, 1e-12)
    return _RATE["fp32"]


class LayerProfiler:
    def __init__(self, session):
        self.session = session
        self.forward: dict[str, float] = defaultdict(float)
        self.backward: dict[str, float] = defaultdict(float)
        self.optimizer = 0.0
        self.eager_for_compile = False
        self._saved = None

    def sync(self) -> None:  # NumPy returns when the work is done
        return None

    def _timed(self, fn, table: dict, name: str):
        def timed(*args, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                table[name] += time.perf_counter() - t0
        return timed

    def __enter__(self):
        steps = self.session.steps
        self._saved = dict(steps)
        for name, (fwd, bwd, fused) in self._saved.items():
            if fused is not None:
                act_f, act_b, params = fused
                fused = (self._timed(act_f, self.forward, name),
                         self._timed(act_b, self.backward, name), params)
            steps[name] = (self._timed(fwd, self.forward, name),
                           self._timed(bwd, self.backward, name), fused)
        opt = self.session.optimizer
        step = opt.step

        def timed_step(*args, **kw):
            t0 = time.perf_counter()
            try:
                return step(*args, **kw)
            finally:
                self.optimizer += time.perf_counter() - t0

        opt.step = timed_step  # this instance only
        return self

    def __exit__(self, *exc):
        self.session.steps.update(self._saved)
        self.session.optimizer.__dict__.pop("step", None)
        return False
