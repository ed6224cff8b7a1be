"""Channel rearrangements: one part of a channel split, and ShuffleNet's channel shuffle.

Both work on axis 1 of an ``(N, C, H, W)`` image or an ``(N, F)`` vector, so they serve images
and flat tensors alike. Neither does arithmetic: the backward pass routes each gradient back to
the position its value came from.
"""

from __future__ import annotations

import numpy as np


def channel_slice_forward(x, start: int, stop: int):
    """Channels [start, stop) of x: one part of a split (`keep, x = split 2`)."""
    y = np.ascontiguousarray(x[:, start:stop])
    return y, (x.shape, start, stop)


def channel_slice_backward(dy, cache):
    """The part's gradient in place, zeros for the channels the part did not take."""
    shape, start, stop = cache
    dx = np.zeros(shape, dtype=dy.dtype)
    dx[:, start:stop] = dy
    return dx


def _shuffled(x, groups: int):
    """(N, g*k, ...) -> (N, k*g, ...): channel i*k + j moves to j*g + i (ShuffleNet)."""
    n, c = x.shape[:2]
    rest = x.shape[2:]
    return np.ascontiguousarray(
        x.reshape(n, groups, c // groups, *rest).swapaxes(1, 2)).reshape(n, c, *rest)


def channel_shuffle_forward(x, groups: int):
    """ShuffleNet's shuffle: view the channels as a (groups, C/groups) grid and transpose it,
    so that the next grouped layer sees channels from every group of the last one."""
    if x.shape[1] % groups:
        raise ValueError(f"channel_shuffle: {x.shape[1]} channels in {groups} groups")
    return _shuffled(x, groups), groups


def channel_shuffle_backward(dy, cache):
    """The inverse permutation: a shuffle with C/groups groups."""
    groups = cache
    return _shuffled(dy, dy.shape[1] // groups)
