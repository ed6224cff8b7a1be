"""Portability: where a layer would mean something else, or not fit, in another framework.

`cnnc check --target torch,tf,onnx,caffe` gives one located warning per layer and target whose
meaning or shape would differ there when written the obvious way, with the fix where one exists.
Each rule is a function of the layer (its settled attributes and shapes) returning the targets
it concerns; docs/portability.md lists every rule with the source of each target's behaviour.
The tests show each difference for real: on PyTorch's layers (tests/test_portability.py), on
Keras 3's layers (tests/test_portability_keras.py), and against Caffe's source -- its registered
layer types and its pooling formula (tests/test_portability_caffe.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..diagnostics import WARNING, Diagnostic
from ..ops.shapes import same_pads, window_out

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


def _keras_same(layer, graph) -> tuple[int, int, int, int]:
    """The pads Keras's padding='same' gives this windowed layer (TensorFlow's rule)."""
    s = layer.settled
    h, w = graph[layer.inputs[0]].shape[:2]
    kh, kw = s["size"] if layer.op == "pool" else s["kernel"]
    (sh, sw), (dh, dw) = s["stride"], s.get("dilation") or (1, 1)
    return (*same_pads(h, kh, sh, dh), *same_pads(w, kw, sw, dw))


def caffe_pool_out(size: int, kernel: int, stride: int, pad: int, ceil: bool = True) -> int:
    """Caffe's pooled length along one axis (BVLC Caffe, PoolingLayer::Reshape in
    src/caffe/layers/pooling_layer.cpp): (size + 2*pad - kernel) / stride rounded up
    (round_mode CEIL, the default) or down (FLOOR), plus 1; only when there is padding, one
    less if the last window would start in the trailing padding. Without padding the last
    window may start past the input (kernel < stride)."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


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
    is_avg = layer.op == "pool" and s.get("kind") == "avg"
    pad_fn = (f"F.pad(x, ({left}, {right}, {t}, {b}), value=-inf)" if is_max
              else f"nn.ZeroPad2d(({left}, {right}, {t}, {b}))")
    if _asymmetric(pads):
        out.append(Finding("uneven-padding", "torch",
                           f"pads {_fmt(pads)} (top x bottom x left x right) are uneven; "
                           "PyTorch's layers pad both sides of an axis equally",
                           f"pad first with {pad_fn}, then use padding=0"
                           + (" (zeros count in the average: count_include_pad has no say "
                              "over them)" if is_avg and not s.get("count_pad") else "")))
        out.append(Finding("uneven-padding", "caffe",
                           f"pads {_fmt(pads)} are uneven; Caffe pads both sides of an axis "
                           "equally, so this layer has no exact Caffe form", None))
        if not written_same:
            caveat = (" (zeros, not -inf: see the max-pool rule)" if is_max else
                      " (the zeros count in the average: see the count-pad rule)"
                      if is_avg and not s.get("count_pad") else "")
            out.append(Finding("uneven-padding", "tf",
                               f"explicit uneven pads {_fmt(pads)}: Keras layers pad only "
                               "'valid' or 'same'",
                               f"ZeroPadding2D((({t}, {b}), ({left}, {right}))) then "
                               "padding='valid'" + caveat))
    elif written_same and stride != (1, 1) and layer.op != "pool":
        out.append(Finding("same-with-stride", "torch",
                           "pad=same with a stride: PyTorch refuses padding='same' when the "
                           "stride is not 1",
                           f"write the pads it resolves to here: padding=({t}, {left})"))
    return out


def rule_deconv_caffe(layer, graph) -> list[Finding]:
    """Caffe's Deconvolution crops both sides equally and has no output padding."""
    if layer.op != "conv_transpose":
        return []
    s = layer.settled
    pads, op = s["pads"], s["output_pads"]
    if not _asymmetric(pads) and tuple(op) == (0, 0):
        return []
    # the same layer uncropped (Caffe's pad: 0), then cropped: exact while output padding only
    # keeps rows and columns the crop would otherwise remove
    t, b, left, right = pads
    h, w = layer.shape[:2]
    hint = None
    if b >= op[0] and right >= op[1]:
        hint = (f"Deconvolution with pad: 0, then a Crop layer (offset {t}, {left}) to "
                f"{h}x{w}")
    return [Finding("uneven-padding", "caffe",
                    f"conv_transpose crops {_fmt(pads)} with output padding "
                    f"{op[0]}x{op[1]}; Caffe's Deconvolution crops both sides of an axis "
                    "equally (pad) and has no output padding", hint)]


