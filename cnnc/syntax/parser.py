"""Text to AST: the lark LALR parser, an indentation postlexer, and syntax errors in words.

`parse(text, file)` returns `(Program, diagnostics)`. It never raises for bad input: every
problem, down to a stray byte, becomes a Diagnostic with a span.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from ..diagnostics import ERROR, Diagnostic, Span
from . import ast

# Numbers past this are not sizes of anything real, and would overflow int32 in a backend.
MAX_INT = 2**31 - 1
# Recovery re-parses with the offending line blanked; past this many errors we stop.
MAX_SYNTAX_ERRORS = 20


def grammar_text() -> str:
    """The grammar shipped in the package; in a source checkout, the repository's grammar/."""
    from importlib import resources

    try:
        shipped = resources.files("cnnc").joinpath("grammar", "cnn.lark")
        if shipped.is_file():
            return shipped.read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError, NotADirectoryError):
        pass
    source = Path(__file__).resolve().parents[2] / "grammar" / "cnn.lark"
    return source.read_text(encoding="utf-8")


class _IndentError(Exception):
    def __init__(self, token: Token, message: str):
        super().__init__(message)
        self.token = token
        self.message = message


class _Indenter:
    """Turns the `_NL` tokens' leading whitespace into _INDENT/_DEDENT, as Python's tokenizer does.

    Written out here (rather than lark.indenter.Indenter) so a bad dedent becomes a diagnostic
    with a position instead of an exception without one.
    """

    always_accept = ("_NL",)
    tab_len = 8

    def __init__(self):
        self.paren_level = 0
        self.indent_level = [0]

    def process(self, stream):
        self.paren_level = 0
        self.indent_level = [0]
        for token in stream:
            if token.type == "_NL":
                yield from self._handle_nl(token)
            else:
                if token.type == "LPAR":
                    self.paren_level += 1
                elif token.type == "RPAR":
                    self.paren_level = max(self.paren_level - 1, 0)
                yield token
        while len(self.indent_level) > 1:
            self.indent_level.pop()
            yield Token("_DEDENT", "")

    def _handle_nl(self, token: Token):
        if self.paren_level > 0:
            return  # newlines inside parentheses continue the line
        yield token
        indent_str = token.rsplit("\n", 1)[1]
        indent = indent_str.count(" ") + indent_str.count("\t") * self.tab_len
        if indent > self.indent_level[-1]:
            self.indent_level.append(indent)
            yield Token.new_borrow_pos("_INDENT", indent_str, token)
        else:
            while indent < self.indent_level[-1]:
                self.indent_level.pop()
                yield Token.new_borrow_pos("_DEDENT", indent_str, token)
            if indent != self.indent_level[-1]:
                # Position the error at the first character of the badly indented line.
                line = token.end_line
                err = Token("_NL", "", line=line, column=1, end_line=line,
                            end_column=len(indent_str) + 1)
                raise _IndentError(err, f"this line's indentation ({indent} columns) matches no "
                                        f"enclosing block (expected one of "
                                        f"{', '.join(map(str, self.indent_level))})")

    # lark asks the postlexer for this
    def __call__(self, stream):
        return self.process(stream)


@lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(grammar_text(), parser="lalr", lexer="contextual", postlex=_Indenter(),
                propagate_positions=True, maybe_placeholders=True)


# ---------------------------------------------------------------------------------------------
# Tree to AST


_INT = re.compile(r"-?[0-9]+")
_DIMS = re.compile(r"[0-9]+(?:x[0-9]+)+")
_FLOAT = re.compile(r"-?(?:[0-9]+\.[0-9]*|[0-9]+)(?:[eE][-+]?[0-9]+)?")


