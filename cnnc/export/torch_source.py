"""The checked layer graph as a standalone PyTorch file: one nn.Module class, its layers built in
__init__ and its forward written out, line by line, in the graph's order.

    text = to_torch_source(model)       # Python source; imports torch only, never cnnc

Block instances become submodules (plain nn.Module containers), so the generated module's
state_dict keys are cnnc's weight keys ("basic_1.branch_1.conv_1.weight") and a cnnc
safetensors file loads into it unchanged:

    net = Model()
    net.load_state_dict(safetensors.torch.load_file("best.safetensors"))

Every layer is written as cnnc's torch backend (cnnc/backends/torch/lowering.py) runs it, so the
two compute the same operations in the same order: PyTorch's own layer where it means what the
language means, and where it does not, the same few explicit steps written out (asymmetric
padding as F.pad before an unpadded layer, a strided 1x1 conv as a subsample and a 1x1 conv,
average pooling over windows PyTorch cannot express as a sum divided by the language's divisor).

SOURCE_LOWERINGS maps an op name to a function

    lower(w: Writer, layer, inputs: list[str], in_shapes: list[tuple]) -> str

returning the Python expression of the layer's output from its inputs' expressions; it adds
submodules with `w.module(layer, "nn.Conv2d(...)")` (which returns `self.<path>`) and constants
with `w.buffer(...)`. An op from a plugin adds its own with `register(op, lower)`.
"""

from __future__ import annotations

import keyword
import re

from . import lowerings

_MODULE_ATTRS = None  # nn.Module's attribute names, which a submodule must not shadow


def _reserved() -> set[str]:
    global _MODULE_ATTRS
    if _MODULE_ATTRS is None:
        try:
            from torch import nn

            _MODULE_ATTRS = set(dir(nn.Module)) | {"training"}
        except ImportError:  # writing the file needs no torch; running it does
            _MODULE_ATTRS = {"training", "train", "eval", "forward", "to", "float", "half",
                             "double", "type", "cuda", "cpu", "apply", "parameters",
                             "buffers", "children", "modules", "state_dict", "zero_grad"}
    return _MODULE_ATTRS


# activation name -> function(expression, settled activation_params) -> expression, as the torch
# backend applies each
ACTIVATIONS = {
    "relu": lambda x, p: f"F.relu({x})",
    "relu6": lambda x, p: f"F.relu6({x})",
    "tanh": lambda x, p: f"torch.tanh({x})",
    "sigmoid": lambda x, p: f"torch.sigmoid({x})",
    "softmax": lambda x, p: f"F.softmax({x}, dim=1)",
    "leaky_relu": lambda x, p: f"F.leaky_relu({x}, {float(p.get('slope', 0.01))!r})",
    "elu": lambda x, p: f"F.elu({x}, {float(p.get('alpha', 1.0))!r})",
    "gelu": lambda x, p: f"F.gelu({x})",
    "silu": lambda x, p: f"F.silu({x})",
    "hardswish": lambda x, p: f"F.hardswish({x})",
    "hardsigmoid": lambda x, p: f"F.hardsigmoid({x})",
}


def _fused(expr: str, act: str | None, params: dict | None = None) -> str:
    """An activation applied to expr, as the torch backend applies it."""
    if not act:
        return expr
    params = params or {}
    write = ACTIVATIONS.get(act) or PLUGIN_ACTIVATIONS.get(act)
    if write is not None:
        return write(expr, params)
    from ..diagnostics import CnncError

    raise CnncError(f"no PyTorch-source lowering for the activation `{act}`", code="backend",
                    hint="an activation from a plugin brings its lowering: "
                         "cnnc.export.torch_source.PLUGIN_ACTIVATIONS[name] = "
                         "function(expression, params) -> expression")


PLUGIN_ACTIVATIONS: dict = {}  # name -> function(expression, params) -> expression


