"""Training curves: loss and accuracy per epoch, training and validation, from a run's
metrics.jsonl, as two side-by-side charts (SVG, or PNG through Pillow).

    cnnc plot runs/fashion_aug/1              # writes runs/fashion_aug/1/curves.svg
    cnnc plot runs/fashion_aug/1 -o run.png

The final test accuracy, when the run has one, is marked on the accuracy chart.
"""

from __future__ import annotations

import math
from pathlib import Path

from .canvas import Canvas

TRAIN_COLOR, VAL_COLOR, TEST_COLOR = "#1f77b4", "#d62728", "#2ca02c"
PANEL_W, PANEL_H = 380, 250
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 58, 18, 56, 46


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round numbers (1, 2 or 5 times a power of ten apart) spanning lo..hi."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) * 0.1 or 1.0)
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = [round(first, 10)]
    while ticks[-1] < hi - step * 1e-9:  # until the range is covered
        ticks.append(round(first + len(ticks) * step, 10))
    return ticks if len(ticks) > 1 else [ticks[0], round(first + step, 10)]


def _label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.001:
        return f"{v:.1e}"
    return f"{v:.4g}"


def _panel(c: Canvas, x0: float, title: str, epochs: list[int], series: list, marks=()):
    """One chart: series is [(name, color, values or None per epoch, dashed)]."""
    left, top = x0 + MARGIN_L, MARGIN_T
    w, h = PANEL_W - MARGIN_L - MARGIN_R, PANEL_H - MARGIN_T - MARGIN_B
    values = [v for _, _, vs, _ in series for v in vs if v is not None and math.isfinite(v)]
    values += [v for _, _, v in marks]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    pad = (hi - lo) * 0.05 or 0.05
    ticks = nice_ticks(lo - pad, hi + pad)
    ylo, yhi = ticks[0], ticks[-1]
    xlo, xhi = (min(epochs), max(epochs)) if epochs else (1, 1)
    if xhi == xlo:
        xlo, xhi = xlo - 0.5, xhi + 0.5

    def sx(e):
        return left + (e - xlo) / (xhi - xlo) * w

    def sy(v):
        return top + (1 - (v - ylo) / (yhi - ylo)) * h

    c.text(left + w / 2, 20, title, size=14, anchor="middle", bold=True)
    for t in ticks:
        c.line(left, sy(t), left + w, sy(t), stroke="#e6e6e6")
        c.text(left - 6, sy(t) + 4, _label(t), size=11, anchor="end", fill="#555")
    xticks = [t for t in nice_ticks(xlo, xhi, 6) if xlo <= t <= xhi and t == int(t)] or epochs
    for t in xticks:
        c.line(sx(t), top + h, sx(t), top + h + 4, stroke="#888")
        c.text(sx(t), top + h + 17, str(int(t)), size=11, anchor="middle", fill="#555")
    c.text(left + w / 2, top + h + 36, "epoch", size=12, anchor="middle", fill="#333")
    c.rect(left, top, w, h, stroke="#888")
    for name, color, vs, dashed in series:
        pts = [(sx(e), sy(v)) for e, v in zip(epochs, vs) if v is not None and math.isfinite(v)]
        with c.group({"class": "series", "data-name": name}):
            if len(pts) > 1:
                c.polyline(pts, stroke=color, width=2, dash="6 4" if dashed else None)
            for x, y in pts:
                c.circle(x, y, 2.5, fill=color)
    for name, color, v in marks:
        with c.group({"class": "mark", "data-name": name}):
            c.circle(sx(xhi), sy(v), 5, fill="none", stroke=color)
            c.text(sx(xhi) - 8, sy(v) - 8, f"{name} {v:.4f}", size=11, anchor="end", fill=color)
    legend_y = top - 10  # between the chart's title and its frame
    x = left
    for name, color, vs, dashed in series:
        if not any(v is not None for v in vs):
            continue
        c.line(x, legend_y - 4, x + 18, legend_y - 4, stroke=color, width=2,
               dash="6 4" if dashed else None)
        c.text(x + 22, legend_y, name, size=11, fill="#333")
        x += 30 + len(name) * 7


