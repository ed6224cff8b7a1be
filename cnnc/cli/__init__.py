"""The `cnnc` command line.

Each command is one module of this package with two functions:

    add_parser(sub)   adds its subparser to `sub` (argparse's subparsers) and calls
                      `set_defaults(run=run)`;
    run(args) -> int  runs it and returns the exit code.

and one line in COMMANDS below. A command reports a user's mistake by raising
`cnnc.diagnostics.CnncError` (with a `span` when it points into the model file) or by printing
diagnostics through `cnnc.cli.report`; `main` prints whatever escapes, as a diagnostic (JSON on
standard output when the command was given --json), never as a traceback.

Exit codes: 0 done and clean, 1 errors, 2 a malformed command line, 130 Ctrl-C (3: a bug in cnnc).

Start-up matters: `cnnc check` imports lark and cnnc's front end, nothing more. Command modules
import nothing heavy at the top; rich is imported by the commands that draw tables or progress
bars, numpy and torch by those that compute, networkx only by code that asks for `LayerGraph.nx`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .report import EXIT_ERRORS, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

# The commands, in the order `cnnc --help` lists them: modules of this package.
COMMANDS = ["check", "summary", "sizes", "diff", "verify",
            "graph", "train", "bench", "eval", "plot", "convert", "export", "predict"]

__all__ = ["main", "build_parser", "COMMANDS", "EXIT_OK", "EXIT_ERRORS", "EXIT_USAGE",
           "EXIT_INTERRUPTED"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="cnnc",
        description="A compiler for convolutional networks: check shapes, count costs, train, "
                    "export.",
        epilog="Run `cnnc COMMAND --help` for a command's options. Docs: docs/language.md, "
               "docs/training.md, docs/bench.md, docs/export.md, docs/predict.md.")
    parser.add_argument("--version", action="version", version=f"cnnc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    from .common import add_set_flag

    for command in sub.choices.values():  # every command compiles a model: --set for each
        add_set_flag(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line and exit with its code (SystemExit, as argparse does)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C while starting up: no traceback
        sys.stderr.write("cnnc: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        sys.exit(EXIT_USAGE)
    sys.exit(_run(args))


def _run(args) -> int:
    from ..diagnostics import CnncError
    from . import report
    from .common import SET_PARAMS

    SET_PARAMS.set(tuple(getattr(args, "params", None) or ()))
    try:
        return args.run(args)
    except KeyboardInterrupt:
        sys.stderr.write("cnnc: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `cnnc ... | head`: the reader has what it wanted
        return EXIT_OK
    except CnncError as e:
        report.print_error(e, json=bool(getattr(args, "json", False)))
        return EXIT_ERRORS
    except Exception as e:  # a bug in cnnc, not the user's fault: say so, briefly
        if os.environ.get("CNNC_DEBUG"):
            raise
        report.print_internal_error(e)
        return EXIT_INTERNAL
