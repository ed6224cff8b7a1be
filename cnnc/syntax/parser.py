"""Text to AST: the LALR parser, an indentation postlexer, and syntax errors in words.

`parse(text, file)` returns `(Program, diagnostics)`. It never raises for bad input: every
problem, down to a stray byte, becomes a Diagnostic with a span.

The grammar is grammar/cnn.lark; lark turns it into the tables in tables.py ahead of time
(cnnc/syntax/generate.py), and lalr.py runs them, so parsing imports no lark. Each parse has its
own builder and postlexer: threads may parse at once.
"""

from __future__ import annotations

import re

from ..diagnostics import ERROR, Diagnostic, Span
from . import ast
from .lalr import Token, UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from .lalr import parse as parse_tokens

# Numbers past this are not sizes of anything real, and would overflow int32 in a backend.
MAX_INT = 2**31 - 1
# Recovery re-parses with the offending line blanked; past this many errors we stop, and a
# program longer than RECOVERY_CHARS gets its first syntax error only (each re-parse costs).
MAX_SYNTAX_ERRORS = 20
RECOVERY_CHARS = 100_000
# A model is a few hundred lines; past these sizes a text is not one, and parsing it (lark
# runs at some 10 microseconds a token) would only keep the user waiting.
MAX_CHARS = 1 << 20
MAX_TOKENS = 50_000
# Bodies nested deeper than this make "nested too deeply" (nesting is always an error, this
# only picks the message). The limit is where the recursive tree walk cnnc once used ran out of
# stack at the command line, so that the same files get the same diagnostics.
MAX_NESTING = 488
_TOKEN = re.compile(r"\w+|[^\w\s]")


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
    tab_len = 8  # columns a tab counts for

    def __init__(self):
        self.open_parens: list[Token] = []  # the `(` not yet closed, for "unclosed `(`"
        self.indent_level = [0]
        self.too_deep: Token | None = None  # the first body nested past MAX_NESTING

    def __call__(self, stream):
        for token in stream:
            if token.type == "_NL":
                yield from self._handle_nl(token)
            else:
                if token.type == "LPAR":
                    self.open_parens.append(token)
                elif token.type == "RPAR" and self.open_parens:
                    self.open_parens.pop()
                yield token
        while len(self.indent_level) > 1:
            self.indent_level.pop()
            yield Token("_DEDENT", "")

    def _handle_nl(self, token: Token):
        if self.open_parens:
            return  # newlines inside parentheses continue the line
        yield token
        indent_str = token.value.rsplit("\n", 1)[1]
        indent = indent_str.count(" ") + indent_str.count("\t") * self.tab_len
        if indent > self.indent_level[-1]:
            self.indent_level.append(indent)
            if len(self.indent_level) > MAX_NESTING + 1 and self.too_deep is None:
                self.too_deep = token
            yield Token.new_borrow_pos("_INDENT", indent_str, token)
        elif indent < self.indent_level[-1]:
            if indent not in self.indent_level:
                # Position the error at the indentation of the badly indented line.
                line = token.end_line
                err = Token("_NL", "", line=line, column=1, end_line=line,
                            end_column=len(indent_str) + 1)
                levels = " or ".join(map(str, self.indent_level))
                raise _IndentError(err, f"this line is indented {indent} columns, which "
                                        f"matches no enclosing level ({levels})")
            while indent < self.indent_level[-1]:
                self.indent_level.pop()
                yield Token.new_borrow_pos("_DEDENT", indent_str, token)


# ---------------------------------------------------------------------------------------------
# Tokens to AST


_INT = re.compile(r"-?[0-9]+")
_MAX_DIGITS = len(str(MAX_INT))


def _short(text: str) -> str:
    """A number's text for a message: a 5,000-digit literal is shown by its length."""
    return text if len(text) <= 24 else f"{text[:12]}... ({len(text):,} characters)"
