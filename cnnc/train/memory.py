"""The memory guard: refuse a run whose memory need exceeds what there is, before anything is
allocated.

The need is cnnc/analysis/memory.py's estimate, the one `cnnc summary --batch N --optimizer ...`
prints (within 5% of a real training step, benchmarks/memory.py): for training, the parameters
and buffers, a gradient a parameter, the optimizer's state, the activations autograd keeps for
the batch and the gradient buffers of the backward pass; for evaluation, the parameters and the
peak of the outputs alive at once for the batch. The limit is the memory this machine has
available now, or --max-memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..diagnostics import CnncError
from ..memory import available_bytes, human_bytes


@dataclass
class Need:
    total: int  # bytes
    parts: list  # [(what, bytes)], for the diagnostic
    layer: object  # the layer whose share is the largest
    layer_bytes: int


def estimate(model, batch_size: int, config=None) -> Need:
    """What training `model` with `config` (a TrainConfig: its optimizer), or with config=None
    evaluating it, needs in batches of `batch_size`."""
    from ..analysis import memory

    graph = model.graph
    if config is None:
        run = memory.inference(graph)
        name, share = run.largest_layer(batch_size)
        parts = [("parameters", run.param_bytes),
                 (f"for a batch of {batch_size:,}: outputs alive at once",
                  run.peak_bytes * batch_size)]
        return Need(run.batch_bytes(batch_size), parts, graph[name], share)
    step = memory.training(graph, batch_size, config.optimizer, config.momentum)
    name, share = step.largest_layer()
    parts = [("parameters", step.param_bytes), ("gradients", step.gradient_bytes),
             ("optimizer state", step.optimizer_bytes),
             (f"for a batch of {batch_size:,}: activations kept for the backward pass",
              step.saved_bytes),
             ("gradient buffers", step.transient_bytes)]
    return Need(step.total_bytes, parts, graph[name], share)


def check_memory(model, batch_size: int, config=None, *, limit: int | None = None) -> Need:
    """Raise CnncError(code="memory") when the estimate exceeds `limit` (default: the memory
    available now); located at the layer that needs the most. config=None: evaluation."""
    need = estimate(model, batch_size, config)
    source = "--max-memory"
    if limit is None:
        limit, source = available_bytes(), "available on this machine"
    if limit is None or need.total <= limit:
        return need
    layer = need.layer
    what = "evaluating" if config is None else "training"
    raise CnncError(
        f"{what} this model needs about {human_bytes(need.total)} of memory, more than the "
        f"{human_bytes(limit)} {source}",
        notes=[", ".join(f"{part} {human_bytes(n)}" for part, n in need.parts if n),
               f"the largest part is layer `{layer.name}` (line {layer.span.line}): "
               f"{human_bytes(need.layer_bytes)}"],
        hint="make that layer smaller, or lower --batch-size"
             + ("" if source == "--max-memory" else ", or pass --max-memory to set the limit"),
        code="memory", span=layer.span)