class Writer:
    """The file being written: __init__ lines, forward lines, helper functions needed."""

    def __init__(self):
        self.init: list[str] = []
        self.containers: set[str] = set()
        self.leaves: set[str] = set()
        self.helpers: dict[str, str] = {}  # name -> source of a function the file needs

    @staticmethod
    def _safe(part: str) -> bool:
        return part.isidentifier() and not keyword.iskeyword(part) and part not in _reserved()

    def _path(self, dotted: str) -> str:
        out = "self"
        for part in dotted.split("."):
            out += f".{part}" if self._safe(part) else f"._modules[{part!r}]"
        return out

    def module(self, layer, expr: str, comment: str | None = None) -> str:
        """Register `expr` as the layer's submodule; returns how forward reaches it."""
        from ..diagnostics import CnncError

        parts = layer.name.split(".")
        for i in range(1, len(parts)):  # block instances: containers first
            prefix = ".".join(parts[:i])
            if prefix in self.leaves:
                raise CnncError(f"the layer `{prefix}` is also the name of a block instance",
                                code="backend")
            if prefix not in self.containers:
                self.containers.add(prefix)
                self.init.append(f"{self._assign(prefix)} = nn.Module()")
        if layer.name in self.containers:
            raise CnncError(f"the layer `{layer.name}` is also the name of a block instance",
                            code="backend")
        self.leaves.add(layer.name)
        line = f"{self._assign(layer.name)} = {expr}"
        if comment:
            line += f"  # {comment}"
        self.init.append(line)
        return self._path(layer.name)

    def _assign(self, dotted: str) -> str:
        return self._path(dotted)

    def buffer(self, layer, suffix: str, expr: str) -> str:
        """A constant tensor of the layer, kept out of the state dict."""
        name = re.sub(r"\W", "_", layer.name) + "_" + suffix
        self.init.append(f"self.register_buffer({name!r}, {expr}, persistent=False)")
        return f"self.{name}"


# -- the lowerings -------------------------------------------------------------------------------


def _tuple(v) -> str:
    return "(" + ", ".join(str(int(x)) for x in v) + ("," if len(v) == 1 else "") + ")"


def lower_conv(w, layer, inputs, in_shapes):
    a = layer.settled
    cin = in_shapes[0][2]
    cout = a["filters"]
    groups = a["groups"]
    top, bottom, left, right = a["pads"]
    kernel, stride = tuple(a["kernel"]), tuple(a["stride"])
    subsample = kernel == (1, 1) and stride != (1, 1)
    symmetric = top == bottom and left == right and not (subsample and any(a["pads"]))
    args = [str(cin), str(cout), _tuple(kernel)]
    if stride != (1, 1) and not subsample:
        args.append(f"stride={_tuple(stride)}")
    if symmetric and (top or left):
        args.append(f"padding={_tuple((top, left))}")
    if tuple(a["dilation"]) != (1, 1):
        args.append(f"dilation={_tuple(a['dilation'])}")
    if groups != 1:
        args.append(f"groups={groups}")
    if not a["bias"]:
        args.append("bias=False")
    comment = None
    if subsample:
        comment = (f"stride {_tuple(stride)} applied as a subsample of the input (the same "
                   "result as cnnc's torch backend, bit for bit)")
    mod = w.module(layer, f"nn.Conv2d({', '.join(args)})", comment)
    x = inputs[0]
    if not symmetric:
        x = f"F.pad({x}, {_tuple((left, right, top, bottom))})"
    if subsample:
        x = f"{x}[:, :, ::{stride[0]}, ::{stride[1]}]"
    return _fused(f"{mod}({x})", layer.fused_activation, a.get("activation_params"))


def lower_dense(w, layer, inputs, in_shapes):
    a = layer.settled
    args = [str(in_shapes[0][0]), str(a["units"])] + ([] if a["bias"] else ["bias=False"])
    mod = w.module(layer, f"nn.Linear({', '.join(args)})")
    return _fused(f"{mod}({inputs[0]})", layer.fused_activation, a.get("activation_params"))


