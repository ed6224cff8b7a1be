"""Pooling: max, average and global, forward and backward.

A pooling window of KH x KW is summarised by one number. Instead of looping over windows we
loop over the KH*KW *kernel taps*: tap (i, j) is "the element at row i, column j of every
window", which is a strided slice of the input covering all images, channels and windows at
once. A 2x2 max-pool is then just four vectorised ``maximum`` calls.

Padding is never materialised. For each tap we work out which output positions read a real
input element (``_tap_range``); the others read padding, or -- with ceil-mode output sizes --
run past the padded border altogether. For max pooling those positions are simply skipped
(padding behaves like -inf); for average pooling they add nothing and the divisor says how many
elements counted.

Shapes: x (N, C, H, W), y (N, C, OH, OW). ``out_hw=(OH, OW)`` is always given by the caller
because floor/ceil rounding is decided by the shape checker, not here.
"""

from __future__ import annotations

import numpy as np


def _tap_range(in_size: int, out_size: int, offset: int, stride: int, pad_before: int):
    """Which outputs read a real input element at kernel offset ``offset`` along one axis.

    Output o reads input index ``o*stride + offset - pad_before``. Returns (o_lo, o_hi, i_lo):
    outputs o_lo <= o < o_hi are inside the input, starting at input index i_lo; every other
    output reads padding (or beyond). The range may be empty (o_lo == o_hi).
    """
    start = offset - pad_before  # input index read by output 0
    o_lo = max(0, -(start // stride))  # first o with o*stride + start >= 0 (ceil division)
    o_hi = min(out_size, (in_size - 1 - start) // stride + 1)  # past last o with index <= in_size-1
    o_hi = max(o_hi, o_lo)
    return o_lo, o_hi, o_lo * stride + start


def _taps(x_hw, out_hw, kernel, stride, pads):
    """Yield (tap_number, out_slices, in_slices) for every kernel tap that touches the input.

    ``y[..., out_rows, out_cols]`` and ``x[..., in_rows, in_cols]`` have the same shape: the
    outputs that read this tap, and the inputs they read. Taps are numbered row-major.
    """
    (H, W), (OH, OW) = x_hw, out_hw
    (KH, KW), (sh, sw) = kernel, stride
    pt, _, pl, _ = pads
    for i in range(KH):
        r0, r1, ir = _tap_range(H, OH, i, sh, pt)
        for j in range(KW):
            c0, c1, ic = _tap_range(W, OW, j, sw, pl)
            if r0 == r1 or c0 == c1:
                continue  # this tap only ever lands on padding
            out_sl = (slice(r0, r1), slice(c0, c1))
            in_sl = (slice(ir, ir + (r1 - r0 - 1) * sh + 1, sh), slice(ic, ic + (c1 - c0 - 1) * sw + 1, sw))
            yield i * KW + j, out_sl, in_sl


def _windows_overlap(kernel, stride) -> bool:
    """True when an input element can belong to more than one window."""
    return stride[0] < kernel[0] or stride[1] < kernel[1]


# ----------------------------------------------------------------------------------------------
# Max pooling
# ----------------------------------------------------------------------------------------------


def _tiles_exactly(x_hw, out_hw, kernel, stride, pads) -> bool:
    """True when the windows cover every input element exactly once (the usual 2x2 / 2)."""
    return (tuple(kernel) == tuple(stride) and not any(pads)
            and x_hw[0] == out_hw[0] * kernel[0] and x_hw[1] == out_hw[1] * kernel[1])


def maxpool2d_forward(x, *, kernel, stride, pads, out_hw):
    """y[n, c, oh, ow] = max of the window; padding and ceil-mode overhang never win."""
    N, C, H, W = x.shape
    if _tiles_exactly((H, W), out_hw, kernel, stride, pads):
        return _tiled_maxpool_forward(x, kernel)
    taps = list(_taps((H, W), out_hw, kernel, stride, pads))
    first_t, (orow, ocol), (irow, icol) = taps[0]
    if first_t == 0 and (orow.stop - orow.start, ocol.stop - ocol.start) == tuple(out_hw):
        y = x[:, :, irow, icol].copy()  # tap 0 reaches every window: start from it
        taps = taps[1:]
    else:
        y = np.full((N, C, *out_hw), -np.inf, dtype=x.dtype)  # padding behaves like -inf
    for _, (orow, ocol), (irow, icol) in taps:
        yt = y[:, :, orow, ocol]
        np.maximum(yt, x[:, :, irow, icol], out=yt)  # this tap of every window at once
    # Only references are cached; which element won is worked out again in the backward pass,
    # which is cheaper than tracking it here (and x is kept alive by the layer before anyway).
    cache = {"x": x, "y": y, "kernel": kernel, "stride": stride, "pads": pads}
    return y, cache


def maxpool2d_backward(dy, cache):
    """Each window's gradient goes to its maximum; every other element gets 0.

    On ties the FIRST maximum in row-major window order takes it all, as in PyTorch (ties are
    common: after a ReLU whole windows are 0). Going through the taps in order, a tap wins a
    window if it equals the window's max and no earlier tap has won that window yet.
    """
    if "winner" in cache:
        return _tiled_maxpool_backward(dy, cache)
    x, y = cache["x"], cache["y"]
    N, C, H, W = x.shape
    kernel, stride, pads = cache["kernel"], cache["stride"], cache["pads"]
    out_hw = y.shape[2:]
    overlap = _windows_overlap(kernel, stride)
    # with an exact tiling every element of dx is written below, so no need to zero it first
    exact = _tiles_exactly((H, W), out_hw, kernel, stride, pads)
    dx = np.empty_like(x, dtype=dy.dtype) if exact else np.zeros_like(x, dtype=dy.dtype)
    unclaimed = None  # windows whose max has not been found yet (None: all of them)
    for _, (orow, ocol), (irow, icol) in _taps((H, W), out_hw, kernel, stride, pads):
        wins = x[:, :, irow, icol] == y[:, :, orow, ocol]  # this tap equals its window's max
        covers_all = (orow.stop - orow.start, ocol.stop - ocol.start) == tuple(out_hw)
        if unclaimed is None and covers_all:
            unclaimed = ~wins  # the first tap claims every window it wins
        else:
            if unclaimed is None:
                unclaimed = np.ones(y.shape, dtype=bool)
            uc = unclaimed[:, :, orow, ocol]
            wins &= uc  # only the FIRST maximum of each window ...
            uc ^= wins  # ... after which the window is claimed
        if overlap:
            dx[:, :, irow, icol] += dy[:, :, orow, ocol] * wins  # inputs in several windows add up
        else:
            np.multiply(dy[:, :, orow, ocol], wins, out=dx[:, :, irow, icol])  # one window each
    return dx


def _tiled_maxpool_forward(x, kernel):
    """Windows that tile the input exactly (2x2 windows, stride 2): the max, and which tap won.

    Each tap of every window is a strided view of x; reading those views costs numpy a call
    per output row, so the backward pass should not read them again. The forward pass keeps
    the number of the tap that won each window (the first maximum, as PyTorch: a later tap
    takes over only when strictly greater), and the backward pass writes dy through each tap
    where that tap won, comparing small contiguous arrays only.
    """
    KH, KW = kernel
    taps = [x[:, :, i::KH, j::KW] for i in range(KH) for j in range(KW)]
    y = taps[0].copy()
    winner = np.zeros(y.shape, dtype=np.min_scalar_type(len(taps) - 1))
    greater = np.empty(y.shape, dtype=bool)
    change = np.empty_like(winner)
    for t, tap in enumerate(taps[1:], start=1):
        np.greater(tap, y, out=greater)
        np.maximum(y, tap, out=y)
        # winner = t where greater: winner ^= (winner ^ t) * greater (np.where and masked copies
        # are several times slower on these random masks)
        np.bitwise_xor(winner, t, out=change)
        np.multiply(change, greater, out=change)
        winner ^= change
    return y, {"x_shape": x.shape, "dtype": x.dtype, "kernel": kernel, "winner": winner}


def _tiled_maxpool_backward(dy, cache):
    KH, KW = cache["kernel"]
    winner = cache["winner"]
    dx = np.empty(cache["x_shape"], dtype=dy.dtype)  # every element is written below
    won = np.empty(winner.shape, dtype=bool)
    for t in range(KH * KW):
        np.equal(winner, t, out=won)
        np.multiply(dy, won, out=dx[:, :, t // KW :: KH, t % KW :: KW])
    return dx


# ----------------------------------------------------------------------------------------------
# Average pooling
# ----------------------------------------------------------------------------------------------


def _avg_divisor(x_hw, out_hw, kernel, stride, pads, count_pad, dtype):
    """How many elements each window averages over, shape (OH, OW): the product of the row and
    column counts of cnnc.ops.shapes.avg_pool_counts (the language's rule, defined there)."""
    from ....ops.shapes import avg_pool_counts

    counts = [avg_pool_counts(size, out, k, s, (p0, p1), count_pad)
              for size, out, k, s, p0, p1 in zip(x_hw, out_hw, kernel, stride, pads[0::2],
                                                  pads[1::2])]
    return np.multiply.outer(np.array(counts[0], dtype=np.int64),
                             np.array(counts[1], dtype=np.int64)).astype(dtype)


def avgpool2d_forward(x, *, kernel, stride, pads, out_hw, count_pad=False, divisor=None):
    """y = (sum of the window) / (number of elements counted).

    divisor: the (row counts, column counts) a checked layer settled (layer.settled["divisor"]);
    without it, they are worked out from count_pad by the same rule."""
    N, C, H, W = x.shape
    OH, OW = out_hw
    y = np.zeros((N, C, OH, OW), dtype=x.dtype)
    for _, (orow, ocol), (irow, icol) in _taps((H, W), out_hw, kernel, stride, pads):
        y[:, :, orow, ocol] += x[:, :, irow, icol]
    if divisor is None:
        div = _avg_divisor((H, W), out_hw, kernel, stride, pads, count_pad, x.dtype)
    else:
        div = np.multiply.outer(np.array(divisor[0], dtype=np.int64),
                                np.array(divisor[1], dtype=np.int64)).astype(x.dtype)
    inv_div = 1 / div  # (OH, OW)
    y *= inv_div
    cache = {"x_shape": x.shape, "kernel": kernel, "stride": stride, "pads": pads, "inv_div": inv_div}
    return y, cache


def avgpool2d_backward(dy, cache):
    """Every element of a window receives dy / divisor of that window."""
    N, C, H, W = cache["x_shape"]
    kernel, stride = cache["kernel"], cache["stride"]
    g = dy * cache["inv_div"]  # (N, C, OH, OW): the share each counted element gets
    dx = np.zeros((N, C, H, W), dtype=dy.dtype)
    overlap = _windows_overlap(kernel, stride)
    for _, (orow, ocol), (irow, icol) in _taps((H, W), dy.shape[2:], kernel, stride, cache["pads"]):
        if overlap:
            dx[:, :, irow, icol] += g[:, :, orow, ocol]
        else:
            dx[:, :, irow, icol] = g[:, :, orow, ocol]
    return dx


# ----------------------------------------------------------------------------------------------
# Global pooling: one number per channel
# ----------------------------------------------------------------------------------------------


def global_pool_forward(x, *, mode="avg"):
    """(N, C, H, W) -> (N, C) by averaging or taking the max over all H*W positions."""
    N, C, H, W = x.shape
    flat = x.reshape(N, C, H * W)
    if mode == "avg":
        return flat.mean(axis=2), {"mode": mode, "x_shape": x.shape}
    if mode == "max":
        arg = flat.argmax(axis=2)  # (N, C); argmax returns the FIRST maximum, like torch
        y = np.take_along_axis(flat, arg[:, :, None], axis=2)[:, :, 0]
        return y, {"mode": mode, "x_shape": x.shape, "arg": arg}
    raise ValueError(f"global pool mode must be 'avg' or 'max', not {mode!r}")


def global_pool_backward(dy, cache):
    N, C, H, W = cache["x_shape"]
    if cache["mode"] == "avg":
        # every position contributed 1/(H*W) of the mean
        return np.broadcast_to((dy / (H * W))[:, :, None, None], (N, C, H, W)).copy()
    dx = np.zeros((N, C, H * W), dtype=dy.dtype)
    np.put_along_axis(dx, cache["arg"][:, :, None], dy[:, :, None], axis=2)
    return dx.reshape(N, C, H, W)
