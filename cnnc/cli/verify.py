"""`cnnc verify FILE [--weights W] [--grad]`: the NumPy reference and the torch backend on the
same seeded input and weights, layer by layer, against the agreement test's tolerance; exit 1
when a layer differs beyond it (cnnc/analysis/verify.py)."""

from __future__ import annotations

from .common import positive_int
from .report import EXIT_ERRORS, EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="do the backends agree on this model, layer by layer?",
                       description="Run the NumPy reference (float64, the truth) and the torch "
                                   "backend (float32) on the same seeded input and weights, and "
                                   "print each layer's largest relative difference against the "
                                   "tolerance the agreement test uses. Exit 1 beyond it.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--weights", metavar="W", help="weights to use (default: cnnc's initial "
                                                  "weights for --seed)")
    p.add_argument("--grad", action="store_true", help="also compare parameter gradients")
    p.add_argument("--batch", type=positive_int, default=2, metavar="N",
                   help="images in the random input (default 2)")
    p.add_argument("--seed", type=int, default=0, metavar="N")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    import json

    from ..analysis.verify import render, verify
    from .common import load_model

    model = load_model(args.file, json=args.json)
    weights = None
    if args.weights:
        from ..train.checkpoint import load_safetensors

        weights, _ = load_safetensors(args.weights)
    rows = verify(model, weights, batch=args.batch, seed=args.seed, gradients=args.grad)
    ok = all(r.ok for r in rows)
    if args.json:
        print(json.dumps({"ok": ok, "layers": [
            {"name": r.name, "kind": r.kind, "error": r.error, "allowed": r.allowed,
             "ok": r.ok} for r in rows]}, indent=2))
    else:
        print(render(rows))
    return EXIT_OK if ok else EXIT_ERRORS
