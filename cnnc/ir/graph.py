"""The layer graph: a networkx DAG whose nodes are layers, each knowing the text it came from."""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from ..diagnostics import Span


@dataclass
class Layer:
    name: str  # unique in the graph; block instances prefix it: "layer1_1.conv_2"
    op: str  # the canonical op name: conv, pool, dense, relu, add, ...
    attrs: dict  # validated attributes; shape inference adds resolved ones (e.g. "pads")
    inputs: list[str]  # ordered input layer names
    span: Span  # the statement that made this layer
    text: str  # that statement, as written
    context: tuple[str, ...] = ()  # "in block `basic` called at line 12", innermost first
    top_line: int | None = None  # the top-level statement's line: a block call's, inside one
    input_labels: list[str] = field(default_factory=list)  # merges: how each input was named
    arg_spans: dict = field(default_factory=dict)  # attr name -> span of the word that set it
    # Filled by shape inference:
    shape: tuple | None = None  # (H, W, C), or (N,) once flat
    params: dict = field(default_factory=dict)  # trainable: name -> shape (PyTorch layout)
    buffers: dict = field(default_factory=dict)  # non-trainable state: name -> shape
    macs: int = 0
    receptive_field: int | None = None

    @property
    def activation(self) -> str | None:
        """The activation this layer applies, fused (conv 32 3 relu) or standalone (relu)."""
        from ..ops import ACTIVATIONS

        if self.op in ACTIVATIONS:
            return self.op
        return self.attrs.get("activation")

    def where(self) -> str:
        return f"line {self.span.line}"


class LayerGraph:
    """Layers in a networkx DiGraph (edge u -> v: v reads u's output), in topological order."""

    def __init__(self):
        self.nx = nx.DiGraph()
        self.input: str | None = None
        self.output: str | None = None

    def add(self, layer: Layer) -> Layer:
        self.nx.add_node(layer.name, layer=layer)
        for src in layer.inputs:
            self.nx.add_edge(src, layer.name)
        return layer

    def __contains__(self, name: str) -> bool:
        return name in self.nx

    def __getitem__(self, name: str) -> Layer:
        return self.nx.nodes[name]["layer"]

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    def layers(self) -> list[Layer]:
        """Every layer, inputs before the layers that read them (insertion order is one)."""
        return [data["layer"] for _, data in self.nx.nodes(data=True)]

    def consumers(self, name: str) -> list[str]:
        return list(self.nx.successors(name))

    def remove_unreachable(self) -> list[Layer]:
        """Drop layers whose output never reaches the model's output; return them."""
        if self.output is None:
            return []
        keep = nx.ancestors(self.nx, self.output) | {self.output}
        dropped = [self[n] for n in self.nx.nodes if n not in keep]
        self.nx.remove_nodes_from([layer.name for layer in dropped])
        return dropped

    def is_sequential(self) -> bool:
        return all(len(layer.inputs) <= 1 for layer in self.layers()) and \
            all(self.nx.out_degree(n) <= 1 for n in self.nx.nodes)
