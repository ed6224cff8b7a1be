"""`cnnc check FILE...`: parse and shape-check; exit 0 when clean, 1 with errors."""

from __future__ import annotations

from .report import EXIT_ERRORS, EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser("check", help="parse and shape-check model files",
                       description="Parse and shape-check model files. Exit 0 when clean, "
                                   "1 with errors, 2 on a malformed command line.")
    p.add_argument("files", nargs="+", metavar="FILE", help="model files (- for standard input)")
    p.add_argument("--json", action="store_true", help="print diagnostics as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="print only diagnostics")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..analysis.summary import total_params
    from ..diagnostics import ERROR
    from .common import compile_path
    from .report import print_diagnostics

    diagnostics, lines = [], []
    for path in args.files:
        model = compile_path(path)
        diagnostics.extend(model.diagnostics)
        if model.ok:
            lines.append(f"{model.file}: ok ({len(model.graph)} layers, "
                         f"{total_params(model.graph):,} parameters)")
    print_diagnostics(diagnostics, json=args.json)
    if not args.json and not args.quiet:
        for line in lines:
            print(line)
    return EXIT_ERRORS if any(d.severity == ERROR for d in diagnostics) else EXIT_OK
