"""The layer graph as a picture: SVG drawn by cnnc (PNG through Pillow), or Graphviz DOT and
Mermaid text for those who have those tools.

    cnnc graph examples/zoo/resnet18.cnn -o resnet18.svg

Each layer is a box with its op (as `cnnc summary` describes it), its output shape and its
parameter count; the layers of a block call are drawn inside a dashed frame named after the
call and the block; merges (`add`, `concat`) are boxes of their own where their inputs join.

The layout is the usual layered one (Sugiyama's): networkx gives the topological generations
(each layer's rank is the longest path to it from the input, so every edge points down) and the
longest path through the model (kept in one straight column, the spine the eye follows); an edge
that skips ranks gets a waypoint on each rank it crosses, so it is routed around the boxes
there; the order within a rank is improved by barycentre sweeps, and boxes then sit as near
their neighbours' centres as the ranks' order and spacing allow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from math import prod

from .canvas import Canvas, text_width

BOX_H = 50  # a layer's box: three lines
RANK_GAP = 56  # between the bottom of one rank and the top of the next
BOX_GAP = 22  # between neighbours in a rank
DUMMY_W = 8  # the room an edge passing through a rank takes there
MARGIN = 24
SWEEPS = 6

COLORS = {  # fill, border, by kind of op
    "input": ("#e8e8e8", "#555"),
    "conv": ("#dbe9f9", "#2a62a6"),
    "dense": ("#fde5cc", "#c26a0b"),
    "pool": ("#dcf2dc", "#2f7d32"),
    "norm": ("#f1e6f7", "#7b3f9e"),
    "merge": ("#fff3b0", "#9a7a00"),
    "activation": ("#f6f6f6", "#777"),
    "other": ("#ffffff", "#666"),
}
MERGES = ("add", "concat", "mul")
_BLOCK_RE = re.compile(r"in block `([^`]+)`")


@dataclass
class Node:
    name: str
    rank: int
    width: float
    x: float = 0.0  # centre
    dummy: bool = False
    lines: tuple = ()
    kind: str = "other"
    title: str = ""
    preds: list = field(default_factory=list)
    succs: list = field(default_factory=list)


def _kind(layer) -> str:
    from ..ops import find_activation

    op = layer.op
    if op in MERGES or len(layer.inputs) > 1:  # add, concat, mul, a plugin's merge
        return "merge"
    if op == "input":
        return "input"
    if find_activation(op) is not None:
        return "activation"
    for word, kind in (("conv", "conv"), ("pool", "pool"), ("gap", "pool"), ("dense", "dense"),
                       ("linear", "dense"), ("norm", "norm"), ("bn", "norm")):
        if word in op:  # dwconv, conv_transpose, layernorm, groupnorm, ...
            return kind
    return "other"


def describe(layer) -> str:
    """The op as `cnnc summary` shows it (from the settled attributes, as analyses read)."""
    from ..ops import get as get_schema

    schema = get_schema(layer.op)
    return schema.describe(layer.settled) if schema.describe else layer.op


def layer_lines(layer) -> tuple[str, str, str]:
    """A box's three lines: the op, the output shape, the parameters."""
    shape = "x".join(str(d) for d in layer.shape) if layer.shape else "?"
    n = sum(prod(s) for s in layer.params.values()) + sum(prod(s) for s in
                                                           layer.buffers.values())
    return describe(layer), shape, f"{n:,} params"


