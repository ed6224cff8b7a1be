"""Upsampling: `upsample S [nearest|bilinear] [align_corners=true]`.

    upsample 2                  # nearest neighbour, H x W x C -> 2H x 2W x C
    upsample 2 bilinear         # PyTorch's nn.Upsample(scale_factor=2, mode="bilinear")
    upsample 2x3 bilinear align_corners=true

The scale is a whole number per axis (S or SHxSW): out = in * S. Nearest copies input pixel
floor(i / S) to output pixel i. Bilinear (align_corners=false, PyTorch's default) samples the
input at (i + 0.5) / S - 0.5, clamped at 0, between its two nearest pixels; with
align_corners=true at i * (in - 1) / (out - 1). No parameters and, in cnnc's convention (conv
and dense only), no MACs.
"""

from __future__ import annotations

from . import Arg, OpSchema, ShapeError, register
from ._common import need_image, size_text


def infer_upsample(attrs: dict, in_shapes: list[tuple]) -> tuple:
    h, w, c = need_image("upsample", in_shapes[0])
    if attrs["align_corners"] and attrs["mode"] != "bilinear":
        raise ShapeError("`align_corners=` applies only to bilinear upsampling: nearest "
                         "copies whole pixels", code="unknown-option", arg="align_corners",
                         hint="remove it, or write `upsample S bilinear align_corners=true`")
    sh, sw = attrs["scale"]
    return (h * sh, w * sw, c)


def _describe(attrs: dict) -> str:
    sh, sw = attrs["scale"]
    text = f"upsample {sh if sh == sw else size_text((sh, sw))} {attrs['mode']}"
    return text + (" align_corners=true" if attrs["align_corners"] else "")


MODE = Arg("mode", "enum", "nearest", choices=("nearest", "bilinear"),
           help="nearest (default) or bilinear")

register(OpSchema(
    name="upsample",
    summary="nearest or bilinear upsampling by a whole-number factor",
    positional=(Arg("scale", "size", min=1, help="S or SHxSW: out = in * S"), MODE),
    options=(MODE, Arg("align_corners", "bool", False,
                       help="bilinear: line up the corner pixels instead of the pixel centres")),
    infer=infer_upsample, describe=_describe,
))
