"""The PyTorch backend's lowerings, registered with cnnc.backends.register_kernel("torch", ...):
each layer of the checked graph becomes an ordinary torch.nn.Module, made by a function
`lower(layer, in_shapes) -> nn.Module` that reads the layer's settled attributes.

    net = lower(graph)           # a CnncNet: nn.Module, submodules named after the layers
    print(net)                   # nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d... as usual
    net.state_dict().keys()      # exactly cnnc's weight keys: "conv_1.weight", "basic_1.bn_1.bias"

Where PyTorch's layer already means what the language means, the lowering is that layer. Where
the language says more than the layer can, a thin subclass adds it and nothing else:

- a fused activation (`conv 32 3x3 relu`) is not the layer's: CnncNet.forward applies it after
  the layer's module, from the activation's kernel (a function in ACTIVATION_FUNCTIONS), and
  leaves it out when the loss absorbs the model's final softmax/sigmoid (`logits=True`); the
  printed module shows it as `activation=relu`;
- asymmetric padding (TensorFlow's 'same' with an even split impossible, or `pad=TxBxLxR`):
  an explicit F.pad before an unpadded layer (zeros for conv and average pooling, -inf for max
  pooling, so padding never wins);
- an output size PyTorch's own rounding would not give (ceil mode with asymmetric pads): the
  input is padded (or cropped) to exactly the extent the checked output size needs;
- average pooling that must not count what it cannot take from PyTorch (asymmetric pads):
  sum-pool, then divide by the divisor the language defines, a constant (OH, OW) map.

Output sizes are the checker's (layer.shape) by construction: a pooling layer becomes
PyTorch's own only when PyTorch's rounding gives exactly that size, the explicit form otherwise.
tests/test_backend_agreement.py holds every lowering to the NumPy reference, forward and
backward.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...ir.commute import relu_after_max_pool
from ...ops import find_activation
from .. import kernels, missing_kernel, register_builtin_kernels
from .dropout import Dropout

# -- activations ---------------------------------------------------------------------------------

def _hardsigmoid(x):
    # torch 2.13's CPU backward of hardsigmoid multiplies by 1/6 rounded to float32, in float64
    # too (a relative error of 3e-8 there); in float64 the same function is composed instead.
    if x.dtype == torch.float64:
        return F.relu6(x + 3) / 6
    return F.hardsigmoid(x)


# The torch kernel of each activation: fn(x, **params) -> y, params as the activation table
# names them (PyTorch's defaults are the table's).
ACTIVATION_FUNCTIONS = {
    "relu": F.relu,
    "relu6": F.relu6,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softmax": lambda x: F.softmax(x, dim=1),  # over channels (4-D) or features (2-D)
    "leaky_relu": lambda x, slope=0.01: F.leaky_relu(x, slope),
    "elu": lambda x, alpha=1.0: F.elu(x, alpha),
    "gelu": F.gelu,  # the exact (erf) form, PyTorch's default
    "silu": F.silu,
    "hardswish": F.hardswish,  # nn.Hardswish: x * relu6(x + 3) / 6
    "hardsigmoid": _hardsigmoid,  # nn.Hardsigmoid: relu6(x + 3) / 6
}


class Activation(nn.Module):
    """A standalone activation layer (`relu`, `leaky_relu 0.2`): its kernel, with its parameters."""

    def __init__(self, name: str, fn, params: dict):
        super().__init__()
        self.name, self.fn, self.params = name, fn, dict(params)

    def forward(self, x):
        return self.fn(x, **self.params)

    def extra_repr(self) -> str:
        return ", ".join([self.name, *(f"{k}={v:g}" for k, v in self.params.items())])


def _pad_arg(pads) -> tuple[int, int, int, int]:
    """cnnc's (top, bottom, left, right) as F.pad's (left, right, top, bottom)."""
    top, bottom, left, right = pads
    return (left, right, top, bottom)


# -- conv ----------------------------------------------------------------------------------------


class Conv2d(nn.Conv2d):
    """nn.Conv2d with the language's padding (any of top/bottom/left/right)."""

    def __init__(self, in_channels, out_channels, kernel_size, *, stride=(1, 1),
                 pads=(0, 0, 0, 0), **kw):
        top, bottom, left, right = pads
        # A strided 1x1 conv (ResNet's downsampling shortcut) is a 1x1 conv of every s-th
        # pixel: the input is subsampled first. Cheaper, and it sidesteps a PyTorch CPU bug:
        # in float32 with channels_last, the weight gradient of a 1x1 conv with stride (1, 2)
        # comes out wrong (torch 2.13, oneDNN); tests/test_backend_agreement.py found it.
        self.subsample = tuple(kernel_size) == (1, 1) and tuple(stride) != (1, 1)
        self.symmetric = top == bottom and left == right and not (self.subsample and any(pads))
        super().__init__(in_channels, out_channels, kernel_size,
                         stride=(1, 1) if self.subsample else stride,
                         padding=(top, left) if self.symmetric else 0, **kw)
        self.pre_pad = None if self.symmetric else _pad_arg(pads)
        self.step = tuple(stride)
        # Another oneDNN bug (torch 2.13, CPU, float32): with channels_last, a conv of a
        # one-channel input with stride (1, s), s > 1, computes wrong outputs (random models in
        # the agreement test found it; tests/test_torch_backend.py holds the cases). Such a
        # conv runs in the contiguous format: one input channel, so only the (small) weight is
        # copied; a channels_last weight is what sends oneDNN down the faulty path.
        conv_stride = self.stride
        self.contiguous_only = in_channels == 1 and conv_stride[0] == 1 and conv_stride[1] > 1

    def forward(self, x):
        if self.pre_pad is not None:
            x = F.pad(x, self.pre_pad)  # zeros, asymmetric: TF's 'same' puts the extra one after
        if self.subsample:
            x = x[:, :, ::self.step[0], ::self.step[1]]
        if self.contiguous_only:
            weight = self.weight.clone(memory_format=torch.contiguous_format)
            return self._conv_forward(x.clone(memory_format=torch.contiguous_format), weight,
                                      self.bias)
        return super().forward(x)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.subsample:
            s += f", subsample={self.step}"
        if self.pre_pad is not None:
            s += f", pads(t,b,l,r)={tuple(self.pre_pad[i] for i in (2, 3, 0, 1))}"
        return s