def curves_canvas(records: list[dict], title: str | None = None) -> Canvas:
    """Loss and accuracy charts of metrics.jsonl's records (header and test record may be
    among them)."""
    rows = [r for r in records if isinstance(r.get("epoch"), int) and "train_loss" in r]
    test = next((r for r in records if "test_images" in r), None)  # not an epoch's test figures
    epochs = [r["epoch"] for r in rows]
    top = 24 if title else 0
    c = Canvas(2 * PANEL_W, PANEL_H + top)
    if title:
        c.text(PANEL_W, 18, title, size=13, anchor="middle", fill="#333")
    sub = _Offset(c, top)  # moved down by hand, not by an SVG transform, so PNG matches
    _panel(sub, 0, "loss", epochs, [
        ("train", TRAIN_COLOR, [r.get("train_loss") for r in rows], False),
        ("validation", VAL_COLOR, [r.get("val_loss") for r in rows], True)],
        marks=[("test", TEST_COLOR, test["test_loss"])] if test and test.get("test_loss")
        is not None else [])
    _panel(sub, PANEL_W, "accuracy", epochs, [
        ("train", TRAIN_COLOR, [r.get("train_accuracy") for r in rows], False),
        ("validation", VAL_COLOR, [r.get("val_accuracy") for r in rows], True)],
        marks=[("test", TEST_COLOR, test["test_accuracy"])] if test and test.get("test_accuracy")
        is not None else [])  # (an autoencoder has no accuracy)
    return c


class _Offset:
    """Draws onto a canvas moved down by dy (room for a title)."""

    def __init__(self, canvas: Canvas, dy: float):
        self.c, self.dy = canvas, dy

    def text(self, x, y, *a, **k):
        return self.c.text(x, y + self.dy, *a, **k)

    def line(self, x1, y1, x2, y2, **k):
        return self.c.line(x1, y1 + self.dy, x2, y2 + self.dy, **k)

    def rect(self, x, y, w, h, **k):
        return self.c.rect(x, y + self.dy, w, h, **k)

    def circle(self, x, y, r, **k):
        return self.c.circle(x, y + self.dy, r, **k)

    def polyline(self, pts, **k):
        return self.c.polyline([(x, y + self.dy) for x, y in pts], **k)

    def group(self, *a, **k):
        return self.c.group(*a, **k)


def plot_run(run_dir, out=None) -> Path:
    """Draw a run folder's curves to `out` (default RUN_DIR/curves.svg); returns the path."""
    from ..diagnostics import CnncError
    from ..train.engine import METRICS, read_header, read_metrics

    run = Path(run_dir)
    metrics = run / METRICS if run.is_dir() else run
    if not metrics.is_file():
        raise CnncError(f"{run} holds no {METRICS}", code="io",
                        hint="give a run folder written by `cnnc train` (runs/MODEL/N or the "
                             "--out folder)")
    records = read_metrics(metrics)
    if not any("train_loss" in r for r in records):
        raise CnncError(f"{metrics} has no completed epoch yet", code="io",
                        hint="plot again after the first epoch ends")
    header = read_header(metrics) or {}
    title = " | ".join(str(v) for v in (header.get("model_file"), header.get("data"),
                                        header.get("backend")) if v) or None
    target = Path(out) if out else metrics.parent / "curves.svg"
    if target.suffix.lower() not in (".svg", ".png"):
        raise CnncError(f"cannot write {target}: plots are .svg or .png files", code="usage")
    curves_canvas(records, title).save(target)
    return target


class CurvesReporter:
    """A training reporter that passes everything on to another and redraws RUN_DIR/curves.svg
    after every epoch (what `cnnc train` uses)."""

    def __init__(self, inner, run_dir, *, resume: bool = False):
        from ..train.engine import METRICS, read_header, read_metrics

        self.inner = inner
        self.path = Path(run_dir) / "curves.svg"
        metrics = Path(run_dir) / METRICS
        self.records = [r for r in read_metrics(metrics) if "train_loss" in r] if resume else []
        self.header = read_header(metrics) if resume else None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def start(self, *a, **k):
        return self.inner.start(*a, **k)

    def batch(self, *a, **k):
        return self.inner.batch(*a, **k)

    def message(self, *a, **k):
        return self.inner.message(*a, **k)

    def close(self, *a, **k):
        return self.inner.close(*a, **k)

    def epoch_end(self, record):
        self.inner.epoch_end(record)
        self.records = [r for r in self.records if r.get("epoch") != record.get("epoch")]
        self.records.append(dict(record))
        try:
            curves_canvas(self.records, None).save(self.path)
        except OSError:  # a picture that cannot be written must not stop the training
            pass
