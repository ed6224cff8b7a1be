"""`cnnc graph FILE [-o model.svg|model.png|model.dot|model.mmd]`: the layer graph as a diagram."""

from __future__ import annotations

from .report import EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser("graph", help="draw the layer graph (SVG, PNG, DOT or Mermaid)",
                       description="Draw the model's layer graph: a box per layer with its op, "
                                   "output shape and parameters, block calls framed, merges "
                                   "where their inputs join. SVG and PNG are drawn by cnnc "
                                   "itself; DOT (Graphviz) and Mermaid are written as text.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="model.svg (default: the model's name, .svg, here), model.png, "
                        "model.dot or model.mmd")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..viz.graph import write_graph
    from .common import load_model

    model = load_model(args.file)
    out = args.output or f"{model.name}.svg"
    write_graph(model, out)
    print(f"wrote {out} ({len(model.graph):,} layers)")
    return EXIT_OK
