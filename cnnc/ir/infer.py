"""Shape inference: a shape on every layer, parameter shapes, MACs and receptive fields.

One pass in topological order. A layer whose input failed is skipped silently, so one mistake
gives one diagnostic, not a cascade; independent mistakes are all reported.
"""

from __future__ import annotations

from types import MappingProxyType

from .. import ops
from ..diagnostics import ERROR, WARNING, Diagnostic
from ..ops import ShapeError
from ..ops.shapes import fmt_shape
from .graph import Layer, LayerGraph

MAX_ELEMENTS = 2**40  # a tensor this large is not a real model; say so rather than overflow


def _input_note(graph: LayerGraph, layer: Layer, src: str, label: str) -> str:
    producer = graph[src]
    where = f" ({producer.context[0]})" if producer.context and \
        producer.context != layer.context else ""
    return (f"{label} is {fmt_shape(producer.shape)}, produced by `{producer.text}` at "
            f"line {producer.span.line}{where}")


def _shrink_note(graph: LayerGraph, layer: Layer) -> list[str]:
    """How the image got this small: "5x5 (line 2) -> 3x3 (line 3) -> 1x1 (line 4)", one step
    per top-level statement (a block call counts as one), following each layer's first input."""
    steps: list[list] = []  # [(h, w), line], latest first
    name = layer.inputs[0] if layer.inputs else None
    while name is not None and len(steps) < 1000:
        producer = graph[name]
        if producer.shape is None or len(producer.shape) != 3:
            break
        line = producer.top_line or producer.span.line
        if not steps or steps[-1][1] != line:
            steps.append([producer.shape[:2], line])
        name = producer.inputs[0] if producer.inputs else None
    steps.reverse()
    shrinking = [s for i, s in enumerate(steps) if i == 0 or s[0] != steps[i - 1][0]]
    if len(shrinking) < 3:
        return []
    shown = [f"{h}x{w} (line {line})" for (h, w), line in shrinking]
    if len(shown) > 8:
        shown = shown[:3] + ["..."] + shown[-4:]
    return ["the image shrinks " + " -> ".join(shown)]


def infer(graph: LayerGraph, input_shape: tuple | None = None) -> list[Diagnostic]:
    """Shapes, settled attributes, parameters and costs of every layer, in one pass.

    With `input_shape` (H, W, C), the model is evaluated at that input instead of the one its
    `input` statement declares (`--input`, and the size analyses); the written attributes stay
    as written. Every layer is inferred afresh, so a graph may be inferred again and again."""
    diagnostics: list[Diagnostic] = []
    # receptive field bookkeeping per layer: (rf, jump), None once flat
    rf: dict[str, tuple[int, int] | None] = {}
    for layer in graph.layers():
        layer.shape = None
    for layer in graph.layers():
        schema = ops.get(layer.op)
        in_shapes = [graph[n].shape for n in layer.inputs]
        if None in in_shapes:
            continue
        attrs = layer.attrs
        if input_shape is not None and layer.name == graph.input:
            attrs = {**attrs, "shape": tuple(input_shape)}
        try:
            # read-only: a shape rule returns what it settles, it never writes into the attrs
            result = schema.infer(MappingProxyType(attrs), in_shapes)
            if isinstance(result, ops.Inferred):
                shape, settled = tuple(result.shape), result.settled
            else:
                shape, settled = tuple(result), {}
            if shape and min(shape) <= 0:
                raise ShapeError(f"the output of this layer would be {fmt_shape(shape)}: "
                                 "a size reaches zero", code="kernel-too-large")
            total = 1
            for d in shape:
                total *= d
            if total > MAX_ELEMENTS:
                raise ShapeError(f"the output of this layer would be {fmt_shape(shape)} "
                                 f"({total:,} values per example), too large to be real",
                                 code="too-large")
        except ShapeError as e:
            notes = list(e.notes)
            if len(layer.inputs) == 1:
                notes.append(_input_note(graph, layer, layer.inputs[0], "the input to this layer"))
            else:
                labels = layer.input_labels or [f"input {i + 1}" for i in range(len(layer.inputs))]
                for src, label in zip(layer.inputs, labels):
                    notes.append(_input_note(graph, layer, src, label))
            if e.code == "kernel-too-large":
                notes.extend(_shrink_note(graph, layer))
            notes.extend(layer.context)
            span = layer.arg_spans.get(e.arg, layer.span) if e.arg else layer.span
            diagnostic = Diagnostic(ERROR, e.code, e.message, span, notes, e.hint)
            if diagnostic not in diagnostics:  # the parts of one `split` fail alike: say it once
                diagnostics.append(diagnostic)
            continue
        layer.shape = shape
        layer.in_shapes = in_shapes
        layer.settled = _settle(layer, settled)
        layer.params, layer.init = _declared(schema.params(layer.settled, in_shapes),
                                             "he_uniform")
        layer.buffers, buffer_init = _declared(schema.buffers(layer.settled, in_shapes), "zeros")
        layer.init.update(buffer_init)
        layer.macs = schema.macs(layer.settled, in_shapes, shape)
        rf[layer.name] = _receptive_field(schema, layer, [rf.get(n) for n in layer.inputs])
        layer.receptive_field = rf[layer.name][0] if rf[layer.name] else None

    diagnostics.extend(_activation_warnings(graph))
    diagnostics.extend(_stochastic_depth_warnings(graph))
    return diagnostics


