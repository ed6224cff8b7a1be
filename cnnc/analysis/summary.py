"""What a model costs: parameters, multiply-accumulates, memory, receptive field.

Conventions (docs/language.md says the same):
- params of conv = kh*kw*(cin/groups)*filters (+filters for the bias); dense = in*out (+out);
  batchnorm = 2C trainable (scale, shift) + 2C non-trainable (running mean and variance).
- total = trainable + non-trainable, as Keras counts; trainable equals PyTorch's
  sum(p.numel() for p in module.parameters()).
- MACs: the multiply-accumulates of conv and dense layers for one image (fvcore's convention).
- activation memory: the float32 bytes of every layer's output (the input included) for one
  image, the memory a forward pass that keeps everything (as training does) needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

from ..ir.graph import LayerGraph
from ..ops import get as get_schema

BYTES_PER_VALUE = 4  # float32


@dataclass
class Row:
    name: str
    op: str
    description: str
    output_shape: tuple
    params: int
    trainable: int
    macs: int
    receptive_field: int | None
    inputs: list[str]
    line: int


@dataclass
class Summary:
    model: str
    input: tuple
    rows: list[Row]
    trainable_params: int
    non_trainable_params: int
    macs: int
    activation_bytes: int
    sequential: bool
    params: dict = field(default_factory=dict)  # the model's parameters (`param`), as used

    @property
    def total_params(self) -> int:
        return self.trainable_params + self.non_trainable_params

    @property
    def param_bytes(self) -> int:
        return self.total_params * BYTES_PER_VALUE

    @property
    def output_shape(self) -> tuple:
        return self.rows[-1].output_shape

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "params": dict(self.params),
            "input": list(self.input),
            "layers": [{"name": r.name, "op": r.op, "description": r.description,
                        "output_shape": list(r.output_shape), "params": r.params,
                        "trainable_params": r.trainable, "macs": r.macs,
                        "receptive_field": r.receptive_field, "inputs": r.inputs,
                        "line": r.line}
                       for r in self.rows],
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "param_bytes": self.param_bytes,
            "macs": self.macs,
            "activation_bytes": self.activation_bytes,
        }


def summarize(graph: LayerGraph, model: str, params: dict | None = None) -> Summary:
    rows = []
    trainable = non_trainable = macs = act = 0
    for layer in graph.layers():
        schema = get_schema(layer.op)
        t = sum(prod(s) for s in layer.params.values())
        n = sum(prod(s) for s in layer.buffers.values())
        trainable += t
        non_trainable += n
        macs += layer.macs
        act += prod(layer.shape) * BYTES_PER_VALUE
        desc = schema.describe(layer.settled) if schema.describe else layer.op
        rows.append(Row(layer.name, layer.op, desc, layer.shape, t + n, t, layer.macs,
                        layer.receptive_field, list(layer.inputs), layer.span.line))
    return Summary(model=model, input=graph[graph.input].shape, rows=rows,
                   trainable_params=trainable, non_trainable_params=non_trainable, macs=macs,
                   activation_bytes=act, sequential=graph.is_sequential(),
                   params=dict(params or {}))


def total_params(graph: LayerGraph) -> int:
    """Summary.total_params without the rest of the summary (what `cnnc check` prints)."""
    return sum(prod(s) for layer in graph.layers()
               for s in (*layer.params.values(), *layer.buffers.values()))


def human(n: float, unit: str = "") -> str:
    """1.82 G, 11.69 M, 54.41 K: three significant figures, SI prefixes.

    >>> human(1_820_000_000), human(54_410), human(12)
    ('1.82 G', '54.4 K', '12')
    """
    for div, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g} {prefix}{unit}"
    return f"{n:g}{' ' + unit if unit else ''}"


def human_bytes(n: int) -> str:
    """Binary units, as memory is counted.

    >>> human_bytes(217_640), human_bytes(46_757_888)
    ('212.54 KiB', '44.59 MiB')
    """
    for div, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"
