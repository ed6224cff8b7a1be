"""Matching a statement's written arguments against an op schema's declared ones.

`bind` turns `conv 32 3x3 relu stride=2` into {"filters": 32, "kernel": (3, 3), ...}, or into
a list of (span, code, message, hint) problems, each pointing at the word that caused it.
Used for ops and for the training section alike.
"""

from __future__ import annotations

from ..diagnostics import did_you_mean
from ..syntax.ast import Option, Value
from . import Arg


class ArgError(Exception):
    def __init__(self, message: str, hint: str | None = None, code: str = "bad-value"):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code


FLOAT32_MAX = 3.4028234663852886e38

_BOOLS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}


def _positive(arg: Arg, value, text: str):
    """Range checks for a number or every component of a size."""
    values = value if isinstance(value, tuple) else (value,)
    what = f"each part of {arg.name}" if "x" in text else arg.name
    for v in values:
        if arg.max_exclusive is not None and (arg.min is not None and v < arg.min
                                              or v >= arg.max_exclusive):
            lo = f"{arg.min:g}" if arg.min is not None else "-inf"
            raise ArgError(f"{what} must be in [{lo}, {arg.max_exclusive:g}), but got `{text}`")
        if arg.min is not None and v < arg.min:
            if arg.min == 1:
                raise ArgError(f"{what} must be at least 1, but got `{text}`",
                               hint="sizes and counts are whole numbers from 1 up")
            raise ArgError(f"{what} must be at least {arg.min:g}, but got `{text}`")
        if arg.max is not None and v > arg.max:
            lo = f"{arg.min:g}" if arg.min is not None else "-inf"
            raise ArgError(f"{what} must be in [{lo}, {arg.max:g}], but got `{text}`")
    return value


def _minus_hint(v: Value) -> str | None:
    """`c-1` is one name (names may hold `-`, like fashion-mnist): say how to subtract."""
    if v.kind == "name" and "-" in v.value:
        a, b = v.value.split("-", 1)
        return f"`{v.value}` is one name; to subtract, put spaces around the minus: `{a} - {b}`"
    return None


def coerce(arg: Arg, v: Value):
    """The Python value of `v` as `arg`'s type, or ArgError saying what was expected."""
    t = arg.type
    if t == "int":
        if v.kind != "int":
            hint = None
            if v.kind == "float" and v.source is not None:  # computed: round it on purpose
                hint = "round it explicitly: round(...), floor(...), ceil(...) or " \
                       "make_divisible(..., 8)"
            raise ArgError(f"{arg.name} must be a whole number, but got {v.describe()}",
                           hint or _minus_hint(v))
        return _positive(arg, v.value, v.text)
    if t == "float":
        if v.kind not in ("int", "float"):
            raise ArgError(f"{arg.name} must be a number, but got {v.describe()}",
                           _minus_hint(v))
        if abs(float(v.value)) > FLOAT32_MAX:  # the backends compute in float32
            raise ArgError(f"{arg.name} is {v.text}, too large for float32 arithmetic (at most "
                           f"{FLOAT32_MAX:.4g})", code="too-large")
        return _positive(arg, float(v.value), v.text)
    if t == "size":
        if v.kind == "int":
            return _positive(arg, (v.value, v.value), v.text)
        if v.kind == "dims" and len(v.value) == 2:
            return _positive(arg, tuple(v.value), v.text)
        raise ArgError(f"{arg.name} must be a size like 3 or 3x3, but got {v.describe()}")
    if t == "pad":
        if v.kind == "name" and v.value in ("valid", "same"):
            return v.value
        if v.kind == "int":
            return _positive(arg, (v.value,) * 4, v.text)
        if v.kind == "dims" and len(v.value) == 2:
            ph, pw = v.value
            return _positive(arg, (ph, ph, pw, pw), v.text)
        if v.kind == "dims" and len(v.value) == 4:
            return _positive(arg, tuple(v.value), v.text)
        raise ArgError(f"pad must be valid, same, P, PHxPW or TxBxLxR, but got {v.describe()}",
                       hint=did_you_mean(v.text, ("valid", "same")) if v.kind == "name" else None)
    if t == "bool":
        if v.kind == "name" and v.value.lower() in _BOOLS:
            return _BOOLS[v.value.lower()]
        if v.kind == "int" and v.value in (0, 1):
            return bool(v.value)
        raise ArgError(f"{arg.name} must be true or false, but got {v.describe()}")
    if t == "enum":
        if v.kind == "name" and v.value in arg.choices:
            return v.value
        hint = did_you_mean(v.text, arg.choices) if v.kind == "name" else None
        if v.kind == "name" and v.value.lower() in arg.choices:  # ReLU, Softmax (Keras' names)
            hint = f"did you mean `{v.value.lower()}`?"
        raise ArgError(f"{arg.name} must be one of {', '.join(arg.choices)}, but got "
                       f"{v.describe()}", hint=hint)
    if t == "dims":
        if v.kind == "int":
            return _positive(arg, (v.value,), v.text)
        if v.kind == "dims":
            return _positive(arg, tuple(v.value), v.text)
        raise ArgError(f"{arg.name} must be a size like 28x28x1, but got {v.describe()}")
    if t == "string":
        if v.kind in ("string", "name"):
            return v.value
        raise ArgError(f"{arg.name} must be a name or a quoted string, but got {v.describe()}")
    raise AssertionError(f"unknown argument type {t!r}")


