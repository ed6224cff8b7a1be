"""`cnnc bench`: how fast the training step of `cnnc train` runs here, and where its time goes.

    result = bench(model, session, config, steps=10, warmup=2)
    result.to_json()

The session is the one `cnnc train` builds (same backend, device, precision, layout choice);
the step is its `train_step`, on random data of the model's input shape gathered by index as
the training engine gathers batches. Three phases:

1. warm-up steps, untimed: the torch session chooses its memory layout (by timing both) and
   compiles at its first step; caches and allocators fill;
2. timed steps, nothing attached: `train_images_per_second` is the figure a training gets;
3. profiled steps: the same steps with a clock around every layer's forward and backward and
   the optimizer (cnnc/backends/<backend>/profile.py); the layers' sum is compared with the
   profiled step and the rest is reported as unattributed, not spread over the layers.

FLOPs are counted per layer and direction from the layer's multiply-accumulates (cnnc summary's
MACs: conv, dense, transposed conv): forward 2 x MACs per image; backward 2 x MACs for the weight
gradient plus 2 x MACs for the input gradient when one is computed (not for a layer whose inputs
depend on no parameter, such as the first conv: nothing upstream needs that gradient). A step is
thus at most 6 x MACs per image. Other layers (pooling, normalisation, activations) do work that
is not counted as FLOPs, as in the usual model-FLOPs utilisation. The achieved rate is compared
with the measured matmul rate of the precision the step computes in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..diagnostics import CnncError


@dataclass
class LayerTime:
    name: str
    op: str
    macs: int  # per image, forward
    forward_s: float | None  # per step
    backward_s: float | None
    forward_flops: int  # per image
    backward_flops: int

    def total_s(self) -> float:
        return (self.forward_s or 0.0) + (self.backward_s or 0.0)


@dataclass
class BenchResult:
    model: str
    backend: str
    device: str
    layout: str | None
    precision: str
    precision_note: str
    batch: int
    steps: int
    warmup: int
    optimizer: str
    step_s: float  # the timed steps' mean, nothing attached
    matmul_peak: float | None  # FLOP/s of the precision in use
    matmul_peaks: dict = field(default_factory=dict)
    layers: list[LayerTime] = field(default_factory=list)
    profiled_step_s: float | None = None
    optimizer_s: float | None = None
    compiled: bool = False
    threads: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.batch / max(self.step_s, 1e-12)

    @property
    def flops_per_image(self) -> int:
        return sum(l.forward_flops + l.backward_flops for l in self.layers)

    @property
    def flops_per_second(self) -> float:
        return self.flops_per_image * self.images_per_second

    @property
    def layers_s(self) -> float | None:
        if self.profiled_step_s is None:
            return None
        return sum(l.total_s() for l in self.layers)

    @property
    def unattributed_s(self) -> float | None:
        if self.profiled_step_s is None:
            return None
        return self.profiled_step_s - self.layers_s - (self.optimizer_s or 0.0)

    def share(self, seconds: float | None) -> float | None:
        if seconds is None or not self.profiled_step_s:
            return None
        return seconds / self.profiled_step_s

    def layer_rate(self, flops: int, seconds: float | None) -> float | None:
        """FLOP/s of a layer's pass over the batch; None for a layer without counted FLOPs."""
        if not flops or not seconds:
            return None
        return flops * self.batch / seconds

    def to_json(self) -> dict:
        def ms(seconds):
            return None if seconds is None else seconds * 1e3

        peak = self.matmul_peak
        return {
            "model": self.model,
            "backend": self.backend,
            "device": self.device,
            "layout": self.layout,
            "precision": self.precision,
            "precision_note": self.precision_note,
            "compiled": self.compiled,
            "threads": self.threads,
            "batch": self.batch,
            "steps": self.steps,
            "warmup": self.warmup,
            "optimizer": self.optimizer,
            "step_ms": ms(self.step_s),
            "train_images_per_second": self.images_per_second,
            "flops_per_image": {"forward": sum(l.forward_flops for l in self.layers),
                                "backward": sum(l.backward_flops for l in self.layers)},
            "train_flops_per_second": self.flops_per_second,
            "matmul_peak_flops_per_second": peak,
            "matmul_peaks": dict(self.matmul_peaks),
            "peak_fraction": (self.flops_per_second / peak) if peak else None,
            "profile": {
                "step_ms": ms(self.profiled_step_s),
                "layers_ms": ms(self.layers_s),
                "optimizer_ms": ms(self.optimizer_s),
                "unattributed_ms": ms(self.unattributed_s),
            },
            "layers": [{
                "name": l.name, "op": l.op, "macs": l.macs,
                "forward_ms": ms(l.forward_s), "backward_ms": ms(l.backward_s),
                "share": self.share(l.total_s() if l.forward_s is not None else None),
                "forward_flops_per_second": self.layer_rate(l.forward_flops, l.forward_s),
                "backward_flops_per_second": self.layer_rate(l.backward_flops, l.backward_s),
                "flops_per_second": self.layer_rate(l.forward_flops + l.backward_flops,
                                                    l.total_s() or None),
            } for l in self.layers],
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------------------------


def counted_flops(graph) -> dict[str, tuple[int, int]]:
    """{layer: (forward FLOPs, backward FLOPs)} per image, by the convention above."""
    needs_grad: dict[str, bool] = {}  # whether the layer's output depends on a parameter
    out = {}
    for layer in graph.layers():
        if layer.op == "input":
            needs_grad[layer.name] = False
            continue
        upstream = any(needs_grad[n] for n in layer.inputs)
        needs_grad[layer.name] = upstream or bool(layer.params)
        macs = int(layer.macs or 0)
        out[layer.name] = (2 * macs, 2 * macs * (2 if upstream else 1))
    return out


def random_data(model, plan, batch: int, seed: int = 0):
    """Images of the model's input shape (uniform in [0, 1), as the loaders scale them) and
    labels the model's loss takes: two batches' worth, so steps gather different rows."""
    rng = np.random.default_rng([seed, 0xBE4C])
    n = 2 * batch
    x = rng.random((n, *model.input_shape), dtype=np.float32)
    classes = int(getattr(plan, "classes", 0) or model.output_shape[0])
    y = rng.integers(0, 2 if classes == 1 else classes, n)
    return x, y


def _profiler(session):
    backend = getattr(session, "backend", None)
    if backend == "torch":
        from ..backends.torch.profile import LayerProfiler
    elif backend == "numpy":
        from ..backends.numpy.profile import LayerProfiler
    else:
        return None
    return LayerProfiler(session)


def _peaks(session, precision: str) -> dict[str, float]:
    backend = getattr(session, "backend", None)
    if backend == "torch":
        from ..backends.torch.probe import matmul_rates

        return matmul_rates(session.device)
    if backend == "numpy":
        from ..backends.numpy.profile import matmul_rate

        return {"fp32": matmul_rate()}
    return {}


def _read(pending) -> None:
    """Read the losses back: on a GPU, waits for the steps to finish (as the engine does)."""
    for loss, correct in pending:
        float(loss)
        int(correct)
    pending.clear()


def bench(model, session, config, *, steps: int = 10, warmup: int = 2, seed: int = 0,
          progress=None) -> BenchResult:
    """Time `session`'s training step (see the module's docstring). `progress(text)`, when
    given, is told what is being measured."""
    if steps < 1 or warmup < 0:
        raise CnncError("--steps must be at least 1 and --warmup at least 0", code="usage")
    say = progress or (lambda text: None)
    batch = config.batch_size
    plan = getattr(session, "plan", None)
    x, y = random_data(model, plan, batch, seed)
    session.configure_optimizer(config)
    data = session.put(x, y)
    rng = np.random.default_rng([seed, 0x57E9])
    n = len(x)

    def rows():
        return np.sort(rng.permutation(n)[:batch])

    begin = getattr(session, "begin_epoch", None)
    if callable(begin):
        begin(1)
    pending: list = []
    # 1. warm-up (at least one step: the torch session chooses its layout at its first)
    say(f"warming up ({max(warmup, 1)} step{'s' * (max(warmup, 1) != 1)})")
    for _ in range(max(warmup, 1)):
        pending.append(session.train_step(data, rows()))
    _read(pending)

    # 2. the timed steps, as a training runs them
    say(f"timing {steps} step{'s' * (steps != 1)}")
    t0 = time.perf_counter()
    for _ in range(steps):
        pending.append(session.train_step(data, rows()))
    _read(pending)
    step_s = (time.perf_counter() - t0) / steps

    # 3. the profiled steps
    flops = counted_flops(model.graph)
    layers = [l for l in model.graph.layers() if l.op != "input"]
    profiler = _profiler(session)
    profiled = optimizer_s = None
    if profiler is not None:
        say(f"profiling {steps} step{'s' * (steps != 1)} layer by layer")
        with profiler:
            total = 0.0
            for _ in range(steps):
                profiler.sync()
                t1 = time.perf_counter()
                pending.append(session.train_step(data, rows()))
                _read(pending)
                profiler.sync()
                total += time.perf_counter() - t1
        profiled = total / steps
        optimizer_s = profiler.optimizer / steps
    timed = [LayerTime(
        l.name, l.op, int(l.macs or 0),
        profiler.forward.get(l.name, 0.0) / steps if profiler else None,
        profiler.backward.get(l.name, 0.0) / steps if profiler else None,
        *flops[l.name]) for l in layers]

    backend = str(getattr(session, "backend", "?"))
    precision = str(getattr(session, "precision", "fp32"))
    peaks = _peaks(session, precision)
    device = getattr(session, "device", "cpu")
    result = BenchResult(
        model=model.name, backend=backend, device=str(device),
        layout=getattr(session, "layout", None) or ("NCHW" if backend == "numpy" else None),
        precision=precision,
        precision_note=str(getattr(session, "precision_note", "") or precision),
        batch=batch, steps=steps, warmup=max(warmup, 1), optimizer=config.optimizer,
        step_s=step_s, matmul_peak=peaks.get(precision), matmul_peaks=peaks, layers=timed,
        profiled_step_s=profiled, optimizer_s=optimizer_s,
        compiled=bool(getattr(session, "compile", False)))
    if result.backend == "torch":
        import torch

        result.threads = torch.get_num_threads()
    if profiler is not None and profiler.eager_for_compile:
        result.notes.append("torch.compile fuses across layers: the per-layer times are of the "
                            "same step run eagerly; the images per second are the compiled "
                            "step's")
    moved = getattr(getattr(session, "module", None), "moved_activations", None) or {}
    if moved:  # cnnc/ir/commute.py: the rows of these ReLUs time them on the pooled values
        graph = model.graph

        def what(src):  # `relu_1`, or `conv_1's relu` for a fused one
            layer = graph[src]
            return f"{src}'s {layer.activation}" if layer.fused_activation else src

        pairs = ", ".join(f"{what(src)} after {pool}" for pool, src in moved.items())
        result.notes.append("ReLU runs after the max pool that reads it (they commute: the "
                            f"same result from a quarter of the values for 2x2 windows): {pairs}")
    if profiler is None:
        result.notes.append(f"the {result.backend} backend has no per-layer profiler: only the "
                            "whole step is timed")
    return result
