"""What every command prints when something is wrong: one renderer for every error a user sees.

Located or not, an error is a `Diagnostic` (cnnc/diagnostics.py) and goes through
`render_text` (standard error; coloured only on a terminal, or when FORCE_COLOR asks) or, for a
command run with --json, `render_json` (standard output, so a script reads one JSON document).
Commands never format an error themselves: they raise `CnncError` (or return diagnostics) and
this module, called from `cnnc.cli.main`, prints it.

Model sources are remembered here as commands compile them, so that an error raised later
(a data set that does not fit the input, say) can quote the model's line under its caret.
"""

from __future__ import annotations

import os
import sys

EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_INTERNAL = 3  # a bug in cnnc, not the user's fault

# file name -> source text, for every model this process compiled (see remember_source)
_sources: dict[str, str] = {}


def use_color(stream) -> bool:
    """Colour for a terminal only; NO_COLOR always wins, FORCE_COLOR/CLICOLOR_FORCE force it."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR") or os.environ.get("CLICOLOR_FORCE"):
        return True
    return hasattr(stream, "isatty") and stream.isatty() and os.environ.get("TERM") != "dumb"


def remember_source(file: str, text: str) -> None:
    _sources[file] = text


def print_diagnostics(diagnostics, *, json: bool = False, stream=None) -> None:
    """Diagnostics (errors and warnings, located or not) as text on standard error, or as the
    `{"ok": ..., "diagnostics": [...]}` document on standard output when `json`."""
    from ..diagnostics import render_json, render_text

    if json:
        (stream or sys.stdout).write(render_json(list(diagnostics)) + "\n")
        return
    if not diagnostics:
        return
    stream = stream or sys.stderr
    stream.write(render_text(list(diagnostics), _sources, color=use_color(stream)) + "\n")


def print_error(err, *, json: bool = False) -> None:
    """A CnncError: every diagnostic of a CompileError, else the error at its span (quoting the
    model line when the model was compiled here) or, without one, `cnnc: error: ...`."""
    from ..diagnostics import CompileError

    diagnostics = err.diagnostics if isinstance(err, CompileError) else [err.to_diagnostic()]
    print_diagnostics(diagnostics, json=json)


def print_internal_error(exc: BaseException) -> None:
    sys.stderr.write(f"cnnc: internal error: {type(exc).__name__}: {exc}\n"
                     "This is a bug in cnnc; run with CNNC_DEBUG=1 to see where.\n")