def groups_of(graph) -> dict[str, dict]:
    """Block calls: prefix ("basic_1", "down_1.y") -> {"label", "depth", "members"}."""
    groups: dict[str, dict] = {}
    for layer in graph.layers():
        parts = layer.name.split(".")[:-1]
        blocks = [m.group(1) for m in map(_BLOCK_RE.search, reversed(layer.context)) if m]
        for i in range(len(parts)):
            prefix = ".".join(parts[:i + 1])
            g = groups.setdefault(prefix, {"label": parts[i], "depth": i, "members": []})
            if i < len(blocks):
                g["label"] = f"{parts[i]}: {blocks[i]}"
            g["members"].append(layer.name)
    for prefix, g in groups.items():  # height: how many frames nest inside this one
        g.setdefault("height", 0)
        parts = prefix.split(".")
        for i in range(1, len(parts)):
            outer = groups[".".join(parts[:i])]
            outer["height"] = max(outer.get("height", 0), len(parts) - i)
    return groups


# ---------------------------------------------------------------------------------------------
# Layout


def layout(graph) -> tuple[dict[str, Node], list[list[Node]], list[tuple[str, str, list]]]:
    """Nodes with rank and centre x, the ranks in order, and the edges as (source, target,
    [the dummy nodes it passes through])."""
    g = graph.nx
    import networkx as nx

    nodes: dict[str, Node] = {}
    for rank, generation in enumerate(nx.topological_generations(g)):
        for name in generation:
            layer = graph[name]
            lines = layer_lines(layer)
            width = max(text_width(lines[0], 12) + 20, text_width(lines[1], 11) + 20,
                        text_width(lines[2], 11) + 20, 70)
            nodes[name] = Node(name, rank, width, lines=lines, kind=_kind(layer),
                               title=f"{name} (line {layer.span.line}): {layer.text.strip()}")
    spine = set(nx.dag_longest_path(g)) if len(g) else set()

    ranks: list[list[Node]] = [[] for _ in range(max((n.rank for n in nodes.values()),
                                                     default=-1) + 1)]
    order = {layer.name: i for i, layer in enumerate(graph.layers())}
    for name in sorted(nodes, key=order.get):  # the text's order to start with
        ranks[nodes[name].rank].append(nodes[name])

    edges = []
    for layer in graph.layers():
        for src in dict.fromkeys(layer.inputs):
            chain = [nodes[src]]
            for r in range(nodes[src].rank + 1, nodes[layer.name].rank):
                d = Node(f"{src}->{layer.name}@{r}", r, DUMMY_W, dummy=True)
                ranks[r].append(d)
                chain.append(d)
            chain.append(nodes[layer.name])
            for a, b in zip(chain, chain[1:]):
                a.succs.append(b)
                b.preds.append(a)
            edges.append((src, layer.name, chain[1:-1]))

    _order(ranks, spine)
    _place(ranks, spine)
    _clear_frames(ranks, groups_of(graph), edges, nodes)
    return nodes, ranks, edges


def _clear_frames(ranks, groups, edges, nodes) -> None:
    """Move what does not belong to a block out of the block's frame: a box (or an edge)
    beside the block on a rank the block spans is pushed past the frame's side, with what lies
    beyond it on that rank. Inner blocks first, so outer frames see the final positions."""
    owner = {}
    for src, dst, through in edges:
        for d in through:
            owner[d.name] = (src, dst)
    for prefix in sorted(groups, key=lambda p: -groups[p]["depth"]):
        members = set(groups[prefix]["members"])
        inside = members | {d for d, (a, b) in owner.items() if a in members and b in members}
        boxes = [nodes[m] for m in members]
        pad = 8 + 8 * _height(prefix, groups) + 4
        left = min(n.x - n.width / 2 for n in boxes) - pad
        right = max(n.x + n.width / 2 for n in boxes) + pad
        middle = (left + right) / 2
        r0, r1 = min(n.rank for n in boxes), max(n.rank for n in boxes)
        for row in ranks[r0:r1 + 1]:
            for i, n in enumerate(row):
                if n.name in inside:
                    continue
                lo, hi = n.x - n.width / 2, n.x + n.width / 2
                if hi <= left or lo >= right:
                    continue
                if n.x >= middle:
                    shift = right + BOX_GAP / 2 - lo
                    for m in row[i:]:
                        m.x += shift
                else:
                    shift = hi - (left - BOX_GAP / 2)
                    for m in row[:i + 1]:
                        m.x -= shift
    lowest = min((n.x - n.width / 2 for row in ranks for n in row), default=0.0)
    for row in ranks:
        for n in row:
            n.x -= lowest


