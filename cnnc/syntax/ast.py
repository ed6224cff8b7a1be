"""The abstract syntax tree: what the text says, with a source span on every node.

Frozen dataclasses in the manner of lark's create_ast example. Nothing here knows what `conv`
means: that is the op schemas' job (cnnc/ops/), applied by the builder (cnnc/ir/build.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from ..diagnostics import Span


@dataclass(frozen=True)
class Value:
    """A literal argument. kind is one of: int, float, dims, name, string, or error for a
    malformed literal whose diagnostic the parser has already given (the statement is skipped)."""

    kind: str
    value: object  # int | float | tuple[int, ...] | str
    text: str
    span: Span

    def describe(self) -> str:
        return {"int": "a number", "float": "a number", "dims": "a size", "name": "a name",
                "string": "a string", "error": "a malformed value"}[self.kind] + f" (`{self.text}`)"


@dataclass(frozen=True)
class Option:
    """key=value"""

    key: str
    value: Value
    span: Span
    key_span: Span


@dataclass(frozen=True)
class Call:
    """`head positional... key=value...`, also written `head(args) more-args`."""

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


@dataclass(frozen=True)
class Assign:
    """`name = call`: names the call's output tensor (`skip = here` names the current one)."""

    target: str
    target_span: Span
    call: Call
    span: Span


Stmt = Union[Call, Assign]


@dataclass(frozen=True)
class Param:
    name: str
    default: Value | None
    span: Span


@dataclass(frozen=True)
class BlockDef:
    name: str
    name_span: Span
    params: tuple[Param, ...]
    body: tuple["Item", ...]
    span: Span


@dataclass(frozen=True)
class Section:
    """`train:` followed by an indented body of statements."""

    name: str
    name_span: Span
    body: tuple["Item", ...]
    span: Span


Item = Union[Call, Assign, BlockDef, Section]


@dataclass
class Program:
    file: str
    source: str
    items: list[Item] = field(default_factory=list)
    parsed: bool = False  # False when syntax errors left no tree to build from
