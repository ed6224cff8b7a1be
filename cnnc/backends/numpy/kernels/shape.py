"""Operations that only move or combine values: flatten, add (residual), concat (channels)."""

from __future__ import annotations

import numpy as np


def flatten_forward(x):
    """(N, C, H, W) -> (N, C*H*W), in (C, H, W) order like torch.flatten(x, 1). A view when x
    is contiguous, so it costs nothing."""
    return np.ascontiguousarray(x).reshape(x.shape[0], -1), {"x_shape": x.shape}


def flatten_backward(dy, cache):
    return dy.reshape(cache["x_shape"])


def add_forward(*xs):
    """Element-wise sum of same-shaped inputs (residual connections)."""
    y = xs[0] + xs[1] if len(xs) > 1 else xs[0].copy()
    for x in xs[2:]:
        y += x
    return y, {"n": len(xs)}


def add_backward(dy, cache):
    """Addition passes the gradient unchanged to every input. The SAME array is returned for
    each; callers must not modify gradients in place."""
    return [dy] * cache["n"]


def concat_forward(*xs):
    """Concatenate along axis 1 (channels for 4-D, features for 2-D)."""
    return np.concatenate(xs, axis=1), {"sizes": [x.shape[1] for x in xs]}


def concat_backward(dy, cache):
    """Each input gets its own slice of the gradient (copied, so each is contiguous)."""
    bounds = np.cumsum([0] + cache["sizes"])
    return [np.ascontiguousarray(dy[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