def lower_conv(layer, in_shapes):
    a = layer.settled
    return Conv2d(in_shapes[0][2], a["filters"], tuple(a["kernel"]), stride=tuple(a["stride"]),
                  dilation=tuple(a["dilation"]), groups=a["groups"], bias=a["bias"],
                  pads=a["pads"])


# -- dense ---------------------------------------------------------------------------------------


def lower_dense(layer, in_shapes):
    a = layer.settled
    return nn.Linear(in_shapes[0][0], a["units"], bias=a["bias"])


# -- pooling -------------------------------------------------------------------------------------


def _torch_pool_out(size: int, k: int, s: int, pad: int, ceil: bool) -> int:
    """The output length PyTorch's pooling gives (aten's pooling_output_shape)."""
    if ceil:
        out = -(-(size + 2 * pad - k) // s) + 1
        if (out - 1) * s >= size + pad:
            out -= 1
        return out
    return (size + 2 * pad - k) // s + 1


def _native_pool_fits(layer, in_shape) -> bool:
    """Whether nn.MaxPool2d/AvgPool2d with symmetric padding gives exactly layer.shape."""
    a = layer.settled
    top, bottom, left, right = a["pads"]
    if top != bottom or left != right:
        return False
    (kh, kw), (sh, sw) = a["size"], a["stride"]
    return (_torch_pool_out(in_shape[0], kh, sh, top, a["ceil"]) == layer.shape[0]
            and _torch_pool_out(in_shape[1], kw, sw, left, a["ceil"]) == layer.shape[1])


def _explicit_extent(size, out, k, s, before) -> tuple[int, int]:
    """(pad before, pad after) that make a floor-mode window give exactly `out` outputs.

    `after` may be negative: then the input is cropped (windows never read those rows).
    """
    need = (out - 1) * s + k  # the padded extent the last window ends at
    return before, need - size - before


class _ExplicitPool(nn.Module):
    """Pooling whose padding or rounding PyTorch's layers cannot express: the input is padded
    (or cropped) to exactly the extent the checked output needs, then pooled without padding."""

    def __init__(self, layer, in_shape):
        super().__init__()
        a = layer.settled
        self.kernel = tuple(a["size"])
        self.stride = tuple(a["stride"])
        self.pads = tuple(a["pads"])
        self.ceil = a["ceil"]
        oh, ow = layer.shape[:2]
        t, b = _explicit_extent(in_shape[0], oh, self.kernel[0], self.stride[0], self.pads[0])
        l, r = _explicit_extent(in_shape[1], ow, self.kernel[1], self.stride[1], self.pads[2])
        self.extent = (l, r, t, b)  # F.pad order; negative entries crop

    def _padded(self, x, value: float):
        return F.pad(x, self.extent, value=value)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel}, stride={self.stride}, "
                f"pads(t,b,l,r)={self.pads}, ceil_mode={self.ceil}")


