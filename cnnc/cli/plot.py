"""`cnnc plot RUN_DIR [-o curves.svg|curves.png]`: a run's loss and accuracy per epoch."""

from __future__ import annotations

from .report import EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="draw a run's loss and accuracy curves",
                       description="Draw the loss and accuracy per epoch (training and "
                                   "validation) of a run folder's metrics.jsonl as SVG, or PNG. "
                                   "`cnnc train` keeps RUN_DIR/curves.svg up to date itself.")
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="a run folder (runs/MODEL/N or an --out folder) or its metrics.jsonl")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where to write: .svg or .png (default RUN_DIR/curves.svg)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..viz.curves import plot_run

    path = plot_run(args.run_dir, args.output)
    print(f"wrote {path}")
    return EXIT_OK