def _order(ranks, spine) -> None:
    """Barycentre sweeps, down and up, to cut crossings; the spine sorts to the middle of ties."""
    def sweep(rank_list, neighbours):
        for row in rank_list:
            pos = {}
            for n in row:
                near = [m for m in neighbours(n)]
                if near:
                    pos[n.name] = sum(m._i for m in near) / len(near)
            for i, n in enumerate(row):
                pos.setdefault(n.name, float(i))
            row.sort(key=lambda n: pos[n.name])
            for i, n in enumerate(row):
                n._i = i

    for row in ranks:
        for i, n in enumerate(row):
            n._i = i
    for _ in range(SWEEPS):
        sweep(ranks[1:], lambda n: n.preds)
        sweep(list(reversed(ranks[:-1])), lambda n: n.succs)


def _place(ranks, spine) -> None:
    """x centres: each node near the mean of its neighbours', the rank's order kept and boxes
    BOX_GAP apart; the spine's boxes are pulled into one column."""
    for row in ranks:
        x = 0.0
        for n in row:
            n.x = x + n.width / 2
            x += n.width + BOX_GAP

    def settle(row, desired):
        """Positions in the row's order, BOX_GAP apart, each as near its desired place as the
        others allow; a spine node gets its place exactly and the others make way for it."""
        def sep(i, j):  # an edge passing by keeps clear of block frames around the box
            clear = 2 * DUMMY_W if (row[i].dummy != row[j].dummy) else 0
            return (row[i].width + row[j].width) / 2 + BOX_GAP + clear

        xs = [desired[n.name] for n in row]
        pinned = next((i for i, n in enumerate(row) if n.name in spine), None)
        if pinned is None:
            for i in range(1, len(row)):  # push right, then centre the row on its wishes
                xs[i] = max(xs[i], xs[i - 1] + sep(i - 1, i))
            shift = sum(desired[n.name] - x for n, x in zip(row, xs)) / max(len(row), 1)
            xs = [x + shift for x in xs]
        else:
            for i in range(pinned - 1, -1, -1):
                xs[i] = min(xs[i], xs[i + 1] - sep(i, i + 1))
            for i in range(pinned + 1, len(row)):
                xs[i] = max(xs[i], xs[i - 1] + sep(i - 1, i))
        for n, x in zip(row, xs):
            n.x = x

    column = 0.0
    for it in range(SWEEPS * 2):
        down = it % 2 == 0
        rows = ranks if down else list(reversed(ranks))
        for row in rows:
            desired = {}
            for n in row:
                near = n.preds if down else n.succs
                if n.name in spine:
                    desired[n.name] = column
                elif near:
                    desired[n.name] = sum(m.x for m in near) / len(near)
                else:
                    desired[n.name] = n.x
            settle(row, desired)
        spine_xs = [n.x for row in ranks for n in row if n.name in spine]
        column = sum(spine_xs) / len(spine_xs) if spine_xs else 0.0
    left = min((n.x - n.width / 2 for row in ranks for n in row), default=0.0)
    for row in ranks:
        for n in row:
            n.x -= left


# ---------------------------------------------------------------------------------------------
# Drawing


