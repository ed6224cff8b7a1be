"""Transposed convolution: `conv_transpose F K [act]` (alias `deconv`), PyTorch's ConvTranspose2d.

    conv_transpose 32 3x3 stride=2 pad=1 output_padding=1   # 14x14 -> 28x28, as in PyTorch
    deconv 16 4 stride=2 pad=1                               # 7x7 -> 14x14 (DCGAN)
    deconv 16 3 stride=2 pad=same                            # out = in * stride (Keras)

Each input pixel spreads over a K x K patch of the output, patches `stride` apart. Along each
axis the output is

    out = (in - 1)*stride - (pad_before + pad_after) + dilation*(K - 1) + output_padding + 1

`pad=P` crops P from each side of that output (PyTorch's `padding`), `pad=PHxPW` and
`pad=TxBxLxR` likewise per side; `output_padding` adds rows at the bottom and columns at the
right, and must be smaller than the stride or the dilation (PyTorch's rule). `pad=same` gives
out = in * stride, as Keras's Conv2DTranspose does: the pads and output padding it settles on
are those of the convolution it transposes (TensorFlow's 'same', the extra pixel after).

Parameters: weight (Cin, F/groups, KH, KW), PyTorch's layout, and bias (F). MACs, as fvcore
counts them: in_h * in_w * Cin * (F/groups) * KH * KW (every input pixel times every tap).
"""

from __future__ import annotations

from . import Arg, Inferred, OpSchema, Param, ShapeError, register
from ._common import ACTIVATION_ARG, BIAS, DILATION, STRIDE, act_suffix, need_image, pad_text, size_text
from .conv import _divisors
from .shapes import effective_kernel, fmt_shape

PAD = Arg("pad", "pad", "valid", min=0,
          help="valid (0), same (out = in * stride), P, PHxPW or TxBxLxR: what to crop from "
               "each side of the output")
OUTPUT_PADDING = Arg("output_padding", "size", None, min=0,
                     help="OP or OPHxOPW: rows and columns added at the bottom and right")


def transpose_out(size: int, kernel: int, stride: int, pads: tuple[int, int],
                  output_padding: int, dilation: int) -> int:
    """The output length along one axis.

    >>> transpose_out(14, 3, 2, (1, 1), 1, 1)    # PyTorch's usual doubling
    28
    >>> transpose_out(7, 4, 2, (1, 1), 0, 1)     # DCGAN's
    14
    """
    return ((size - 1) * stride - pads[0] - pads[1] + effective_kernel(kernel, dilation)
            + output_padding)


def same_transpose(size_k: int, stride: int) -> tuple[int, int, int]:
    """(pad before, pad after, output padding) giving out = in * stride, for the effective
    kernel size_k: the padding of the 'same' convolution from in * stride to in.

    >>> same_transpose(3, 2), same_transpose(4, 2), same_transpose(1, 2)
    ((0, 1, 0), (1, 1, 0), (0, 0, 1))
    """
    total = size_k - stride
    if total >= 0:
        return total // 2, total - total // 2, 0
    return 0, 0, -total


def settle(attrs: dict, hw: tuple[int, int]) -> tuple[tuple, tuple]:
    """The explicit (top, bottom, left, right) pads and (h, w) output padding."""
    kh, kw = attrs["kernel"]
    (sh, sw), (dh, dw) = attrs["stride"], attrs["dilation"]
    if attrs["pad"] == "same":
        if attrs["output_padding"] is not None:
            raise ShapeError("`output_padding=` is settled by pad=same (out = in * stride)",
                             code="bad-value", arg="output_padding",
                             hint="remove it, or give the padding explicitly, like `pad=1 "
                                  "output_padding=1`")
        t, b, oph = same_transpose(effective_kernel(kh, dh), sh)
        l, r, opw = same_transpose(effective_kernel(kw, dw), sw)
        return (t, b, l, r), (oph, opw)
    pads = (0, 0, 0, 0) if attrs["pad"] == "valid" else tuple(attrs["pad"])
    op = attrs["output_padding"] or (0, 0)
    for axis, o, s, d in (("height", op[0], sh, dh), ("width", op[1], sw, dw)):
        if o >= s and o >= d:
            raise ShapeError(f"output_padding={size_text(op) if op[0] != op[1] else op[0]} is "
                             f"not smaller than the stride ({s}) or the dilation ({d}) along "
                             f"the {axis}", code="bad-value", arg="output_padding",
                             hint="output_padding only picks among the output sizes a stride "
                                  f"leaves open: at most {max(s, d) - 1} here")
    return pads, op