def _fits(arg: Arg, v: Value) -> bool:
    try:
        coerce(arg, v)
        return True
    except ArgError:
        return False


# value kind -> the numeric argument types that read it
_NUMERIC = {"int": ("int", "float", "size", "dims"), "float": ("float",),
            "dims": ("size", "dims")}


def _prefix(what: str, arg: Arg) -> str:
    """`conv`: before a message about one of its arguments (not for `epochs 0`'s own value)."""
    return "" if arg.name == what else f"`{what}`: "


def _extra_positional(what: str, positional, options, written: dict, v: Value,
                      following: Value | None) -> tuple:
    """The problem with a positional value no declared argument takes, in the most useful words."""
    if v.kind == "name" and any(a.name == v.value for a in options):
        example = following.text if following is not None and following.kind != "name" else "2"
        return (v.span, "bad-value", f"`{v.value}` is an option of `{what}`: it needs a value "
                f"after `=`", f"write it like `{v.value}={example}`")
    enums = [a for a in positional if a.type == "enum"]
    again = next((a for a in enums if a.name in written and _fits(a, v)), None)
    if again is not None:
        return (v.span, "bad-value", f"`{what}` takes one {again.name}, but `{v.text}` comes "
                f"after `{written[again.name].text}`", "remove one of them")
    unfilled = next((a for a in enums if a.name not in written), None)
    if unfilled is not None and v.kind == "name":
        try:
            coerce(unfilled, v)
        except ArgError as e:
            return (v.span, e.code, _prefix(what, unfilled) + e.message, e.hint)
    # A number of the right kind but out of range (`pool 0`): say what the range is.
    for a in positional:
        if a.name not in written and a.type in _NUMERIC.get(v.kind, ()):
            try:
                coerce(a, v)
            except ArgError as e:
                return (v.span, e.code, _prefix(what, a) + e.message, e.hint)
    takes = ", ".join(a.name for a in positional) or "no positional arguments"
    return (v.span, "bad-value", f"`{what}` does not take {v.describe()} here (it takes "
            f"{takes})", None)


def _unquoted(arg: Arg, v: Value) -> Value | None:
    """`'same'` as the name `same`, when the quotes are what keeps it from fitting `arg`."""
    if v.kind != "string" or not isinstance(v.value, str):
        return None
    bare = Value("name", v.value, v.value, v.span)
    if not v.value.replace("_", "a").replace("-", "a").isalnum() or not _fits(arg, bare):
        return None
    return bare


# A problem caused by a Keras habit; its hint becomes the statement spelt the cnnc way.
_HABIT = object()


def _respelt(what: str, positional, options, args, opts, bound: dict) -> str | None:
    """The statement as written, with its Keras habits spelt the cnnc way: keyword arguments
    that cnnc takes positionally put in their place, Keras option names renamed, quotes around
    plain words dropped. `bound` maps each positional argument to the value that fills it."""
    from ..syntax.keras_habits import OPTIONS, POSITIONAL

    by_name = {a.name: a for a in options}
    words = [what]
    for a in positional:
        if a.name in bound:
            v = bound[a.name]
            words.append((_unquoted(a, v) or v).text)
    for o in opts:
        if POSITIONAL.get(o.key) in bound and o.key not in by_name:
            continue
        key = OPTIONS.get(o.key, o.key) if o.key not in by_name else o.key
        arg = by_name.get(key)
        value = (_unquoted(arg, o.value) if arg is not None else None) or o.value
        words.append(f"{key}={value.text}")
    return " ".join(words)


