"""Merges: `add NAME...` (element-wise sum), `concat NAME...` (along channels) and `mul NAME...`
(element-wise product, broadcasting a 1x1xC or C gate over an HxWxC image).

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


_AXES = ("heights", "widths", "channels")


def infer_mul(attrs: dict, in_shapes: list[tuple]) -> tuple:
    """The product's shape: equal shapes, or NumPy's broadcasting over H, W and C -- each size
    equal to the largest, or 1 -- with a flat C gate read as 1x1xC against an image.

    >>> infer_mul({}, [(1, 1, 32), (8, 8, 32)]), infer_mul({}, [(8, 8, 32), (32,)])
    ((8, 8, 32), (8, 8, 32))
    """
    if all(len(s) == 1 for s in in_shapes):
        if any(s != in_shapes[0] for s in in_shapes[1:]):
            raise ShapeError("`mul` needs flat tensors of one length, but got "
                             + _listed(in_shapes), code="merge-shape",
                             hint="a gate needs as many values as the tensor it scales has "
                                  "features")
        return in_shapes[0]
    aligned = [s if len(s) == 3 else (1, 1, *s) for s in in_shapes]
    out = tuple(max(sizes) for sizes in zip(*aligned))
    for axis, name in enumerate(_AXES):
        sizes = [s[axis] for s in aligned]
        if any(n not in (1, out[axis]) for n in sizes):
            wrong = next(n for n in sizes if n not in (1, out[axis]))
            if name == "channels":
                hint = (f"a gate (1x1xC or C) needs as many channels as the image it scales: "
                        f"give the layer that makes it {out[axis]} outputs")
            else:
                hint = ("a gate is 1x1xC (`gap keepdims=true`, then 1x1 convolutions) or C; "
                        "an image operand needs the other's height and width")
            raise ShapeError("`mul` multiplies tensors of one shape, or broadcasts a size-1 "
                             f"axis over the other's (a 1x1xC or C gate over HxWxC), but got "
                             f"{_listed(in_shapes)}: the {name} differ ({wrong} and "
                             f"{out[axis]})", code="merge-shape", hint=hint)
    return out


register(OpSchema(name="add", summary="element-wise sum of tensors of one shape", n_inputs=None,
                  infer=infer_add, describe=lambda a: "add"))
register(OpSchema(name="concat", summary="join tensors along the channel axis", n_inputs=None,
                  infer=infer_concat, describe=lambda a: "concat"))
register(OpSchema(name="mul", summary="element-wise product; a 1x1xC or C gate scales every "
                  "position of an HxWxC image (squeeze-and-excitation)", n_inputs=None,
                  infer=infer_mul, describe=lambda a: "mul"))
