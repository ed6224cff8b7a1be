"""Multiplications: `mul` (tensors, a gate broadcast over an image) and `layerscale` (a learned
factor per channel), forward and backward.

A gate is what squeeze-and-excitation computes: one value per channel, ``(N, C, 1, 1)`` or flat
``(N, C)``, that scales every position of an ``(N, C, H, W)`` image. Any operand may broadcast
in this way (NumPy's rule on the C, H and W axes: equal sizes, or 1); the gradient of a
broadcast operand sums over the axes it was broadcast along.
"""

from __future__ import annotations


def _as_image(x, ndim: int):
    """A flat (N, C) gate as (N, C, 1, 1) when the product is an image."""
    return x.reshape(*x.shape, 1, 1) if x.ndim == 2 and ndim == 4 else x


def mul_forward(*xs):
    """The element-wise product of the inputs, broadcast as above."""
    ndim = max(x.ndim for x in xs)
    views = [_as_image(x, ndim) for x in xs]
    y = views[0] * views[1]
    for v in views[2:]:
        y = y * v
    return y, {"views": views, "shapes": [x.shape for x in xs]}


def _unbroadcast(g, shape):
    """Sum g over the axes where an operand of `shape` was broadcast (size 1 against more)."""
    axes = tuple(i for i, (n, m) in enumerate(zip(shape, g.shape)) if n == 1 and m != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def mul_backward(dy, cache):
    """One gradient per input: dy times the product of all the OTHER inputs, summed back to
    that input's shape."""
    views, shapes = cache["views"], cache["shapes"]
    grads = []
    for i, (v, shape) in enumerate(zip(views, shapes)):
        g = dy
        for j, other in enumerate(views):
            if j != i:
                g = g * other
        grads.append(_unbroadcast(g, v.shape).reshape(shape))
    return grads


def layerscale_forward(x, scale):
    """y = x * scale, one learned factor per channel (4-D) or feature (2-D)."""
    bshape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
    return x * scale.reshape(bshape), {"x": x, "scale": scale, "bshape": bshape}


def layerscale_backward(dy, cache):
    """Returns (dx, dscale)."""
    x, scale, bshape = cache["x"], cache["scale"], cache["bshape"]
    sum_axes = (0, 2, 3) if dy.ndim == 4 else (0,)
    return dy * scale.reshape(bshape), (dy * x).sum(axis=sum_axes)
