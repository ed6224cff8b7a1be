"""Argument declarations and checks shared by several op families."""

from __future__ import annotations

from . import ACTIVATIONS, Arg, ShapeError
from .shapes import effective_kernel, fmt_shape

ACTIVATION_ARG = Arg("activation", "enum", None, choices=ACTIVATIONS,
                     help="an activation applied to the output")
STRIDE = Arg("stride", "size", (1, 1), min=1, help="step between windows: S or SHxSW")
DILATION = Arg("dilation", "size", (1, 1), min=1, help="spacing of kernel taps: D or DHxDW")
BIAS = Arg("bias", "bool", True, help="learn an additive bias per output")


def need_image(op: str, shape: tuple) -> tuple[int, int, int]:
    """The (H, W, C) of an image input, or a shape error for a flat one."""
    if len(shape) != 3:
        raise ShapeError(f"`{op}` needs an image (H x W x C), but its input is flat ({fmt_shape(shape)})",
                         hint="windowed layers come before `flatten`")
    return shape


def act_suffix(attrs: dict) -> str:
    return f" {attrs['activation']}" if attrs.get("activation") else ""


def size_text(hw: tuple[int, int]) -> str:
    return f"{hw[0]}x{hw[1]}"


def pad_text(pad) -> str:
    """A pad attribute as written: same, valid, P, PHxPW or TxBxLxR.

    >>> pad_text("same"), pad_text((1, 1, 1, 1)), pad_text((1, 1, 2, 2)), pad_text((0, 1, 0, 1))
    ('same', '1', '1x2', '0x1x0x1')
    """
    if isinstance(pad, str):
        return pad
    top, bottom, left, right = pad
    if top == bottom == left == right:
        return str(top)
    if top == bottom and left == right:
        return f"{top}x{left}"
    return "x".join(map(str, pad))


def check_window(op: str, shape, kernel, dilation, pads, arg: str = "kernel") -> None:
    """A window larger than its padded input leaves no output: say so with the numbers."""
    h, w = shape[0], shape[1]
    eh, ew = effective_kernel(kernel[0], dilation[0]), effective_kernel(kernel[1], dilation[1])
    ph, pw = h + pads[0] + pads[1], w + pads[2] + pads[3]
    if eh > ph or ew > pw:
        what = f"{kernel[0]}x{kernel[1]}"
        if dilation != (1, 1):
            what += f" with dilation {dilation[0]}x{dilation[1]} (covering {eh}x{ew})"
        padded = "" if pads == (0, 0, 0, 0) else f" (padded: {ph}x{pw})"
        raise ShapeError(
            f"the {what} window of `{op}` is larger than its input {fmt_shape(shape)}{padded}",
            code="kernel-too-large", arg=arg,
            hint="use a smaller kernel, pad=same, or remove a pooling layer before this one")