def graph_canvas(model) -> Canvas:
    graph = model.graph
    nodes, ranks, edges = layout(graph)
    groups = groups_of(graph)
    top_of = {r: MARGIN + 34 + r * (BOX_H + RANK_GAP) for r in range(len(ranks))}
    # frames need room beside their boxes: the deepest nesting sets it
    height_of = {p: _height(p, groups) for p in groups}
    pad_of = {p: 8 + 8 * height_of[p] for p in groups}
    extra_left = max(pad_of.values(), default=0)
    width = max((n.x + n.width / 2 for n in nodes.values()), default=100) + 2 * (MARGIN +
                                                                                extra_left)
    height = MARGIN * 2 + 34 + len(ranks) * (BOX_H + RANK_GAP)
    dx = MARGIN + extra_left
    total = sum(prod(s) for layer in graph.layers()
                for s in (*layer.params.values(), *layer.buffers.values()))
    title = f"{model.name}: {len(graph):,} layers, {total:,} parameters"
    c = Canvas(max(width, 320, text_width(title, 14) + 2 * MARGIN), height)
    c.text(MARGIN, MARGIN + 8, title, size=14, bold=True)

    # block frames, outermost first so inner ones paint over them
    for prefix in sorted(groups, key=lambda p: groups[p]["depth"]):
        info = groups[prefix]
        members = [nodes[m] for m in info["members"]]
        pad = pad_of[prefix]
        x0 = min(n.x - n.width / 2 for n in members) + dx - pad
        x1 = max(n.x + n.width / 2 for n in members) + dx + pad
        # room above for the frame's name, one line per frame nested in it
        y0 = min(top_of[n.rank] for n in members) - 6 - 13 * (height_of[prefix] + 1)
        y1 = max(top_of[n.rank] for n in members) + BOX_H + 6 + 6 * height_of[prefix]
        with c.group({"class": "block", "data-block": prefix}):
            c.rect(x0, y0, x1 - x0, y1 - y0, fill="none", stroke="#8a8a8a", dash="5 4", rx=8)
            c.text(x0 + 6, y0 + 10, info["label"], size=10, fill="#666")

    # edges under the boxes; a merge's inputs enter side by side, in the order they come from
    arrivals: dict[str, list] = {}
    for src, dst, through in edges:
        arrivals.setdefault(dst, []).append((through[-1] if through else nodes[src]).x)
    for dst in arrivals:
        arrivals[dst].sort()
    for src, dst, through in edges:
        a, b = nodes[src], nodes[dst]
        k = arrivals[dst].index((through[-1] if through else a).x)
        spread = len(arrivals[dst])
        entry = b.x + (k - (spread - 1) / 2) * min(18, b.width / (spread + 1)) if spread > 1 \
            else b.x
        pts = [(a.x + dx, top_of[a.rank] + BOX_H)]
        for d in through:
            pts += [(d.x + dx, top_of[d.rank] - 6), (d.x + dx, top_of[d.rank] + BOX_H + 6)]
        pts += [(entry + dx, top_of[b.rank] - 10), (entry + dx, top_of[b.rank])]
        c.polyline(pts, stroke="#666", width=1.3, arrow=True,
                   attrs={"class": "edge", "data-from": src, "data-to": dst})

    for name, n in nodes.items():
        fill, border = COLORS[n.kind]
        x, y = n.x - n.width / 2 + dx, top_of[n.rank]
        with c.group({"class": "layer", "data-layer": name}, title=n.title):
            c.rect(x, y, n.width, BOX_H, fill=fill, stroke=border, width=1.4,
                   rx=14 if n.kind == "merge" else 4,
                   attrs={"class": "box", "data-layer": name})
            c.text(n.x + dx, y + 16, n.lines[0], size=12, anchor="middle", fill="#111",
                   bold=True)
            c.text(n.x + dx, y + 31, n.lines[1], size=11, anchor="middle", fill="#333")
            c.text(n.x + dx, y + 44, n.lines[2], size=11, anchor="middle", fill="#666")
    return c


def _height(prefix: str, groups: dict) -> int:
    """How many frames nest inside this one."""
    return groups[prefix]["height"]


# ---------------------------------------------------------------------------------------------
# Text formats