class MaxPool2dPadded(_ExplicitPool):
    """Max pooling with asymmetric padding: pad with -inf, so padding never wins."""

    def forward(self, x):
        return F.max_pool2d(self._padded(x, -math.inf), self.kernel, self.stride)


class AvgPool2dPadded(_ExplicitPool):
    """Average pooling with asymmetric padding: the sum over each window's real (and, with
    count_pad, padded) elements divided by the language's divisor (the layer's settled one), a
    constant (OH, OW) map."""

    def __init__(self, layer, in_shape):
        super().__init__(layer, in_shape)
        self.count_pad = layer.settled["count_pad"]
        rows, cols = layer.settled["divisor"]
        self._divisor = np.multiply.outer(np.array(rows, dtype=np.int64),
                                          np.array(cols, dtype=np.int64)).astype(np.float64)
        # A constant, not a weight: moves with .to(device/dtype), never in the state dict.
        self.register_buffer("divisor", torch.from_numpy(self._divisor), persistent=False)
        self.reset_constants()

    def reset_constants(self) -> None:
        """Refill the divisor (after to_empty(), which leaves buffers uninitialised)."""
        with torch.no_grad():
            self.divisor.copy_(torch.from_numpy(self._divisor))

    def forward(self, x):
        k = self.kernel[0] * self.kernel[1]
        # avg_pool2d without padding divides by k; undo it, then divide by the real divisor
        summed = F.avg_pool2d(self._padded(x, 0.0), self.kernel, self.stride) * k
        return summed / self.divisor

    def extra_repr(self) -> str:
        return super().extra_repr() + f", count_pad={self.count_pad}"


class GlobalPool(nn.Module):
    """H x W x C -> C (or 1 x 1 x C with keepdims): the mean or the max over all positions."""

    def __init__(self, mode: str = "avg", keepdims: bool = False):
        super().__init__()
        self.mode, self.keepdims = mode, keepdims

    def forward(self, x):
        if self.mode == "avg":
            y = x.mean(dim=(2, 3), keepdim=True)
        else:
            # adaptive_max_pool2d routes the gradient to ONE maximum (the first, as the NumPy
            # reference does); amax would split it between ties, common after a ReLU.
            y = F.adaptive_max_pool2d(x, 1)
        return y if self.keepdims else y.flatten(1)

    def extra_repr(self) -> str:
        return f"mode={self.mode}" + (", keepdims=True" if self.keepdims else "")


def lower_pool(layer, in_shapes):
    a = layer.settled
    in_shape = in_shapes[0]
    if a["kind"] == "global":
        return GlobalPool(a["mode"], a["keepdims"])
    if _native_pool_fits(layer, in_shape):
        top, _, left, _ = a["pads"]
        kernel, stride = tuple(a["size"]), tuple(a["stride"])
        if a["kind"] == "max":
            return nn.MaxPool2d(kernel, stride, padding=(top, left), ceil_mode=a["ceil"])
        return nn.AvgPool2d(kernel, stride, padding=(top, left), ceil_mode=a["ceil"],
                            count_include_pad=a["count_pad"])
    if a["kind"] == "max":
        return MaxPool2dPadded(layer, in_shape)
    return AvgPool2dPadded(layer, in_shape)


# -- normalisation and regularisation ------------------------------------------------------------


