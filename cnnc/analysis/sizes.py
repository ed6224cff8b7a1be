"""Which input sizes a model accepts, and at which it silently drops border pixels.

Every spatial op here maps its input's height (and, separately, its width) to its output's by a
rule of one form,

    out = k * floor((x + a) / b) + c          (k = 0: a constant, as after global pooling)

(a window: k = 1, b = the stride; 'same' padding: ceil(x / s) = floor((x + s - 1) / s);
upsampling by f: k = f, b = 1). The rule of each layer is not written down per op: it is *fitted*
by running the layer's own shape rule (its schema's `infer`) over a run of input sizes, then
checked at sizes far from the fit. So an op added by a plugin gets its formula too, and a rule
that is not of this form is reported as such, never guessed.

Rules compose: floor(floor(x / m) / n) = floor(x / (m n)) for integers, so a chain of windows is
again one floor over the model's input, `floor((H - 1) / 32) + 1` for ResNet-18's last stage.

Dropped pixels are found exactly, by walking back from the output which input rows each layer
reads (a window reads rows j*s - pad + t*d); a row no path reads is dropped: it cannot change the
output. tests/test_sizes.py checks this against the gradient of PyTorch's output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

from .. import ops
from ..ops import ShapeError

AXES = ("H", "W")
SCAN_LIMIT = 4096  # the largest input side searched for the smallest accepted one
_PROBE_FAR = (97, 311, 1009)  # extra sizes at which a fitted rule is checked


@dataclass(frozen=True)
class Rule:
    """out = k * floor((x + a) / b) + c, for x >= lo (the smallest size the layer accepts)."""

    k: int
    a: int
    b: int
    c: int
    lo: int = 1

    def __call__(self, x: int) -> int:
        return self.k * ((x + self.a) // self.b) + self.c

    def then(self, outer: "Rule") -> "Rule | None":
        """outer(self(x)) as one rule, or None when it has no such form."""
        k1, a1, b1, c1 = self.k, self.a, self.b, self.c
        k2, a2, b2, c2 = outer.k, outer.a, outer.b, outer.c
        if k2 == 0:
            return Rule(0, 0, 1, c2)
        if k1 == 0:
            return Rule(0, 0, 1, outer(c1))
        if b2 == 1:  # outer is k2 * (y + a2) + c2
            return Rule(k1 * k2, a1, b1, k2 * (c1 + a2) + c2)
        if k1 == 1:  # floor((floor((x + a1) / b1) + c1 + a2) / b2)
            return Rule(k2, a1 + b1 * (c1 + a2), b1 * b2, c2)
        if k1 % b2 == 0:  # k1 * floor(...) is a multiple of b2
            return Rule(k2 * k1 // b2, a1, b1, k2 * ((c1 + a2) // b2) + c2)
        return None

    def text(self, var: str) -> str:
        """The rule as a formula of `var`, in its simplest written form."""
        if self.k == 0:
            return str(self.c)
        inner = _plus(var, self.a)
        if self.b == 1:
            body = inner if self.k == 1 else f"{self.k} * {_paren(inner)}"
            if self.k == 1 and self.c:
                return _plus(var, self.a + self.c)
            return _plus(body, self.c)
        if self.k == 1 and self.c not in (0, 1):
            # the form of the output-size formula, floor((H + 2p - k) / s) + 1
            return Rule(1, self.a + self.b * (self.c - 1), self.b, 1).text(var)
        body = f"floor({_paren(inner)} / {self.b})"
        if self.k != 1:
            body = f"{self.k} * {body}"
        return _plus(body, self.c)


def _plus(text: str, n: int) -> str:
    return text if n == 0 else f"{text} + {n}" if n > 0 else f"{text} - {-n}"


def _paren(text: str) -> str:
    return f"({text})" if " " in text else text


# -- fitting one layer's rule ---------------------------------------------------------------------


def _spatial(shape) -> bool:
    return shape is not None and len(shape) == 3


def _out_along(schema, layer, in_shapes: list[tuple], varied: list[bool], axis: int, x: int):
    """The layer's output size along `axis` when the varied inputs have size x there; None when
    the layer refuses that size (or its output is no longer an image)."""
    shapes = []
    for shape, vary in zip(in_shapes, varied):
        if vary:
            shape = list(shape)
            shape[axis] = x
            shape = tuple(shape)
        shapes.append(shape)
    try:
        out = schema.infer(MappingProxyType(layer.attrs), shapes)
    except (ShapeError, ValueError, ZeroDivisionError, KeyError, TypeError):
        return None
    out = tuple(out.shape if isinstance(out, ops.Inferred) else out)
    if not out or min(out) <= 0:
        return None
    return out[axis] if len(out) == 3 else out[0]  # a flat output: its length


def fit_rule(layer, in_shapes: list[tuple], axis: int) -> Rule | None:
    """The layer's size rule along `axis`, fitted from its shape rule and checked far away."""
    schema = ops.get(layer.op)
    varied = [_spatial(s) and s[axis] == in_shapes[0][axis] and s[axis] > 1 for s in in_shapes]
    if not any(varied):
        varied = [_spatial(s) for s in in_shapes]

    def f(x):
        return _out_along(schema, layer, in_shapes, varied, axis, x)

    lo = next((x for x in range(1, 65) if f(x) is not None), None)
    if lo is None:
        return None
    xs = list(range(lo, lo + 48))
    ys = [f(x) for x in xs]
    if None in ys:
        return None
    steps = [(x, ys[i + 1] - ys[i]) for i, x in enumerate(xs[:-1]) if ys[i + 1] != ys[i]]
    if not steps:
        rule = Rule(0, 0, 1, ys[0], lo)
    else:
        k = steps[0][1]
        changes = [x + 1 for x, _ in steps]  # sizes at which the output steps up
        gaps = {b - a for a, b in zip(changes, changes[1:])}
        if any(d != k for _, d in steps) or len(gaps) > 1:
            return None
        b = gaps.pop() if gaps else None
        if b is None:  # one step in 48 sizes: a period longer than the run
            return None
        a = (-changes[0]) % b
        c = ys[xs.index(changes[0])] - k * ((changes[0] + a) // b)
        rule = Rule(k, a, b, c, lo)
    for x in (lo + 48, *(lo + p for p in _PROBE_FAR)):
        if f(x) != rule(x):
            return None
    return rule


# -- dropped rows ---------------------------------------------------------------------------------


def _window(layer, axis: int):
    """(kernel, stride, dilation, pad before) of a windowed layer along `axis`, else None."""
    a = layer.settled
    if layer.op in ("conv", "dwconv"):
        kernel, stride, dilation = a["kernel"], a["stride"], a["dilation"]
    elif layer.op == "pool" and a.get("kind") != "global":
        kernel, stride, dilation = a["size"], a["stride"], (1, 1)
    else:
        return None
    pads = a.get("pads")
    if pads is None:
        return None
    return kernel[axis], stride[axis], dilation[axis], pads[2 * axis]


def _rows_read(layer, axis: int, in_size: int, used_out: list[bool]) -> list[bool]:
    """Which input rows (along `axis`) the used output rows read."""
    win = _window(layer, axis)
    if win is None:
        out_size = len(used_out)
        if out_size == in_size:  # elementwise along this axis: row i reads row i
            return list(used_out)
        return [any(used_out)] * in_size  # global, flatten, resampling: every row
    k, s, d, before = win
    read = [False] * in_size
    for j, used in enumerate(used_out):
        if used:
            for t in range(k):
                i = j * s - before + t * d
                if 0 <= i < in_size:
                    read[i] = True
    return read


def dropped_rows(graph, axis: int) -> list[int]:
    """Input rows (0-based, along `axis`: 0 height, 1 width) that cannot change the output."""
    layers = graph.layers()
    used: dict[str, list[bool]] = {}
    out = graph[graph.output]
    used[out.name] = [True] * (out.shape[axis] if _spatial(out.shape) else 1)
    for layer in reversed(layers):
        mask = used.get(layer.name)
        if mask is None or not layer.inputs:
            continue
        for src in layer.inputs:
            producer = graph[src]
            if not _spatial(producer.shape):
                used.setdefault(src, [True])
                continue
            n = producer.shape[axis]
            if _spatial(layer.shape):
                read = _rows_read(layer, axis, n, mask)
            else:
                read = [any(mask)] * n
            prev = used.get(src)
            used[src] = read if prev is None else [p or r for p, r in zip(prev, read)]
    mask = used.get(graph.input)
    if mask is None:
        return []
    return [i for i, u in enumerate(mask) if not u]


# -- the whole model ------------------------------------------------------------------------------


@dataclass
class LayerSizes:
    name: str
    formulas: list[str | None]  # per axis, of the model's input H and W; None once flat
    rules: list[Rule | None] = field(default_factory=list, repr=False)


@dataclass
class SizeReport:
    declared: tuple[int, int]
    layers: list[LayerSizes]
    min_input: tuple[int, int] | None
    only_input: tuple[int, int] | None
    accepts: list[tuple[int, int] | None]  # per axis: the (lo, hi) run of sizes, hi None = any
    fixed_by: str | None  # the layer whose parameters fix the input size (dense after flatten)
    dropped: list[list[int]]  # per axis, at the declared size
    no_drop: list[dict]  # per axis: {"sizes": [...], "every": p, "residues": [...]}
    aligned: list[dict]  # per axis, the same for sides every strided layer divides exactly

    def to_json(self) -> dict:
        return {
            "input": list(self.declared),
            "min_input": list(self.min_input) if self.min_input else None,
            "only_input": list(self.only_input) if self.only_input else None,
            "accepts": {ax: ({"min": r[0], "max": r[1]} if r else None)
                        for ax, r in zip(AXES, self.accepts)},
            "fixed_by": self.fixed_by,
            "dropped_at_input": {ax: d for ax, d in zip(AXES, self.dropped)},
            "no_drop_sizes": {ax: n for ax, n in zip(AXES, self.no_drop)},
            "aligned_sizes": {ax: n for ax, n in zip(AXES, self.aligned)},
            "layers": [{"name": s.name, "H": s.formulas[0], "W": s.formulas[1]}
                       for s in self.layers],
        }


def _set_input(graph, h: int, w: int):
    """Infer every layer's shape again at input size h x w (the graph keeps them); returns
    whether the model accepts that size."""
    from ..ir.infer import infer

    c = _declared_channels(graph)
    return not any(d.severity == "error" for d in infer(graph, (h, w, c)))


def _declared_channels(graph) -> int:
    shape = graph[graph.input].attrs["shape"]
    return shape[2] if len(shape) == 3 else 1


def _graph_at(graph, h: int, w: int):
    """(shapes, parameter shapes) of every layer at input size h x w; (None, None) if the
    model refuses it. Leaves the graph inferred at h x w: analyse() restores it."""
    if not _set_input(graph, h, w):
        return None, None
    layers = graph.layers()
    return {l.name: l.shape for l in layers}, {l.name: dict(l.params) for l in layers}


def analyse(graph, *, scan: bool = True) -> SizeReport:
    """Formulas, accepted sizes and dropped rows for a checked graph with an image input.

    With scan=False, the sides at which nothing is dropped are not searched (the slow part:
    one shape inference per side tried)."""
    original = graph[graph.input].shape
    try:
        return _analyse(graph, scan)
    finally:
        from ..ir.infer import infer

        infer(graph, original)  # back to the size it was analysed at


def _analyse(graph, scan: bool) -> SizeReport:
    layers = graph.layers()
    inp = graph[graph.input]
    declared = inp.shape[:2]
    rules: dict[str, list[Rule | None]] = {inp.name: [Rule(1, 0, 1, 0), Rule(1, 0, 1, 0)]}
    per_layer: list[LayerSizes] = [LayerSizes(inp.name, list(AXES), rules[inp.name])]
    broken: list[bool] = [False, False]  # a rule that could not be fitted or composed
    los: list[int] = [1, 1]  # the smallest input side every layer accepts, so far
    fixed_by = None
    for layer in layers[1:]:
        in_shapes = [graph[n].shape for n in layer.inputs]
        if not _spatial(layer.shape):
            # A flat output: its rule is its length's. A layer with parameters that reads a
            # length that follows the input's size (dense after flatten) fixes that size.
            flat = [_compose(graph, layer, in_shapes, axis, rules, los, broken, record=False)
                    for axis in (0, 1)]
            rules[layer.name] = flat
            per_layer.append(LayerSizes(layer.name, [None, None], flat))
            if fixed_by is None and layer.params and any(
                    len(graph[n].shape) == 1 and any(r is None or r.k != 0
                                                     for r in rules.get(n, [None, None]))
                    for n in layer.inputs):
                fixed_by = layer.name
            continue
        mine = [_compose(graph, layer, in_shapes, axis, rules, los, broken)
                for axis in (0, 1)]
        rules[layer.name] = mine
        per_layer.append(LayerSizes(layer.name, [r.text(ax) if r else None
                                                 for r, ax in zip(mine, AXES)], mine))

    dropped = [dropped_rows(graph, axis) for axis in (0, 1)]
    min_input = _min_input(graph, declared, los, broken)
    accepts = [None, None]
    only_input = None
    no_drop: list[dict] = [{}, {}]
    aligned: list[dict] = [{}, {}]
    if min_input is not None:
        accepts = _accepted_runs(graph, declared, min_input, fixed_by)
        if fixed_by is not None:
            # The parameters fix the size: the smallest accepted is the run's start; the
            # declared size is the one the model is written for (the others drop pixels).
            min_input = tuple(r[0] for r in accepts)
            only_input = tuple(declared)
        if scan:
            for axis in (0, 1):
                period = max([r[axis].b for r in rules.values()
                              if r[axis] is not None and r[axis].k] + [8])
                no_drop[axis], aligned[axis] = _scan_sizes(graph, declared, axis,
                                                           accepts[axis], period, rules)
    return SizeReport(tuple(declared), per_layer, min_input, only_input, accepts, fixed_by,
                      dropped, no_drop, aligned)


def _compose(graph, layer, in_shapes, axis, rules, los, broken, record=True) -> Rule | None:
    """The layer's size (or length, once flat) along `axis` as a rule of the model's input."""
    srcs = [n for n in layer.inputs if rules.get(n) is not None]
    own = fit_rule(layer, in_shapes, axis) if layer.inputs else None
    first = rules[layer.inputs[0]][axis] if layer.inputs else None
    composed = None
    if own is not None and first is not None and srcs:
        composed = first.then(own)
        if composed is not None and record:
            need = _smallest(first, own.lo)
            if need is None:
                composed = None
            else:
                los[axis] = max(los[axis], need)
    if composed is None and record:
        broken[axis] = True
    return composed


def _smallest(rule: Rule, need: int) -> int | None:
    """The smallest x >= 1 with rule(x) >= need (rules never decrease as x grows)."""
    if rule(SCAN_LIMIT) < need:
        return None
    lo, hi = 1, SCAN_LIMIT
    while lo < hi:
        mid = (lo + hi) // 2
        if rule(mid) >= need:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _runs_at(graph, h: int, w: int) -> bool:
    shapes, _ = _graph_at(graph, h, w)
    return shapes is not None


def _min_input(graph, declared, los, broken) -> tuple[int, int] | None:
    """The smallest (H, W) the model accepts, each side with the other at its declared size:
    from the rules' bound where every rule is known, then confirmed by inferring there."""
    found = []
    for axis in (0, 1):
        start = 1 if broken[axis] else los[axis]

        def ok(x, axis=axis):
            return _runs_at(graph, *((x, declared[1]) if axis == 0 else (declared[0], x)))

        x = start
        limit = declared[axis]
        while x <= limit and not ok(x):
            x += 1
        if x > limit:
            return None
        if x > 1 and not broken[axis] and ok(x - 1):  # the rule's bound must be tight
            return None
        found.append(x)
    return tuple(found)


def _accepted_runs(graph, declared, min_input, fixed_by):
    """Per axis, the run of sides the model accepts with the other side declared: (lo, hi),
    hi None when it has no end (a fully convolutional model)."""
    runs = []
    _, base = _graph_at(graph, *declared)
    for axis in (0, 1):
        lo = min_input[axis]

        def ok(x, axis=axis):
            hw = (x, declared[1]) if axis == 0 else (declared[0], x)
            shapes, params = _graph_at(graph, *hw)
            return shapes is not None and params == base

        if fixed_by is None:
            runs.append((lo, None))
            continue
        lo = declared[axis]
        while lo > 1 and ok(lo - 1):
            lo -= 1
        hi = declared[axis]
        while hi < declared[axis] + SCAN_LIMIT and ok(hi + 1):
            hi += 1
        runs.append((lo, hi))
    return runs


def _scan_sizes(graph, declared, axis: int, run, period: int, rules) -> tuple[dict, dict]:
    """Over a window of sides around the declared one (other side declared), the sides at which
    no input row is dropped, and those at which every strided layer divides its input exactly
    (the "multiples of 32" of ResNets); each as a pattern (period and residues) when one shows."""
    if run is None:
        return {}, {}
    lo, hi = run
    first = max(lo, declared[axis] - 2 * period)
    last = declared[axis] + 2 * period if hi is None else hi
    last = max(last, first + 4 * period)
    if hi is not None:
        last = min(last, hi)
    no_drop, aligned, tried = [], [], []
    for x in range(first, last + 1):
        hw = (x, declared[1]) if axis == 0 else (declared[0], x)
        if not _set_input(graph, *hw):
            continue
        tried.append(x)
        if not dropped_rows(graph, axis):
            no_drop.append(x)
        if _aligned(graph, axis):
            aligned.append(x)
    return _pattern(no_drop, tried), _pattern(aligned, tried)


def _aligned(graph, axis: int) -> bool:
    """Whether every layer that changes the scale (a stride, an upsampling) maps its input
    size to exactly input x scale, at the sizes the graph is inferred at now."""
    for layer in graph.layers():
        if not layer.inputs or not _spatial(layer.shape):
            continue
        src = graph[layer.inputs[0]].shape
        if not _spatial(src):
            continue
        win = _window(layer, axis)
        x, out = src[axis], layer.shape[axis]
        if win is not None:
            stride = win[1]
            if stride > 1 and out * stride != x:
                return False
        elif out != x and (out > x and out % x or out < x and x % out):
            return False
    return True


def _pattern(good: list[int], tried: list[int]) -> dict:
    """{"sizes": [...]} with, when the set repeats within the sides tried, "every": p and
    "residues": the sides mod p that are in it."""
    result: dict = {"sizes": good[:12] + (["..."] if len(good) > 12 else [])}
    if not tried or not good:
        return result
    lo, hi = tried[0], tried[-1]
    span = hi - lo + 1
    present = set(good)
    for p in range(1, span // 3 + 1):  # a period shows only over three of them
        if all((x in present) == (x + p in present) for x in tried if x + p <= hi
               and x + p in tried):
            residues = sorted({x % p for x in good})
            result.update({"every": p, "residues": residues})
            break
    return result


def describe_pattern(entry: dict, var: str) -> str | None:
    """A pattern of sides as a condition: "always", "H is a multiple of 32", "H mod 8 is 0, 1
    or 7", "H is 28"; None when no side is in it."""
    if "every" in entry:
        p, residues = entry["every"], entry["residues"]
        if p == 1:
            return "always"
        if residues == [0]:
            return f"{var} is a multiple of {p}"
        if len(residues) == 1:
            return f"{var} mod {p} is {residues[0]}"
        return f"{var} mod {p} is {_alternatives(residues)}"
    sizes = [s for s in entry.get("sizes", []) if s != "..."]
    if not sizes:
        return None
    return f"{var} is {_alternatives(sizes)}" + (" ..." if "..." in entry["sizes"] else "")


def _alternatives(values) -> str:
    values = [str(v) for v in values]
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " or " + values[-1]
