"""Diagnostics: data first, rendered once.

Every problem cnnc reports, from a syntax error to a data set whose images do not fit the model,
is a `Diagnostic` with a source `Span`. The renderers at the bottom turn a list of them into the
text a person reads (`file:line:col: error: message`, the source line, a caret underline, notes and
a hint) or into the JSON that other tools read. Nothing else in cnnc formats an error.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterable

ERROR = "error"
WARNING = "warning"


class Span(namedtuple("Span", "file line column end_line end_column")):
    """A half-open region of a source file, 1-based lines and columns (end_column is exclusive).

    Immutable, and a named tuple rather than a dataclass: the parser makes one for every word of
    a model, and a tuple is the cheapest immutable object to make (and to import)."""

    __slots__ = ()
    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    @staticmethod
    def unknown(file: str = "<input>") -> "Span":
        return Span(file, 1, 1, 1, 1)

    def to(self, other: "Span") -> "Span":
        """The span from the start of self to the end of other."""
        return Span(self.file, self.line, self.column, other.end_line, other.end_column)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class Diagnostic:
    """One problem. `span` is None for a problem that has no place in a model file (a weights
    file that does not fit, a command-line value out of range): it renders as `cnnc: error: ...`
    and its JSON position fields are null.

    Compared and shown field by field, as a dataclass would be (written out: importing
    dataclasses costs `cnnc check` more than the rest of this module)."""

    __slots__ = ("severity", "code", "message", "span", "notes", "hint")
    _FIELDS = __slots__
    __hash__ = None  # mutable: compared by value, so not hashable

    def __init__(self, severity: str, code: str, message: str, span: Span | None,
                 notes: list[str] | None = None, hint: str | None = None):
        self.severity = severity  # ERROR or WARNING
        self.code = code  # a stable, kebab-case name: see CODES
        self.message = message
        self.span = span
        self.notes: list[str] = [] if notes is None else notes
        self.hint = hint

    def _values(self) -> tuple:
        return tuple(getattr(self, f) for f in self._FIELDS)

    def __eq__(self, other) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._FIELDS)
        return f"{type(self).__name__}({fields})"

    def to_json(self) -> dict:
        span = self.span
        return {
            "severity": self.severity,
            "file": span.file if span else None,
            "line": span.line if span else None,
            "column": span.column if span else None,
            "end_line": span.end_line if span else None,
            "end_column": span.end_column if span else None,
            "code": self.code,
            "message": self.message,
            "notes": list(self.notes),
            "hint": self.hint,
        }


# Error codes are named constants with a description, in the manner of mypy's errorcodes: the
# code is stable (tools match on it), the message may improve.
CODES = {
    "syntax": "the text is not a well-formed cnnc program",
    "indent": "a block body is indented inconsistently",
    "bad-number": "a number or size is malformed",
    "too-large": "a number, a tensor or a program too large to be real",
    "too-many-errors": "the checker stopped after many errors",
    "unknown-op": "a statement names no known layer, block or command",
    "unknown-option": "an option the layer does not take",
    "bad-value": "an argument or option has a value of the wrong type or range",
    "missing-argument": "a required argument is missing",
    "unknown-name": "a tensor name that was never defined, or an unknown name or function in "
                    "an expression",
    "expression": "an expression that cannot be computed (division by zero, wrong arguments)",
    "param": "a model parameter declared twice or badly, or a --set of one the model lacks",
    "duplicate-name": "a name defined twice",
    "input-missing": "the program has no input statement",
    "input-repeated": "the program has more than one input statement",
    "block-args": "a block called with the wrong arguments",
    "block-recursion": "a block that calls itself",
    "shape": "a layer whose input shape does not fit it",
    "kernel-too-large": "a window larger than its padded input",
    "needs-flatten": "a layer that needs a flat input got an image",
    "merge-shape": "tensors merged by add, concat or mul do not fit together",
    "groups": "channels not divisible by groups",
    "train-section": "the training section is malformed",
    "activation-not-last": "softmax or sigmoid before the last layer",
    "stochastic-depth": "stochastic depth outside a residual branch",
    "unused": "a layer whose output never reaches the model's output",
    "input-order": "an input written channels first (CxHxW) where cnnc reads HxWxC",
    "data": "a data set is missing, corrupt, or does not fit the model",
    "weights": "a weights file is missing, corrupt, or does not fit the model",
    "backend": "a backend cannot run this model",
    "device": "the device asked for is not there or cannot do what was asked",
    "diverged": "training stopped because the loss became NaN or infinite, or grew over 1,000 "
                "times its first value",
    "memory": "the model and its batch need more memory than the machine has (or --max-memory)",
    "usage": "the command line is malformed",
    "io": "a file could not be read or written",
    "convert": "Keras code that `cnnc convert` cannot translate (or translates without a setting)",
    "budget": "a malformed `budget:` section",
    "over-budget": "a model over its budget of parameters, MACs or memory",
    "portability": "a layer that would mean something else in another framework (--target)",
}


class CnncError(Exception):
    """An error meant for the user. The CLI prints it as a diagnostic and exits 1, never a traceback.

    Raised where there is no source span to hand (a data set, a weights file); the CLI gives it
    the model file's span. Modules that have a span build a Diagnostic directly.
    """

    code = "error"

    def __init__(self, message: str, *, hint: str | None = None, notes: Iterable[str] = (),
                 code: str | None = None, span: Span | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.notes = list(notes)
        self.span = span
        if code is not None:
            self.code = code

    def to_diagnostic(self, span: Span | None = None) -> Diagnostic:
        """The error as a Diagnostic: at its own span, else at `span`, else unlocated."""
        return Diagnostic(ERROR, self.code, self.message, self.span or span, self.notes, self.hint)


class CompileError(CnncError):
    """Raised by the pipeline when a program has errors; carries every diagnostic."""

    code = "compile"

    def __init__(self, diagnostics: list[Diagnostic]):
        errors = [d for d in diagnostics if d.severity == ERROR]
        first = errors[0] if errors else diagnostics[0]
        super().__init__(f"{first.span}: {first.message}" + (
            f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""))
        self.diagnostics = diagnostics


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidate, or None. Uses difflib's ratio, like Python's own."""
    import difflib

    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


