"""Fully connected layers and flattening: `flatten`, `dense N [act] [bias=false]`."""

from __future__ import annotations

from math import prod

from . import Arg, OpSchema, Param, ShapeError, register
from ._common import ACTIVATION_ARG, BIAS, act_suffix
from .shapes import fmt_shape


def infer_dense(attrs: dict, in_shapes: list[tuple]) -> tuple:
    (shape,) = in_shapes
    if len(shape) != 1:
        raise ShapeError(f"`dense` needs a flat input, but its input is an image ({fmt_shape(shape)})",
                         code="needs-flatten",
                         hint=f"add `flatten` before it (giving {prod(shape):,} features), or "
                              f"`pool global avg` (giving {shape[-1]})")
    return (attrs["units"],)


def dense_params(attrs: dict, in_shapes: list[tuple]) -> dict:
    """He-uniform weights (fan-in the input's features), zero biases."""
    params = {"weight": Param((attrs["units"], in_shapes[0][0]), "he_uniform")}
    if attrs["bias"]:
        params["bias"] = Param((attrs["units"],), "zeros")
    return params


register(OpSchema(
    name="dense",
    summary="fully connected layer",
    positional=(Arg("units", "int", min=1, help="number of outputs"), ACTIVATION_ARG),
    options=(BIAS, ACTIVATION_ARG),
    aliases=("linear", "fc"),
    infer=infer_dense, params=dense_params,
    macs=lambda attrs, ins, out: ins[0][0] * attrs["units"],
    describe=lambda a: f"dense {a['units']}{act_suffix(a)}",
))

register(OpSchema(
    name="flatten",
    summary="image to a flat vector (channel-major, as PyTorch flattens N x C x H x W)",
    infer=lambda attrs, ins: (prod(ins[0]),),
    describe=lambda a: "flatten",
))