_DIMS = re.compile(r"[0-9]+(?:x[0-9]+)+")
_FLOAT = re.compile(r"-?(?:[0-9]+\.[0-9]*|[0-9]+)(?:[eE][-+]?[0-9]+)?")
# An amount with a unit: 1M, 2.5G, 300K, 256KiB, 8GiB (the units K, M, G, T and KiB, MiB, GiB, TiB).
_AMOUNT = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[KMGT]|[KMGT]iB)")
_STMT = ast.STATEMENTS


def _holds_error(x) -> bool:
    if isinstance(x, ast.Value):
        return x.kind == "error"
    return any(_holds_error(o) for o in x.operands)


def _start(x) -> tuple[int, int]:
    """Where a child of a rule starts: a token, or an AST node already built."""
    if isinstance(x, Token):
        return x.line, x.column
    return x.span.line, x.span.column


def _end(x) -> tuple[int, int]:
    if isinstance(x, Token):
        return x.end_line, x.end_column
    return x.span.end_line, x.span.end_column


class _AstBuilder:
    """The parser calls one method per rule as it reduces it, children first.

    Children are every token of the rule (`=` and `;` included), the nodes built for its
    sub-rules, and None for an optional part that is absent. A node's span runs from its first
    child to its last (as lark's propagate_positions computes it). Rules with no method here
    (`_stmts`, `_body`, ...) are spliced into the rule that uses them.

    One instance per parse. Value errors go to a list of their own, kept only if the whole text
    parses: a parse that fails is retried with the faulty line blanked, and would report them
    again.
    """

    def __init__(self, file: str, source: str = ""):
        self.file = file
        self.diagnostics: list[Diagnostic] = []
        self._lines = source.split("\n")

    def _span(self, first, last) -> Span:
        line, column = _start(first)
        end_line, end_column = _end(last)
        return Span(self.file, line, column, end_line, end_column)

    def _token_span(self, tok: Token) -> Span:
        return Span(self.file, tok.line, tok.column, tok.end_line, tok.end_column)

    def _rule_span(self, children) -> Span:
        last = children[-1]
        if last is None:  # an optional part at the end was absent
            last = next(c for c in reversed(children) if c is not None)
        return self._span(children[0], last)

    def _error(self, span: Span, code: str, message: str, hint: str | None = None):
        self.diagnostics.append(Diagnostic(ERROR, code, message, span, [], hint))

    # values ----------------------------------------------------------------------------------
    def name(self, children):
        (tok,) = children
        return ast.Value("name", tok.value, tok.value, self._token_span(tok))

    def string(self, children):
        (tok,) = children
        return ast.Value("string", tok.value[1:-1], tok.value, self._token_span(tok))

    def number(self, children):
        (tok,) = children
        text = tok.value
        span = self._token_span(tok)
        bad = ast.Value("error", None, text, span)  # reported here; the builder skips its statement
        if _INT.fullmatch(text):
            # Python refuses to convert strings of over 4,300 digits; anything over 10 is too
            # large here anyway, so look at the length before converting.
            digits = text.lstrip("-").lstrip("0") or "0"  # int() counts leading zeros too
            value = (-1 if text.startswith("-") else 1) * int(digits) \
                if len(digits) <= _MAX_DIGITS else MAX_INT + 1
            if abs(value) > MAX_INT:
                self._error(span, "too-large", f"the number {_short(text)} is too large to be a size "
                            f"(the largest cnnc accepts is 2**31 - 1 = {MAX_INT:,})")
                return bad
            return ast.Value("int", value, text, span)
        if _DIMS.fullmatch(text):
            parts = tuple(int(p.lstrip("0") or "0") if len(p.lstrip("0")) <= _MAX_DIGITS
                          else MAX_INT + 1 for p in text.split("x"))
            if any(p > MAX_INT for p in parts):
                self._error(span, "too-large", f"the size {_short(text)} has a dimension too large to be "
                            f"real (the largest cnnc accepts is 2**31 - 1 = {MAX_INT:,})")
                return bad
            return ast.Value("dims", parts, text, span)
        if _FLOAT.fullmatch(text):
            value = float(text)
            if value != value or value in (float("inf"), float("-inf")):
                self._error(span, "too-large", f"the number {_short(text)} is too large to be real")
                return bad
            return ast.Value("float", value, text, span)
        if _AMOUNT.fullmatch(text):  # 1M, 300M, 256KiB: budgets (cnnc/analysis/budget.py)
            from ..analysis.memory import parse_amount

            return ast.Value("amount", parse_amount(text), text, span)
        hint = "write sizes as numbers joined by `x`, like 3x3 or 28x28x1"
        if "X" in text or "*" in text:
            hint += " (a lower-case x)"
        self._error(span, "bad-number", f"`{text}` is not a number or a size", hint)
        return bad

    # expressions -----------------------------------------------------------------------------
    def binary(self, children):  # expr OP expr
        left, op, right = children
        return ast.Expr("binary", op.value, (left, right), self._span(left, right),
                        self._token_span(op))

    def unary(self, children):  # OP expr
        op, operand = children
        return ast.Expr("unary", op.value, (operand,), self._span(op, operand),
                        self._token_span(op))

    def group(self, children):  # "(" expr ")": the expression, its span taking the brackets
        return children[1]._replace(span=self._span(children[0], children[-1]))

    def size(self, children):  # "[" expr ("," expr)* ","? "]"
        parts = tuple(c for c in children[1:-1] if not isinstance(c, Token))
        return ast.Expr("size", "[", parts, self._span(children[0], children[-1]),
                        self._token_span(children[0]))

    def function(self, children):  # NAME "(" [expr ("," expr)*] ")"
        name = children[0]
        args = tuple(c for c in children[2:-1] if c is not None and not isinstance(c, Token))
        return ast.Expr("function", name.value, args, self._rule_span(children),
                        self._token_span(name))

    def _text(self, span: Span) -> str:
        """The source an expression covers, its lines joined by spaces."""
        if span.line == span.end_line:
            return self._lines[span.line - 1][span.column - 1:span.end_column - 1]
        parts = [self._lines[span.line - 1][span.column - 1:]]
        parts += [self._lines[n - 1].strip() for n in range(span.line + 1, span.end_line)]
        parts.append(self._lines[span.end_line - 1][:span.end_column - 1])
        return " ".join(p.strip() for p in parts if p.strip())

    def _value(self, x):
        """An argument as a Value: an expression is wrapped, to be evaluated by the builder
        (or is an error value if a malformed number inside it was reported)."""
        if isinstance(x, ast.Value):
            return x
        kind = "error" if _holds_error(x) else "expr"
        return ast.Value(kind, x, self._text(x.span), x.span)

    # statements ------------------------------------------------------------------------------
    def option(self, children):  # NAME "=" value
        key, value = children[0], self._value(children[-1])
        return ast.Option(key.value, value, self._span(key, value), self._token_span(key))

    def call(self, children):  # NAME [LPAR [args] RPAR] args, the args with their commas
        head = children[0]
        args = tuple(self._value(c) for c in children if isinstance(c, (ast.Value, ast.Expr)))
        options = tuple(c for c in children if isinstance(c, ast.Option))
        return ast.Call(head.value, self._token_span(head), args, options,
                        self._rule_span(children))

    def assign(self, children):  # NAME ("," NAME)* "=" call
        target, call = children[0], children[-1]
        more = tuple((t.value, self._token_span(t)) for t in children[1:-1]
                     if isinstance(t, Token) and t.type == "NAME")
        return ast.Assign(target.value, self._token_span(target), call, self._span(target, call),
                          more)

    def param(self, children):  # NAME ["=" value]
        name, default = children[0], children[-1]
        default = self._value(default) if isinstance(default, (ast.Value, ast.Expr)) else None
        return ast.Param(name.value, default, self._rule_span(children))

    def block_def(self, children):  # "block" NAME [LPAR [params] RPAR] ":" body
        name = children[1]
        params = tuple(c for c in children if isinstance(c, ast.Param))
        body = tuple(c for c in children if isinstance(c, _STMT))
        return ast.BlockDef(name.value, self._token_span(name), params, body,
                            self._rule_span(children))

    def section(self, children):  # NAME ":" body
        name = children[0]
        body = tuple(c for c in children if isinstance(c, _STMT))
        return ast.Section(name.value, self._token_span(name), body, self._rule_span(children))

    def start(self, children):
        return [c for c in children if isinstance(c, _STMT)]


