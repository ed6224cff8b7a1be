"""Fully connected (dense / linear) layer: y = x @ w.T + b.

Shapes (PyTorch layout): x (N, IN), w (OUT, IN), b (OUT,), y (N, OUT).
All three products below are single BLAS calls; ``w.T`` is a view, BLAS reads it transposed.
"""

from __future__ import annotations


def dense_forward(x, w, b=None):
    y = x @ w.T  # (N, IN) @ (IN, OUT) -> (N, OUT)
    if b is not None:
        y += b  # broadcast over the batch
    return y, {"x": x, "w": w, "has_bias": b is not None}


def dense_backward(dy, cache, *, need_dx=True):
    """Returns (dx, dw, db). dy is (N, OUT). ``need_dx=False`` skips dx (returned as None)."""
    x, w = cache["x"], cache["w"]
    dw = dy.T @ x  # (OUT, N) @ (N, IN): each weight sums its input times the output's gradient
    db = dy.sum(axis=0) if cache["has_bias"] else None  # b[j] was added to every row
    dx = dy @ w if need_dx else None  # (N, OUT) @ (OUT, IN)
    return dx, dw, db
