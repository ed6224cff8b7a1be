"""Per-layer times of the torch session's training step, for `cnnc bench` (cnnc/train/bench.py).

    with LayerProfiler(session) as prof:
        session.train_step(data, idx)            # the step `cnnc train` runs, unchanged
    prof.forward, prof.backward, prof.optimizer  # seconds, summed over the steps run inside

How it attributes time:

- Forward: CnncNet runs every layer through `_run(name, module, inputs, fused, logits)` (the
  layer's module, then its fused activation). Inside the block that method is wrapped, on this
  module instance only, with a clock read before and after; on a GPU the device is synchronized
  at both reads, so the time is the layer's own and not that of whatever was queued before it.
- Backward: each layer's inputs and output pass through an identity autograd function whose
  backward reads the clock. The output's fires when the gradient of the layer's output is
  complete (its backward starts); the inputs' fire when the layer has computed its input
  gradients (it ends). PyTorch's autograd engine runs the ready node with the highest sequence
  number first, and a layer's nodes were numbered between its input and output marks in the
  forward pass, so nothing else runs in between: the interval is the layer's backward, its
  fused activation's and its parameters' gradient accumulation included. A layer whose inputs
  need no gradient (it reads the model's input) has no input mark; its backward ends at the
  next mark of the pass, or at the end of the backward pass (a callback the engine runs last).
- Optimizer: the optimizer's step pre- and post-hooks.
- What is left of a step (gathering the batch, the loss, the gradient scaler, Python's own time
  between layers, the marks themselves) is the step's time minus all of the above: cnnc bench
  reports it as unattributed, never spread over the layers.

With --compile the compiled module fuses across layers, so there is no per-layer time to take
from it: inside the block the session steps the eager module (the same weights), and cnnc bench
says so.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch


class _Mark(torch.autograd.Function):
    """The identity; its backward tells the profiler that a gradient went through."""

    @staticmethod
    def forward(ctx, x, profiler, name, kind):
        ctx.profiler, ctx.name, ctx.kind = profiler, name, kind
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.profiler._mark(ctx.name, ctx.kind)
        return grad, None, None, None


class LayerProfiler:
    def __init__(self, session):
        self.session = session
        self.net = session.module
        self.device = session.device
        self.forward: dict[str, float] = defaultdict(float)
        self.backward: dict[str, float] = defaultdict(float)
        self.optimizer = 0.0
        self.eager_for_compile = bool(getattr(session, "compile", False))
        self._events: list[tuple[float, str, str]] = []  # (time, layer, "out" | "in" | "end")
        self._callback_queued = False
        self._handles = []
        self._saved_net = None
        self._opt_start = 0.0

    # -- the clock ------------------------------------------------------------------------------
    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def now(self) -> float:
        self.sync()
        return time.perf_counter()

    # -- installing and removing ----------------------------------------------------------------
    def __enter__(self):
        run = self.net._run  # the class's method, bound

        def timed_run(name, module, inputs, fused, logits):
            t0 = self.now()
            if torch.is_grad_enabled():
                inputs = [_Mark.apply(x, self, name, "in") if x.requires_grad else x
                          for x in inputs]
            y = run(name, module, inputs, fused, logits)
            if torch.is_grad_enabled() and y.requires_grad:
                y = _Mark.apply(y, self, name, "out")
            self.forward[name] += self.now() - t0
            return y

        self.net._run = timed_run  # this instance only
        opt = self.session.optimizer
        if opt is not None:
            self._handles.append(opt.register_step_pre_hook(self._opt_pre))
            self._handles.append(opt.register_step_post_hook(self._opt_post))
        if self.eager_for_compile:
            self._saved_net = self.session._train_net
            self.session._train_net = self.net
        return self

    def __exit__(self, *exc):
        self.net.__dict__.pop("_run", None)
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self.eager_for_compile:
            self.session._train_net = self._saved_net
        self._attribute()
        return False

    def _opt_pre(self, opt, args, kwargs):
        self._opt_start = self.now()

    def _opt_post(self, opt, args, kwargs):
        self.optimizer += self.now() - self._opt_start

    # -- backward marks -------------------------------------------------------------------------
    def _mark(self, name: str, kind: str) -> None:
        if not self._callback_queued:
            self._callback_queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._backward_done)
        self._events.append((self.now(), name, kind))

    def _backward_done(self) -> None:
        self._callback_queued = False
        self._events.append((self.now(), "", "end"))

    def _attribute(self) -> None:
        """The backward intervals of every pass recorded, added to self.backward."""
        events, self._events = self._events, []
        start: dict[str, float] = {}
        end: dict[str, float] = {}
        open_: list[str] = []  # layers started and without an input mark yet, in order

        def close_pass():
            for name, t0 in start.items():
                self.backward[name] += max(end.get(name, t0) - t0, 0.0)
            start.clear()
            end.clear()
            open_.clear()

        for t, name, kind in events:
            # any mark ends the layers that started before it and have no input marks
            for other in open_:
                end.setdefault(other, t)
            open_.clear()
            if kind == "end":
                close_pass()
            elif kind == "out":
                start[name] = t
                open_.append(name)
            else:  # "in": the layer has computed (one of) its input gradients
                end[name] = t
        close_pass()
