"""Evaluating the expressions of a model: `conv c*6 1x1`, `dense round(100 * width)`.

Arithmetic is Python's: integers stay integers (exact, however large), `/` gives a float, `//`
and `%` floor as Python does, and a float is an IEEE double, so that a scaling rule written as
torchvision writes it (`math.ceil(n * depth)`, `_make_divisible(c * width, 8)`) gives torchvision's
result, float rounding included. A float is never turned into an integer silently: where a whole
number is needed, the schema refuses a float, and the expression must round it (round, floor,
ceil, make_divisible).

Errors point at the sub-expression responsible and say the value it had.
"""

from __future__ import annotations

import math

from ..diagnostics import Span, did_you_mean
from ..syntax import ast

MAX_MAGNITUDE = 2**63  # past this a value is no size of anything: an error, not a slow model


class ExprError(Exception):
    def __init__(self, span: Span, message: str, hint: str | None = None,
                 code: str = "expression", notes: tuple = ()):
        super().__init__(message)
        self.span = span
        self.message = message
        self.hint = hint
        self.code = code
        self.notes = list(notes)


def make_divisible(v, divisor, min_value=None):
    """torchvision's _make_divisible (from the TensorFlow MobileNet code): `v` rounded to the
    nearest multiple of `divisor`, at least `min_value` (default: divisor), and never more than
    10% below `v`."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _round(x, digits=None):
    return round(x) if digits is None else round(x, digits)


# name: (function, fewest arguments, most arguments (None: any), what it does)
FUNCTIONS = {
    "min": (min, 2, None, "the smallest of its arguments"),
    "max": (max, 2, None, "the largest of its arguments"),
    "round": (_round, 1, 2, "the nearest whole number (halves to even, as Python rounds), or "
                            "round(x, n) to n decimals"),
    "floor": (math.floor, 1, 1, "the whole number at or below"),
    "ceil": (math.ceil, 1, 1, "the whole number at or above"),
    "make_divisible": (make_divisible, 2, 3, "make_divisible(v, d[, least]): v rounded to a "
                                             "multiple of d, as torchvision's _make_divisible"),
}


def show(x) -> str:
    """A value as the language writes it."""
    if isinstance(x, tuple):
        return "x".join(str(p) for p in x)
    if isinstance(x, float):
        return repr(x)
    return str(x)


def kind_of(x) -> str:
    if isinstance(x, bool):
        return "int"
    if isinstance(x, int):
        return "int"
    if isinstance(x, float):
        return "float"
    if isinstance(x, tuple):
        return "dims"
    return "name"


class Evaluator:
    """Evaluates expressions with `env`, a mapping from parameter names to literal Values
    (block parameters over model parameters). `describe_names` says, for an unknown name, which
    names there are."""

    def __init__(self, env, describe_names=None, source_of=None):
        self.env = env
        self.describe_names = describe_names
        self.source_of = source_of  # span -> the source text it covers, if known

    def value(self, v: ast.Value) -> ast.Value:
        """v with its expression evaluated, or a parameter's value in place of its name;
        literals and words pass through."""
        if v.kind == "name":
            bound = self.env.get(v.value)
            if bound is None:
                return v
            return ast.Value(bound.kind, bound.value, bound.text, v.span,
                             bound.source if bound.source is not None else
                             (v.value if bound.kind != "name" else None))
        if v.kind != "expr":
            return v
        result = self.eval(v.value)
        node = v.value
        if node.kind == "unary" and isinstance(node.operands[0], ast.Value) \
                and node.operands[0].kind in ("int", "float"):
            # A signed number (`-1e-6`) is a literal to the reader: keep its spelling.
            return ast.Value(kind_of(result), result, v.text.replace(" ", ""), v.span)
        return ast.Value(kind_of(result), result, show(result), v.span, v.text)

    # ---------------------------------------------------------------------------------------
    def eval(self, node):
        if isinstance(node, ast.Value):
            return self.leaf(node)
        if node.kind == "binary":
            return self.binary(node)
        if node.kind == "unary":
            x = self.number(node.operands[0])
            return self.checked(-x if node.op == "-" else +x, node)
        if node.kind == "size":
            parts = []
            for part in node.operands:
                x = self.eval(part)
                if isinstance(x, float) or not isinstance(x, int):
                    raise ExprError(part.span, f"each part of a size must be a whole number, but "
                                    f"`{self.text(part)}` is {show(x)}",
                                    hint="round it explicitly: round(...), floor(...), ceil(...)"
                                    if isinstance(x, float) else None, code="bad-value")
                parts.append(x)
            return tuple(parts)
        return self.function(node)

    def leaf(self, v: ast.Value):
        if v.kind in ("int", "float", "dims"):
            return v.value
        if v.kind == "name":
            bound = self.env.get(v.value)
            if bound is None:
                raise self.unknown(v)
            if bound.kind not in ("int", "float", "dims"):
                raise ExprError(v.span, f"`{v.value}` is {bound.describe()}, not a number, so "
                                "it cannot be computed with", code="bad-value")
            return bound.value
        if v.kind == "expr":
            return self.eval(v.value)
        raise ExprError(v.span, f"{v.describe()} cannot be computed with", code="bad-value")

    def unknown(self, v: ast.Value) -> ExprError:
        names = self.describe_names() if self.describe_names else []
        hint = did_you_mean(v.value, names)
        if hint is None and "-" in v.value:
            a, b = v.value.split("-", 1)
            hint = (f"`{v.value}` is one name (names may hold `-`); to subtract, put spaces "
                    f"around the minus: `{a} - {b}`")
        notes = []
        if names:
            notes.append("the names that stand for values here: "
                         + ", ".join(f"`{n}`" for n in names))
        else:
            notes.append("no parameters are declared here; declare one with `param NAME=VALUE` "
                         "at the top of the file")
        return ExprError(v.span, f"unknown name `{v.value}` in an expression", hint=hint,
                         code="unknown-name", notes=tuple(notes))

    def number(self, node):
        x = self.eval(node)
        if isinstance(x, tuple):
            raise ExprError(node.span, f"`{self.text(node)}` is a size ({show(x)}); sizes cannot "
                            "be computed with, only their parts", code="bad-value")
        return x

    def binary(self, node: ast.Expr):
        left, right = node.operands
        a, b = self.number(left), self.number(right)
        op = node.op
        if op in ("/", "//", "%") and b == 0:
            raise ExprError(right.span, f"division by zero: `{self.text(right)}` is {show(b)}",
                            notes=(f"in `{self.text(node)}`",))
        if op == "+":
            result = a + b
        elif op == "-":
            result = a - b
        elif op == "*":
            result = a * b
        elif op == "/":
            result = a / b
        elif op == "//":
            result = a // b
        else:
            result = a % b
        return self.checked(result, node)

    def function(self, node: ast.Expr):
        name = node.op
        if name not in FUNCTIONS:
            raise ExprError(node.op_span, f"unknown function `{name}`",
                            hint=did_you_mean(name, list(FUNCTIONS)),
                            notes=("the functions: " + ", ".join(f"`{f}`" for f in FUNCTIONS),),
                            code="unknown-name")
        fn, least, most, doc = FUNCTIONS[name]
        n = len(node.operands)
        if n < least or (most is not None and n > most):
            want = f"{least}" if least == most else f"{least} to {most}" if most else \
                f"at least {least}"
            raise ExprError(node.span, f"`{name}` takes {want} argument"
                            f"{'s' * (want != '1')}, but got {n}", hint=f"{name}: {doc}")
        args = [self.number(a) for a in node.operands]
        if name == "round" and n == 2 and not isinstance(args[1], int):
            raise ExprError(node.operands[1].span, "round(x, n): n must be a whole number",
                            code="bad-value")
        if name == "make_divisible" and args[1] <= 0:
            raise ExprError(node.operands[1].span, f"make_divisible: the divisor must be "
                            f"positive, but `{self.text(node.operands[1])}` is {show(args[1])}",
                            code="bad-value")
        try:
            return self.checked(fn(*args), node)
        except (OverflowError, ValueError) as e:  # ceil(inf) and the like
            raise ExprError(node.span, f"`{self.text(node)}` cannot be computed: {e}") from None

    def checked(self, x, node):
        if isinstance(x, float) and not math.isfinite(x) or abs(x) >= MAX_MAGNITUDE:
            raise ExprError(node.span, f"`{self.text(node)}` is {show(x)}: too large to be "
                            "a size or a setting", code="too-large")
        return x

    def text(self, node) -> str:
        """How a sub-expression reads, for messages: as written, where the source is known."""
        if isinstance(node, ast.Value):
            return node.source or node.text
        if self.source_of is not None:
            written = self.source_of(node.span)
            if written:
                return written
        if node.kind == "binary":
            return f"{self.text(node.operands[0])} {node.op} {self.text(node.operands[1])}"
        if node.kind == "unary":
            return f"{node.op}{self.text(node.operands[0])}"
        if node.kind == "size":
            return "(" + " x ".join(self.text(p) for p in node.operands) + ")"
        return f"{node.op}(" + ", ".join(self.text(p) for p in node.operands) + ")"