def _id(name: str) -> str:
    return "n_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def to_dot(model) -> str:
    """Graphviz DOT: `dot -Tsvg model.dot -o model.svg`."""
    graph = model.graph
    groups = groups_of(graph)
    lines = [f'digraph "{model.name}" {{', '  rankdir=TB;',
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
             '  edge [color="#666666"];']

    def node_line(layer, indent):
        op, shape, params = layer_lines(layer)
        fill, border = COLORS[_kind(layer)]
        label = f"{op}\\n{shape}\\n{params}".replace('"', '\\"')
        return f'{indent}{_id(layer.name)} [label="{label}", fillcolor="{fill}", ' \
               f'color="{border}", tooltip="{layer.name}"];'

    def emit(prefix, indent):
        members = {m for p, g in groups.items() if p == prefix for m in g["members"]} \
            if prefix else {layer.name for layer in graph.layers()}
        children = [p for p in groups if p.count(".") == (prefix.count(".") + 1 if prefix
                                                          else 0)
                    and (p.startswith(prefix + ".") if prefix else True)]
        inner = {m for p in children for m in groups[p]["members"]}
        for layer in graph.layers():
            if layer.name in members and layer.name not in inner:
                lines.append(node_line(layer, indent))
        for p in children:
            lines.append(f'{indent}subgraph "cluster_{p}" {{')
            lines.append(f'{indent}  label="{groups[p]["label"]}"; style=dashed; '
                         f'color="#8a8a8a"; fontsize=10;')
            emit(p, indent + "  ")
            lines.append(f"{indent}}}")

    emit("", "  ")
    for layer in graph.layers():
        for src in dict.fromkeys(layer.inputs):
            lines.append(f"  {_id(src)} -> {_id(layer.name)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(model) -> str:
    """A Mermaid flowchart (renders in GitHub's Markdown and mermaid.live)."""
    graph = model.graph
    groups = groups_of(graph)
    lines = ["flowchart TD"]

    def esc(text):
        return text.replace('"', "#quot;")

    def emit(prefix, indent):
        members = set(groups[prefix]["members"]) if prefix else \
            {layer.name for layer in graph.layers()}
        depth = prefix.count(".") + 1 if prefix else 0
        children = [p for p in groups if p.count(".") == depth
                    and (p.startswith(prefix + ".") if prefix else True)]
        inner = {m for p in children for m in groups[p]["members"]}
        for layer in graph.layers():
            if layer.name in members and layer.name not in inner:
                op, shape, params = layer_lines(layer)
                open_, close = ("([", "])") if _kind(layer) == "merge" else ("[", "]")
                lines.append(f'{indent}{_id(layer.name)}{open_}"{esc(op)}<br/>{shape}<br/>'
                             f'{params}"{close}')
        for p in children:
            lines.append(f'{indent}subgraph {_id("block_" + p)}["{esc(groups[p]["label"])}"]')
            emit(p, indent + "  ")
            lines.append(f"{indent}end")

    emit("", "  ")
    for layer in graph.layers():
        for src in dict.fromkeys(layer.inputs):
            lines.append(f"  {_id(src)} --> {_id(layer.name)}")
    return "\n".join(lines) + "\n"


def write_graph(model, out) -> str:
    """Write the model's graph to `out` by its extension (.svg, .png, .dot/.gv, .mmd); returns
    the format written."""
    from pathlib import Path

    from ..diagnostics import CnncError
    from ..train.checkpoint import atomic_write_text

    path = Path(out)
    ext = path.suffix.lower()
    if ext in (".svg", ".png"):
        graph_canvas(model).save(path)
    elif ext in (".dot", ".gv"):
        atomic_write_text(path, to_dot(model))
    elif ext in (".mmd", ".mermaid"):
        atomic_write_text(path, to_mermaid(model))
    else:
        raise CnncError(f"cannot tell what to write to {path}: the graph is written as .svg, "
                        ".png, .dot or .mmd", code="usage",
                        hint=f"name the file {path.with_suffix('.svg')}")
    return ext.lstrip(".")
