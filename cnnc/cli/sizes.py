"""`cnnc sizes FILE`: which input sizes the model accepts, each layer's size as a formula of the
input's, and the sizes at which it drops border pixels (cnnc/analysis/sizes.py)."""

from __future__ import annotations

from .common import add_input_flag
from .report import EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser("sizes", help="input sizes the model accepts, and the pixels it drops",
                       description="Each layer's output size as a formula of the input's H and "
                                   "W, the smallest input the model accepts, whether its "
                                   "parameters fix the size, and the sizes at which no input "
                                   "pixel is ignored.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print the analysis as JSON")
    add_input_flag(p)
    p.set_defaults(run=run)


def run(args) -> int:
    import json

    from ..analysis.sizes import analyse
    from ..diagnostics import CnncError
    from .common import load_model

    model = load_model(args.file, json=args.json, input_shape=args.input_shape)
    if len(model.input_shape) != 3:
        raise CnncError("the model's input is flat: it has no height or width to vary",
                        code="shape", hint="`cnnc sizes` is for models of images")
    report = analyse(model.graph)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(render(report, given=args.input_shape is not None))
    return EXIT_OK


def render(report, given: bool = False) -> str:
    from ..analysis.sizes import AXES, describe_pattern

    h, w = report.declared
    lines = [f"Input {h}x{w}, " + ("as --input gives it." if given else "as written.")]
    if report.min_input is None:
        lines.append("No smaller input was found that the model accepts.")
    elif report.only_input:
        (lo_h, hi_h), (lo_w, hi_w) = report.accepts
        lines.append(f"Only {h}x{w}: `{report.fixed_by}` has parameters sized for it.")
        if (lo_h, hi_h, lo_w, hi_w) != (h, h, w, w):
            lines.append(f"  (heights {lo_h}..{hi_h} and widths {lo_w}..{hi_w} give the same "
                         "shapes there, by ignoring border pixels)")
    else:
        mh, mw = report.min_input
        lines.append(f"Any input from {mh}x{mw} up (each side, the other as written).")
    for axis, name in enumerate(AXES):
        dropped = report.dropped[axis]
        side = "rows" if axis == 0 else "columns"
        if dropped:
            shown = ", ".join(map(str, dropped[:8])) + (" ..." if len(dropped) > 8 else "")
            lines.append(f"At {h}x{w} the model ignores {len(dropped)} input {side} "
                         f"(0-based: {shown}): they cannot change the output.")
        if report.no_drop[axis]:
            when = describe_pattern(report.no_drop[axis], name)
            lines.append(f"No input {side[:-1]} is ignored " + (
                "at any size." if when == "always" else
                f"when {when}." if when else "at any size tried."))
        if report.aligned[axis]:
            when = describe_pattern(report.aligned[axis], name)
            if when and when != "always":
                lines.append(f"Every stride divides its input evenly when {when}.")
    lines.append("")
    width = max(len(s.name) for s in report.layers)
    lines.append(f"{'layer':<{width}}  {'H':<28} W")
    for s in report.layers:
        if s.formulas[0] is None and s.formulas[1] is None:
            continue
        lines.append(f"{s.name:<{width}}  {s.formulas[0] or '?':<28} {s.formulas[1] or '?'}")
    return "\n".join(lines)
