"""`cnnc check FILE...`: parse and shape-check; exit 0 when clean, 1 with errors."""

from __future__ import annotations

from .common import add_input_flag, amount
from .report import EXIT_ERRORS, EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser("check", help="parse and shape-check model files",
                       description="Parse and shape-check model files. Exit 0 when clean, "
                                   "1 with errors, 2 on a malformed command line.")
    p.add_argument("files", nargs="+", metavar="FILE", help="model files (- for standard input)")
    p.add_argument("--json", action="store_true", help="print diagnostics as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="print only diagnostics")
    add_input_flag(p)
    p.add_argument("--target", type=_targets, metavar="LIST",
                   help="warn where a layer would mean something else in torch, tf, onnx or "
                        "caffe (comma-separated; docs/portability.md)")
    g = p.add_argument_group("budgets", "an error where a running total first goes over; "
                             "amounts take K, M, G or KiB, MiB, GiB")
    g.add_argument("--max-params", type=amount, metavar="N", help="parameters in all")
    g.add_argument("--max-macs", type=amount, metavar="N", help="multiply-accumulates per image")
    g.add_argument("--max-memory", type=amount, metavar="BYTES",
                   help="inference memory: float32 parameters + peak live activations")
    p.set_defaults(run=run)


def _targets(text: str) -> tuple:
    import argparse

    from ..analysis.portability import TARGETS, parse_targets

    try:
        return parse_targets(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e}; the targets are {', '.join(TARGETS)}") from None


def run(args) -> int:
    from ..analysis.summary import total_params
    from ..diagnostics import ERROR
    from .common import compile_path
    from .report import print_diagnostics

    diagnostics, lines = [], []
    flags = {"params": args.max_params, "macs": args.max_macs, "memory": args.max_memory}
    for path in args.files:
        model = compile_path(path, input_shape=args.input_shape)
        if any(v is not None for v in flags.values()) and model.graph is not None \
                and not any(d.code != "over-budget" for d in model.errors):
            from ..analysis.budget import Budget, check_budget

            # the flags override the file's budgets: check them all again, together
            model.diagnostics = [d for d in model.diagnostics if d.code != "over-budget"]
            model.diagnostics.extend(check_budget(model.graph,
                                                  (model.budget or Budget()).merged(flags),
                                                  model.file))
        if args.target and model.ok:
            from ..analysis.portability import diagnostics as portability

            model.diagnostics.extend(portability(model.graph, args.target))
        diagnostics.extend(model.diagnostics)
        if model.ok:
            lines.append(f"{model.file}: ok ({len(model.graph)} layers, "
                         f"{total_params(model.graph):,} parameters)")
    print_diagnostics(diagnostics, json=args.json)
    if not args.json and not args.quiet:
        for line in lines:
            print(line)
    return EXIT_ERRORS if any(d.severity == ERROR for d in diagnostics) else EXIT_OK
