"""`cnnc convert MODEL.py [-o OUT.cnn] [--model NAME]`: a Keras model's code to a cnnc file.

Without `-o` the cnnc program goes to standard output (so `cnnc convert m.py | cnnc summary -`
works); with it, the file is written whole or not at all. Diagnostics go to standard error.
Exit status: 0 converted (perhaps with warnings), 1 errors (nothing written), 2 bad command line.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def add_arguments(p) -> None:
    """Declare convert's arguments on an argparse (sub)parser."""
    p.add_argument("file", metavar="MODEL.py", help="Python source that builds a Keras model")
    p.add_argument("-o", "--output", metavar="OUT.cnn",
                   help="write the cnnc model here (default: standard output)")
    p.add_argument("--model", metavar="NAME",
                   help="the variable holding the model, when the file builds several")


def run(args, *, color: bool = False) -> int:
    """Run the command on parsed arguments; returns the exit status."""
    from cnnc.convert.keras import convert_keras_file
    from cnnc.diagnostics import render_text

    conversion = convert_keras_file(args.file, model=args.model)
    if conversion.diagnostics:
        sys.stderr.write(render_text(conversion.diagnostics, {conversion.file: conversion.source},
                                     color=color) + "\n")
    if not conversion.ok:
        return 1
    if not args.output or args.output == "-":
        sys.stdout.write(conversion.text)
        return 0
    out = Path(args.output)
    try:
        _write_atomically(out, conversion.text)
    except OSError as e:
        sys.stderr.write(f"cnnc: error: cannot write {out}: {e.strerror or e}\n")
        return 1
    from cnnc.analysis.summary import total_params

    graph = conversion.model.graph
    print(f"wrote {out}: {len(graph)} layers, {total_params(graph):,} parameters")
    return 0


def _write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename it over: never half a file."""
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
