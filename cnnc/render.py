"""The summary as a rich table, in the spirit of Keras's model.summary()."""

from __future__ import annotations

import sys

from .analysis.summary import Summary, human, human_bytes
from .ops.shapes import fmt_shape


def print_summary(summary: Summary, *, color: bool = False, file=None) -> None:
    from rich.console import Console
    from rich.table import Table

    file = file or sys.stdout
    console = Console(file=file, no_color=not color, highlight=False,
                      width=None if color else 160, force_terminal=color or None)
    title = f"Model: {summary.model}"
    if summary.params:  # the values its parameters had (defaults or --set)
        title += " (" + ", ".join(f"{k}={_param_text(v)}" for k, v in summary.params.items()) + ")"
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("Layer", no_wrap=True)
    table.add_column("Op")
    table.add_column("Output shape", justify="right", no_wrap=True)
    table.add_column("Params", justify="right")
    table.add_column("MACs", justify="right")
    table.add_column("RF", justify="right", header_style="bold")
    graph = not summary.sequential
    if graph:
        table.add_column("Inputs")
    for r in summary.rows:
        cells = [r.name, r.description, fmt_shape(r.output_shape), f"{r.params:,}",
                 f"{r.macs:,}" if r.macs else "0",
                 str(r.receptive_field) if r.receptive_field else "-"]
        if graph:
            cells.append(", ".join(r.inputs))
        table.add_row(*cells)
    console.print(table)
    s = summary
    console.print(f" Total params: {s.total_params:,} ({human_bytes(s.param_bytes)} as float32)")
    console.print(f" Trainable params: {s.trainable_params:,}")
    console.print(f" Non-trainable params: {s.non_trainable_params:,}")
    console.print(f" MACs per image: {human(s.macs)} ({s.macs:,})")
    console.print(f" Activation memory per image: {human_bytes(s.activation_bytes)} "
                  f"(float32, every layer's output)")


def _param_text(v) -> str:
    return "x".join(map(str, v)) if isinstance(v, tuple) else str(v)


def print_memory(inference, training, fits, limit, *, color: bool = False, file=None) -> None:
    """The memory lines under the summary table: inference, then a training step."""
    from rich.console import Console

    file = file or sys.stdout
    console = Console(file=file, no_color=not color, highlight=False,
                      width=None if color else 160, force_terminal=color or None)
    i, t = inference, training
    console.print(f" Inference memory per image: {human_bytes(i.peak_bytes)} at the peak "
                  f"(float32, each output freed after its last reader; "
                  f"{human_bytes(i.peak(1))} in int8)")
    opt = {"adam": "Adam", "sgd": "SGD with momentum" if t.optimizer_bytes else "SGD"}
    console.print(f" Training step, batch {t.batch}, {opt[t.optimizer]}: "
                  f"{human_bytes(t.total_bytes)}")
    console.print(f"   weights {human_bytes(t.param_bytes)}, gradients "
                  f"{human_bytes(t.gradient_bytes)}, optimizer state "
                  f"{human_bytes(t.optimizer_bytes)}, activations kept for backward "
                  f"{human_bytes(t.saved_bytes)}, backward buffers "
                  f"{human_bytes(t.transient_bytes)}")
    if fits is not None:
        console.print(f" Largest batch that fits in {human_bytes(limit)}: "
                      + (f"{fits:,}" if fits else "none (not even a batch of 1)"))
