"""Merges: `add NAME...` (element-wise sum) and `concat NAME...` (along channels).

The operands are the named tensors; the current tensor comes first unless it is named itself.
"""

from __future__ import annotations

from . import OpSchema, ShapeError, register
from .shapes import fmt_shape


def _listed(shapes: list[tuple]) -> str:
    texts = [fmt_shape(s) for s in shapes]
    return ", ".join(texts[:-1]) + " and " + texts[-1]


def infer_add(attrs: dict, in_shapes: list[tuple]) -> tuple:
    first = in_shapes[0]
    if any(s != first for s in in_shapes[1:]):
        raise ShapeError("`add` needs tensors of one shape, but got "
                         + _listed(in_shapes), code="merge-shape",
                         hint="bring one tensor to the other's shape first; a shortcut that "
                              "changes shape usually goes through a 1x1 `conv` with the same "
                              "stride")
    return first


def infer_concat(attrs: dict, in_shapes: list[tuple]) -> tuple:
    ranks = {len(s) for s in in_shapes}
    if len(ranks) != 1:
        raise ShapeError("`concat` cannot join images and flat vectors, but got "
                         + _listed(in_shapes), code="merge-shape",
                         hint="flatten the images first")
    first = in_shapes[0]
    if any(s[:-1] != first[:-1] for s in in_shapes[1:]):
        raise ShapeError("`concat` joins along channels, so every input needs the same height "
                         "and width, but got " + _listed(in_shapes),
                         code="merge-shape",
                         hint="give the branches the same strides and padding (pad=same keeps "
                              "the size), or pool the larger one")
    return (*first[:-1], sum(s[-1] for s in in_shapes))


register(OpSchema(name="add", summary="element-wise sum of tensors of one shape", n_inputs=None,
                  infer=infer_add, describe=lambda a: "add"))
register(OpSchema(name="concat", summary="join tensors along the channel axis", n_inputs=None,
                  infer=infer_concat, describe=lambda a: "concat"))