class _NoCounter:
    """BatchNorm without the num_batches_tracked buffer: cnnc uses a fixed momentum, so the
    counter is never read, and the state dict keeps exactly cnnc's keys."""

    def _drop_counter(self):
        self.register_buffer("num_batches_tracked", None)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kw):
        state_dict.pop(prefix + "num_batches_tracked", None)  # from torchvision-style dicts
        nn.Module._load_from_state_dict(self, state_dict, prefix, *args, **kw)

    def forward(self, x):
        if self.training and x.numel() == x.shape[1]:
            return self._one_value_per_channel(x)
        return super().forward(x)

    def _one_value_per_channel(self, x):
        """Training on one value a channel (a last batch of 1 after global pooling): PyTorch
        refuses it, the NumPy backend (and the formula) give the shift alone, and a running
        variance that decays towards 0 (the unbiased variance of one value, 0/0, counted as 0).
        The same arithmetic here, so both backends train such a model alike."""
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xc = x - x.mean(dim=dims, keepdim=True)
        var = (xc * xc).mean(dim=dims, keepdim=True)
        with torch.no_grad():
            self.running_mean.mul_(1 - self.momentum).add_(
                self.momentum * x.detach().mean(dim=dims))
            self.running_var.mul_(1 - self.momentum)
        return (xc * torch.rsqrt(var + self.eps) * self.weight.view(shape)
                + self.bias.view(shape))


class BatchNorm2d(_NoCounter, nn.BatchNorm2d):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._drop_counter()


class BatchNorm1d(_NoCounter, nn.BatchNorm1d):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._drop_counter()


def lower_batchnorm(layer, in_shapes):
    a = layer.settled
    cls = BatchNorm2d if len(in_shapes[0]) == 3 else BatchNorm1d
    return cls(in_shapes[0][-1], eps=a["eps"], momentum=a["momentum"])


class LayerNorm2d(nn.LayerNorm):
    """Layer norm over the channels at each position of an N x C x H x W image, as
    torchvision's ConvNeXt defines it: channels moved last, F.layer_norm, moved back."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def lower_layernorm(layer, in_shapes):
    cls = LayerNorm2d if len(in_shapes[0]) == 3 else nn.LayerNorm
    return cls(in_shapes[0][-1], eps=layer.settled["eps"])


class LayerScale(nn.Module):
    """A learned factor per channel (feature, once flat), as ConvNeXt's `layer_scale`."""

    def __init__(self, channels: int, init: float):
        super().__init__()
        self.init = init
        self.scale = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, x):
        return x * (self.scale.view(-1, 1, 1) if x.ndim == 4 else self.scale)

    def extra_repr(self) -> str:
        return f"{self.scale.shape[0]}, init={self.init:g}"


