"""Do the backends compute the same thing on this model? Layer by layer, against the truth.

The NumPy reference in float64 is the truth. The torch backend in float32 runs the same seeded
input with the same weights; each layer's output (and, with gradients, each parameter's
gradient) is compared with the truth as a relative error (the largest difference over the
largest value, down to a floor below which it is absolute). The tolerance is the one the
agreement test uses (tests/test_backend_agreement.py): 1e-4, or four times the error the
reference itself makes in float32 on this model, layer and input, measured here by running it,
whichever is larger. So a model that amplifies rounding (a batch norm over nearly equal values)
is held to what float32 allows on it, and nothing looser.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOL = 1e-4
FLOOR = 1e-2  # below this magnitude an error is absolute: values near 0 carry no precision


@dataclass
class Row:
    name: str
    kind: str  # "output" or "gradient"
    error: float
    allowed: float

    @property
    def ok(self) -> bool:
        return self.error <= self.allowed


def _rel(a: np.ndarray, truth: np.ndarray) -> float:
    if a.size == 0:
        return 0.0
    scale = max(float(np.abs(truth).max()), FLOOR)
    return float(np.abs(a.astype(np.float64) - truth).max()) / scale


def verify(model, weights: dict | None = None, *, batch: int = 2, seed: int = 0,
           gradients: bool = False, other: str = "torch") -> list[Row]:
    """One row per layer (and per parameter gradient), in the order the layers run."""
    try:
        import torch
    except ImportError:
        from ..diagnostics import CnncError

        raise CnncError("`cnnc verify` compares the NumPy reference with the torch backend, and "
                        "PyTorch is not installed", code="backend",
                        hint="install it, e.g. `pip install torch`") from None

    shape = model.input_shape
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (batch, shape[2], shape[0], shape[1]) if len(shape) == 3
                   else (batch, shape[0]))
    loss = "mse" if len(model.output_shape) == 3 else "auto"  # an autoencoder's image output
    truth_s = model.to_backend("numpy", seed=seed, dtype="float64", loss=loss)
    ref32_s = model.to_backend("numpy", seed=seed, dtype="float32", loss=loss)
    other_s = model.to_backend(other, seed=seed, device="cpu", channels_last=False, loss=loss)
    for s in (truth_s, ref32_s, other_s):
        if weights is not None:
            s.set_weights(weights, "the weights")
        else:
            s.set_weights(truth_s.get_weights(), "cnnc's initial weights")

    def numpy_trace(session, dtype):
        trace: dict = {}
        session.forward(x.astype(dtype), training=False, trace=trace)
        return trace

    truth = numpy_trace(truth_s, np.float64)
    ref32 = numpy_trace(ref32_s, np.float32)
    got: dict = {}
    with torch.no_grad():
        other_s.module.eval()
        other_s.module(torch.as_tensor(x.astype(np.float32)), trace=got)
    got = {k: v.detach().cpu().numpy() for k, v in got.items()}

    rows = []
    for layer in model.graph.layers():
        if layer.name not in got:
            continue
        noise = _rel(ref32[layer.name], truth[layer.name])
        rows.append(Row(layer.name, "output", _rel(got[layer.name], truth[layer.name]),
                        max(TOL, 4 * noise)))
    if gradients:
        classes = model.output_shape[0]
        y = rng.integers(0, max(classes, 2), batch) if len(model.output_shape) == 1 else None
        if y is None:
            return rows
        _, g_truth, _ = truth_s.gradients(x, y, training=False)
        _, g_ref, _ = ref32_s.gradients(x.astype(np.float32), y, training=False)
        _, g_other, _ = other_s.gradients(x.astype(np.float32), y, training=False)
        scale = max((float(np.abs(v).max()) for v in g_truth.values() if v.size), default=0.0)
        for name in g_truth:
            if name not in g_other:
                continue
            noise = _rel(g_ref[name], g_truth[name])
            err = _rel(g_other[name], g_truth[name])
            allowed = max(TOL, 4 * noise)
            if err > allowed:  # a gradient that is 0 in exact arithmetic: noise on the others'
                err = min(err, float(np.abs(g_other[name] - g_truth[name]).max())
                          / max(scale, FLOOR))
            rows.append(Row(name, "gradient", err, allowed))
    return rows


def render(rows: list[Row], other: str = "torch") -> str:
    width = max([len(r.name) for r in rows] + [5])
    lines = [f"numpy (float64, the truth) vs {other} (float32), relative error per layer",
             f"{'layer':<{width}}  {'kind':<8} {'error':>9} {'allowed':>9}  "]
    for r in rows:
        lines.append(f"{r.name:<{width}}  {r.kind:<8} {r.error:>9.2e} {r.allowed:>9.2e}  "
                     + ("ok" if r.ok else "DIFFERS"))
    bad = [r for r in rows if not r.ok]
    lines.append("")
    lines.append(f"{len(bad)} of {len(rows)} beyond the tolerance" if bad else
                 f"all {len(rows)} within the tolerance")
    return "\n".join(lines)