def lower_pool(w, layer, inputs, in_shapes):
    a = layer.settled
    x = inputs[0]
    if a["kind"] == "global":
        if a["mode"] == "avg":
            y = f"{x}.mean(dim=(2, 3), keepdim=True)"
        else:
            y = f"F.adaptive_max_pool2d({x}, 1)"
        return y if a["keepdims"] else f"{y}.flatten(1)"
    kernel, stride = tuple(a["size"]), tuple(a["stride"])
    top, bottom, left, right = a["pads"]
    in_shape = in_shapes[0]
    # the torch backend's own rule for when PyTorch's pooling layer gives the checked size
    from ..backends.torch.lowering import _explicit_extent as explicit_extent
    from ..backends.torch.lowering import _native_pool_fits as native_pool_fits

    if native_pool_fits(layer, in_shape):
        args = [_tuple(kernel), _tuple(stride)]
        if top or left:
            args.append(f"padding={_tuple((top, left))}")
        if a["ceil"]:
            args.append("ceil_mode=True")
        if a["kind"] == "max":
            return f"{w.module(layer, 'nn.MaxPool2d(' + ', '.join(args) + ')')}({x})"
        if not a["count_pad"] and (top or left):
            args.append("count_include_pad=False")
        return f"{w.module(layer, 'nn.AvgPool2d(' + ', '.join(args) + ')')}({x})"
    oh, ow = layer.shape[:2]
    t, b = explicit_extent(in_shape[0], oh, kernel[0], stride[0], top)
    le, r = explicit_extent(in_shape[1], ow, kernel[1], stride[1], left)
    extent = _tuple((le, r, t, b))  # negative entries crop rows no window reads
    if a["kind"] == "max":  # -inf padding never wins a max
        return f"F.max_pool2d(F.pad({x}, {extent}, value=-math.inf), {_tuple(kernel)}, " \
               f"{_tuple(stride)})"
    rows, cols = a["divisor"]  # the checker's divisor of each output row and column
    divisor = w.buffer(layer, "divisor", f"torch.outer(torch.tensor({list(rows)}, "
                       f"dtype=torch.float64), torch.tensor({list(cols)}, "
                       "dtype=torch.float64)).float()")
    k = kernel[0] * kernel[1]
    # sum over each window (the mean times its size), divided by what the language counts
    return f"F.avg_pool2d(F.pad({x}, {extent}), {_tuple(kernel)}, {_tuple(stride)}) * {k} " \
           f"/ {divisor}"


def lower_batchnorm(w, layer, inputs, in_shapes):
    a = layer.settled
    cls = "nn.BatchNorm2d" if len(in_shapes[0]) == 3 else "nn.BatchNorm1d"
    mod = w.module(layer, f"{cls}({in_shapes[0][-1]}, eps={a['eps']!r}, "
                          f"momentum={a['momentum']!r})")
    return f"{mod}({inputs[0]})"


def lower_dropout(w, layer, inputs, in_shapes):
    mod = w.module(layer, f"nn.Dropout({layer.settled['rate']!r})")
    return f"{mod}({inputs[0]})"


def lower_layernorm(w, layer, inputs, in_shapes):
    c = in_shapes[0][-1]
    mod = w.module(layer, f"nn.LayerNorm({c}, eps={float(layer.settled['eps'])!r})")
    if len(in_shapes[0]) != 3:
        return f"{mod}({inputs[0]})"
    # over the channels at each position: channels moved last and back (torchvision's ConvNeXt)
    return f"{mod}({inputs[0]}.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)"


def lower_layerscale(w, layer, inputs, in_shapes):
    c = in_shapes[0][-1]
    mod = w.module(layer, "nn.Module()", "a learned factor per channel (layer scale)")
    w.init.append(f"{mod}.scale = nn.Parameter(torch.full(({c},), "
                  f"{float(layer.settled['init'])!r}))")
    scale = f"{mod}.scale.view(-1, 1, 1)" if len(in_shapes[0]) == 3 else f"{mod}.scale"
    return f"{inputs[0]} * {scale}"


_STOCHASTIC_DEPTH = '''
def _stochastic_depth(x, p, mode, training):
    """torchvision.ops.stochastic_depth: while training, zero each example's tensor ("row") or
    the whole batch's ("batch") with probability p, scaling the rest by 1/(1-p)."""
    if not training or p == 0.0:
        return x
    survival = 1.0 - p
    size = [x.shape[0]] + [1] * (x.ndim - 1) if mode == "row" else [1] * x.ndim
    noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
    return x * noise.div_(survival)
'''


def lower_stochastic_depth(w, layer, inputs, in_shapes):
    w.helpers["_stochastic_depth"] = _STOCHASTIC_DEPTH
    a = layer.settled
    return f"_stochastic_depth({inputs[0]}, {float(a['rate'])!r}, {a['mode']!r}, self.training)"