def lower_layerscale(layer, in_shapes):
    return LayerScale(in_shapes[0][-1], layer.settled["init"])


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth: in training, each example's tensor ("row") or the whole
    batch's ("batch") is zeroed with probability p, survivors scaled by 1/(1-p); the identity
    in evaluation."""

    def __init__(self, p: float, mode: str = "row"):
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        size = [x.shape[0]] + [1] * (x.ndim - 1) if self.mode == "row" else [1] * x.ndim
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
        return x * noise.div_(survival)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"


def lower_stochastic_depth(layer, in_shapes):
    return StochasticDepth(layer.settled["rate"], layer.settled["mode"])


def lower_dropout(layer, in_shapes):
    return Dropout(layer.settled["rate"])  # nn.Dropout with a cheaper mask on the CPU


# -- shape and merges ----------------------------------------------------------------------------


def lower_flatten(layer, in_shapes):
    return nn.Flatten(1)  # (N, C, H, W) -> (N, C*H*W): channel-major, whatever the memory layout


class Add(nn.Module):
    """Element-wise sum of its inputs (a residual connection)."""

    def forward(self, *xs):
        y = xs[0] + xs[1]
        for x in xs[2:]:
            y = y + x
        return y


class Mul(nn.Module):
    """Element-wise product of its inputs; a flat (N, C) gate scales every position of an
    N x C x H x W image (squeeze-and-excitation), other size-1 axes broadcast as in NumPy."""

    def forward(self, *xs):
        if any(x.ndim == 4 for x in xs):
            xs = [x[:, :, None, None] if x.ndim == 2 else x for x in xs]
        y = xs[0] * xs[1]
        for x in xs[2:]:
            y = y * x
        return y


class Concat(nn.Module):
    """Its inputs joined along the channel axis (features, once flat)."""

    def forward(self, *xs):
        return torch.cat(xs, dim=1)


class ChannelSlice(nn.Module):
    """One part of a split: channels [start, stop) (features, once flat)."""

    def __init__(self, start: int, stop: int):
        super().__init__()
        self.start, self.stop = start, stop

    def forward(self, x):
        return x[:, self.start:self.stop]

    def extra_repr(self) -> str:
        return f"channels=[{self.start}, {self.stop})"


def lower_split(layer, in_shapes):
    return ChannelSlice(*layer.settled["channels"])


class ChannelShuffle(nn.Module):
    """ShuffleNet's shuffle, as torchvision writes it: view (N, g, C/g, ...), transpose, flatten.
    (nn.ChannelShuffle has no backward on every build; this is plain autograd.)"""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c = x.shape[:2]
        rest = x.shape[2:]
        y = x.reshape(n, self.groups, c // self.groups, *rest).transpose(1, 2)
        return y.reshape(n, c, *rest)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


def lower_upsample(layer, in_shapes):
    a = layer.settled
    scale = tuple(float(s) for s in a["scale"])
    if a["mode"] == "nearest":
        return nn.Upsample(scale_factor=scale, mode="nearest")
    return nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=a["align_corners"])


class ConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d with the language's padding (any of top/bottom/left/right, crops of
    the full output). Symmetric padding is PyTorch's own `padding`; otherwise the full output
    is computed without the bias, cropped (or extended with zeros past the last tap, for
    output_padding) to exactly the checked size, and the bias added."""

    def __init__(self, in_channels, out_channels, kernel_size, *, pads, output_padding,
                 out_hw, **kw):
        top, bottom, left, right = pads
        self.symmetric = top == bottom and left == right
        super().__init__(in_channels, out_channels, kernel_size,
                         padding=(top, left) if self.symmetric else 0,
                         output_padding=tuple(output_padding) if self.symmetric else 0, **kw)
        self.pads, self.out_hw = tuple(pads), tuple(out_hw)

    def forward(self, x):
        if self.symmetric:
            return super().forward(x)
        y = F.conv_transpose2d(x, self.weight, None, self.stride, 0, 0, self.groups,
                               self.dilation)
        (oh, ow), top, left = self.out_hw, self.pads[0], self.pads[2]
        # F.pad's negative entries crop: (left, right, top, bottom)
        y = F.pad(y, (-left, left + ow - y.shape[3], -top, top + oh - y.shape[2]))
        if self.bias is not None:
            y = y + self.bias.reshape(1, -1, 1, 1)
        return y

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.symmetric else s + f", pads(t,b,l,r)={self.pads}"


def lower_conv_transpose(layer, in_shapes):
    a = layer.settled
    return ConvTranspose2d(in_shapes[0][2], a["filters"], tuple(a["kernel"]),
                           stride=tuple(a["stride"]), dilation=tuple(a["dilation"]),
                           groups=a["groups"], bias=a["bias"], pads=a["pads"],
                           output_padding=a["output_pads"], out_hw=layer.shape[:2])


register_builtin_kernels("torch", {
    "conv": lower_conv,
    "dwconv": lower_conv,
    "dense": lower_dense,
    "pool": lower_pool,
    "batchnorm": lower_batchnorm,
    "layernorm": lower_layernorm,
    "layerscale": lower_layerscale,
    "stochastic_depth": lower_stochastic_depth,
    "dropout": lower_dropout,
    "flatten": lower_flatten,
    "add": lambda layer, in_shapes: Add(),
    "concat": lambda layer, in_shapes: Concat(),
    "mul": lambda layer, in_shapes: Mul(),
    "split": lower_split,
    "shuffle": lambda layer, in_shapes: ChannelShuffle(layer.settled["groups"]),
    "upsample": lower_upsample,
    "conv_transpose": lower_conv_transpose,
    **ACTIVATION_FUNCTIONS,
})


