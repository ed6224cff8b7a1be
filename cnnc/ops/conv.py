"""Convolution: `conv F K [act]` and depthwise `dwconv K [act]`.

    conv 32 3x3 relu
    conv 64 3 stride=2 pad=same dilation=2 groups=4 bias=false
    dwconv 3x3 stride=2 pad=same multiplier=1
"""

from __future__ import annotations

from math import isqrt

from . import Arg, Inferred, OpSchema, Param, ShapeError, register
from ._common import ACTIVATION_ARG, BIAS, DILATION, STRIDE, act_suffix, check_window, need_image, pad_text, size_text
from .shapes import effective_kernel, resolve_pads, window_out

PAD = Arg("pad", "pad", "valid", min=0,
          help="valid (no padding), same (output ceil(m/s)), P, PHxPW or TxBxLxR")


def _out_channels(attrs: dict, cin: int) -> int:
    if attrs.get("depthwise"):
        return cin * attrs["multiplier"]
    return attrs["filters"]


def _groups(attrs: dict, cin: int) -> int:
    return cin if attrs.get("depthwise") else attrs["groups"]


def _divisors(n: int) -> str:
    """The divisors of a channel count, for a hint: "1, 2, 4, 8"."""
    found = sorted({d for i in range(1, isqrt(n) + 1) if n % i == 0 for d in (i, n // i)})
    return ", ".join(map(str, found[:12])) + (", ..." if len(found) > 12 else "")


def infer_conv(attrs: dict, in_shapes: list[tuple]) -> Inferred:
    """Settles `groups` and `filters` (dwconv: the input's channels, times the multiplier) and
    `pads`, explicit (top, bottom, left, right)."""
    h, w, cin = need_image("dwconv" if attrs.get("depthwise") else "conv", in_shapes[0])
    groups = _groups(attrs, cin)
    cout = _out_channels(attrs, cin)
    if cin % groups:
        raise ShapeError(f"groups={groups} does not divide the input's {cin} channels",
                         code="groups", arg="groups",
                         hint=f"choose groups among the divisors of {cin}: {_divisors(cin)}")
    if cout % groups:
        raise ShapeError(f"groups={groups} does not divide the {cout} filters", code="groups",
                         arg="groups",
                         hint=f"choose a filter count that is a multiple of {groups}")
    kh, kw = attrs["kernel"]
    sh, sw = attrs["stride"]
    dh, dw = attrs["dilation"]
    pads = resolve_pads(attrs["pad"], (h, w), (kh, kw), (sh, sw), (dh, dw))
    check_window("conv", (h, w, cin), (kh, kw), (dh, dw), pads)
    oh = window_out(h, kh, sh, pads[0:2], dh)
    ow = window_out(w, kw, sw, pads[2:4], dw)
    return Inferred((oh, ow, cout), {"groups": groups, "filters": cout, "pads": pads})


def conv_params(attrs: dict, in_shapes: list[tuple]) -> dict:
    """He-uniform weights (fan-in (cin/groups)*kh*kw), zero biases."""
    cin = in_shapes[0][2]
    cout = attrs["filters"]
    kh, kw = attrs["kernel"]
    params = {"weight": Param((cout, cin // attrs["groups"], kh, kw), "he_uniform")}
    if attrs["bias"]:
        params["bias"] = Param((cout,), "zeros")
    return params


def conv_macs(attrs: dict, in_shapes: list[tuple], out: tuple) -> int:
    cin = in_shapes[0][2]
    kh, kw = attrs["kernel"]
    return out[0] * out[1] * out[2] * kh * kw * (cin // attrs["groups"])


def conv_window(attrs: dict) -> tuple:
    kh, kw = attrs["kernel"]
    dh, dw = attrs["dilation"]
    return (effective_kernel(kh, dh), effective_kernel(kw, dw), *attrs["stride"])


def _describe(attrs: dict) -> str:
    parts = ["dwconv" if attrs.get("depthwise") else f"conv {attrs['filters']}",
             size_text(attrs["kernel"])]
    if attrs["stride"] != (1, 1):
        parts.append(f"stride={size_text(attrs['stride'])}")
    if attrs["pad"] != "valid":
        parts.append(f"pad={pad_text(attrs['pad'])}")
    if attrs["dilation"] != (1, 1):
        parts.append(f"dilation={size_text(attrs['dilation'])}")
    if not attrs.get("depthwise") and attrs["groups"] != 1:
        parts.append(f"groups={attrs['groups']}")
    return " ".join(parts) + act_suffix(attrs)


register(OpSchema(
    name="conv",
    summary="2-D convolution",
    positional=(Arg("filters", "int", min=1, help="number of output channels"),
                Arg("kernel", "size", min=1, help="K or KHxKW"),
                ACTIVATION_ARG),
    options=(STRIDE, PAD, DILATION, Arg("groups", "int", 1, min=1), BIAS, ACTIVATION_ARG),
    infer=infer_conv, params=conv_params, macs=conv_macs, window=conv_window,
    describe=_describe,
))

register(OpSchema(
    name="dwconv",
    summary="depthwise 2-D convolution (groups = input channels)",
    positional=(Arg("kernel", "size", min=1, help="K or KHxKW"), ACTIVATION_ARG),
    options=(STRIDE, PAD, DILATION, Arg("multiplier", "int", 1, min=1), BIAS, ACTIVATION_ARG),
    fixed={"depthwise": True},
    infer=infer_conv,
    params=conv_params, macs=conv_macs, window=conv_window, describe=_describe,
))
