"""Portability: where a layer would mean something else, or not fit, in another framework.

`cnnc check --target torch,tf,onnx,caffe` gives one located warning per layer and target whose
meaning or shape would differ there when written the obvious way, with the fix where one exists.
Each rule is a function of the layer (its settled attributes and shapes) returning the targets
it concerns; docs/portability.md lists every rule with the source of each target's behaviour,
and tests/test_portability.py shows each difference for real on PyTorch (and ONNX Runtime).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..diagnostics import WARNING, Diagnostic
from ..ops.shapes import window_out

TARGETS = ("torch", "tf", "onnx", "caffe")
NAMES = {"torch": "PyTorch", "tf": "TensorFlow/Keras", "onnx": "ONNX", "caffe": "Caffe"}


@dataclass(frozen=True)
class Finding:
    rule: str
    target: str
    message: str
    hint: str | None = None


def _pads(layer):
    return layer.settled.get("pads")


def _windowed(layer) -> bool:
    return layer.op in ("conv", "dwconv") or (layer.op == "pool"
                                               and layer.settled.get("kind") != "global")


def _asymmetric(pads) -> bool:
    return pads is not None and (pads[0] != pads[1] or pads[2] != pads[3])


def _fmt(pads) -> str:
    return "x".join(map(str, pads))


def rule_padding(layer, graph) -> list[Finding]:
    """Uneven padding (TensorFlow's 'same' puts the odd pixel after), or 'same' with a stride."""
    if not _windowed(layer):
        return []
    s = layer.settled
    pads = _pads(layer)
    out = []
    t, b, left, right = pads
    written_same = layer.attrs.get("pad") == "same"
    stride = s.get("stride") or (1, 1)
    is_max = layer.op == "pool" and s.get("kind") == "max"
    pad_fn = (f"F.pad(x, ({left}, {right}, {t}, {b}), value=-inf)" if is_max
              else f"nn.ZeroPad2d(({left}, {right}, {t}, {b}))")
    if _asymmetric(pads):
        out.append(Finding("uneven-padding", "torch",
                           f"pads {_fmt(pads)} (top x bottom x left x right) are uneven; "
                           "PyTorch's layers pad both sides of an axis equally",
                           f"pad first with {pad_fn}, then use padding=0"))
        out.append(Finding("uneven-padding", "caffe",
                           f"pads {_fmt(pads)} are uneven; Caffe pads both sides of an axis "
                           "equally, so this layer has no exact Caffe form", None))
        if not written_same:
            out.append(Finding("uneven-padding", "tf",
                               f"explicit uneven pads {_fmt(pads)}: Keras layers pad only "
                               "'valid' or 'same'",
                               f"ZeroPadding2D((({t}, {b}), ({left}, {right}))) then "
                               "padding='valid'" + (" (zeros, not -inf: see the max-pool rule)"
                                                    if is_max else "")))
    elif written_same and stride != (1, 1) and layer.op != "pool":
        out.append(Finding("same-with-stride", "torch",
                           "pad=same with a stride: PyTorch refuses padding='same' when the "
                           "stride is not 1",
                           f"write the pads it resolves to here: padding=({t}, {left})"))
    return out


def rule_ceil(layer, graph) -> list[Finding]:
    """Pooling rounded up (ceil=true), and Caffe's pooling, which always rounds up."""
    if layer.op != "pool" or layer.settled.get("kind") == "global":
        return []
    s = layer.settled
    src = graph[layer.inputs[0]].shape
    kh, kw = s["size"]
    sh, sw = s["stride"]
    pads = s["pads"]
    floor = (window_out(src[0], kh, sh, pads[0:2]), window_out(src[1], kw, sw, pads[2:4]))
    ceil = (window_out(src[0], kh, sh, pads[0:2], ceil=True),
            window_out(src[1], kw, sw, pads[2:4], ceil=True))
    out = []
    if s.get("ceil") and floor != ceil:
        out.append(Finding("ceil-rounding", "tf",
                           f"ceil=true gives {ceil[0]}x{ceil[1]} here; TensorFlow rounds "
                           f"pooling down, giving {floor[0]}x{floor[1]}",
                           "pad the input by one more row and column at the end "
                           "(ZeroPadding2D) so the last window fits"))
    if not s.get("ceil") and floor != ceil:
        out.append(Finding("ceil-rounding", "caffe",
                           f"Caffe rounds pooling up: it would give {ceil[0]}x{ceil[1]} here, "
                           f"not {floor[0]}x{floor[1]}",
                           "make the input divide evenly (pad or crop it), or write ceil=true "
                           "if Caffe's size is the one you want"))
    return out


def rule_count_pad(layer, graph) -> list[Finding]:
    """Whether padded zeros count in an average's divisor: frameworks disagree by default."""
    s = layer.settled
    if layer.op != "pool" or s.get("kind") != "avg" or not any(s["pads"]):
        return []
    if s.get("count_pad"):
        return [Finding("count-pad", "tf", "count_pad=true: Keras's average pooling never "
                        "counts padded zeros in the divisor", None)]
    return [
        Finding("count-pad", "torch", "nn.AvgPool2d counts padded zeros in the divisor by "
                "default; this layer does not (count_pad=false)",
                "pass count_include_pad=False"),
        Finding("count-pad", "caffe", "Caffe's average pooling counts padded zeros in the "
                "divisor (it divides by the window clipped to the padded input); this layer "
                "does not", None),
    ]


def rule_max_pad_tf(layer, graph) -> list[Finding]:
    """Explicitly padded max pooling in Keras goes through ZeroPadding2D: zeros, not -inf."""
    s = layer.settled
    if layer.op != "pool" or s.get("kind") != "max" or not any(s["pads"]) \
            or layer.attrs.get("pad") == "same":
        return []
    return [Finding("max-pool-zero-padding", "tf",
                    "max pooling with explicit padding: in Keras that is ZeroPadding2D "
                    "before the pool, and a padded zero wins over negative values",
                    "use pad=same where it gives the same pads, or make sure the input is "
                    "not negative (after a ReLU)")]


def rule_flatten_order(layer, graph) -> list[Finding]:
    """A layer with weights after flattening an image: the order of its inputs differs."""
    if layer.op != "flatten":
        return []
    src = graph[layer.inputs[0]].shape
    if len(src) != 3 or src[0] * src[1] == 1 or src[2] == 1:
        return []
    return [Finding("flatten-order", "tf",
                    f"flatten orders the {src[0]}x{src[1]}x{src[2]} values channel by channel "
                    "(C, H, W), as PyTorch does; Keras flattens position by position (H, W, C), "
                    "so a dense layer's weights ported between them need their input rows "
                    "permuted",
                    "permute the next dense layer's weight columns from (C, H, W) to "
                    "(H, W, C) order when porting, or pool globally instead of flattening")]


def rule_batchnorm(layer, graph) -> list[Finding]:
    """Batch norm's eps and momentum: PyTorch's convention, not Keras's or Caffe's."""
    if layer.op != "batchnorm":
        return []
    s = layer.settled
    eps, momentum = s.get("eps", 1e-5), s.get("momentum", 0.1)
    return [
        Finding("batchnorm-conventions", "tf",
                f"batch norm here uses eps={eps:g} and momentum={momentum:g} (PyTorch's "
                "convention: the weight of the new batch); Keras's defaults are epsilon=1e-3 "
                "and momentum=0.99, counted the other way (the weight of the old average)",
                f"BatchNormalization(epsilon={eps:g}, momentum={1 - momentum:g})"),
        Finding("batchnorm-conventions", "caffe",
                "Caffe's BatchNorm layer has no learned scale and shift, and averages with "
                "moving_average_fraction (0.999 by default)",
                f"BatchNorm (eps: {eps:g}, moving_average_fraction: {1 - momentum:g}) followed "
                "by a Scale layer with bias_term: true"),
    ]


def rule_leaky_slope(layer, graph) -> list[Finding]:
    if layer.settled.get("activation") != "leaky_relu":
        return []
    slope = layer.settled["activation_params"].get("slope", 0.01)
    return [Finding("leaky-relu-slope", "tf",
                    f"leaky_relu's slope is {slope:g}; Keras's LeakyReLU defaults to 0.3",
                    f"LeakyReLU(negative_slope={slope:g})")]


def rule_dilation_stride(layer, graph) -> list[Finding]:
    s = layer.settled
    if layer.op not in ("conv", "dwconv") or tuple(s["dilation"]) == (1, 1) \
            or tuple(s["stride"]) == (1, 1):
        return []
    return [Finding("dilation-with-stride", "tf",
                    "Keras's Conv2D refuses a dilation rate above 1 together with a stride "
                    "above 1", "dilate with stride 1, then subsample (a stride-2 1x1 pool)")]


# Ops (or activations) a target has no layer for. ONNX: the opset cnnc exports (see
# docs/export.md) has them all.
_MISSING = {
    "caffe": {"gelu", "silu", "hardswish", "hardsigmoid", "layernorm", "layerscale",
              "stochastic_depth", "relu6", "shuffle", "upsample", "conv_transpose", "mul"},
}
_MISSING_NOTES = {"upsample": "nearest upsampling only through a Deconvolution with fixed "
                              "weights", "conv_transpose": "Caffe's Deconvolution pads "
                              "symmetrically only", "mul": "Caffe's Eltwise PROD takes "
                              "tensors of one shape, not a broadcast gate"}


def rule_missing(layer, graph) -> list[Finding]:
    out = []
    names = {layer.op, layer.settled.get("activation")} - {None}
    for target, missing in _MISSING.items():
        for name in sorted(names & missing):
            extra = _MISSING_NOTES.get(name)
            out.append(Finding("missing-op", target, f"{NAMES[target]} has no `{name}` layer"
                               + (f" ({extra})" if extra else ""), None))
    return out


RULES = (rule_padding, rule_ceil, rule_count_pad, rule_max_pad_tf, rule_flatten_order,
         rule_batchnorm, rule_leaky_slope, rule_dilation_stride, rule_missing)


def findings(graph, targets=TARGETS) -> list[tuple]:
    """(layer, Finding) for every rule that fires on a layer for one of `targets`."""
    out = []
    for layer in graph.layers():
        for rule in RULES:
            for f in rule(layer, graph):
                if f.target in targets:
                    out.append((layer, f))
    return out


def diagnostics(graph, targets) -> list[Diagnostic]:
    """The findings as located warnings (code `portability`), one per layer, rule and target."""
    out = []
    for layer, f in findings(graph, targets):
        notes = [f"rule {f.rule}; see docs/portability.md", *layer.context]
        out.append(Diagnostic(WARNING, "portability", f"{NAMES[f.target]}: {f.message}",
                              layer.span, notes, f.hint))
    return out


def parse_targets(text: str) -> tuple[str, ...]:
    names = tuple(t.strip().lower() for t in text.split(",") if t.strip())
    aliases = {"pytorch": "torch", "tensorflow": "tf", "keras": "tf"}
    names = tuple(aliases.get(n, n) for n in names)
    bad = [n for n in names if n not in TARGETS]
    if bad or not names:
        raise ValueError(f"unknown target {bad[0]!r}" if bad else "no target given")
    return names
