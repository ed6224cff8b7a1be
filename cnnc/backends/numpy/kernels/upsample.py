"""Upsampling by whole-number factors: nearest neighbour and bilinear, as PyTorch defines them.

Shapes: x ``(N, C, H, W)`` -> y ``(N, C, H*sh, W*sw)``.

Nearest: output pixel (i, j) copies input pixel (i // sh, j // sw), so the forward pass is a
repeat and the backward pass sums each sh x sw block of the gradient.

Bilinear is separable: each output row is a weighted mix of two input rows, and each output
column of two input columns. Along one axis that mix is a small (out, in) matrix A, so

    y = A_h @ x @ A_w.T        and        dx = A_h.T @ dy @ A_w

With align_corners=False (PyTorch's default) output pixel i samples the input at
src = (i + 0.5) / s - 0.5, clamped at 0 (pixel centres line up, edges replicate); with
align_corners=True, at src = i * (in - 1) / (out - 1) (corner pixels line up).
"""

from __future__ import annotations

import numpy as np


def upsample_nearest_forward(x, scale: tuple[int, int]):
    sh, sw = scale
    y = x.repeat(sh, axis=2).repeat(sw, axis=3) if (sh, sw) != (1, 1) else x.copy()
    return y, scale


def upsample_nearest_backward(dy, cache):
    sh, sw = cache
    n, c, oh, ow = dy.shape
    return dy.reshape(n, c, oh // sh, sh, ow // sw, sw).sum(axis=(3, 5))


def interpolation_matrix(size: int, out: int, align_corners: bool, dtype=np.float64):
    """The (out, size) matrix of linear-interpolation weights along one axis."""
    i = np.arange(out, dtype=np.float64)
    if align_corners:
        src = i * ((size - 1) / (out - 1)) if out > 1 else np.zeros(out)
    else:
        src = np.maximum((i + 0.5) * (size / out) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), size - 1)
    hi = np.minimum(lo + 1, size - 1)
    frac = src - lo
    a = np.zeros((out, size), dtype=np.float64)
    rows = np.arange(out)
    np.add.at(a, (rows, lo), 1.0 - frac)
    np.add.at(a, (rows, hi), frac)
    return a.astype(dtype)


def upsample_bilinear_forward(x, scale: tuple[int, int], align_corners: bool = False):
    n, c, h, w = x.shape
    ah = interpolation_matrix(h, h * scale[0], align_corners, x.dtype)
    aw = interpolation_matrix(w, w * scale[1], align_corners, x.dtype)
    y = np.matmul(np.matmul(ah, x), aw.T)
    return y, (ah, aw)


def upsample_bilinear_backward(dy, cache):
    ah, aw = cache
    return np.matmul(np.matmul(ah.T.astype(dy.dtype), dy), aw.astype(dy.dtype))