def lower_mul(w, layer, inputs, in_shapes):
    xs = list(inputs)
    if any(len(s) == 3 for s in in_shapes):  # a flat (N, C) gate scales every position
        xs = [f"{x}[:, :, None, None]" if len(s) == 1 else x for x, s in zip(xs, in_shapes)]
    return " * ".join(xs)


def lower_split(w, layer, inputs, in_shapes):
    start, stop = layer.settled["channels"]
    return f"{inputs[0]}[:, {start}:{stop}]"  # one part: channels [start, stop)


def lower_shuffle(w, layer, inputs, in_shapes):
    g = layer.settled["groups"]
    c = in_shapes[0][-1]
    rest = ", ".join(str(d) for d in in_shapes[0][:-1])
    rest = f", {rest}" if len(in_shapes[0]) == 3 else ""
    n = f"{inputs[0]}.shape[0]"
    # ShuffleNet's channel shuffle, as torchvision writes it
    return (f"{inputs[0]}.reshape({n}, {g}, {c // g}{rest}).transpose(1, 2)"
            f".reshape({n}, {c}{rest})")


def lower_upsample(w, layer, inputs, in_shapes):
    a = layer.settled
    scale = tuple(float(x) for x in a["scale"])
    if a["mode"] == "nearest":
        mod = w.module(layer, f"nn.Upsample(scale_factor={scale!r}, mode='nearest')")
    else:
        mod = w.module(layer, f"nn.Upsample(scale_factor={scale!r}, mode='bilinear', "
                              f"align_corners={bool(a['align_corners'])})")
    return f"{mod}({inputs[0]})"


def lower_conv_transpose(w, layer, inputs, in_shapes):
    a = layer.settled
    top, bottom, left, right = a["pads"]
    symmetric = top == bottom and left == right
    args = [str(in_shapes[0][2]), str(a["filters"]), _tuple(a["kernel"]),
            f"stride={_tuple(a['stride'])}", f"dilation={_tuple(a['dilation'])}",
            f"groups={a['groups']}", f"bias={bool(a['bias'])}"]
    if symmetric:
        args += [f"padding={_tuple((top, left))}", f"output_padding={_tuple(a['output_pads'])}"]
    mod = w.module(layer, f"nn.ConvTranspose2d({', '.join(args)})")
    act, params = layer.fused_activation, a.get("activation_params")
    if symmetric:
        return _fused(f"{mod}({inputs[0]})", act, params)
    oh, ow = layer.shape[:2]
    y = (f"F.conv_transpose2d({inputs[0]}, {mod}.weight, None, {_tuple(a['stride'])}, 0, 0, "
         f"{a['groups']}, {_tuple(a['dilation'])})")
    # the full output cropped (or extended with zeros) to the checked size, then the bias
    y = f"_crop_to({y}, {top}, {left}, {oh}, {ow})"
    w.helpers["_crop_to"] = _CROP_TO
    y = f"({y} + {mod}.bias.reshape(1, -1, 1, 1))" if a["bias"] else y
    return _fused(y, act, params)


_CROP_TO = '''
def _crop_to(y, top, left, oh, ow):
    """Rows from `top` and columns from `left` of y, oh x ow of them (zeros past its end)."""
    return F.pad(y, (-left, left + ow - y.shape[3], -top, top + oh - y.shape[2]))
'''


def lower_flatten(w, layer, inputs, in_shapes):
    return f"torch.flatten({inputs[0]}, 1)"  # channel-major: N x (C*H*W)


def lower_add(w, layer, inputs, in_shapes):
    return " + ".join(inputs)


def lower_concat(w, layer, inputs, in_shapes):
    return f"torch.cat([{', '.join(inputs)}], dim=1)"


def _standalone(kind: str):
    def lower(w, layer, inputs, in_shapes):
        return _fused(inputs[0], kind, layer.settled["activation_params"])

    return lower


SOURCE_LOWERINGS = lowerings(globals())
for _kind in ACTIVATIONS:
    SOURCE_LOWERINGS[_kind] = _standalone(_kind)


