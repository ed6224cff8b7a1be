"""Channel rearrangements: `a, b = split N` and `shuffle G` (ShuffleNet).

    keep, x = split 2           # two halves of the channels, named; x is the current tensor
    a, b, c = split 16x32x16    # parts of 16, 32 and 16 channels
    shuffle 2                   # channel shuffle in 2 groups

`split` makes one layer per named part (each a slice of the channels, attribute `part` saying
which, settled `channels` = (start, stop)), so every part is an ordinary tensor: merge it,
branch from it, name it again. The last part becomes the current tensor. Both ops work on the
last axis, the channels of an image or the features of a flat vector.
"""

from __future__ import annotations

from . import Arg, Inferred, OpSchema, ShapeError, register
from .conv import _divisors
from .shapes import fmt_shape


def split_sizes(attrs: dict, channels: int | None = None) -> tuple[int, ...]:
    """The channel count of every part: `split 2` of 8 channels is (4, 4), `split 3x5` is
    (3, 5). Without `channels`, only for explicit sizes."""
    parts = attrs["parts"]
    if len(parts) > 1:
        return tuple(parts)
    return (channels // parts[0],) * parts[0]


def split_outputs(attrs: dict) -> int:
    """How many tensors the statement makes, hence how many names it needs."""
    parts = attrs["parts"]
    if parts == (1,):
        raise ShapeError("`split 1` makes one part, the whole tensor", code="bad-value",
                         arg="parts", hint="split into 2 or more parts, or remove it")
    return len(parts) if len(parts) > 1 else parts[0]


def split_range(attrs: dict, channels: int) -> tuple[int, int]:
    """The channels [start, stop) of the layer's part."""
    sizes = split_sizes(attrs, channels)
    start = sum(sizes[:attrs["part"]])
    return start, start + sizes[attrs["part"]]


def infer_split(attrs: dict, in_shapes: list[tuple]) -> Inferred:
    """Settles `channels`, the part's (start, stop) along the last axis."""
    (shape,) = in_shapes
    c = shape[-1]
    what = "channels" if len(shape) == 3 else "features"
    parts = attrs["parts"]
    if len(parts) == 1:
        n = parts[0]
        if c % n:
            hint = None
            if c >= n:
                base, extra = divmod(c, n)
                sizes = "x".join(str(base + (i < extra)) for i in range(n))
                hint = f"give the part sizes, like `split {sizes}`"
                counts = _divisors(c).split(", ")[1:-1]  # neither 1 nor one per channel
                if counts:
                    hint = (f"split {c} {what} into {', '.join(counts)} equal parts, or "
                            f"{hint}")
            raise ShapeError(f"`split {n}` needs the {what} to divide into {n} equal parts, "
                             f"but the input has {c} ({fmt_shape(shape)})", code="shape",
                             arg="parts", hint=hint)
    elif sum(parts) != c:
        sizes = "x".join(map(str, parts))
        raise ShapeError(f"the parts of `split {sizes}` add up to {sum(parts)} {what}, but the "
                         f"input has {c} ({fmt_shape(shape)})", code="shape", arg="parts",
                         hint=f"make the sizes add up to {c}")
    start, stop = split_range(attrs, c)
    return Inferred((*shape[:-1], stop - start), {"channels": (start, stop)})


def _describe_split(attrs: dict) -> str:
    parts = attrs["parts"]
    text = "x".join(map(str, parts))
    return f"split {text} (part {attrs.get('part', 0) + 1} of {split_outputs(attrs)})"


register(OpSchema(
    name="split",
    summary="split the channels into named parts (`a, b = split 2`)",
    positional=(Arg("parts", "dims", min=1,
                    help="N equal parts, or the size of each part, like 16x48"),),
    infer=infer_split, describe=_describe_split, outputs=split_outputs,
    doc="`a, b = split N` splits the channels into N equal parts; `a, b, c = split AxBxC` "
        "into parts of A, B and C channels. Each part is named; the last is current.",
))


def infer_shuffle(attrs: dict, in_shapes: list[tuple]) -> tuple:
    (shape,) = in_shapes
    c, g = shape[-1], attrs["groups"]
    if c % g:
        raise ShapeError(f"`shuffle {g}` needs the {c} channels to divide into {g} groups",
                         code="groups", arg="groups",
                         hint=f"choose groups among the divisors of {c}: {_divisors(c)}")
    return shape


register(OpSchema(
    name="shuffle",
    summary="ShuffleNet's channel shuffle: C = G x (C/G) channels transposed to (C/G) x G",
    positional=(Arg("groups", "int", min=1, help="the number of groups to interleave"),),
    aliases=("channel_shuffle",),
    infer=infer_shuffle, describe=lambda a: f"shuffle {a['groups']}",
))
