"""The checked layer graph as an ONNX model, built with onnx.helper, one lowering per op.

    model = to_onnx(cnnc_model, weights, layout="nhwc")   # an onnx.ModelProto, checked
    onnx.save(model, "model.onnx")

Inside, images are N x C x H x W (ONNX's convention for Conv and pooling). The graph's input is
`input`, N x H x W x C as the language states images (a Transpose follows it), or N x C x H x W
with layout="nchw"; the batch dimension is dynamic ("batch"). The output, `output`, is what the
model computes, its final softmax included; an image output is turned back to NHWC under the
NHWC layout. The metadata (`metadata_props`) says the layout, the opset and the model.

LOWERINGS maps an op name to a function

    lower(b: Builder, layer, inputs: list[str], in_shapes: list[tuple]) -> str

that adds the layer's nodes through `b` and returns the name of its output tensor. Parameters
are initializers named as in cnnc's weight files ("conv_1.weight"), in PyTorch's layouts, which
are ONNX's too (Conv: O x I/g x kH x kW; Gemm with transB: out x in). An op from a plugin adds
its lowering with `register("name", lower)`.

Semantics that need care, each handled where its op is lowered:
- 'same' padding that cannot be split evenly (TensorFlow's rule: the extra row after) and
  explicit top/bottom/left/right pads: Conv's and pooling's `pads` attribute is asymmetric
  already ([top, left, bottom, right]);
- ceil rounding: never ONNX's ceil_mode (its rule for a last window starting in the padding has
  changed between opsets); the trailing pads are extended so that floor rounding gives the
  checked size, and average pooling then divides by the language's own divisor (a constant);
- count_pad: AveragePool's count_include_pad where the windows stay inside the padded input;
- fused activations after Conv/Gemm, with PyTorch's default parameters;
- flatten: channel-major, as PyTorch (Flatten of N x C x H x W);
- global pooling: GlobalAveragePool/GlobalMaxPool, then Flatten unless keepdims.
"""

from __future__ import annotations

import math

import numpy as np

from . import lowerings

OPSET = 17  # ai.onnx opset of every exported model (Gelu is written out with Erf)
LAYOUTS = ("nhwc", "nchw")


