"""`cnnc convert MODEL.py [-o OUT.cnn] [--model NAME]`: a Keras model's code to a cnnc file.

The Python file is read, never run (cnnc.convert.keras). Without `-o` the cnnc program goes to
standard output (`cnnc convert m.py | cnnc summary -`); with it, the file is written whole or not
at all. Diagnostics, located in the .py file, go to standard error. Exit status: 0 converted
(perhaps with warnings), 1 errors (nothing written), 2 a malformed command line.
"""

from __future__ import annotations

from .report import EXIT_ERRORS, EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert a Keras model's Python code to a cnnc file",
                       description="Read Python code that builds a Keras model (Sequential or "
                                   "functional; the code is not run) and write the equivalent "
                                   "cnnc model, with a train: section from compile() and fit(). "
                                   "See docs/keras.md.")
    p.add_argument("file", metavar="MODEL.py", help="Python source that builds a Keras model")
    p.add_argument("-o", "--output", metavar="OUT.cnn",
                   help="write the cnnc model here (default: standard output)")
    p.add_argument("--model", metavar="NAME",
                   help="the variable holding the model, when the file builds several")
    p.set_defaults(run=run)


def run(args) -> int:
    import sys
    from pathlib import Path

    from ..convert.keras import convert_keras_file
    from ..diagnostics import CnncError
    from .report import print_diagnostics, remember_source

    conversion = convert_keras_file(args.file, model=args.model)
    remember_source(conversion.file, conversion.source)
    print_diagnostics(conversion.diagnostics)
    if not conversion.ok:
        return EXIT_ERRORS
    if not args.output or args.output == "-":
        sys.stdout.write(conversion.text)
        return EXIT_OK
    out = Path(args.output)
    try:
        _write_atomically(out, conversion.text)
    except OSError as e:
        raise CnncError(f"cannot write {out}: {e.strerror or e}", code="io") from None
    from ..analysis.summary import total_params

    graph = conversion.model.graph
    print(f"wrote {out}: {len(graph)} layers, {total_params(graph):,} parameters")
    return EXIT_OK


def _write_atomically(path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename it over: never half a file."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                               dir=str(path.parent) or ".")
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
