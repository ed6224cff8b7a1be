"""Budgets: limits on a model's parameters, multiply-accumulates and inference memory.

Written in the model file,

    budget:
        params 1M          # parameters, trainable and not (Keras's total)
        macs 300M          # multiply-accumulates per image
        memory 256KiB      # inference memory: float32 parameters + the peak of live activations

or given to `cnnc check --max-params 1M --max-macs 300M --max-memory 256KiB` (a flag overrides the
file). Amounts take K, M, G, T (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024).

A model over budget gets one error per budget, located at the layer where the running total,
walking the layers in the order they run, first crosses the limit, with the model's total.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

from ..diagnostics import ERROR, Diagnostic, did_you_mean

KINDS = {"params": "parameters", "macs": "multiply-accumulates per image",
         "memory": "bytes of inference memory"}


@dataclass
class Budget:
    limits: dict = field(default_factory=dict)  # kind -> amount
    origins: dict = field(default_factory=dict)  # kind -> "line 12" or "--max-params"

    def __bool__(self) -> bool:
        return bool(self.limits)

    def merged(self, flags: dict) -> "Budget":
        """This budget with the command line's limits (kind -> amount or None) on top."""
        limits, origins = dict(self.limits), dict(self.origins)
        for kind, amount in flags.items():
            if amount is not None:
                limits[kind] = amount
                origins[kind] = f"--max-{kind}"
        return Budget(limits, origins)


def parse_budget(section) -> tuple[Budget, list[Diagnostic]]:
    """A `budget:` section's limits, or diagnostics at what is wrong in it."""
    from ..syntax import ast

    budget, diagnostics = Budget(), []
    for stmt in section.body:
        if not isinstance(stmt, ast.Call) or stmt.head not in KINDS:
            span = stmt.head_span if isinstance(stmt, ast.Call) else stmt.span
            head = stmt.head if isinstance(stmt, ast.Call) else ""
            diagnostics.append(Diagnostic(
                ERROR, "budget", f"unknown budget `{head}`" if head else
                "a budget is written like `params 1M`", span, [],
                did_you_mean(head, KINDS) or "budgets: params, macs, memory (like `params 1M`)"))
            continue
        if stmt.head in budget.limits:
            diagnostics.append(Diagnostic(ERROR, "budget", f"`{stmt.head}` is set twice",
                                          stmt.span, [budget.origins[stmt.head]]))
            continue
        if len(stmt.args) != 1 or stmt.options or stmt.args[0].kind not in ("int", "amount") \
                or stmt.args[0].value < 0:
            diagnostics.append(Diagnostic(
                ERROR, "budget", f"`{stmt.head}` takes one amount, like `{stmt.head} 1M`",
                stmt.span, [], "amounts take K, M, G (x1000) or KiB, MiB, GiB (x1024)"))
            continue
        budget.limits[stmt.head] = int(stmt.args[0].value)
        budget.origins[stmt.head] = f"set at line {stmt.span.line}"
    return budget, diagnostics


def running_totals(graph):
    """Per layer, in the order they run: (layer, params so far, MACs so far, memory so far),
    memory being float32 parameters so far + the peak of live activations so far."""
    from .memory import FLOAT32

    layers = graph.layers()
    last_reader = {}
    for i, layer in enumerate(layers):
        for src in layer.inputs:
            last_reader[src] = i
    live: dict[str, int] = {}
    params = macs = peak = 0
    for i, layer in enumerate(layers):
        params += sum(prod(s) for s in (*layer.params.values(), *layer.buffers.values()))
        macs += layer.macs
        live[layer.name] = prod(layer.shape) * FLOAT32
        peak = max(peak, sum(live.values()))
        for src in layer.inputs:
            if last_reader.get(src) == i and src != graph.output:
                live.pop(src, None)
        yield layer, params, macs, params * FLOAT32 + peak


def check_budget(graph, budget: Budget, file: str) -> list[Diagnostic]:
    """One error per budget the model exceeds, at the layer where it first does."""
    from .summary import human, human_bytes

    if not budget:
        return []
    diagnostics = []
    crossed: dict[str, tuple] = {}
    totals = None
    for layer, params, macs, memory in running_totals(graph):
        totals = {"params": params, "macs": macs, "memory": memory}
        for kind, limit in budget.limits.items():
            if kind not in crossed and totals[kind] > limit:
                crossed[kind] = (layer, totals[kind])
    for kind, (layer, running) in crossed.items():
        limit = budget.limits[kind]
        if kind == "memory":
            said = (f"over the memory budget at this layer: {human_bytes(running)} of "
                    f"inference memory up to here, the budget is {human_bytes(limit)}")
            whole = f"the whole model needs {human_bytes(totals[kind])}"
        else:
            what = "parameters" if kind == "params" else "multiply-accumulates per image"
            said = (f"over the {'parameter' if kind == 'params' else 'MAC'} budget at this "
                    f"layer: {running:,} {what} up to here ({human(running)}), the budget is "
                    f"{limit:,} ({human(limit)})")
            whole = f"the whole model has {totals[kind]:,} ({human(totals[kind])})"
        origin = budget.origins[kind]
        notes = [f"the budget is {'set by ' + origin if origin.startswith('--') else origin}",
                 whole]
        if kind == "memory":
            notes.append("inference memory: float32 parameters + the peak of the activations "
                         "alive at once, each freed after its last reader")
        notes.extend(layer.context)
        diagnostics.append(Diagnostic(ERROR, "over-budget", said, layer.span, notes,
                                      _hint(kind)))
    return diagnostics


def _hint(kind: str) -> str:
    return {"params": "fewer filters or units, a depthwise-separable conv, or global pooling "
                      "instead of flatten before dense layers shrink the count",
            "macs": "stride or pool earlier, or use fewer filters in the large early layers",
            "memory": "pool or stride earlier: the largest activations come first"}[kind]