def bind(what: str, positional: tuple[Arg, ...], options: tuple[Arg, ...],
         args: tuple[Value, ...], opts: tuple[Option, ...], spans: dict | None = None):
    """Match written arguments to declared ones. Returns (attrs, problems).

    Positional values fill the declared positional arguments in order; an optional argument
    whose type does not fit the value is skipped (so `pool 2` skips the kind and fills the size).
    When `spans` is a dict, it receives each bound argument's source span (for shape errors
    that point at the argument responsible).
    """
    attrs: dict = {}
    written: dict[str, Value] = {}
    placed: dict[str, Value] = {}  # positional arguments: the value that fills each
    problems: list[tuple] = []  # (span, code, message, hint)
    order = ", ".join(a.name for a in positional)
    i = 0
    skip_next = False
    for n, v in enumerate(args):
        if skip_next:
            skip_next = False
            continue
        while i < len(positional) and not positional[i].required and not _fits(positional[i], v):
            i += 1
        if i >= len(positional):
            following = args[n + 1] if n + 1 < len(args) else None
            problems.append(_extra_positional(what, positional, options, written, v, following))
            if v.kind == "name" and any(a.name == v.value for a in options) \
                    and n + 1 < len(args) and args[n + 1].kind != "name":
                skip_next = True  # `stride 2`: the 2 belongs to the misspelt option
            continue
        arg = positional[i]
        try:
            attrs[arg.name] = coerce(arg, v)
        except ArgError as e:
            hint = e.hint
            if _unquoted(arg, v) is not None:
                hint = _HABIT
            elif hint is None and len(positional) > 1 and any(_fits(a, v) for a in positional):
                hint = f"`{what}` takes its arguments in the order: {order}"
            problems.append((v.span, e.code, _prefix(what, arg) + e.message, hint))
            attrs[arg.name] = None
        written[arg.name] = v
        placed[arg.name] = v
        if spans is not None:
            spans[arg.name] = v.span
        i += 1
    by_name = {a.name: a for a in options}
    by_name.update({alias: a for a in options for alias in a.aliases if alias not in by_name})
    extra = len(args) - len(written)  # positional values no argument took
    for o in opts:
        arg = by_name.get(o.key)
        keras_pos = keras_option = None
        if arg is None:  # perhaps a Keras habit (kernel_size=3, strides=2)
            from ..syntax.keras_habits import OPTIONS, POSITIONAL

            keras_pos = next((a for a in positional if a.name == POSITIONAL.get(o.key)), None)
            keras_option = OPTIONS.get(o.key)
        if arg is None and keras_pos is not None and keras_pos.name not in written:
            # `kernel_size=3`: Keras' keyword for what cnnc takes positionally
            value = _unquoted(keras_pos, o.value) or o.value
            if _fits(keras_pos, value):
                attrs[keras_pos.name] = coerce(keras_pos, value)
                written[keras_pos.name] = placed[keras_pos.name] = value
            problems.append((o.key_span, "unknown-option", f"`{what}` takes its "
                             f"{keras_pos.name} positionally: `{o.key}=` is Keras' name for it",
                             _HABIT))
            continue
        if arg is None and keras_option in by_name:
            problems.append((o.key_span, "unknown-option", f"`{what}` has no option `{o.key}`: "
                             f"Keras' `{o.key}=` is `{keras_option}=` in cnnc", _HABIT))
            continue
        if arg is None:
            known = [a.name for a in options]
            hint = did_you_mean(o.key, [*known, *(k for a in options for k in a.aliases)])
            if hint is None:
                hint = (f"`{what}` takes " + ", ".join(f"{k}=" for k in known)) if known else \
                    f"`{what}` takes no options"
            problems.append((o.key_span, "unknown-option",
                             f"`{what}` has no option `{o.key}`", hint))
            continue
        key = arg.name  # `negative_slope=` sets `slope`
        if key in attrs and attrs[key] is not None:
            first = f" (first as `{written[key].text}`)" if key in written else ""
            given = key if key == o.key else f"{key} (`{o.key}`)"
            problems.append((o.span, "bad-value",
                             f"`{what}`: {given} is given twice{first}", "remove one of them"))
            continue
        try:
            attrs[key] = coerce(arg, o.value)
        except ArgError as e:
            hint = _HABIT if _unquoted(arg, o.value) is not None else e.hint
            problems.append((o.value.span, e.code, _prefix(what, arg) + e.message, hint))
            attrs[key] = None
        written[key] = o.value
        if spans is not None:
            spans[key] = o.span
    for arg in (*positional, *options):
        if arg.name not in attrs:
            if arg.required:
                problems.append((None, "missing-argument", f"`{what}` needs its {arg.name}"
                                 + (f" ({arg.help})" if arg.help else ""), None))
            else:
                attrs[arg.name] = arg.default
    if any(p[3] is _HABIT for p in problems):
        respelt = None if extra else _respelt(what, positional, options, args, opts, placed)
        problems = [(span, code, message, (f"write `{respelt}`" if respelt else None)
                     if hint is _HABIT else hint)
                    for span, code, message, hint in problems]
    return attrs, problems
