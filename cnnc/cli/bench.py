"""`cnnc bench FILE`: time the training step `cnnc train` would run (Caffe's `time`): forward
and backward time per layer and in total, training images per second, achieved FLOP/s against
the measured matmul rate of the precision in use. The logic is cnnc/train/bench.py."""

from __future__ import annotations

import argparse

from .common import add_input_flag, memory_size, positive_int
from .report import EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="time a training step, layer by layer",
                       description="Time the training step `cnnc train` runs (same backend, "
                                   "device, precision and memory layout choices) on random data "
                                   "of the model's input shape: warm-up steps, timed steps, then "
                                   "the same steps profiled layer by layer.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--backend", default=None, metavar="NAME",
                   help="numpy (default, as for train) or torch, or a plugin's")
    p.add_argument("--batch", "--batch-size", dest="batch_size", type=positive_int,
                   metavar="N", help="batch size (default: the file's `train:` section, else 64)")
    p.add_argument("--steps", type=positive_int, default=10, metavar="N",
                   help="timed steps, and as many profiled ones (default 10)")
    p.add_argument("--warmup", type=int, default=2, metavar="N",
                   help="untimed steps first (default 2; at least 1 is run: the torch backend "
                        "chooses its memory layout at its first step)")
    p.add_argument("--optimizer", choices=["sgd", "adam"],
                   help="default: the file's `train:` section, else adam")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="torch: where to run (auto takes a GPU when there is one)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                   help="torch: autocast precision, as for train (default auto)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="torch: NHWC memory layout (default: chosen by a quick measurement)")
    p.add_argument("--compile", action="store_true", help="torch: use torch.compile")
    p.add_argument("--max-memory", type=memory_size, metavar="SIZE",
                   help="refuse a model whose estimated training memory exceeds SIZE")
    p.add_argument("--json", action="store_true", help="print the measurements as JSON")
    add_input_flag(p)
    p.set_defaults(run=run)


def run(args) -> int:
    import json
    import sys

    from ..diagnostics import CnncError
    from ..train.bench import bench
    from ..train.memory import check_memory
    from .common import check_config, load_model, train_config, training_session

    if args.warmup < 0:
        raise CnncError(f"--warmup must be 0 or more, not {args.warmup}", code="usage")
    model = load_model(args.file, json=args.json, input_shape=args.input_shape)
    config = train_config(model, args)
    check_config(config)
    if model.summary().trainable_params == 0:
        raise CnncError("the model has no trainable parameters: there is no training step to "
                        "time", code="usage", span=model.graph[model.graph.input].span,
                        hint="add a layer with weights (conv, dense, bn)")
    check_memory(model, config.batch_size, config, limit=args.max_memory)
    session = training_session(model, args, config)
    progress = None if args.json else (lambda text: print(text, file=sys.stderr, flush=True))
    result = bench(model, session, config, steps=args.steps, warmup=args.warmup,
                   seed=config.seed, progress=progress)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return EXIT_OK
    from .report import use_color

    print_bench(result, color=use_color(sys.stdout))
    return EXIT_OK


def _ms(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:,.2f}"


def _rate(flops) -> str:
    return "-" if not flops else f"{flops / 1e9:,.1f}"


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def print_bench(r, *, color: bool = False, file=None) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    file = file or sys.stdout
    console = Console(file=file, no_color=not color, highlight=False,
                      width=None if color else 160, force_terminal=color or None)
    threads = f", {r.threads} threads" if r.threads else ""
    console.print(f"Model: {r.model} | backend {r.backend} on {r.device}{threads} | batch "
                  f"{r.batch}, {r.optimizer} | layout {r.layout or '-'}"
                  + (" | torch.compile" if r.compiled else ""))
    console.print(f"Precision: {r.precision_note}")
    table = Table(title=f"Per layer, ms per step (mean of {r.steps} profiled steps)",
                  title_justify="left", header_style="bold")
    for name, justify in (("Layer", "left"), ("Op", "left"), ("Forward ms", "right"),
                          ("Backward ms", "right"), ("Total ms", "right"), ("Share", "right"),
                          ("Fwd GFLOP/s", "right"), ("Bwd GFLOP/s", "right")):
        table.add_column(name, justify=justify, no_wrap=name == "Layer")
    for l in r.layers:
        total = l.total_s() if l.forward_s is not None else None
        table.add_row(l.name, l.op, _ms(l.forward_s), _ms(l.backward_s), _ms(total),
                      _pct(r.share(total)),
                      _rate(r.layer_rate(l.forward_flops, l.forward_s)),
                      _rate(r.layer_rate(l.backward_flops, l.backward_s)))
    if r.profiled_step_s is not None:
        fwd = sum(l.forward_s or 0.0 for l in r.layers)
        bwd = sum(l.backward_s or 0.0 for l in r.layers)
        table.add_section()
        table.add_row("all layers", "", _ms(fwd), _ms(bwd), _ms(r.layers_s),
                      _pct(r.share(r.layers_s)), "", "")
        table.add_row("optimizer step", "", "", "", _ms(r.optimizer_s),
                      _pct(r.share(r.optimizer_s)), "", "")
        table.add_row("unattributed", "batch, loss...", "", "", _ms(r.unattributed_s),
                      _pct(r.share(r.unattributed_s)), "", "")
        table.add_row("profiled step", "", "", "", _ms(r.profiled_step_s), "100.0%", "", "")
    console.print(table)
    console.print(f" Step: {_ms(r.step_s)} ms (mean of {r.steps} timed steps after {r.warmup} "
                  f"warm-up, nothing attached): {r.images_per_second:,.1f} train images/s")
    flops = r.flops_per_second
    line = (f" Counted FLOPs per image: {r.flops_per_image:,} (forward 2 x MACs, backward 2 or "
            f"4 x MACs): {_rate(flops)} GFLOP/s")
    if r.matmul_peak:
        line += (f", {flops / r.matmul_peak:.1%} of the measured {r.precision} matmul rate "
                 f"({_rate(r.matmul_peak)} GFLOP/s)")
    console.print(line)
    others = {k: v for k, v in r.matmul_peaks.items() if k != r.precision}
    if others:
        console.print(" Other matmul rates here: " + ", ".join(
            f"{k} {_rate(v)} GFLOP/s" for k, v in others.items()))
    for note in r.notes:
        console.print(f" Note: {note}")
