"""What changed between two models: layers added, removed or changed, matched by structure.

Layer names are no key (inserting a conv renames every `conv_N` after it), so the two graphs are
matched by their structure: each is put in a canonical topological order (networkx's
lexicographical topological sort, ties broken by the layer's source line, so a branch keeps its
place), and the two orders are aligned like two texts (difflib), a layer counting as the same
when its op matches. An aligned pair whose arguments, output shape, parameters, MACs or inputs
differ is "changed"; the rest of either side is added or removed.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from math import prod


@dataclass
class LayerInfo:
    name: str
    op: str
    description: str
    output_shape: tuple
    params: int
    macs: int
    inputs: list[str]
    line: int


@dataclass
class Diff:
    a: str
    b: str
    added: list[LayerInfo] = field(default_factory=list)
    removed: list[LayerInfo] = field(default_factory=list)
    changed: list[tuple[LayerInfo, LayerInfo, dict]] = field(default_factory=list)
    totals: dict = field(default_factory=dict)  # name -> (a, b)

    @property
    def same(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def to_json(self) -> dict:
        def info(x: LayerInfo) -> dict:
            return {"name": x.name, "op": x.op, "description": x.description,
                    "output_shape": list(x.output_shape), "params": x.params, "macs": x.macs,
                    "line": x.line}

        return {"a": self.a, "b": self.b, "same": self.same,
                "added": [info(x) for x in self.added],
                "removed": [info(x) for x in self.removed],
                "changed": [{"a": info(x), "b": info(y),
                             "fields": {k: [_plain(v[0]), _plain(v[1])]
                                        for k, v in what.items()}}
                            for x, y, what in self.changed],
                "totals": {k: {"a": v[0], "b": v[1], "change": v[1] - v[0]}
                           for k, v in self.totals.items()}}


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def _infos(model) -> list[LayerInfo]:
    """The layers in a canonical topological order."""
    import networkx as nx

    from ..ops import get

    graph = model.graph
    order = list(nx.lexicographical_topological_sort(
        graph.nx, key=lambda n: (graph[n].span.line, graph[n].span.column, n)))
    out = []
    for name in order:
        layer = graph[name]
        schema = get(layer.op)
        desc = schema.describe(layer.settled) if schema.describe else layer.op
        out.append(LayerInfo(name, layer.op, desc, tuple(layer.shape),
                             sum(prod(s) for s in (*layer.params.values(),
                                                   *layer.buffers.values())),
                             layer.macs, list(layer.inputs), layer.span.line))
    return out


def diff(model_a, model_b) -> Diff:
    a, b = _infos(model_a), _infos(model_b)
    result = Diff(model_a.file, model_b.file)
    index_a = {x.name: i for i, x in enumerate(a)}
    index_b = {x.name: i for i, x in enumerate(b)}
    matcher = difflib.SequenceMatcher(a=[x.op for x in a], b=[x.op for x in b], autojunk=False)
    pairs: dict[int, int] = {}
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            pairs[block.a + k] = block.b + k
    # Unmatched runs of the same length opposite each other: the same layers, changed in op
    # (`relu` became `gelu`) rather than removed and added.
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "replace" and i2 - i1 == j2 - j1:
            for k in range(i2 - i1):
                pairs[i1 + k] = j1 + k
    matched_b = set(pairs.values())
    for i, x in enumerate(a):
        if i not in pairs:
            result.removed.append(x)
            continue
        y = b[pairs[i]]
        what = {}
        for key in ("op", "description", "output_shape", "params", "macs"):
            if getattr(x, key) != getattr(y, key):
                what[key] = (getattr(x, key), getattr(y, key))
        # inputs, compared through the matching (names may differ)
        ins_a = [pairs.get(index_a[n]) for n in x.inputs]
        ins_b = [index_b[n] for n in y.inputs]
        if ins_a != ins_b:
            what["inputs"] = (x.inputs, y.inputs)
        if what:
            result.changed.append((x, y, what))
    result.added = [y for j, y in enumerate(b) if j not in matched_b]
    result.totals = {
        "layers": (len(a), len(b)),
        "params": (sum(x.params for x in a), sum(y.params for y in b)),
        "trainable_params": (model_a.summary().trainable_params,
                             model_b.summary().trainable_params),
        "macs": (sum(x.macs for x in a), sum(y.macs for y in b)),
    }
    return result


def render(d: Diff) -> str:
    lines = [f"--- {d.a}", f"+++ {d.b}"]
    if d.same:
        lines.append("The two models have the same layers.")
    for x in d.removed:
        lines.append(f"- {x.name:<24} {x.description:<36} {_shape(x.output_shape):>12} "
                     f"(line {x.line})")
    for y in d.added:
        lines.append(f"+ {y.name:<24} {y.description:<36} {_shape(y.output_shape):>12} "
                     f"(line {y.line})")
    for x, y, what in d.changed:
        name = x.name if x.name == y.name else f"{x.name} -> {y.name}"
        lines.append(f"~ {name}  (line {x.line} -> {y.line})")
        for key, (old, new) in what.items():
            if key in ("output_shape",):
                old, new = _shape(old), _shape(new)
            elif key in ("params", "macs"):
                old, new = f"{old:,}", f"{new:,}"
            elif key == "inputs":
                old, new = ", ".join(old), ", ".join(new)
            lines.append(f"    {key}: {old} -> {new}")
    lines.append("")
    for key, (old, new) in d.totals.items():
        change = new - old
        sign = "+" if change > 0 else ""
        lines.append(f"{key:>16}: {old:,} -> {new:,} ({sign}{change:,})")
    return "\n".join(lines)


def _shape(shape) -> str:
    return "x".join(map(str, shape))