# -- the whole model -----------------------------------------------------------------------------


def _child_repr(module: nn.Module) -> str:
    """A layer's module as PyTorch prints it, with the fused activation the graph runner applies
    after it: `Conv2d(1, 32, kernel_size=(3, 3), ..., activation=relu)`."""
    text = repr(module)
    act = getattr(module, "cnnc_activation", None)
    if act is None:
        return text
    if "\n" not in text and text.endswith(")"):
        return text[:-1] + ("" if text.endswith("()") else ", ") + f"activation={act})"
    return f"{text} -> activation={act}"


class _Container(nn.Module):
    """Prints like nn.Module, each child with its fused activation (see _child_repr)."""

    def __repr__(self) -> str:
        lines = self.extra_repr().split("\n") if self.extra_repr() else []
        children = []
        for key, module in self._modules.items():
            text = _child_repr(module).replace("\n", "\n  ")
            children.append(f"({key}): {text}")
        main = self._get_name() + "("
        if len(lines) == 1 and not children:
            main += lines[0]
        elif lines or children:
            main += "\n  " + "\n  ".join(lines + children) + "\n"
        return main + ")"


class Block(_Container):
    """A container for the layers of one block instance (their names share its prefix)."""

    def forward(self, *args):  # pragma: no cover - the model's forward calls the layers
        raise RuntimeError("a Block holds layers; CnncNet.forward runs them")


def _insert(root: nn.Module, dotted: str, module: nn.Module) -> None:
    """Place `module` at the dotted path, creating Block containers for the prefixes.

    Children go into `_modules` directly: a layer may be named like a Module attribute
    (`train`, `eval`...), which add_module refuses, and the state dict only reads `_modules`.
    """
    *parents, leaf = dotted.split(".")
    node = root
    for part in parents:
        child = node._modules.get(part)
        if child is None:
            child = node._modules[part] = Block()
        node = child
    existing = node._modules.get(leaf)
    if existing is not None:  # a block prefix was created before a layer of the same name
        for k, v in existing._modules.items():
            module._modules.setdefault(k, v)
    node._modules[leaf] = module


def _lookup(root: nn.Module, dotted: str) -> nn.Module:
    node = root
    for part in dotted.split("."):
        node = node._modules[part]
    return node


def lower_layer(layer, table: dict | None = None) -> nn.Module:
    """The module of one checked layer (its fused activation is the graph runner's)."""
    table = kernels("torch") if table is None else table
    for op in filter(None, (layer.op, layer.fused_activation)):
        if op not in table:
            raise missing_kernel("torch", op)
    if find_activation(layer.op) is not None:
        return Activation(layer.op, table[layer.op], layer.settled["activation_params"])
    module = table[layer.op](layer, list(layer.in_shapes))
    if layer.fused_activation:
        module.cnnc_activation = layer.fused_activation  # shown when printed
    return module