class _ToAst(Transformer):
    def __init__(self, file: str, diagnostics: list[Diagnostic]):
        super().__init__()
        self.file = file
        self.diagnostics = diagnostics

    def _span(self, x) -> Span:
        if isinstance(x, Token):
            return Span(self.file, x.line, x.column, x.end_line, x.end_column)
        return Span(self.file, x.line, x.column, x.end_line, x.end_column)

    def _error(self, span: Span, code: str, message: str, hint: str | None = None):
        self.diagnostics.append(Diagnostic(ERROR, code, message, span, [], hint))

    # values ----------------------------------------------------------------------------------
    def name(self, children):
        (tok,) = children
        return ast.Value("name", str(tok), str(tok), self._span(tok))

    def string(self, children):
        (tok,) = children
        return ast.Value("string", str(tok)[1:-1], str(tok), self._span(tok))

    def number(self, children):
        (tok,) = children
        text = str(tok)
        span = self._span(tok)
        if _INT.fullmatch(text):
            value = int(text)
            if abs(value) > MAX_INT:
                self._error(span, "too-large", f"the number {text} is too large to be a size "
                            f"(the largest cnnc accepts is 2**31 - 1 = {MAX_INT:,})")
                value = MAX_INT
            return ast.Value("int", value, text, span)
        if _DIMS.fullmatch(text):
            parts = tuple(int(p) for p in text.split("x"))
            if any(p > MAX_INT for p in parts):
                self._error(span, "too-large", f"the size {text} has a dimension too large to be "
                            f"real (the largest cnnc accepts is 2**31 - 1 = {MAX_INT:,})")
                parts = tuple(min(p, MAX_INT) for p in parts)
            return ast.Value("dims", parts, text, span)
        if _FLOAT.fullmatch(text):
            value = float(text)
            if value != value or value in (float("inf"), float("-inf")):
                self._error(span, "too-large", f"the number {text} is too large to be real")
                value = 0.0
            return ast.Value("float", value, text, span)
        hint = "write sizes as numbers joined by `x`, like 3x3 or 28x28x1"
        if "X" in text or "*" in text:
            hint += " (a lower-case x)"
        self._error(span, "bad-number", f"`{text}` is not a number or a size", hint)
        return ast.Value("int", 1, text, span)

    # statements ------------------------------------------------------------------------------
    @v_args(meta=True)
    def option(self, meta, children):
        key, value = children
        return ast.Option(str(key), value, self._span(meta), self._span(key))

    @v_args(meta=True)
    def call(self, meta, children):
        head, _lpar, *rest = children
        rest = [c for c in rest if c is not None and not isinstance(c, Token)]
        args = tuple(c for c in rest if isinstance(c, ast.Value))
        options = tuple(c for c in rest if isinstance(c, ast.Option))
        return ast.Call(str(head), self._span(head), args, options, self._span(meta))

    @v_args(meta=True)
    def assign(self, meta, children):
        target, call = children
        return ast.Assign(str(target), self._span(target), call, self._span(meta))

    @v_args(meta=True)
    def param(self, meta, children):
        name, default = children
        return ast.Param(str(name), default, self._span(meta))

    @v_args(meta=True)
    def block_def(self, meta, children):
        name, *rest = children
        params = tuple(c for c in rest if isinstance(c, ast.Param))
        body = tuple(c for c in rest if isinstance(c, (ast.Call, ast.Assign, ast.BlockDef,
                                                      ast.Section)))
        return ast.BlockDef(str(name), self._span(name), params, body, self._span(meta))

    @v_args(meta=True)
    def section(self, meta, children):
        name, *body = children
        return ast.Section(str(name), self._span(name), tuple(b for b in body if b is not None),
                           self._span(meta))

    def start(self, children):
        return list(children)


# ---------------------------------------------------------------------------------------------
# Syntax errors in words

_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "_NL": "the end of the line",
    "LPAR": "`(`", "RPAR": "`)`", "SEMICOLON": "`;`", "EQUAL": "`=`", "COMMA": "`,`",
    "COLON": "`:`", "BLOCK": "`block`", "_INDENT": "an indented body",
    "_DEDENT": "the end of the indented body", "$END": "the end of the file",
}


def _describe_expected(expected) -> str:
    words = sorted({_WORDS.get(t, f"`{t}`") for t in expected if t not in ("_DEDENT",)})
    if not words:
        return "something else"
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _describe_token(tok: Token) -> str:
    if tok.type == "$END":
        return "the end of the file"
    if tok.type == "_NL":
        return "the end of the line"
    if tok.type == "_INDENT":
        return "an indented line"
    if tok.type == "_DEDENT":
        return "the end of an indented body"
    return f"`{tok.value}`"


