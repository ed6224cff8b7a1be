"""`cnnc diff A B`: the layers added, removed or changed between two model files, matched by the
graphs' structure, with the totals before and after (cnnc/analysis/diff.py)."""

from __future__ import annotations

from .common import add_input_flag
from .report import EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser("diff", help="what changed between two model files",
                       description="Layers added, removed or changed (op, arguments, output "
                                   "shape, parameters, MACs, inputs) between two model files, "
                                   "matched by the graphs' structure, and the totals before "
                                   "and after. Exit 0 either way.")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--json", action="store_true", help="print the differences as JSON")
    add_input_flag(p)
    p.set_defaults(run=run)


def run(args) -> int:
    import json

    from ..analysis.diff import diff, render
    from .common import load_model

    a = load_model(args.a, json=args.json, input_shape=args.input_shape)
    b = load_model(args.b, json=args.json, input_shape=args.input_shape)
    d = diff(a, b)
    print(json.dumps(d.to_json(), indent=2) if args.json else render(d))
    return EXIT_OK
