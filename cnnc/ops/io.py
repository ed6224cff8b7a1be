"""The model's input: `input HxWxC` (Keras's order), `input HxW` (one channel), `input N` (flat)."""

from __future__ import annotations

from . import Arg, OpSchema, ShapeError, register


def infer_input(attrs: dict, in_shapes: list[tuple]) -> tuple:
    dims = attrs["shape"]
    if len(dims) == 2:
        dims = (*dims, 1)
    if len(dims) > 3:
        raise ShapeError(f"`input` takes HxWxC, HxW or N, but got {len(dims)} dimensions",
                         code="bad-value", arg="shape", hint="write the input like 28x28x1")
    return tuple(dims)


register(OpSchema(
    name="input",
    summary="the input tensor, one image (or vector) per example",
    positional=(Arg("shape", "dims", min=1, help="HxWxC, HxW or N"),),
    n_inputs=0,
    infer=infer_input,
    describe=lambda a: "input",
))