def _syntax_diagnostic(err: UnexpectedInput, file: str, source: str) -> Diagnostic:
    lines = source.splitlines() or [""]
    if isinstance(err, UnexpectedCharacters):
        ch = source[err.pos_in_stream] if 0 <= err.pos_in_stream < len(source) else "?"
        shown = repr(ch)[1:-1] if not ch.isprintable() else ch
        span = Span(file, err.line, err.column, err.line, err.column + 1)
        hint = None
        if ch in "[]{}":
            hint = "cnnc has no brackets: write sizes as 3x3 and list names with spaces"
        elif ch == "-":
            hint = "sizes and counts in cnnc are never negative"
        return Diagnostic(ERROR, "syntax", f"unexpected character `{shown}`", span, [], hint)
    assert isinstance(err, UnexpectedToken)
    tok = err.token
    expected = set(err.expected) if err.expected else set()
    if tok.type == "$END" or getattr(tok, "line", None) in (None, -1):
        line = len(lines)
        col = len(lines[-1]) + 1
        span = Span(file, line, max(col, 1), line, max(col, 1) + 1)
    elif tok.type in ("_INDENT", "_DEDENT"):
        line = tok.end_line if tok.type == "_INDENT" else tok.end_line
        indent = len(tok.value) + 1
        span = Span(file, line, indent, line, indent + 1)
    else:
        span = Span(file, tok.line, tok.column, tok.end_line, tok.end_column)
    if tok.type == "_INDENT":
        return Diagnostic(ERROR, "indent", "unexpected indentation", span, [],
                          "only the body of a `block` or a `train:` section is indented")
    if "_INDENT" in expected:
        return Diagnostic(ERROR, "indent", "expected an indented body after `:`", span, [],
                          "indent the statements that belong to the block or section")
    message = f"expected {_describe_expected(expected)}, found {_describe_token(tok)}"
    hint = None
    if tok.type == "NUMBER" and "NAME" in expected and len(expected) <= 3:
        hint = "a statement starts with a layer name, like `conv 32 3x3`"
    elif tok.type == "COLON":
        hint = "only `block NAME(...)` and `train` take a `:` and an indented body"
    elif tok.type == "EQUAL":
        hint = "options are written key=value with no spaces around the `=` being needed, " \
               "but the key must be a name"
    return Diagnostic(ERROR, "syntax", message, span, [], hint)


def _blank_line(source: str, line: int) -> str:
    lines = source.split("\n")
    if 1 <= line <= len(lines):
        lines[line - 1] = ""
    return "\n".join(lines)


def parse(text: str, file: str = "<input>") -> tuple[ast.Program, list[Diagnostic]]:
    """Parse a program. Syntax errors are collected (one per line, recovering by skipping it)."""
    program = ast.Program(file=file, source=text)
    diagnostics: list[Diagnostic] = []
    source = text if text.endswith("\n") else text + "\n"
    seen_lines: set[int] = set()
    while True:
        try:
            tree = _lark().parse(source)
            break
        except _IndentError as e:
            t = e.token
            d = Diagnostic(ERROR, "indent", e.message, Span(file, t.line, 1, t.line,
                                                              t.end_column), [])
        except UnexpectedInput as e:
            d = _syntax_diagnostic(e, file, source)
        except (LarkError, RecursionError) as e:  # pragma: no cover - defensive
            d = Diagnostic(ERROR, "syntax", f"could not parse this program ({type(e).__name__})",
                           Span.unknown(file), [])
        diagnostics.append(d)
        line = d.span.line
        if line in seen_lines or len(diagnostics) >= MAX_SYNTAX_ERRORS or len(source) > 1 << 20:
            return program, diagnostics
        seen_lines.add(line)
        source = _blank_line(source, line)
    if diagnostics:
        return program, diagnostics
    try:
        program.items = _ToAst(file, diagnostics).transform(tree)
    except RecursionError:
        diagnostics.append(Diagnostic(ERROR, "syntax", "this program is nested too deeply",
                                      Span.unknown(file), []))
    except Exception as e:  # lark wraps transformer errors in VisitError
        inner = getattr(e, "orig_exc", e)
        if isinstance(inner, RecursionError):
            diagnostics.append(Diagnostic(ERROR, "syntax", "this program is nested too deeply",
                                          Span.unknown(file), []))
        else:
            raise
    return program, diagnostics