class Builder:
    """The graph being written: nodes, initializers, fresh names."""

    def __init__(self, weights: dict[str, np.ndarray]):
        self.weights = weights
        self.nodes = []
        self.initializers = {}
        self._used: set[str] = set()

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self._used:
            i += 1
            name = f"{base}_{i}"
        self._used.add(name)
        return name

    def node(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        """Add one node; returns the name of its (single) output tensor."""
        from onnx import helper

        out = self.fresh(name)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def param(self, layer, pname: str) -> str:
        """The initializer of a layer's parameter, named as in the weights file."""
        key = f"{layer.name}.{pname}"
        if key not in self.initializers:
            self.initializers[key] = np.asarray(self.weights[key], dtype=np.float32)
            self._used.add(key)
        return key

    def const(self, base: str, value, dtype=np.float32) -> str:
        name = self.fresh(base)
        self.initializers[name] = np.asarray(value, dtype=dtype)
        return name


# -- activations ---------------------------------------------------------------------------------


def _gelu(b: Builder, x: str, name: str, params: dict) -> str:
    """The exact form, x * (1 + erf(x / sqrt 2)) / 2 (ONNX's own Gelu needs opset 20)."""
    scaled = b.node("Mul", [x, b.const(f"{name}.rsqrt2", 1 / math.sqrt(2))], f"{name}.scaled")
    erf = b.node("Erf", [scaled], f"{name}.erf")
    one = b.node("Add", [erf, b.const(f"{name}.one", 1.0)], f"{name}.plus1")
    half = b.node("Mul", [x, b.const(f"{name}.half", 0.5)], f"{name}.halfx")
    return b.node("Mul", [half, one], name)


# activation name -> lower(b, x, name, params) -> output tensor; params are the layer's settled
# activation_params. A plugin adds its own with register_activation.
ACTIVATIONS = {
    "relu": lambda b, x, name, p: b.node("Relu", [x], name),
    "relu6": lambda b, x, name, p: b.node(
        "Clip", [x, b.const(f"{name}.min", 0.0), b.const(f"{name}.max", 6.0)], name),
    "tanh": lambda b, x, name, p: b.node("Tanh", [x], name),
    "sigmoid": lambda b, x, name, p: b.node("Sigmoid", [x], name),
    # over channels (4-D) or features (2-D)
    "softmax": lambda b, x, name, p: b.node("Softmax", [x], name, axis=1),
    "leaky_relu": lambda b, x, name, p: b.node("LeakyRelu", [x], name,
                                               alpha=float(p.get("slope", 0.01))),
    "elu": lambda b, x, name, p: b.node("Elu", [x], name, alpha=float(p.get("alpha", 1.0))),
    "gelu": _gelu,
    # x * sigmoid(x)
    "silu": lambda b, x, name, p: b.node("Mul", [x, b.node("Sigmoid", [x], f"{name}.sigmoid")],
                                         name),
    "hardswish": lambda b, x, name, p: b.node("HardSwish", [x], name),  # x * relu6(x + 3) / 6
    # relu6(x + 3) / 6
    "hardsigmoid": lambda b, x, name, p: b.node("HardSigmoid", [x], name, alpha=1 / 6, beta=0.5),
}


def activation(b: Builder, kind: str, x: str, name: str, params: dict) -> str:
    """One activation with its settled parameters (layer.settled["activation_params"])."""
    return ACTIVATIONS[kind](b, x, name, params)


def register_activation(name: str, lower) -> None:
    """An activation from a plugin: lower(b, x, name, params) -> output tensor name."""
    if name in ACTIVATIONS:
        raise ValueError(f"duplicate ONNX lowering for activation {name!r}")
    ACTIVATIONS[name] = lower
    LOWERINGS[name] = _standalone(name)


def _fused(b: Builder, layer, y: str) -> str:
    act = layer.fused_activation
    if not act:
        return y
    return activation(b, act, y, f"{layer.name}.{act}", layer.settled["activation_params"])


def _standalone(kind: str):
    def lower(b, layer, inputs, in_shapes):
        return activation(b, kind, inputs[0], layer.name, layer.settled["activation_params"])

    return lower


# -- layers --------------------------------------------------------------------------------------


def _onnx_pads(pads) -> list[int]:
    """cnnc's (top, bottom, left, right) as ONNX's [top, left, bottom, right]."""
    top, bottom, left, right = pads
    return [int(top), int(left), int(bottom), int(right)]


def lower_conv(b, layer, inputs, in_shapes):
    a = layer.settled
    groups = a["groups"]
    ins = [inputs[0], b.param(layer, "weight")]
    if "bias" in layer.params:
        ins.append(b.param(layer, "bias"))
    name = layer.name if not layer.fused_activation else f"{layer.name}.conv"
    y = b.node("Conv", ins, name, kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
               dilations=list(a["dilation"]), pads=_onnx_pads(a["pads"]), group=int(groups))
    return _fused(b, layer, y)


def lower_dense(b, layer, inputs, in_shapes):
    ins = [inputs[0], b.param(layer, "weight")]
    if "bias" in layer.params:
        ins.append(b.param(layer, "bias"))
    name = layer.name if not layer.fused_activation else f"{layer.name}.gemm"
    return _fused(b, layer, b.node("Gemm", ins, name, transB=1))


def _pool_extent(size: int, out: int, k: int, s: int, before: int, after: int):
    """(pad after for floor rounding to give `out` windows, whether the declared pads already
    do). Ceil rounding adds one window that floor would not: the pad after grows to hold it."""
    need = (out - 1) * s + k  # the padded extent the last window ends at
    floor_out = (size + before + after - k) // s + 1
    return max(after, need - size - before), floor_out == out


def lower_pool(b, layer, inputs, in_shapes):
    a = layer.settled
    x = inputs[0]
    if a["kind"] == "global":
        op = "GlobalMaxPool" if a["mode"] == "max" else "GlobalAveragePool"
        if a["keepdims"]:
            return b.node(op, [x], layer.name)
        return b.node("Flatten", [b.node(op, [x], f"{layer.name}.pool")], layer.name, axis=1)
    (kh, kw), (sh, sw) = a["size"], a["stride"]
    top, bottom, left, right = a["pads"]
    h, w = in_shapes[0][:2]
    oh, ow = layer.shape[:2]
    bottom2, fits_h = _pool_extent(h, oh, kh, sh, top, bottom)
    right2, fits_w = _pool_extent(w, ow, kw, sw, left, right)
    common = {"kernel_shape": [kh, kw], "strides": [sh, sw]}
    if a["kind"] == "max":  # padding never wins a max, however far it is extended
        pads = (top, bottom, left, right) if fits_h and fits_w else (top, bottom2, left, right2)
        return b.node("MaxPool", [x], layer.name, pads=_onnx_pads(pads), **common)
    if fits_h and fits_w:  # every window inside the padded input: ONNX's divisor is the language's
        return b.node("AveragePool", [x], layer.name, pads=_onnx_pads(a["pads"]),
                      count_include_pad=int(bool(a["count_pad"])), **common)
    # Ceil rounding: a window overhangs the padded input. Sum it (the mean over the whole
    # window with zeros padded, times its size), then divide by the language's divisor: the
    # real elements (and with count_pad, the declared padding) the window covers.
    mean = b.node("AveragePool", [x], f"{layer.name}.mean",
                  pads=_onnx_pads((top, bottom2, left, right2)), count_include_pad=1, **common)
    rows, cols = a["divisor"]  # the checker's divisor of each output row and column
    scale = (kh * kw) / np.multiply.outer(np.asarray(rows, np.float64),
                                          np.asarray(cols, np.float64))
    return b.node("Mul", [mean, b.const(f"{layer.name}.scale", scale[None, None])], layer.name)


def lower_batchnorm(b, layer, inputs, in_shapes):
    ins = [inputs[0]] + [b.param(layer, p) for p in ("weight", "bias", "running_mean",
                                                      "running_var")]
    return b.node("BatchNormalization", ins, layer.name, epsilon=float(layer.settled["eps"]))


def lower_dropout(b, layer, inputs, in_shapes):
    return inputs[0]  # an exported model predicts: dropout is the identity


def lower_layernorm(b, layer, inputs, in_shapes):
    """Over the channels at each position: moved last, normalised, moved back (images)."""
    ins = [b.param(layer, "weight"), b.param(layer, "bias")]
    eps = float(layer.settled["eps"])
    if len(in_shapes[0]) != 3:
        return b.node("LayerNormalization", [inputs[0], *ins], layer.name, axis=-1, epsilon=eps)
    x = b.node("Transpose", [inputs[0]], f"{layer.name}.nhwc", perm=[0, 2, 3, 1])
    y = b.node("LayerNormalization", [x, *ins], f"{layer.name}.norm", axis=-1, epsilon=eps)
    return b.node("Transpose", [y], layer.name, perm=[0, 3, 1, 2])


def lower_layerscale(b, layer, inputs, in_shapes):
    scale = b.param(layer, "scale")
    if len(in_shapes[0]) == 3:  # (C,) -> (C, 1, 1), to broadcast over N x C x H x W
        shape = b.const(f"{layer.name}.shape", [-1, 1, 1], np.int64)
        scale = b.node("Reshape", [scale, shape], f"{layer.name}.scale_chw")
    return b.node("Mul", [inputs[0], scale], layer.name)


def lower_stochastic_depth(b, layer, inputs, in_shapes):
    return inputs[0]  # the identity when predicting


def lower_mul(b, layer, inputs, in_shapes):
    """Element-wise product; a flat (N, C) gate becomes N x C x 1 x 1 against an image."""
    xs = list(inputs)
    if any(len(s) == 3 for s in in_shapes):
        for i, s in enumerate(in_shapes):
            if len(s) == 1:
                axes = b.const(f"{layer.name}.axes", [2, 3], np.int64)
                xs[i] = b.node("Unsqueeze", [xs[i], axes], f"{layer.name}.gate{i}")
    y = xs[0]
    for i, x in enumerate(xs[1:], 1):
        y = b.node("Mul", [y, x], layer.name if i == len(xs) - 1 else f"{layer.name}.{i}")
    return y


def lower_flatten(b, layer, inputs, in_shapes):
    return b.node("Flatten", [inputs[0]], layer.name, axis=1)  # channel-major, as PyTorch


def lower_add(b, layer, inputs, in_shapes):
    y = inputs[0]
    for i, x in enumerate(inputs[1:], 1):
        y = b.node("Add", [y, x], layer.name if i == len(inputs) - 1 else f"{layer.name}.{i}")
    return y


def lower_concat(b, layer, inputs, in_shapes):
    return b.node("Concat", list(inputs), layer.name, axis=1)  # channels, or features once flat


def _ints(b, name, values):
    return b.const(name, values, np.int64)


def lower_split(b, layer, inputs, in_shapes):
    start, stop = layer.settled["channels"]  # one part: channels [start, stop)
    return b.node("Slice", [inputs[0], _ints(b, f"{layer.name}.starts", [start]),
                            _ints(b, f"{layer.name}.ends", [stop]),
                            _ints(b, f"{layer.name}.axes", [1])], layer.name)


def lower_shuffle(b, layer, inputs, in_shapes):
    """ShuffleNet's: N x g x C/g x ..., the two group axes swapped, back to N x C x ..."""
    g = layer.settled["groups"]
    shape = in_shapes[0]
    c = shape[-1]
    rest = [shape[0], shape[1]] if len(shape) == 3 else []
    x = b.node("Reshape", [inputs[0], _ints(b, f"{layer.name}.grouped", [0, g, c // g, *rest])],
               f"{layer.name}.grouped")
    perm = [0, 2, 1] + list(range(3, 3 + len(rest)))
    x = b.node("Transpose", [x], f"{layer.name}.swapped", perm=perm)
    return b.node("Reshape", [x, _ints(b, f"{layer.name}.shape", [0, c, *rest])], layer.name)


def lower_upsample(b, layer, inputs, in_shapes):
    a = layer.settled
    h, w, c = in_shapes[0]
    oh, ow = layer.shape[:2]
    sizes = _ints(b, f"{layer.name}.sizes", [0, c, oh, ow])
    # the batch size is dynamic: sizes = [N, C, OH, OW] with N read from the input
    n = b.node("Shape", [inputs[0]], f"{layer.name}.in_shape", start=0, end=1)
    full = b.node("Concat", [n, _ints(b, f"{layer.name}.chw", [c, oh, ow])],
                  f"{layer.name}.out_shape", axis=0)
    del sizes
    if a["mode"] == "nearest":  # PyTorch's nearest: floor(out_index * in / out)
        attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                 "nearest_mode": "floor"}
    else:
        attrs = {"mode": "linear", "coordinate_transformation_mode":
                 "align_corners" if a["align_corners"] else "pytorch_half_pixel"}
    return b.node("Resize", [inputs[0], "", "", full], layer.name, **attrs)


def lower_conv_transpose(b, layer, inputs, in_shapes):
    # Explicit pads and output padding, never output_shape: given output_shape, ONNX ignores the
    # pads and splits its own, which is not cnnc's crop when the pads are uneven. Output padding
    # adds rows after the crop: it is taken off the after-crop first; onnxruntime takes the rest
    # only while it is below the stride, and beyond that the rows (which no input reaches: they
    # hold the bias alone) are a zero Pad with the bias added after it.
    a = layer.settled
    t, bottom, left, right = a["pads"]
    onnx_pads, output_padding, extra = [], [], []
    for before, after, op, stride in ((t, bottom, a["output_pads"][0], a["stride"][0]),
                                      (left, right, a["output_pads"][1], a["stride"][1])):
        take = min(after, op)
        after, op = after - take, op - take
        keep = op if op < stride else 0
        onnx_pads.append((before, after))
        output_padding.append(int(keep))
        extra.append(int(op - keep))
    has_bias = "bias" in layer.params
    ins = [inputs[0], b.param(layer, "weight")]
    if has_bias and not any(extra):
        ins.append(b.param(layer, "bias"))
    name = layer.name if not layer.fused_activation and not any(extra) else f"{layer.name}.convt"
    y = b.node("ConvTranspose", ins, name, kernel_shape=list(a["kernel"]),
               strides=list(a["stride"]), dilations=list(a["dilation"]), group=int(a["groups"]),
               pads=[int(onnx_pads[0][0]), int(onnx_pads[1][0]), int(onnx_pads[0][1]),
                     int(onnx_pads[1][1])], output_padding=output_padding)
    if any(extra):
        last = layer.name if not layer.fused_activation and not has_bias else f"{layer.name}.pad"
        y = b.node("Pad", [y, _ints(b, f"{layer.name}.extra", [0, 0, 0, 0, 0, 0, *extra])],
                   last)
        if has_bias:
            bias = b.node("Reshape", [b.param(layer, "bias"),
                                      _ints(b, f"{layer.name}.bias_shape", [1, -1, 1, 1])],
                          f"{layer.name}.bias4d")
            y = b.node("Add", [y, bias], layer.name if not layer.fused_activation
                       else f"{layer.name}.biased")
    return _fused(b, layer, y)


LOWERINGS = lowerings(globals())
for _kind in sorted(ACTIVATIONS):
    LOWERINGS[_kind] = _standalone(_kind)


def register(op: str, lower) -> None:
    """Add the ONNX lowering of a plugin's op (see the module's docstring for its signature)."""
    if op in LOWERINGS:
        raise ValueError(f"duplicate ONNX lowering for op {op!r}")
    LOWERINGS[op] = lower


def missing_lowerings(graph) -> list[str]:
    return sorted({layer.op for layer in graph.layers()
                   if layer.op != "input" and layer.op not in LOWERINGS})


# -- the whole model -----------------------------------------------------------------------------


def to_onnx(model, weights: dict[str, np.ndarray], *, layout: str = "nhwc",
            doc: str | None = None):
    """The model as a checked onnx.ModelProto (shape inference run, strict)."""
    import onnx
    from onnx import TensorProto, helper

    from .. import __version__
    from ..diagnostics import CnncError

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    graph = model.graph
    missing = missing_lowerings(graph)
    if missing:
        raise CnncError(f"no ONNX lowering for the op{'s' * (len(missing) > 1)} "
                        f"{', '.join(f'`{m}`' for m in missing)}", code="backend",
                        hint="an op from a plugin brings its lowering: "
                             "cnnc.export.onnx_model.register(op, function)")
    b = Builder(weights)
    unknown = sorted({a for a in (l.activation for l in graph.layers()) if a}
                     - set(ACTIVATIONS))
    if unknown:
        raise CnncError(f"no ONNX lowering for the activation{'s' * (len(unknown) > 1)} "
                        f"{', '.join(f'`{u}`' for u in unknown)}", code="backend",
                        hint="an activation from a plugin brings its lowering: "
                             "cnnc.export.onnx_model.register_activation(name, function)")
    in_shape = model.input_shape
    image = len(in_shape) == 3
    b._used.update({"input", "output"})
    if image and layout == "nhwc":
        dims = ["batch", *in_shape]
        x = b.node("Transpose", ["input"], "input.nchw", perm=[0, 3, 1, 2])
    elif image:
        h, w, c = in_shape
        dims = ["batch", c, h, w]
        x = "input"
    else:
        dims = ["batch", *in_shape]
        x = "input"
    values = {graph.input: x}
    for layer in graph.layers():
        if layer.op == "input":
            continue
        ins = [values[n] for n in layer.inputs]
        shapes = [graph[n].shape for n in layer.inputs]
        values[layer.name] = LOWERINGS[layer.op](b, layer, ins, shapes)
    y = values[graph.output]
    out_shape = model.output_shape
    if len(out_shape) == 3:
        oh, ow, oc = out_shape
        if layout == "nhwc":
            b.nodes.append(helper.make_node("Transpose", [y], ["output"], name="output",
                                            perm=[0, 2, 3, 1]))
            out_dims = ["batch", oh, ow, oc]
        else:
            b.nodes.append(helper.make_node("Identity", [y], ["output"], name="output"))
            out_dims = ["batch", oc, oh, ow]
    else:
        b.nodes.append(helper.make_node("Identity", [y], ["output"], name="output"))
        out_dims = ["batch", *out_shape]
    g = helper.make_graph(
        b.nodes, model.name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_dims)],
        doc_string=doc or "")
    onnx_model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                                   producer_name="cnnc", producer_version=__version__,
                                   doc_string=f"{model.name}, exported by cnnc {__version__}")
    onnx_model.ir_version = 8  # the IR version of opset 17 (onnx 1.12+): the widest support
    meta = {"layout": layout.upper(),
            "input": ("N x H x W x C" if layout == "nhwc" else "N x C x H x W") if image
            else "N x F",
            "opset": str(OPSET),
            "model": model.name,
            "input_shape": "x".join(map(str, in_shape)),
            "output_shape": "x".join(map(str, out_shape)),
            "final_activation": graph[graph.output].activation or "none"}
    helper.set_model_props(onnx_model, meta)
    # The structure is checked in full and its shapes inferred on a copy whose weights are
    # graph inputs of the same shapes: the checker and shape inference copy the whole model
    # (half a gigabyte for VGG-16) several times, and need only the shapes.
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(onnx_model)
    skeleton.graph.input.extend(
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
        for k, v in b.initializers.items())
    onnx.checker.check_model(skeleton, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(skeleton, check_type=True, strict_mode=True)
    onnx_model.graph.value_info.extend(inferred.graph.value_info)
    for k, v in b.initializers.items():  # one copy of each array, straight into the proto
        t = onnx_model.graph.initializer.add()
        t.name, t.data_type = k, helper.np_dtype_to_tensor_dtype(v.dtype)
        t.dims.extend(v.shape)
        t.raw_data = np.ascontiguousarray(v, dtype=v.dtype.newbyteorder("<")).tobytes()
    onnx.checker.check_model(onnx_model)  # the weights: names, types, sizes
    return onnx_model
