"""The memory guard: what training a model needs, estimated before anything is allocated.

    need = parameters x (1 weight + 1 gradient + optimizer slots) x 4 bytes
         + every layer's output x batch x 2 (the value kept for the backward pass, and its
           gradient) x 4 bytes

Optimizer slots: Adam keeps 2 arrays a parameter, SGD with momentum 1, plain SGD none. This is a
lower bound (a backend's scratch space comes on top), so a refusal is never a false alarm from
the estimate's side; the limit is the memory this machine has available now, or --max-memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from ..diagnostics import CnncError
from ..memory import available_bytes, human_bytes

BYTES = 4  # float32


@dataclass
class Need:
    params: int  # bytes of weights
    grads: int
    optimizer: int
    activations: int
    layer: object  # the layer whose share is the largest
    layer_bytes: int

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations


def optimizer_slots(config) -> int:
    if config.optimizer == "adam":
        return 2
    return 1 if config.momentum else 0


def estimate(model, batch_size: int, slots: int, training: bool = True) -> Need:
    """What training (or, with training=False, evaluating) `model` in batches needs."""
    params = grads = opt = acts = 0
    top, top_bytes = None, -1
    per_param = BYTES * ((2 + slots) if training else 1)
    act_factor = BYTES * batch_size * (2 if training else 1)
    for layer in model.graph.layers():
        n_params = sum(prod(s) for s in layer.params.values())
        n_buffers = sum(prod(s) for s in layer.buffers.values())
        out = prod(layer.shape) * act_factor
        params += (n_params + n_buffers) * BYTES
        if training:
            grads += n_params * BYTES
            opt += n_params * BYTES * slots
        acts += out
        share = n_params * per_param + n_buffers * BYTES + out
        if share > top_bytes:
            top, top_bytes = layer, share
    return Need(params, grads, opt, acts, top, top_bytes)


def check_memory(model, batch_size: int, slots: int, *, limit: int | None = None,
                 training: bool = True) -> Need:
    """Raise CnncError(code="memory") when the estimate exceeds `limit` (default: the memory
    available now); located at the layer that needs the most."""
    need = estimate(model, batch_size, slots, training)
    source = "--max-memory"
    if limit is None:
        limit, source = available_bytes(), "available on this machine"
    if limit is None or need.total <= limit:
        return need
    layer = need.layer
    what = "training" if training else "evaluating"
    parts = [f"parameters {human_bytes(need.params)}"]
    if training:
        parts += [f"gradients {human_bytes(need.grads)}",
                  f"optimizer state {human_bytes(need.optimizer)}"]
    parts.append(f"activations for a batch of {batch_size:,}: {human_bytes(need.activations)}")
    raise CnncError(
        f"{what} this model needs at least {human_bytes(need.total)} of memory, more than the "
        f"{human_bytes(limit)} {source}",
        notes=[", ".join(parts),
               f"the largest part is layer `{layer.name}` (line {layer.span.line}): "
               f"{human_bytes(need.layer_bytes)}"],
        hint="make that layer smaller, or lower --batch-size"
             + ("" if source == "--max-memory" else ", or pass --max-memory to set the limit"),
        code="memory", span=layer.span)