# ---------------------------------------------------------------------------------------------
# Syntax errors in words

_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "_NL": "the end of the line",
    "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`", "RSQB": "`]`", "PLUS": "`+`", "MINUS": "`-`",
    "STAR": "`*`", "SLASH": "`/`", "DSLASH": "`//`", "PERCENT": "`%`", "SEMICOLON": "`;`",
    "EQUAL": "`=`", "COMMA": "`,`",
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


def _indent_of(text: str) -> int:
    return len(text) - len(text.lstrip(" \t"))


def _header_above(lines: list[str], line: int) -> tuple[int, str] | None:
    """The `block ...:` or `train:` header whose indented body should start at `line` but
    does not (the line is indented no deeper than the header), if any."""
    for n in range(min(line, len(lines) + 1) - 1, 0, -1):
        text = lines[n - 1].split("#", 1)[0].rstrip()
        if text.strip():
            if not text.endswith(":"):
                return None
            if line <= len(lines) and _indent_of(lines[line - 1]) > _indent_of(text):
                return None  # the body is indented: the error is something else
            return n, text.strip()
    return None


def _syntax_diagnostic(err: UnexpectedInput, file: str, source: str,
                       open_parens: list[Token]) -> tuple[Diagnostic, range]:
    """The error in words, and the lines to blank out before parsing again (recovery)."""
    lines = source.splitlines() or [""]
    if isinstance(err, UnexpectedCharacters):
        ch = source[err.pos_in_stream] if 0 <= err.pos_in_stream < len(source) else "?"
        shown = repr(ch)[1:-1] if not ch.isprintable() else ch
        span = Span(file, err.line, err.column, err.line, err.column + 1)
        hint = None
        if ch in "{}":
            hint = "cnnc has no braces: write sizes as 3x3 or [k, k], and list names with spaces"
        elif ch == "-":
            hint = "sizes and counts in cnnc are never negative"
        elif ch == "=":
            hint = "options are written key=value, with a name before the `=`"
        elif ch.isalnum() and not ch.isascii():
            hint = "names are made of ASCII letters, digits, `_` and `-`"
        elif ch in "\"'":
            hint = "a string opens and closes with the same quote on one line"
        respelt = _keras_hint(lines, err.line) if ch in ".[]" else None
        if respelt:  # Keras habits: tf.nn.relu, [28, 28, 1]
            hint = f"cnnc has no brackets: {respelt}" if ch in "[]" else respelt
        return (Diagnostic(ERROR, "syntax", f"unexpected character `{shown}`", span, [], hint),
                range(err.line, err.line + 1))
    assert isinstance(err, UnexpectedToken)
    tok = err.token
    expected = set(err.expected) if err.expected else set()
    at_end = tok.type == "$END" or getattr(tok, "line", None) in (None, -1)
    line = len(lines) if at_end else tok.end_line if tok.type in ("_INDENT", "_DEDENT") \
        else tok.line
    blank = range(line, line + 1)
    if open_parens and (at_end or tok.line > open_parens[-1].line):
        # Newlines inside parentheses continue the line, so an unclosed `(` is only noticed
        # on some later line: point at the `(` itself.
        lpar = open_parens[-1]
        span = Span(file, lpar.line, lpar.column, lpar.line, lpar.column + 1)
        return (Diagnostic(ERROR, "syntax", "this `(` is never closed", span, [],
                           "close the argument list with `)` on the same statement"),
                range(lpar.line, line if not at_end else len(lines) + 1))
    if at_end:
        col = len(lines[-1]) + 1
        span = Span(file, line, col, line, col + 1)
    elif tok.type in ("_INDENT", "_DEDENT"):
        indent = len(tok.value) + 1
        span = Span(file, line, indent, line, indent + 1)
    else:
        span = Span(file, tok.line, tok.column, tok.end_line, tok.end_column)
    if tok.type == "_INDENT":
        return (Diagnostic(ERROR, "indent", "unexpected indentation", span, [],
                           "only the body of a `block` or a `train:` section is indented"), blank)
    header = _header_above(lines, len(lines) + 1 if at_end else line)
    starts_line = at_end or tok.type == "_DEDENT" or \
        not lines[line - 1][:max(tok.column - 1, 0)].strip()
    if header and starts_line:
        hline, htext = header
        if at_end:  # nothing follows the header: point just after its `:`
            col = len(lines[hline - 1].split("#", 1)[0].rstrip()) + 1
            span = Span(file, hline, col, hline, col + 1)
        return (Diagnostic(ERROR, "indent", f"expected an indented body after `{htext}` "
                           f"(line {hline})", span, [],
                           "indent the statements that belong to it, for example by 4 spaces"),
                range(hline, hline + 1))
    if "_INDENT" in expected:
        return (Diagnostic(ERROR, "indent", "expected an indented body after `:`", span, [],
                           "indent the statements that belong to the block or section"), blank)
    before = "" if at_end else lines[line - 1][:max(tok.column - 1, 0)].rstrip()
    if before.endswith("=") and tok.type in ("_NL", "$END", "SEMICOLON", "RPAR", "COMMA") \
            or at_end and lines[-1].rstrip().endswith("="):
        before = before or lines[-1].rstrip()
        key = re.search(r"([A-Za-z_][A-Za-z0-9_-]*)\s*=$", before)
        what = f"`{key.group(1)}=`" if key else "`=`"
        eq = len(before)
        span = Span(file, line, eq, line, eq + 1)
        return (Diagnostic(ERROR, "syntax", f"{what} has no value", span, [],
                           "write the value right after the `=`, like `stride=2`"), blank)
    if tok.type == "RPAR" and not open_parens:
        return Diagnostic(ERROR, "syntax", "this `)` has no matching `(`", span, []), blank
    if tok.type == "EQUAL":
        return (Diagnostic(ERROR, "syntax", "unexpected `=`", span, [],
                           "an option is written name=value, like `stride=2`; a tensor is "
                           "named with `name = layer`, like `skip = here`"), blank)
    if not open_parens:
        expected -= {"RPAR", "COMMA"}  # LALR merges states: these are only right inside `(...)`
    message = f"expected {_describe_expected(expected)}, found {_describe_token(tok)}"
    hint = None
    if tok.type == "NUMBER" and "NAME" in expected and len(expected) <= 3:
        hint = "a statement starts with a layer name, like `conv 32 3x3`"
    elif tok.type == "COLON":
        hint = "only `block NAME(...)` and `train` take a `:` and an indented body"
    elif tok.type in ("LPAR", "COMMA"):  # Keras habits: conv 32 (3,3) relu, stride=(2,2)
        hint = _keras_hint(lines, line)
    return Diagnostic(ERROR, "syntax", message, span, [], hint), blank


