"""The layer graph: a DAG whose nodes are layers, each knowing the text it came from."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import ops
from ..diagnostics import Span


@dataclass
class Layer:
    name: str  # unique in the graph; block instances prefix it: "layer1_1.conv_2"
    op: str  # the canonical op name: conv, pool, dense, relu, add, ...
    attrs: dict  # the attributes as written and bound (defaults filled in); never changed
    inputs: list[str]  # ordered input layer names
    span: Span  # the statement that made this layer
    text: str  # that statement, as written
    context: tuple[str, ...] = ()  # "in block `basic` called at line 12", innermost first
    top_line: int | None = None  # the top-level statement's line: a block call's, inside one
    input_labels: list[str] = field(default_factory=list)  # merges: how each input was named
    arg_spans: dict = field(default_factory=dict)  # attr name -> span of the word that set it
    # Filled by shape inference:
    shape: tuple | None = None  # (H, W, C), or (N,) once flat
    # The attributes backends and analyses read: `attrs` updated with what the shape rule
    # settled (conv: groups, filters, pads; pool: stride, pads, mode, divisor...), and, on a
    # layer that applies an activation (fused or standalone), "activation" (its name) and
    # "activation_params" (its parameters, defaults filled in). Nothing re-derives these.
    settled: dict = field(default_factory=dict)
    in_shapes: list = field(default_factory=list)  # the shapes of the inputs, in order
    params: dict = field(default_factory=dict)  # trainable: name -> shape (PyTorch layout)
    buffers: dict = field(default_factory=dict)  # non-trainable state: name -> shape
    # how each parameter and buffer starts: name -> initializer name or a number (ops.Param)
    init: dict = field(default_factory=dict)
    macs: int = 0
    receptive_field: int | None = None

    @property
    def activation(self) -> str | None:
        """The activation this layer applies, fused (conv 32 3 relu) or standalone (relu)."""
        if ops.find_activation(self.op) is not None:
            return self.op
        return self.attrs.get("activation")

    @property
    def fused_activation(self) -> str | None:
        """The activation applied after this layer's own computation (conv 32 3 relu); None
        for a standalone activation layer, whose computation is the activation."""
        return None if ops.find_activation(self.op) is not None else self.attrs.get("activation")

    def where(self) -> str:
        return f"line {self.span.line}"


class LayerGraph:
    """Layers in topological order, with an edge u -> v where v reads u's output.

    The graph lives in plain dicts, in the order layers were added (inputs before the layers that
    read them): importing networkx takes longer than checking a model does. `nx` gives the same
    graph as a networkx DiGraph, for code that wants graph algorithms.
    """

    def __init__(self):
        self._layers: dict[str, Layer] = {}
        self._consumers: dict[str, dict[str, None]] = {}  # name -> readers, an ordered set
        self._nx = None  # the networkx DiGraph, built on first use
        self.input: str | None = None
        self.output: str | None = None

    @property
    def nx(self):
        """The graph as a networkx DiGraph (node attribute `layer`), built on first use.

        A copy: changing it leaves the LayerGraph as it was."""
        if self._nx is None:
            import networkx as nx

            g = nx.DiGraph()
            for layer in self._layers.values():
                g.add_node(layer.name, layer=layer)
                for src in layer.inputs:
                    g.add_edge(src, layer.name)
            self._nx = g
        return self._nx

    def add(self, layer: Layer) -> Layer:
        self._layers[layer.name] = layer
        self._consumers[layer.name] = {}
        for src in layer.inputs:
            self._consumers[src][layer.name] = None
        self._nx = None
        return layer

    def __contains__(self, name: str) -> bool:
        return name in self._layers

    def __getitem__(self, name: str) -> Layer:
        return self._layers[name]

    def __len__(self) -> int:
        return len(self._layers)

    def layers(self) -> list[Layer]:
        """Every layer, inputs before the layers that read them (insertion order is one)."""
        return list(self._layers.values())

    def consumers(self, name: str) -> list[str]:
        return list(self._consumers[name])

    def remove_unreachable(self) -> list[Layer]:
        """Drop layers whose output never reaches the model's output; return them."""
        if self.output is None:
            return []
        keep = {self.output}
        todo = [self.output]
        while todo:  # walk the inputs back from the output
            for src in self._layers[todo.pop()].inputs:
                if src not in keep:
                    keep.add(src)
                    todo.append(src)
        dropped = [layer for name, layer in self._layers.items() if name not in keep]
        for layer in dropped:
            del self._layers[layer.name]
            del self._consumers[layer.name]
        for layer in dropped:  # what a dropped layer read may be kept: it has one reader less
            for src in layer.inputs:
                if src in self._consumers:
                    self._consumers[src].pop(layer.name, None)
        if dropped:
            self._nx = None
        return dropped

    def is_sequential(self) -> bool:
        return all(len(layer.inputs) <= 1 for layer in self.layers()) and \
            all(len(readers) <= 1 for readers in self._consumers.values())