def rule_ceil(layer, graph) -> list[Finding]:
    """Pooling rounded up (ceil=true), which Keras lacks; Caffe's pooling, which rounds up by
    default."""
    if layer.op != "pool" or layer.settled.get("kind") == "global":
        return []
    s = layer.settled
    src = graph[layer.inputs[0]].shape
    kh, kw = s["size"]
    sh, sw = s["stride"]
    pads = s["pads"]
    t, b, left, right = pads
    floor = (window_out(src[0], kh, sh, pads[0:2]), window_out(src[1], kw, sw, pads[2:4]))
    ours = tuple(layer.shape[:2])
    out = []
    if s.get("ceil") and floor != ours:
        is_max = s.get("kind") == "max"
        hint = None
        if (ours == (-(-src[0] // sh), -(-src[1] // sw))
                and _keras_same(layer, graph)[0::2] == (t, left)
                and (is_max or not s.get("count_pad"))):
            hint = "padding='same' gives the same windows here"
        elif is_max:
            eh = max((ours[0] - 1) * sh + kh - (src[0] + t + b), 0)
            ew = max((ours[1] - 1) * sw + kw - (src[1] + left + right), 0)
            hint = (f"ZeroPadding2D((({t}, {b + eh}), ({left}, {right + ew}))) then "
                    "padding='valid' (exact when the input is not negative, as after a ReLU)")
        out.append(Finding("ceil-rounding", "tf",
                           f"ceil=true gives {ours[0]}x{ours[1]} here; Keras rounds "
                           f"pooling down, giving {floor[0]}x{floor[1]}", hint))
    if not _asymmetric(pads):
        caffe = (caffe_pool_out(src[0], kh, sh, t), caffe_pool_out(src[1], kw, sw, left))
        caffe_floor = (caffe_pool_out(src[0], kh, sh, t, ceil=False),
                       caffe_pool_out(src[1], kw, sw, left, ceil=False))
        if caffe != ours:
            out.append(Finding("ceil-rounding", "caffe",
                               f"Caffe rounds pooling up by default: it would give "
                               f"{caffe[0]}x{caffe[1]} here, not {ours[0]}x{ours[1]}",
                               "round_mode: FLOOR in pooling_param (BVLC Caffe since 2018; "
                               "older builds always round up)" if caffe_floor == ours
                               else None))
    return out


def rule_count_pad(layer, graph) -> list[Finding]:
    """Whether padded zeros count in an average's divisor: frameworks disagree by default."""
    s = layer.settled
    if layer.op != "pool" or s.get("kind") != "avg" or not any(s["pads"]):
        return []
    t, b, left, right = s["pads"]
    if s.get("count_pad"):
        return [Finding("count-pad", "tf", "count_pad=true: Keras's padding='same' leaves "
                        "padded cells out of an average's divisor",
                        f"ZeroPadding2D((({t}, {b}), ({left}, {right}))) then "
                        "AveragePooling2D(padding='valid'): the zeros then count")]
    out = [
        Finding("count-pad", "torch", "nn.AvgPool2d counts padded zeros in the divisor by "
                "default; this layer does not (count_pad=false)",
                "pass count_include_pad=False"),
        Finding("count-pad", "caffe", "Caffe's average pooling counts padded zeros in the "
                "divisor (it divides by the window clipped to the padded input); this layer "
                "does not", None),
    ]
    if layer.attrs.get("pad") != "same":
        same = _keras_same(layer, graph) == tuple(s["pads"])
        out.append(Finding("count-pad", "tf", "explicit padding on average pooling: in Keras "
                           "that is ZeroPadding2D before the pool, and the padded zeros count "
                           "in the divisor; this layer leaves them out (count_pad=false)",
                           "padding='same' gives these pads and leaves them out" if same
                           else None))
    return out


def rule_max_pad_tf(layer, graph) -> list[Finding]:
    """Explicitly padded max pooling in Keras goes through ZeroPadding2D: zeros, not -inf."""
    s = layer.settled
    if layer.op != "pool" or s.get("kind") != "max" or not any(s["pads"]) \
            or layer.attrs.get("pad") == "same":
        return []
    same = _keras_same(layer, graph) == tuple(s["pads"])
    return [Finding("max-pool-zero-padding", "tf",
                    "max pooling with explicit padding: in Keras that is ZeroPadding2D "
                    "before the pool, and a padded zero wins over negative values",
                    "padding='same' gives these pads and ignores them in the max" if same
                    else "make sure the input is not negative (after a ReLU)")]


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
                "and momentum=0.99, counted the other way (the weight of the old average); "
                "Keras also averages the biased batch variance where this layer, like "
                "PyTorch, averages the unbiased one (n/(n-1) times larger)",
                f"BatchNormalization(epsilon={eps:g}, momentum={1 - momentum:g}): the same "
                "outputs and running mean; the running variance still differs as above"),
        Finding("batchnorm-conventions", "caffe",
                "Caffe's BatchNorm layer has no learned scale and shift, and its running "
                "statistics are sums decayed by moving_average_fraction (0.999 by default) "
                "and divided by the sum of their weights, so early on they are the plain "
                "average of the batches seen rather than shrunk toward the initial 0 and 1",
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
    t, b, left, right = s["pads"]
    (sh, sw), (dh, dw) = s["stride"], s["dilation"]
    pad = f"ZeroPadding2D((({t}, {b}), ({left}, {right}))), " if any(s["pads"]) else ""
    message = ("Keras's Conv2D refuses a dilation rate above 1 together with a stride above 1"
               if layer.op == "conv" else
               "TensorFlow's depthwise convolution takes a dilation rate above 1 only with "
               "strides of 1 (Keras's DepthwiseConv2D passes both on, and fails on "
               "TensorFlow)")
    return [Finding("dilation-with-stride", "tf", message,
                    f"{pad}the convolution with dilation_rate=({dh}, {dw}), strides=1 and "
                    f"padding='valid', then MaxPooling2D(pool_size=1, strides=({sh}, {sw})) "
                    "to keep every stride-th output")]


# Ops (or activations) a target has no layer for. Caffe: BVLC Caffe's registered layer types
# (tests/data/caffe_layer_types.txt lists them, with the commit); ONNX: the opset cnnc exports
# (see docs/export.md) has them all. What Caffe does have, and is not flagged: Swish (silu),
# Clip (relu6), Scale (layerscale; mul's channel gate), Eltwise PROD (mul of equal shapes),
# Deconvolution (conv_transpose; its padding: rule_deconv_caffe). (Swish and Clip came after
# Caffe 1.0, in 2018: docs/portability.md.)
_MISSING = {
    "caffe": {"gelu", "hardswish", "hardsigmoid", "layernorm", "stochastic_depth", "shuffle",
              "upsample"},
}
_MISSING_NOTES = {
    "upsample": "nearest upsampling only through a Deconvolution with fixed weights",
    "layernorm": "MVN normalises each channel, or the whole image, not the channels at each "
                 "position, and adds eps to the standard deviation",
    "hardswish": "it can be built from Power, Clip and Eltwise PROD",
    "hardsigmoid": "it can be built from Power and Clip",
    "stochastic_depth": "Dropout drops single values, not a sample's whole branch",
}


def rule_missing(layer, graph) -> list[Finding]:
    out = []
    names = {layer.op, layer.settled.get("activation")} - {None}
    for target, missing in _MISSING.items():
        for name in sorted(names & missing):
            extra = _MISSING_NOTES.get(name)
            out.append(Finding("missing-op", target, f"{NAMES[target]} has no `{name}` layer"
                               + (f" ({extra})" if extra else ""), None))
    return out


RULES = (rule_padding, rule_deconv_caffe, rule_ceil, rule_count_pad, rule_max_pad_tf,
         rule_flatten_order, rule_batchnorm, rule_leaky_slope, rule_dilation_stride, rule_missing)


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