def _keras_hint(lines: list[str], line: int) -> str | None:
    """The line respelt the cnnc way, when what broke it is a Keras habit (see keras_habits)."""
    from .keras_habits import statement_hint

    return statement_hint(lines[line - 1]) if 1 <= line <= len(lines) else None


def _blank_lines(source: str, lines: range, keep_indent: bool) -> str:
    """The source with `lines` emptied. With keep_indent, an indented line becomes a stand-in
    statement at its indentation, so a body whose only line was faulty still parses."""
    out = source.split("\n")
    for n in lines:
        if 1 <= n <= len(out):
            indent = out[n - 1][:_indent_of(out[n - 1])]
            out[n - 1] = indent + "_" if keep_indent and indent else ""
    return "\n".join(out)


def _too_large(text: str, file: str) -> Diagnostic | None:
    hint = "write repeated layers once, with a repeat count (`conv 64 3x3 x4`) or a block"
    if len(text) > MAX_CHARS:
        return Diagnostic(ERROR, "too-large", f"the program is {len(text):,} characters long; "
                          f"cnnc reads models of at most {MAX_CHARS:,}", Span.unknown(file), [],
                          hint)
    tokens = sum(1 for _ in _TOKEN.finditer(text)) if len(text) > MAX_TOKENS else 0
    if tokens > MAX_TOKENS:
        return Diagnostic(ERROR, "too-large", f"the program has {tokens:,} words and symbols; "
                          f"cnnc reads models of at most {MAX_TOKENS:,}", Span.unknown(file), [],
                          hint)
    return None