def register(op: str, lower) -> None:
    """Add the PyTorch-source lowering of a plugin's op."""
    if op in SOURCE_LOWERINGS:
        raise ValueError(f"duplicate PyTorch-source lowering for op {op!r}")
    SOURCE_LOWERINGS[op] = lower


# -- the file ------------------------------------------------------------------------------------


def class_name(model_name: str) -> str:
    words = re.split(r"[^0-9A-Za-z]+", model_name)
    name = "".join(w[:1].upper() + w[1:] for w in words if w)
    if not name or not name[0].isalpha():
        name = "Model" + name
    return name


def _var(name: str, used: dict) -> str:
    base = re.sub(r"\W", "_", name)
    if keyword.iskeyword(base) or base in ("x", "self", "torch", "nn", "F", "math"):
        base += "_"
    out = base
    i = 1
    while out in used.values():
        i += 1
        out = f"{base}_{i}"
    used[name] = out
    return out


def to_torch_source(model, *, source_file: str | None = None) -> str:
    from .. import __version__
    from ..diagnostics import CnncError
    from ..ops.shapes import fmt_shape

    graph = model.graph
    missing = sorted({l.op for l in graph.layers()
                      if l.op != "input" and l.op not in SOURCE_LOWERINGS})
    if missing:
        raise CnncError(f"no PyTorch-source lowering for the op{'s' * (len(missing) > 1)} "
                        f"{', '.join(f'`{m}`' for m in missing)}", code="backend",
                        hint="an op from a plugin brings its lowering: "
                             "cnnc.export.torch_source.register(op, function)")
    w = Writer()
    layers = [l for l in graph.layers() if l.op != "input"]
    chain = all(l.inputs == [layers[i - 1].name if i else graph.input]
                for i, l in enumerate(layers))
    names: dict[str, str] = {graph.input: "x"}
    used: dict[str, str] = {graph.input: "x"}
    body = []
    for layer in layers:
        ins = [names[n] for n in layer.inputs]
        shapes = [graph[n].shape for n in layer.inputs]
        expr = SOURCE_LOWERINGS[layer.op](w, layer, ins, shapes)
        var = "x" if chain else _var(layer.name, used)
        names[layer.name] = var
        body.append(f"# line {layer.span.line}: {layer.text.strip()[:70]} -> "
                    f"{fmt_shape(layer.shape)}")
        body.append(f"{var} = {expr}")
    body.append(f"return {names[graph.output]}")

    cls = class_name(model.name)
    in_shape, out_shape = model.input_shape, model.output_shape
    if len(in_shape) == 3:
        h, wd, c = in_shape
        x_doc = f"N x {c} x {h} x {wd} (N x C x H x W, PyTorch's layout; cnnc writes HxWxC)"
    else:
        x_doc = f"N x {in_shape[0]}"
    if len(out_shape) == 3:
        y_doc = f"N x {out_shape[2]} x {out_shape[0]} x {out_shape[1]}"
    else:
        y_doc = f"N x {out_shape[0]}"
    last = graph[graph.output].activation
    if last in ("softmax", "sigmoid"):
        y_doc += f" (after the final {last}: probabilities)"
    src = source_file or model.file
    lines = [
        f'"""{model.name}: a PyTorch model written by cnnc {__version__} from {src}.',
        "",
        "Standalone: it needs torch and nothing else. Its state_dict keys are cnnc's weight",
        "names, so the weights cnnc trains load unchanged:",
        "",
        f"    net = {cls}()",
        "    net.load_state_dict(safetensors.torch.load_file(\"best.safetensors\"))",
        "    net.eval()",
        "",
        f"Input: {x_doc}.",
        f"Output: {y_doc}.",
        '"""',
        "",
        "import math  # noqa: F401  (used by some pooling layers)",
        "",
        "import torch",
        "import torch.nn.functional as F",
        "from torch import nn",
        "",
    ]
    for helper in w.helpers.values():
        lines += helper.strip("\n").splitlines() + ["", ""]
    lines += [
        "",
        f"class {cls}(nn.Module):",
        "    def __init__(self):",
        "        super().__init__()",
        *(f"        {line}" for line in w.init),
        "",
        "    def forward(self, x):",
        *(f"        {line}" for line in body),
        "",
    ]
    return "\n".join(lines)