def _settle(layer: Layer, settled: dict) -> dict:
    """The layer's settled attributes: as written, updated with what its shape rule settled,
    and with its activation's parameters (a fused one takes the defaults)."""
    out = {**layer.attrs, **settled}
    name = layer.activation
    act = ops.find_activation(name)
    if act is not None:
        params = act.defaults()
        if name == layer.op:  # a standalone activation: its parameters as written
            params.update({k: out[k] for k in params if k in out})
        out["activation"] = name
        out["activation_params"] = params
    return out


def _declared(params: dict, default_init) -> tuple[dict, dict]:
    """A schema's parameters (name -> ops.Param or bare shape) as (name -> shape, name -> init)."""
    shapes, inits = {}, {}
    for name, p in params.items():
        if isinstance(p, ops.Param):
            shapes[name], inits[name] = tuple(p.shape), p.init
        else:
            shapes[name], inits[name] = tuple(p), default_init
    return shapes, inits


def _receptive_field(schema, layer: Layer, ins: list) -> tuple[int, int] | None:
    """(receptive field, jump) along the height axis, in input pixels; None once flat."""
    if layer.op == "input":
        return (1, 1) if len(layer.shape) == 3 else None
    if len(layer.shape) != 3 or any(i is None for i in ins):
        return None
    r_in = max(i[0] for i in ins)
    j_in = max(i[1] for i in ins)
    if schema.window is None:
        return (r_in, j_in)
    window = schema.window(layer.settled)
    if window is None:
        return None
    kh, _, sh, _ = window
    return (r_in + (kh - 1) * j_in, j_in * sh)


def _activation_warnings(graph: LayerGraph) -> list[Diagnostic]:
    out = []
    for layer in graph.layers():
        act = layer.activation
        if act in ("softmax", "sigmoid") and layer.name != graph.output and layer.shape:
            after = [graph[n] for n in graph.consumers(layer.name)]
            if after and all(a.op == "mul" for a in after):
                continue  # a gate (squeeze-and-excitation): squashing to [0, 1] is its point
            what = f"`{after[0].text}` (line {after[0].span.line}) follows it" if after \
                else "more layers follow it"
            out.append(Diagnostic(
                WARNING, "activation-not-last",
                f"{act} is usually the last layer, but {what}",
                layer.span, list(layer.context),
                f"{act} squashes its input; losses apply it at the output"))
    return out


def _stochastic_depth_warnings(graph: LayerGraph) -> list[Diagnostic]:
    """stochastic_depth zeroes an example's whole tensor: only a residual branch, whose `add`
    keeps the shortcut, survives that. Anywhere else it blanks the example for every later layer."""
    out = []
    for layer in graph.layers():
        if layer.op != "stochastic_depth" or not layer.shape or not layer.attrs["rate"]:
            continue
        after = [graph[n] for n in graph.consumers(layer.name)]
        if after and all(a.op == "add" for a in after):
            continue
        what = f"`{after[0].text}` (line {after[0].span.line}) reads it" if after and \
            after[0].op != "add" else "it is the model's output"
        out.append(Diagnostic(
            WARNING, "stochastic-depth",
            f"`{layer.text}` drops each example's whole tensor while training, but it is not on "
            f"a residual branch: {what}", layer.span, list(layer.context),
            "put it on a residual branch, just before the `add` that joins the shortcut "
            "(`stochastic_depth p; add x`); to drop single values, use `dropout`"))
    return out
