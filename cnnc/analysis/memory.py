"""How much memory a model needs, worked out from the checked graph before anything runs.

Inference. Layers run in the graph's order; a layer's output is allocated when it runs and
freed as soon as its last reader has run (the model's output is kept). The peak of the live
bytes is what a runtime that frees early needs (TFLite Micro's and ONNX Runtime's planners do
this); beside it, what keeping every output needs. `flatten` and inference-time `dropout` are
views of their input and allocate nothing. In float32 (4 bytes a value) and int8 (1 byte).

Training, for a batch of N and an optimizer. Resident the whole time: the parameters and
buffers, one gradient per parameter, and the optimizer's state (SGD with momentum: one buffer a
parameter; Adam: two). During the step, the activations autograd keeps for the backward pass, as
PyTorch's own backward formulas keep them (derivatives.yaml): a convolution, dense layer, batch
norm, layer norm or average pool keeps its input (batch and layer norm also their mean and
1/std); ReLU, sigmoid, tanh, softmax and ELU keep their
output; GELU, SiLU, leaky ReLU, ReLU6 and the hard activations keep their input; max pooling
keeps its input and the int64 indices of its maxima; dropout keeps its one-byte mask (cnnc's
CPU dropout, cnnc/backends/torch/dropout.py, and PyTorch's fused GPU kernel alike); add, concat
and flatten keep nothing. A tensor kept by several layers is counted once. On top, the largest
pair of gradient buffers alive while one layer's backward runs (the gradient of its output and of
its input). A layer that has no parameters and whose inputs
need no gradient (a pool on the model's input) keeps nothing: autograd records nothing for it.
Where the torch module runs a ReLU after the max pool that reads it (cnnc/ir/commute.py), the
pool keeps what it pools (the value before the ReLU) and the ReLU keeps the pool's output.
benchmarks/memory.py holds this against PyTorch's allocator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

from ..ir.commute import relu_after_max_pool

FLOAT32, INT8 = 4, 1
# Output values kept (by the layer or by the op after it) so that backward can run.
_KEEPS_OUTPUT = {"relu", "sigmoid", "tanh", "softmax", "elu"}
_KEEPS_INPUT_ACT = {"gelu", "silu", "leaky_relu", "relu6", "hardswish", "hardsigmoid"}
_VIEWS = {"flatten"}  # outputs that share their input's memory
_KEEPS_NOTHING = {"add", "concat", "flatten", "input", "dropout", "shuffle", "split", "upsample",
                  "stochastic_depth"}
OPTIMIZER_STATE = {"sgd": 0, "momentum": 1, "adam": 2}  # buffers per parameter


def _values(shape) -> int:
    return prod(shape) if shape else 0


def _param_values(layer) -> tuple[int, int]:
    """(trainable values, buffer values) of a layer."""
    return (sum(_values(s) for s in layer.params.values()),
            sum(_values(s) for s in layer.buffers.values()))


@dataclass
class InferenceMemory:
    peak_bytes: int  # float32, freeing each output after its last reader
    keep_all_bytes: int  # float32, every output kept
    peak_layer: str  # the layer running when the peak is reached
    param_bytes: int  # float32 parameters and buffers
    # [(layer, bytes of its parameters and buffers, bytes of its output for one example)]
    layers: list = field(default_factory=list, repr=False)

    def peak(self, bytes_per_value: int) -> int:
        return self.peak_bytes // FLOAT32 * bytes_per_value

    def batch_bytes(self, batch: int) -> int:
        """Running a batch of `batch` examples: the parameters and the peak of live outputs."""
        return self.param_bytes + self.peak_bytes * batch

    def largest_layer(self, batch: int) -> tuple[str, int]:
        """The layer whose parameters and output for the batch are the largest, and those bytes."""
        return max(((name, params + out * batch) for name, params, out in self.layers),
                   key=lambda t: t[1])

    def to_json(self) -> dict:
        return {"peak_activation_bytes": {"float32": self.peak_bytes, "int8": self.peak(INT8)},
                "keep_all_activation_bytes": {"float32": self.keep_all_bytes,
                                              "int8": self.keep_all_bytes // FLOAT32},
                "peak_layer": self.peak_layer,
                "param_bytes": {"float32": self.param_bytes, "int8": self.param_bytes // FLOAT32}}


def inference(graph) -> InferenceMemory:
    layers = graph.layers()
    # A view (flatten, inference-time dropout) shares its input's memory: its "owner".
    owner: dict[str, str] = {}
    for layer in layers:
        view = (layer.op in _VIEWS or layer.op == "dropout") and layer.inputs
        owner[layer.name] = owner[layer.inputs[0]] if view else layer.name
    last_reader: dict[str, int] = {}  # owner -> the last step that reads it or a view of it
    for i, layer in enumerate(layers):
        for src in layer.inputs:
            last_reader[owner[src]] = i
    keep = owner[graph.output]
    live: dict[str, int] = {}
    peak, peak_layer, keep_all = 0, layers[0].name, 0
    for i, layer in enumerate(layers):
        size = _values(layer.shape) * FLOAT32
        keep_all += size
        if owner[layer.name] == layer.name:
            live[layer.name] = size
        now = sum(live.values())
        if now > peak:
            peak, peak_layer = now, layer.name
        for src in layer.inputs:  # free what nothing reads any more
            base = owner[src]
            if base != keep and last_reader.get(base) == i and owner[layer.name] != base:
                live.pop(base, None)
    shares = [(l.name, sum(_param_values(l)) * FLOAT32, _values(l.shape) * FLOAT32)
              for l in layers]
    return InferenceMemory(peak, keep_all, peak_layer, sum(p for _, p, _ in shares), shares)


@dataclass
class TrainingMemory:
    batch: int
    optimizer: str
    param_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    saved_bytes: int  # activations autograd keeps, for the batch
    transient_bytes: int  # the peak beyond what is kept: gradient buffers during backward
    largest: list = field(default_factory=list)  # [(layer, bytes kept)] largest first
    # layer -> its parameters, buffers, gradients and optimizer state, and the kept tensors it
    # produced (its output kept by the layers after it, its own masks and statistics)
    by_layer: dict = field(default_factory=dict, repr=False)

    @property
    def total_bytes(self) -> int:
        return (self.param_bytes + self.gradient_bytes + self.optimizer_bytes + self.saved_bytes
                + self.transient_bytes)

    def to_json(self) -> dict:
        return {"batch": self.batch, "optimizer": self.optimizer,
                "param_bytes": self.param_bytes, "gradient_bytes": self.gradient_bytes,
                "optimizer_bytes": self.optimizer_bytes,
                "saved_activation_bytes": self.saved_bytes,
                "transient_bytes": self.transient_bytes, "total_bytes": self.total_bytes,
                "largest_layers": [{"name": n, "bytes": b} for n, b in self.largest[:5]]}

    def largest_layer(self) -> tuple[str, int]:
        """The layer that accounts for the most of the total, and its bytes."""
        return max(self.by_layer.items(), key=lambda t: t[1])


def _owner(graph, name: str) -> str:
    """The layer whose output memory a view (flatten) shares."""
    while graph[name].op in _VIEWS and graph[name].inputs:
        name = graph[name].inputs[0]
    return name


def _kept(layer, graph, moved: dict) -> dict:
    """{tensor key: values per example} this layer keeps for backward; a key names a tensor so
    that one kept by two layers counts once. `moved` is cnnc/ir/commute.py's: a ReLU the torch
    backend applies after the max pool that reads it is counted there."""
    op = layer.op
    if layer.name in moved:  # a max pool with the ReLU of moved[name] applied after it
        src = graph[moved[layer.name]]
        # it keeps what it pools (the ReLU's input, or the layer's value before its fused
        # ReLU) and its indices; the ReLU keeps its output (the pool's, as the next layers
        # see it), ReLU6 its input (the pooled values)
        pooled = (f"{_owner(graph, src.inputs[0])}:out" if src.fused_activation is None
                  else f"{src.name}:out")
        kept = {pooled: _values(src.shape), f"{layer.name}:indices": _values(layer.shape) * 2}
        key = f"{layer.name}:out" if src.activation in _KEEPS_OUTPUT else f"{layer.name}:pre"
        kept[key] = _values(layer.shape)
        return kept
    if layer.name in moved.values():
        if layer.fused_activation is None:
            return {}  # a standalone ReLU run after the pool: counted there
        layer_keeps = _kept(layer, graph, {})
        if layer.fused_activation in _KEEPS_OUTPUT:  # its output is kept by the pool instead
            layer_keeps.pop(f"{layer.name}:out", None)
        else:
            layer_keeps.pop(f"{layer.name}:pre", None)
        return layer_keeps
    inputs = [(f"{_owner(graph, src)}:out", _values(graph[src].shape)) for src in layer.inputs]
    out = (f"{layer.name}:out", _values(layer.shape))
    kept: dict = {}
    if op in _KEEPS_NOTHING:
        if op == "stochastic_depth":  # one keep-or-drop factor per example
            kept[f"{layer.name}:mask"] = 1
        if op == "dropout":
            # a one-byte keep-or-drop mask, on the CPU (cnnc's dropout) and on a GPU (PyTorch's
            # fused kernel); PyTorch's own CPU dropout would keep a float32 one
            kept[f"{layer.name}:mask"] = _values(layer.shape) / FLOAT32
        return kept
    act = layer.op if op in _KEEPS_OUTPUT | _KEEPS_INPUT_ACT else None
    if act is not None:  # a standalone activation
        kept.update([out] if act in _KEEPS_OUTPUT else inputs)
        return kept
    settled = layer.settled
    if op == "pool":
        kind = settled.get("kind")
        if kind == "global" and (settled.get("mode") or "avg") == "avg":
            return kept  # a mean keeps nothing but the shape
        kept.update(inputs)
        if kind == "max" or (kind == "global" and settled.get("mode") == "max"):
            kept[f"{layer.name}:indices"] = _values(layer.shape) * 2  # int64
        return kept
    kept.update(inputs)  # conv, dense, batchnorm, layer norm, multiply and the rest
    if op == "layernorm":  # its mean and 1/std at every position normalised
        spatial = layer.shape[:-1] if len(layer.shape) == 3 else ()
        kept[f"{layer.name}:stats"] = 2 * _values(spatial or (1,))
    fused = layer.fused_activation
    if fused in _KEEPS_OUTPUT:
        kept[out[0]] = out[1]
    elif fused in _KEEPS_INPUT_ACT:
        kept[f"{layer.name}:pre"] = out[1]  # the value before the activation
    return kept


def training(graph, batch: int, optimizer: str = "adam", momentum: float = 0.9) -> TrainingMemory:
    """What one training step at batch `batch` needs. optimizer: sgd (momentum when
    `momentum` is not 0) or adam."""
    layers = graph.layers()
    counts = {l.name: _param_values(l) for l in layers}
    trainable = sum(t for t, _ in counts.values())
    buffers = sum(b for _, b in counts.values())
    kind = "adam" if optimizer == "adam" else ("momentum" if momentum else "sgd")
    kept: dict[str, float] = {}
    per_layer: dict[str, float] = {}
    upto: list[float] = []  # values kept by the layers up to each one, in forward order
    total_kept = 0
    produced = dict.fromkeys(counts, 0)  # values kept, by the layer whose output they are
    # Autograd records nothing for a layer whose inputs need no gradient and which has no
    # parameters (a pool or activation straight on the model's input).
    needs_grad: dict[str, bool] = {}
    fixed = 0  # values kept whatever the batch size
    moved = relu_after_max_pool(graph)
    relu_keeps: dict[str, float] = {}
    for layer in layers:
        needs_grad[layer.name] = bool(layer.params) or any(needs_grad[s] for s in layer.inputs)
        mine = _kept(layer, graph, moved) if needs_grad[layer.name] else {}
        if layer.op == "batchnorm" and needs_grad[layer.name]:
            fixed += 2 * layer.shape[-1]  # the batch's mean and 1/std per channel
        new = {k: v for k, v in mine.items() if k not in kept}
        per_layer[layer.name] = sum(new.values())
        if layer.name in moved:  # what the ReLU run after this pool keeps
            relu_keeps[layer.name] = sum(v for k, v in new.items()
                                         if k in (f"{layer.name}:out", f"{layer.name}:pre"))
        for key, v in new.items():  # a kept tensor is its producer's share
            produced[key.rpartition(":")[0]] += v
        total_kept += per_layer[layer.name]
        kept.update(new)
        upto.append(total_kept)
    # Backward runs the layers in reverse and frees what each kept once it has run, so while
    # layer i's backward runs, what layers 0..i kept is alive, with the gradient of its output
    # and of those inputs that need one (the model's input needs none).
    peak_step = upto[-1] + _values(layers[-1].shape)  # the end of the forward pass
    standalone_moved = {n for n in moved.values() if graph[n].fused_activation is None}
    for i, layer in enumerate(layers):
        if layer.name in standalone_moved:
            continue  # it runs after its pool, on the pool's output: counted there
        grads = _values(layer.shape) + sum(_values(graph[s].shape) for s in layer.inputs
                                           if s != graph.input)
        if layer.name in moved:
            # the ReLU's backward first (what it keeps alive, the gradients of its output and
            # input, each the pool's size), then the pool's, once the ReLU has freed its own
            relu = relu_keeps[layer.name]
            peak_step = max(peak_step, upto[i] + 2 * _values(layer.shape),
                            upto[i] - relu + grads)
            continue
        peak_step = max(peak_step, upto[i] + grads)
    saved = int(round(upto[-1] * batch * FLOAT32)) + fixed * FLOAT32
    transient = int(round((peak_step - upto[-1]) * batch * FLOAT32))
    largest = sorted(((n, int(v * batch * FLOAT32)) for n, v in per_layer.items() if v),
                     key=lambda t: -t[1])
    state = OPTIMIZER_STATE[kind]
    by_layer = {name: ((2 + state) * t + b + produced[name] * batch) * FLOAT32
                for name, (t, b) in counts.items()}
    return TrainingMemory(batch, optimizer, (trainable + buffers) * FLOAT32,
                          trainable * FLOAT32, state * trainable * FLOAT32,
                          saved, transient, largest, by_layer)


def largest_batch(graph, limit_bytes: int, optimizer: str = "adam",
                  momentum: float = 0.9) -> int:
    """The largest batch whose training step fits in limit_bytes (0 when not even one does)."""
    if training(graph, 1, optimizer, momentum).total_bytes > limit_bytes:
        return 0
    lo, hi = 1, 2
    while training(graph, hi, optimizer, momentum).total_bytes <= limit_bytes and hi < 1 << 40:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if training(graph, mid, optimizer, momentum).total_bytes <= limit_bytes:
            lo = mid
        else:
            hi = mid
    return lo


_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40, "b": 1}


def parse_amount(text: str) -> int:
    """'1M' -> 1,000,000; '256KiB' -> 262,144; '8GiB' -> 8,589,934,592; '1.5G' -> 1.5e9.

    >>> parse_amount("300M"), parse_amount("256KiB"), parse_amount("8 GiB"), parse_amount("12")
    (300000000, 262144, 8589934592, 12)
    """
    import re

    m = re.fullmatch(r"\s*((?:[0-9]{1,30}(?:\.[0-9]{0,30})?|\.[0-9]{1,30})(?:[eE][+-]?[0-9]{1,4})?)"
                     r"\s*([A-Za-z]{0,3})\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"expected an amount like 1M, 300M, 256KiB or 8GiB, got {text!r}")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value != value or value < 0 or value > 1e30:
        raise ValueError(f"expected an amount like 1M, 300M, 256KiB or 8GiB, got {text!r}")
    return int(round(value))