class CnncNet(_Container):
    """A cnnc model as one nn.Module. forward walks the layer graph in topological order,
    applying each layer's fused activation after its module.

    forward(x, logits=False): x is N x C x H x W (any memory format) or N x F for a flat input.
    With logits=True the final softmax/sigmoid is left out (the loss applies it, stably).
    """

    def __init__(self, graph, name: str = "model"):
        super().__init__()
        self.model_name = name
        layers = graph.layers()
        self.input_name = graph.input
        self.output_name = graph.output
        table = kernels("torch")
        for layer in layers:
            if layer.op != "input":
                _insert(self, layer.name, lower_layer(layer, table))
        # The steps as written: (layer name, input names, output name, the inputs whose last
        # reader this layer is, so they are freed as soon as possible, module, fused
        # activation: (fn, params) or None). `trace` runs these, so that every layer's output is
        # the one the language defines.
        order = [l for l in layers if l.op != "input"]
        fused = {l.name: ((table[l.fused_activation], l.settled["activation_params"])
                          if l.fused_activation else None) for l in order}
        written = [(l.name, tuple(l.inputs), l.name, fused[l.name]) for l in order]
        self._written_steps = self._with_frees(written)
        # The steps run otherwise: the same, with ReLU moved after the max pool that reads it
        # where that is exact (cnnc/ir/commute.py), so it touches a quarter of the values.
        self.moved_activations = relu_after_max_pool(graph)
        self._steps = self._with_frees(self._reordered(graph, written, fused))
        # Chains (every layer reads the one before it) take a plain loop.
        self.sequential = all(order[i].inputs == [order[i - 1].name if i else graph.input]
                              for i in range(len(order)))
        out = graph[graph.output]
        # What forward(logits=True) leaves out: a final activation some loss absorbs (softmax,
        # sigmoid), standalone ("layer": the whole output layer) or fused ("activation").
        act = find_activation(out.activation)
        self._absorbable = None
        if act is not None and act.absorbed_by is not None:
            self._absorbable = "activation" if out.fused_activation else "layer"

    def layer(self, name: str) -> nn.Module:
        """The module of a layer, by its cnnc name ("basic_1.conv_2")."""
        return _lookup(self, name)

    def _run(self, name, module, inputs, fused, logits: bool):
        if logits and name == self.output_name and self._absorbable is not None:
            if self._absorbable == "layer":
                return inputs[0]  # a standalone final activation: the loss applies it
            return module(*inputs)  # the fused one, likewise
        y = module(*inputs)
        if fused is not None:
            fn, params = fused
            y = fn(y, **params)
        return y

    def forward(self, x, logits: bool = False, trace: dict | None = None):
        """The model's output; `trace`, a dict, receives every layer's output (cnnc verify)."""
        if self.sequential and trace is None:
            for name, _, _, _, module, fused in self._steps:
                x = self._run(name, module, (x,), fused, logits)
            return x
        values = {self.input_name: x}
        for name, inputs, out, free, module, fused in (
                self._steps if trace is None else self._written_steps):
            values[out] = self._run(name, module, [values[n] for n in inputs], fused, logits)
            if trace is not None:
                trace[name] = values[name]
                continue  # keep every value alive
            for n in free:
                del values[n]
        return values[self.output_name]

    def _reordered(self, graph, written, fused):
        """`written` with each moved ReLU applied after its max pool: a fused one becomes the
        pool's fused activation; a standalone one runs its own module on the pool's output
        (written to the pool's name, which the layers after read), the pool reading the
        ReLU's input."""
        by_pool = self.moved_activations
        owners = set(by_pool.values())
        steps = []
        for name, inputs, out, act in written:
            if name in owners:
                if graph[name].fused_activation:
                    steps.append((name, inputs, out, None))  # the ReLU goes to the pool
                continue  # a standalone ReLU: runs after the pool
            if name in by_pool:
                src = graph[by_pool[name]]
                if src.fused_activation:
                    steps.append((name, inputs, out, fused[src.name]))
                else:
                    pooled = (name, "before " + src.name)  # no layer's name: a tuple
                    steps.append((name, tuple(src.inputs), pooled, None))
                    steps.append((src.name, (pooled,), out, None))
                continue
            steps.append((name, inputs, out, act))
        return steps

    def _with_frees(self, steps):
        """(name, inputs, out, the inputs this step reads last, module, fused) for each step."""
        last_use = {}
        for i, (_, inputs, _, _) in enumerate(steps):
            for src in inputs:
                last_use[src] = i
        return [(name, inputs, out,
                 tuple(src for src in dict.fromkeys(inputs)
                       if last_use[src] == i and src != self.output_name),
                 _lookup(self, name), act)
                for i, (name, inputs, out, act) in enumerate(steps)]

    def extra_repr(self) -> str:
        return f"name={self.model_name!r}" + ("" if self.sequential else ", graph=True")


def lower(graph, name: str = "model", *, device=None) -> CnncNet:
    """The checked layer graph as a CnncNet.

    With `device`, the module is made there with its weights uninitialised -- no time spent on
    PyTorch's default initialisation, since cnnc's initial weights are loaded next; without,
    on the CPU with PyTorch's default initialisation.
    """
    if device is None:
        return CnncNet(graph, name)
    with torch.device("meta"):
        net = CnncNet(graph, name)
    net = net.to_empty(device=device)
    for module in net.modules():
        if hasattr(module, "reset_constants"):
            module.reset_constants()
    return net
