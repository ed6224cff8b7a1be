"""Pooling: `pool [max|avg] K [stride=S] [pad=...] [ceil=true] [count_pad=true]`, and global
pooling, `pool global [avg|max] [keepdims=true]`.

    pool 2                      # 2x2 max pool, stride 2 (stride defaults to the size, as in Keras)
    pool avg 3x3 stride=2 pad=1
    pool max 3 stride=2 ceil=true   # Caffe's rounding (SqueezeNet, GoogLeNet)
    pool global avg             # or `gap`: H x W x C -> C

An option that does not apply to the form of pooling written (`gap stride=2`, `pool max 2
keepdims=true`, `pool max 2 count_pad=true`, `pool avg 2 count_pad=true` without padding) is an
error at that option, not ignored. Writing an option's default (`ceil=false`) changes nothing and
is allowed anywhere.
"""

from __future__ import annotations

from . import Arg, Inferred, OpSchema, ShapeError, register
from ._common import check_window, need_image, pad_text, size_text
from .shapes import avg_pool_counts, resolve_pads, window_out


def _short(hw: tuple[int, int]) -> str:
    """A size as one would write it: 2 for 2x2, 2x3 otherwise."""
    return str(hw[0]) if hw[0] == hw[1] else size_text(hw)


def _no_padding(pad) -> bool:
    """pad=valid or explicit zeros. (pad=same may pad nothing for one input size but not for
    another, so it counts as padding.)"""
    return pad == "valid" or (not isinstance(pad, str) and not any(pad))


_GLOBAL = ("does not apply to global pooling, which pools the whole image into one value per "
           "channel")
_GLOBAL_ALIAS = {"avg": "gap", "max": "gmp"}
_WORDS = {"avg": "average", "max": "max"}


def _global_options(attrs: dict) -> None:
    """Window options on global pooling: an error at the option, not ignored."""
    mode = attrs["mode"] or "avg"
    if attrs["stride"] is not None:
        raise ShapeError(f"`stride=` {_GLOBAL}", code="unknown-option", arg="stride",
                         hint=f"remove it; to pool windows that move by "
                              f"{_short(attrs['stride'])}, write "
                              f"`pool {mode} K stride={_short(attrs['stride'])}`")
    if not _no_padding(attrs["pad"]):
        raise ShapeError(f"`pad=` {_GLOBAL}", code="unknown-option", arg="pad",
                         hint=f"remove it: there is no window to pad; to pool padded windows, "
                              f"write `pool {mode} K pad={pad_text(attrs['pad'])}`")
    if attrs["ceil"]:
        raise ShapeError(f"`ceil=` {_GLOBAL}", code="unknown-option", arg="ceil",
                         hint="remove it: the output has no height or width to round")
    if attrs["count_pad"]:
        raise ShapeError(f"`count_pad=` {_GLOBAL}", code="unknown-option", arg="count_pad",
                         hint="remove it: global pooling pads nothing; `count_pad=` applies "
                              "only to average pooling with padding, like "
                              "`pool avg 3 stride=1 pad=1 count_pad=true`")


def _window_options(attrs: dict) -> None:
    """Options of other forms on max or average pooling: an error at the option, not ignored."""
    kind = attrs["kind"]
    if attrs["keepdims"]:
        raise ShapeError("`keepdims=` applies only to global pooling: a windowed pool's "
                         "output is already an image", code="unknown-option", arg="keepdims",
                         hint=f"remove it; for global {_WORDS[kind]} pooling that keeps a "
                              f"1x1xC image, write `{_GLOBAL_ALIAS[kind]} keepdims=true`")
    if attrs["count_pad"] and kind == "max":
        raise ShapeError("`count_pad=` applies only to average pooling: it decides whether "
                         "padded zeros count in the divisor of an average",
                         code="unknown-option", arg="count_pad",
                         hint="remove it (max pooling never takes a padded value); for average "
                              "pooling write `pool avg K pad=P count_pad=true`")
    if attrs["count_pad"] and _no_padding(attrs["pad"]):
        raise ShapeError("`count_pad=` applies only to average pooling with padding, and this "
                         "pool pads nothing: there are no padded zeros to count",
                         code="unknown-option", arg="count_pad",
                         hint="remove it, or pad the pool, like `pad=1`")