# ---------------------------------------------------------------------------------------------
# Rendering


def _source_line(sources: dict[str, str], span: Span | None) -> str | None:
    if span is None:
        return None
    text = sources.get(span.file)
    if text is None:
        return None
    lines = text.splitlines()
    if 1 <= span.line <= len(lines):
        return lines[span.line - 1]
    return None


def _expand_tabs(line: str) -> str:
    return line.replace("\t", " ")


def render_text(diagnostics: list[Diagnostic], sources: dict[str, str], *,
                color: bool = False) -> str:
    """The diagnostics as a person reads them, one after another, then a count (when any of them
    points into a file: a lone `cnnc: error: ...` needs no tally)."""
    out: list[str] = []
    for d in diagnostics:
        out.extend(_render_one(d, sources, color))
    n_err = sum(d.severity == ERROR for d in diagnostics)
    n_warn = sum(d.severity == WARNING for d in diagnostics)
    if (n_err or n_warn) and any(d.span is not None for d in diagnostics):
        parts = []
        if n_err:
            parts.append(f"{n_err} error{'s' * (n_err != 1)}")
        if n_warn:
            parts.append(f"{n_warn} warning{'s' * (n_warn != 1)}")
        out.append(", ".join(parts) + " generated.")
    return "\n".join(out)


def _style(text: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color else text


def _render_one(d: Diagnostic, sources: dict[str, str], color: bool) -> list[str]:
    sev_color = "1;31" if d.severity == ERROR else "1;35"
    where = _style(f"{d.span}:", "1", color) if d.span is not None else "cnnc:"
    head = (where + " " + _style(f"{d.severity}:", sev_color, color)
            + " " + _style(d.message, "1", color) + f"  [{d.code}]")
    lines = [head]
    src = _source_line(sources, d.span)
    if src is not None and len(src) <= 400:
        shown = _expand_tabs(src)
        start = max(d.span.column - 1, 0)
        if d.span.end_line == d.span.line:
            width = max(d.span.end_column - d.span.column, 1)
        else:
            width = max(len(shown.rstrip()) - start, 1)
        width = min(width, max(len(shown) - start, 1))
        lines.append(f"  {d.span.line:>4} | {shown}")
        lines.append("       | " + " " * start + _style("^" + "~" * (width - 1), "1;32", color))
    for note in d.notes:
        lines.append(_style("note:", "1;36", color) + " " + note)
    if d.hint:
        lines.append(_style("hint:", "1;32", color) + " " + d.hint)
    return lines


def render_json(diagnostics: list[Diagnostic]) -> str:
    ok = not any(d.severity == ERROR for d in diagnostics)
    import json

    return json.dumps({"ok": ok, "diagnostics": [d.to_json() for d in diagnostics]}, indent=2)