def infer_conv_transpose(attrs: dict, in_shapes: list[tuple]) -> Inferred:
    """Settles `pads`, explicit (top, bottom, left, right) crops, and `output_pads` (h, w)."""
    h, w, cin = need_image("conv_transpose", in_shapes[0])
    groups, cout = attrs["groups"], attrs["filters"]
    if cin % groups:
        raise ShapeError(f"groups={groups} does not divide the input's {cin} channels",
                         code="groups", arg="groups",
                         hint=f"choose groups among the divisors of {cin}: {_divisors(cin)}")
    if cout % groups:
        raise ShapeError(f"groups={groups} does not divide the {cout} filters", code="groups",
                         arg="groups", hint=f"choose a filter count that is a multiple of {groups}")
    pads, op = settle(attrs, (h, w))
    kh, kw = attrs["kernel"]
    (sh, sw), (dh, dw) = attrs["stride"], attrs["dilation"]
    oh = transpose_out(h, kh, sh, pads[0:2], op[0], dh)
    ow = transpose_out(w, kw, sw, pads[2:4], op[1], dw)
    if oh < 1 or ow < 1:
        full = (transpose_out(h, kh, sh, (0, 0), 0, dh), transpose_out(w, kw, sw, (0, 0), 0, dw))
        raise ShapeError(
            f"the output of `conv_transpose` would be {oh}x{ow}: pad={pad_text(attrs['pad'])} "
            f"crops more than the {full[0]}x{full[1]} it makes from {fmt_shape((h, w, cin))}",
            code="shape", arg="pad",
            notes=["out = (in - 1)*stride - (pad before + pad after) + dilation*(K - 1) "
                   "+ output_padding + 1"],
            hint="pad less, or use a larger kernel or stride")
    return Inferred((oh, ow, cout), {"pads": pads, "output_pads": op})


def conv_transpose_params(attrs: dict, in_shapes: list[tuple]) -> dict:
    cin = in_shapes[0][2]
    kh, kw = attrs["kernel"]
    # He-uniform over the fan-in PyTorch's init computes for this layout, (F/groups)*kh*kw
    params = {"weight": Param((cin, attrs["filters"] // attrs["groups"], kh, kw), "he_uniform")}
    if attrs["bias"]:
        params["bias"] = Param((attrs["filters"],), "zeros")
    return params


def conv_transpose_macs(attrs: dict, in_shapes: list[tuple], out: tuple) -> int:
    h, w, cin = in_shapes[0]
    kh, kw = attrs["kernel"]
    return h * w * cin * (attrs["filters"] // attrs["groups"]) * kh * kw


def _describe(attrs: dict) -> str:
    parts = [f"conv_transpose {attrs['filters']}", size_text(attrs["kernel"])]
    if attrs["stride"] != (1, 1):
        parts.append(f"stride={size_text(attrs['stride'])}")
    if attrs["pad"] != "valid":
        parts.append(f"pad={pad_text(attrs['pad'])}")
    if attrs["output_padding"] not in (None, (0, 0)):
        parts.append(f"output_padding={size_text(attrs['output_padding'])}")
    if attrs["dilation"] != (1, 1):
        parts.append(f"dilation={size_text(attrs['dilation'])}")
    if attrs["groups"] != 1:
        parts.append(f"groups={attrs['groups']}")
    return " ".join(parts) + act_suffix(attrs)


register(OpSchema(
    name="conv_transpose",
    summary="transposed 2-D convolution (PyTorch's ConvTranspose2d)",
    positional=(Arg("filters", "int", min=1, help="number of output channels"),
                Arg("kernel", "size", min=1, help="K or KHxKW"),
                ACTIVATION_ARG),
    options=(STRIDE, PAD, OUTPUT_PADDING, DILATION, Arg("groups", "int", 1, min=1), BIAS,
             ACTIVATION_ARG),
    aliases=("deconv",),
    infer=infer_conv_transpose, params=conv_transpose_params, macs=conv_transpose_macs,
    describe=_describe,
))