def infer_pool(attrs: dict, in_shapes: list[tuple]) -> Inferred:
    """Settles, for global pooling, `mode` (avg when not written); for windows, `stride` (the
    window size when not written), `pads` (top, bottom, left, right) and, for average pooling,
    `divisor`: per axis, the element count of each window's row and column (the divisor of a
    window is their product)."""
    h, w, c = need_image("pool", in_shapes[0])
    if attrs["kind"] == "global":
        if attrs["size"] is not None:
            raise ShapeError("global pooling takes no window size: it pools the whole image",
                             code="bad-value", arg="size", hint="write `pool global avg` or `gap`")
        _global_options(attrs)
        return Inferred((1, 1, c) if attrs["keepdims"] else (c,), {"mode": attrs["mode"] or "avg"})
    if attrs["mode"] is not None:
        raise ShapeError(f"`{attrs['mode']}` after the size is only for global pooling",
                         code="bad-value", arg="mode", hint=f"write `pool {attrs['mode']} K`")
    _window_options(attrs)
    # Without a size, 2x2 (stride 2), as Keras' MaxPool2D() and AveragePooling2D() default to.
    size = attrs["size"] if attrs["size"] is not None else (2, 2)
    kh, kw = size
    sh, sw = attrs["stride"] if attrs["stride"] is not None else size
    pads = resolve_pads(attrs["pad"], (h, w), (kh, kw), (sh, sw), (1, 1))
    if pads[0] * 2 > kh or pads[1] * 2 > kh or pads[2] * 2 > kw or pads[3] * 2 > kw:
        # PyTorch refuses this too: a window could then lie entirely in the padding.
        most = str(kh // 2) if kh == kw else f"{kh // 2}x{kw // 2}"
        raise ShapeError(f"pad={pad_text(pads)} is more than half the {kh}x{kw} window of "
                         "`pool`: a window could lie entirely in the padding",
                         code="bad-value", arg="pad",
                         hint=f"pad a {kh}x{kw} pool by at most {most}, or use a larger window")
    oh = window_out(h, kh, sh, pads[0:2], 1, attrs["ceil"])
    ow = window_out(w, kw, sw, pads[2:4], 1, attrs["ceil"])
    if oh < 1 or ow < 1:  # (with ceil=true a window may overhang the input, as in PyTorch)
        check_window("pool", (h, w, c), (kh, kw), (1, 1), pads, arg="size")
    settled = {"size": size, "stride": (sh, sw), "pads": pads}
    if attrs["kind"] == "avg":
        settled["divisor"] = (avg_pool_counts(h, oh, kh, sh, pads[0:2], attrs["count_pad"]),
                              avg_pool_counts(w, ow, kw, sw, pads[2:4], attrs["count_pad"]))
    return Inferred((oh, ow, c), settled)


# What each alias means, and the attrs it fixes.
_ALIASES = {"maxpool": ("max pooling", {"kind": "max"}),
            "avgpool": ("average pooling", {"kind": "avg"}),
            "gap": ("global average pooling", {"kind": "global", "mode": "avg"}),
            "gmp": ("global max pooling", {"kind": "global", "mode": "max"})}


def alias_conflict(alias: str, attrs: dict, written: set, rest: str):
    """`avgpool max 2`, `maxpool global`, `gap max`: a written kind that is not the alias's.
    Repeating the alias's own kind (`maxpool max 2`, `gap avg`) is redundant, not wrong."""
    means, fixed = _ALIASES[alias]
    if fixed["kind"] == "global":
        for key in ("kind", "mode"):
            word = attrs.get(key)
            if key in written and word not in (None, "global", fixed["mode"]):
                return (key, f"`{alias}` is {means}; `{word}` contradicts it",
                        f"for global {_WORDS[word]} pooling write `{_GLOBAL_ALIAS[word]}` or "
                        f"`pool global {word}`")
        return None
    word = attrs.get("kind")
    if "kind" not in written or word == fixed["kind"]:
        return None
    if word == "global":
        kind = fixed["kind"]
        return ("kind", f"`{alias}` pools a window; `global` contradicts it",
                f"for global {_WORDS[kind]} pooling write `{_GLOBAL_ALIAS[kind]}` or "
                f"`pool global {kind}`")
    return ("kind", f"`{alias}` is {means}; `{word}` contradicts it",
            f"write `pool {rest}`" if rest else f"write `pool {word} K`")


def pool_window(attrs: dict):
    if attrs["kind"] == "global":
        return None
    return (*attrs["size"], *attrs["stride"])


def _describe(attrs: dict) -> str:
    if attrs["kind"] == "global":
        return f"pool global {attrs['mode']}" + (" keepdims=true" if attrs["keepdims"] else "")
    parts = [f"pool {attrs['kind']} {size_text(attrs['size'])}"]
    if attrs["stride"] is not None and attrs["stride"] != attrs["size"]:
        parts.append(f"stride={size_text(attrs['stride'])}")
    if attrs["pad"] != "valid":
        parts.append(f"pad={pad_text(attrs['pad'])}")
    if attrs["ceil"]:
        parts.append("ceil=true")
    if attrs["count_pad"]:
        parts.append("count_pad=true")
    return " ".join(parts)


register(OpSchema(
    name="pool",
    summary="max, average or global pooling",
    positional=(Arg("kind", "enum", "max", choices=("max", "avg", "global")),
                Arg("size", "size", None, min=1, help="K or KHxKW"),
                Arg("mode", "enum", None, choices=("avg", "max"),
                    help="for global pooling: avg (default) or max")),
    options=(Arg("stride", "size", None, min=1, help="defaults to the window size"),
             Arg("pad", "pad", "valid", min=0),
             Arg("ceil", "bool", False, help="round the output size up (Caffe)"),
             Arg("count_pad", "bool", False,
                 help="average pooling: count padded zeros in the divisor"),
             Arg("keepdims", "bool", False, help="global pooling: keep a 1x1xC image")),
    aliases=("maxpool", "avgpool", "gap", "gmp"),
    alias_attrs={alias: fixed for alias, (_, fixed) in _ALIASES.items()},
    alias_conflict=alias_conflict,
    infer=infer_pool, window=pool_window, describe=_describe,
))
