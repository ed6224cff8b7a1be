"""The abstract syntax tree: what the text says, with a source span on every node.

Immutable records with named fields (named tuples: a 10,000-layer model makes some 100,000
nodes, and these are the cheapest immutable objects Python builds). Nothing here knows what
`conv` means: that is the op schemas' job (cnnc/ops/), applied by the builder (cnnc/ir/build.py).
"""

from __future__ import annotations

from collections import namedtuple

from ..diagnostics import Span


class Value(namedtuple("Value", "kind value text span source", defaults=(None,))):
    """An argument. kind is one of: int, float, dims, name, string; expr for an expression not
    yet evaluated (value is its Expr); or error for a malformed literal whose diagnostic the
    parser has already given (the statement is skipped).

    The builder evaluates expressions into literal values; `source` then keeps the expression
    as written, and `text` the value it had (`c*6` -> text `96`)."""

    __slots__ = ()
    kind: str
    value: object  # int | float | tuple[int, ...] | str | Expr
    text: str
    span: Span
    source: str | None

    def describe(self) -> str:
        what = {"int": "a number", "float": "a number", "dims": "a size", "name": "a name",
                "string": "a string", "amount": "an amount", "error": "a malformed value",
                "expr": "an expression"}[self.kind]
        if self.source is not None:
            return f"{what} (`{self.source}` = {self.text})"
        return what + f" (`{self.text}`)"


class Expr(namedtuple("Expr", "kind op operands span op_span")):
    """An expression: kind `binary` (op one of + - * / // %), `unary` (op - or +), `size`
    (`[a, b, c]`, op `[`: its operands are the parts) or `function` (op the function's name).
    operands are Values (numbers, names...) and Exprs; op_span is the operator's or the
    function name's place, where an error in the operation itself points."""

    __slots__ = ()
    kind: str
    op: str
    operands: tuple
    span: Span
    op_span: Span


class Option(namedtuple("Option", "key value span key_span")):
    """key=value"""

    __slots__ = ()
    key: str
    value: Value
    span: Span
    key_span: Span


class Call(namedtuple("Call", "head head_span args options span")):
    """`head positional... key=value...`, also written `head(args) more-args`."""

    __slots__ = ()
    head: str
    head_span: Span
    args: tuple[Value, ...]
    options: tuple[Option, ...]
    span: Span

    @property
    def has_error_value(self) -> bool:
        """True when an argument is a malformed literal the parser has already reported."""
        return any(v.kind == "error" for v in self.args) or \
            any(o.value.kind == "error" for o in self.options)


class Assign(namedtuple("Assign", "target target_span call span more_targets",
                        defaults=((),))):
    """`name = call`: names the call's output tensor (`skip = here` names the current one).

    `a, b = split 2` names each output of an op with several: `target` is the first name,
    `more_targets` the others, as (name, span) pairs."""

    __slots__ = ()
    target: str
    target_span: Span
    call: Call
    span: Span
    more_targets: tuple[tuple[str, Span], ...]

    @property
    def targets(self) -> tuple[tuple[str, Span], ...]:
        return ((self.target, self.target_span), *self.more_targets)


class Param(namedtuple("Param", "name default span")):
    """A block parameter, `c` or `s=1`."""

    __slots__ = ()
    name: str
    default: Value | None
    span: Span


class BlockDef(namedtuple("BlockDef", "name name_span params body span")):
    """`block name(params):` and its indented body."""

    __slots__ = ()
    name: str
    name_span: Span
    params: tuple[Param, ...]
    body: tuple  # Call, Assign, BlockDef or Section nodes
    span: Span


class Section(namedtuple("Section", "name name_span body span")):
    """`train:` followed by an indented body of statements."""

    __slots__ = ()
    name: str
    name_span: Span
    body: tuple  # Call, Assign, BlockDef or Section nodes
    span: Span


STATEMENTS = (Call, Assign, BlockDef, Section)  # what a program or a body holds


class Program:
    """A parsed file: its statements, or parsed=False when syntax errors left no tree."""

    def __init__(self, file: str, source: str, items: list | None = None,
                 parsed: bool = False):
        self.file = file
        self.source = source
        self.items: list = items if items is not None else []
        self.parsed = parsed

    def __repr__(self) -> str:
        return f"Program(file={self.file!r}, {len(self.items)} items, parsed={self.parsed})"