def parse(text: str, file: str = "<input>") -> tuple[ast.Program, list[Diagnostic]]:
    """Parse a program. Syntax errors are collected, recovering by blanking the faulty lines
    and parsing again; value errors (a malformed number) leave a tree, with an `error` value."""
    program = ast.Program(file=file, source=text)
    too_large = _too_large(text, file)
    if too_large:
        return program, [too_large]
    diagnostics: list[Diagnostic] = []
    source = text if text.endswith("\n") else text + "\n"
    blanked: set[int] = set()
    while True:
        builder = _AstBuilder(file, source)
        indenter = _Indenter()
        try:
            items = parse_tokens(source, builder, indenter)
            break
        except _IndentError as e:
            t = e.token
            d = Diagnostic(ERROR, "indent", e.message, Span(file, t.line, 1, t.line,
                                                              t.end_column), [],
                           "indent every line of a body by the same amount")
            lines = range(t.line, t.line + 1)
        except UnexpectedInput as e:
            open_parens = list(indenter.open_parens)  # where the lexer stopped
            d, lines = _syntax_diagnostic(e, file, source, open_parens)
        except RecursionError as e:  # pragma: no cover - defensive
            d = Diagnostic(ERROR, "syntax", f"could not parse this program ({type(e).__name__})",
                           Span.unknown(file), [])
            lines = range(0)
        if d.span.line in blanked or set(lines) <= blanked:
            # An error on a line already blanked is a consequence of the first one: stop here.
            return program, diagnostics or [d]
        diagnostics.append(d)
        if len(diagnostics) >= MAX_SYNTAX_ERRORS or len(source) > RECOVERY_CHARS:
            return program, diagnostics
        blanked.update(lines)
        source = _blank_lines(source, lines, keep_indent=d.code == "syntax" and len(lines) == 1)
    if diagnostics:
        return program, diagnostics
    deep = indenter.too_deep
    if deep is not None:
        # Value errors before the too-deep body are reported, as the tree walk reported them.
        diagnostics = [d for d in builder.diagnostics
                       if (d.span.line, d.span.column) < (deep.line, deep.column)]
        diagnostics.append(Diagnostic(ERROR, "syntax", "this program is nested too deeply",
                                      Span.unknown(file), []))
        return program, diagnostics
    program.items = items
    program.parsed = True
    return program, builder.diagnostics


def parse_value(text: str) -> tuple[ast.Value | None, str | None]:
    """One value or expression given outside a model file (`--set width=0.5`): the Value, or
    None and what is wrong with it."""
    if "\n" in text or not text.strip():
        return None, "expected a number, a size, a word or an expression"
    program, diagnostics = parse(f"_ {text}\n", "--set")
    if diagnostics or len(program.items) != 1 or not isinstance(program.items[0], ast.Call):
        problem = diagnostics[0].message if diagnostics else "expected one value"
        return None, problem
    call = program.items[0]
    if len(call.args) != 1 or call.options:
        return None, "expected one value (a number, a size, a word or an expression)"
    return call.args[0], None
