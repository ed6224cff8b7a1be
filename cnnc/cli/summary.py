"""`cnnc summary FILE`: each layer's output shape, parameters, MACs and receptive field."""

from __future__ import annotations

from .report import EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser("summary", help="print layers, shapes, parameters and MACs",
                       description="Print each layer's output shape, parameters and "
                                   "multiply-accumulates, and the model's totals.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    import json
    import sys

    from .common import load_model
    from .report import use_color

    model = load_model(args.file, json=args.json)
    summary = model.summary()
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
        return EXIT_OK
    from ..render import print_summary

    print_summary(summary, color=use_color(sys.stdout))
    return EXIT_OK
