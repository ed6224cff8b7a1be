"""2-D convolution, forward and backward, as im2col + matrix multiplies.

A convolution slides a small filter over the image and takes a dot product at every position:
``N*F*OH*OW*C*KH*KW`` multiply-adds, which as Python loops would take minutes. The standard
trick is *im2col*: copy every receptive field (the C*KH*KW numbers one output position looks
at) into a column of a big matrix, after which the whole layer is a single matrix product that
the BLAS library runs at close to the machine's peak speed.

Shapes used throughout (PyTorch conventions)::

    x     (N, C, H, W)          input activations
    w     (F, C//G, KH, KW)     filters, G = groups
    b     (F,)                  bias (optional)
    y     (N, F, OH, OW)        output

Layout choice -- why "channel-major" columns
--------------------------------------------
The column matrix is laid out as ``(C, KH, KW, N, OH, OW)``: rows are indexed by (input
channel, kernel row, kernel column) -- exactly the order of ``w.reshape(F, -1)`` -- and columns
by (image, output row, output column). With K = C*KH*KW and P = OH*OW:

    forward      y_cm  (F, N*P)  = W (F, K) @ cols (K, N*P)
    weight grad  dW    (F, K)    = dy_cm (F, N*P) @ cols.T (N*P, K)
    input grad   for each kernel tap (i, j):
                 dtap  (C, N*P)  = W[:, :, i, j].T (C, F) @ dy_cm (F, N*P),
                 added into the input gradient at that tap's shift ("col2im")

Forward and weight gradient are ONE large GEMM each (one per group), with no batch-sized
temporaries, at the price of two cheap transposes between NCHW and the channel-major
``(F, N, OH, OW)`` layout of y and dy. (A sample-major layout would give NCHW directly but needs
a batch of small GEMMs and a (N, F, K) temporary for dW; measured, it is slower here.)

Speed trick -- computing whole padded rows when the horizontal stride is 1
--------------------------------------------------------------------------
When ``stride_w == 1`` we compute the output for *every* column of the padded width Wp instead
of only the OW real ones. The extra (Wp - OW) columns per row are garbage and are simply
dropped, but now an output row and the next one are adjacent in memory in both the input and
the column matrix, so im2col and col2im move long contiguous runs (OH*Wp numbers) instead of
many short rows of OW numbers. That makes the copies 2-4x faster for about 7-15% more GEMM
work on small images -- a clear win measured on the benchmark model. The garbage columns read
past the end of a padded row into the next row (or into one spare zero row we allocate per
image), so every read stays inside the buffer.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numpy.lib.stride_tricks import as_strided


def conv_output_size(size: int, kernel: int, stride: int, dilation: int, pad_total: int) -> int:
    """Number of output positions along one axis (floor mode, as every framework does for conv)."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


# ----------------------------------------------------------------------------------------------
# Scratch memory
# ----------------------------------------------------------------------------------------------
# Fresh memory is surprisingly expensive: the operating system maps and zeroes every 4 KiB page
# on first touch. On the 2-core VM this code is benchmarked on that costs ~0.8 ms per MB, versus
# ~0.03 ms per MB to overwrite memory we already own -- for this layer's temporaries it would be
# several milliseconds per training step. Temporaries that never leave a kernel call (padded
# input, raw GEMM output, channel-major dy, per-tap input gradient) are therefore carved out of a
# few flat buffers that are kept between calls. Each thread gets its own buffers.


class _Scratch(threading.local):
    def __init__(self):
        self.buffers: dict[tuple[str, np.dtype], np.ndarray] = {}

    def get(self, name: str, shape, dtype) -> np.ndarray:
        """An uninitialised array of ``shape``, valid until the next get() with the same name."""
        dtype = np.dtype(dtype)
        size = math.prod(shape)
        buf = self.buffers.get((name, dtype))
        if buf is None or buf.size < size:
            buf = self.buffers[(name, dtype)] = np.empty(size, dtype=dtype)
        return buf[:size].reshape(shape)


_scratch = _Scratch()


def release_scratch() -> None:
    """Free the scratch buffers of the calling thread (they are re-created on demand)."""
    _scratch.buffers.clear()


# ----------------------------------------------------------------------------------------------
# im2col helpers
# ----------------------------------------------------------------------------------------------


def _padded_channel_major(x: np.ndarray, pads, extra_rows: int, keep: bool = False) -> np.ndarray:
    """Zero-pad x and move channels first: (N, C, H, W) -> (C, N, Hp + extra_rows, Wp).

    Padding and the transpose to channel-major happen in the same pass. The result lives in
    scratch memory (it is only read by im2col) unless ``keep``. ``extra_rows`` zero rows at the
    bottom of every image give the "whole padded row" garbage columns somewhere harmless to read.
    """
    N, C, H, W = x.shape
    pt, pb, pl, pr = pads
    Hx, Wp = H + pt + pb + extra_rows, W + pl + pr
    xp = np.empty((C, N, Hx, Wp), x.dtype) if keep else _scratch.get("xp", (C, N, Hx, Wp), x.dtype)
    # zero only the border; the interior is overwritten right after
    xp[:, :, :pt] = 0
    xp[:, :, pt + H :] = 0
    xp[:, :, pt : pt + H, :pl] = 0
    xp[:, :, pt : pt + H, pl + W :] = 0
    xp[:, :, pt : pt + H, pl : pl + W] = x.transpose(1, 0, 2, 3)
    return xp


def _tap_view(xp: np.ndarray, KH, KW, OH, OWc, stride, dilation, writeable=False) -> np.ndarray:
    """A strided *view* of xp with shape (C, KH, KW, N, OH, OWc) -- no copy.

    view[c, i, j, n, oh, ow] = xp[c, n, oh*sh + i*dh, ow*sw + j*dw]
    i.e. the input pixel that kernel tap (i, j) multiplies for output position (oh, ow).
    """
    C, N, _, _ = xp.shape
    sc, sn, srow, scol = xp.strides
    sh, sw = stride
    dh, dw = dilation
    return as_strided(
        xp,
        shape=(C, KH, KW, N, OH, OWc),
        strides=(sc, dh * srow, dw * scol, sn, sh * srow, sw * scol),
        # Different taps overlap in memory, so writing through this view is only safe one tap
        # at a time (col2im does exactly that); im2col asks for a read-only view.
        writeable=writeable,
    )


# ----------------------------------------------------------------------------------------------
# The layer
# ----------------------------------------------------------------------------------------------


def conv2d_forward(x, w, b=None, *, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """y = conv(x, w) + b.  Returns (y, cache).

    stride, dilation: (vertical, horizontal); pads: (top, bottom, left, right); groups splits
    the channels into ``groups`` independent convolutions (groups == C is "depthwise").
    """
    N, C, H, W = x.shape
    F, Cg, KH, KW = w.shape
    G = groups
    if Cg * G != C or F % G != 0:
        raise ValueError(f"conv2d: input has {C} channels, weight {w.shape} with groups={G}")
    sh, sw = stride
    dh, dw = dilation
    pt, pb, pl, pr = pads
    Hp, Wp = H + pt + pb, W + pl + pr
    OH = conv_output_size(H, KH, sh, dh, pt + pb)
    OW = conv_output_size(W, KW, sw, dw, pl + pr)
    if OH < 1 or OW < 1:
        raise ValueError(f"conv2d: kernel {KH}x{KW} does not fit the padded {Hp}x{Wp} input")
    dtype = np.result_type(x, w)
    x = x.astype(dtype, copy=False)

    # With a horizontal stride of 1 we compute all Wp columns of each output row (see the
    # module docstring); otherwise just the OW real ones.
    OWc = Wp if sw == 1 else OW
    extra_rows = 1 if sw == 1 else 0
    M = N * OH * OWc  # output positions, all images together

    if Cg == 1 and F // G <= 4:
        # Depthwise (each filter sees ONE input channel, and few filters share it): im2col
        # would copy the input KH*KW times for GEMMs whose dot products are only KH*KW long.
        # Instead multiply-accumulate the kernel taps straight from strided views of the
        # padded input. (With many filters per channel -- e.g. a first layer on grey images,
        # C = 1, F = 32 -- one real GEMM is faster, so that case stays on the im2col path.)
        xp = _padded_channel_major(x, pads, extra_rows, keep=True)  # (C, N, Hp(+1), Wp)
        y_cm = _depthwise_forward(xp, w, OH, OWc, stride, dilation).reshape(F, N, OH, OWc)
        saved = {"xp": xp}
    else:
        xp = _padded_channel_major(x, pads, extra_rows)  # (C, N, Hp(+1), Wp), scratch
        # im2col: copy the strided view into a contiguous matrix. numpy merges the (OH, OWc)
        # axes into one long contiguous run when sw == sh == 1, so this is close to a memcpy.
        # (An explicit copy: xp is scratch memory, and cols is kept for the backward pass.)
        cols = _tap_view(xp, KH, KW, OH, OWc, stride, dilation).copy()  # (C, KH, KW, N, OH, OWc)
        K = Cg * KH * KW  # numbers one output looks at, per group
        cols = cols.reshape(G, K, M)  # rows (c, i, j) within each group; matches w's layout
        wg = w.reshape(G, F // G, K)  # (G, Fg, K)
        # The whole layer in one GEMM per group: (G, Fg, K) @ (G, K, M) -> (G, Fg, M) == (F, M)
        y_cm = np.matmul(wg, cols, out=_scratch.get("y_cm", (G, F // G, M), dtype))
        y_cm = y_cm.reshape(F, N, OH, OWc)
        saved = {"cols": cols}
    y_cm = y_cm[:, :, :, :OW]  # drop the garbage columns (a view)

    # Back to NCHW; the transpose copy and the bias add share one pass over memory.
    y = np.empty((N, F, OH, OW), dtype=dtype)
    if b is None:
        np.copyto(y, y_cm.transpose(1, 0, 2, 3))
    else:
        np.add(y_cm.transpose(1, 0, 2, 3), b.reshape(F, 1, 1), out=y)

    cache = {
        **saved, "w": w, "has_bias": b is not None, "x_shape": x.shape, "xp_shape": xp.shape,
        "stride": (sh, sw), "dilation": (dh, dw), "pads": (pt, pb, pl, pr), "groups": G,
        "out": (OH, OW, OWc),
    }
    return y, cache


def conv2d_backward(dy, cache, *, need_dx=True):
    """Gradients of conv2d.  Returns (dx, dw, db); db is None without bias.

    ``need_dx=False`` skips the input gradient (returned as None) -- the first layer of a
    network never needs it, and it is a third of the layer's backward cost.
    """
    w = cache["w"]
    N, C, H, W = cache["x_shape"]
    F, Cg, KH, KW = w.shape
    G, Fg = cache["groups"], F // cache["groups"]
    OH, OW, OWc = cache["out"]
    pt, pb, pl, pr = cache["pads"]
    M = N * OH * OWc
    dtype = np.result_type(dy, w)

    # dy to channel-major (F, N, OH, OWc). The garbage columns get a ZERO gradient: they were
    # never part of the output, so they must not contribute to dW or dx.
    dy_cm = _scratch.get("dy_cm", (F, N, OH, OWc), dtype)
    dy_cm[:, :, :, OW:] = 0
    dy_cm[:, :, :, :OW] = dy.transpose(1, 0, 2, 3)
    dy_cm = dy_cm.reshape(G, Fg, M)

    # Bias: every output position adds b[f] once, so db[f] is the sum of dy over N, OH, OW.
    db = dy_cm.reshape(F, M).sum(axis=1) if cache["has_bias"] else None

    if "xp" in cache:  # depthwise: no column matrix, see the forward pass
        return _depthwise_backward(dy_cm.reshape(F, N, OH, OWc), cache, need_dx) + (db,)

    # Weights: dW[f, k] = sum over positions of dy[f, pos] * cols[k, pos] -- one GEMM per group.
    cols = cache["cols"]
    dw = np.matmul(dy_cm, cols.transpose(0, 2, 1)).reshape(w.shape)  # (G, Fg, K) -> (F, Cg, KH, KW)

    if not need_dx:
        return None, dw, db

    # Input. Every input pixel was copied into the column matrix once per kernel tap that saw
    # it, so its gradient is the SUM over those copies ("col2im"). We go one kernel tap at a
    # time: the gradient of tap (i, j)'s copy is  w[:, :, i, j].T @ dy  -- a (C, N*OH*OWc)
    # GEMM -- which we add into the padded input gradient through the same strided view that
    # im2col read from. Within one tap no two positions alias, so "+=" is exact. Doing it per
    # tap (rather than one GEMM for all taps) keeps the temporary small and hot in cache.
    dxp = _scratch.get("dxp", cache["xp_shape"], dtype)  # (C, N, Hp(+1), Wp)
    dxp.fill(0)
    taps = _tap_view(dxp, KH, KW, OH, OWc, cache["stride"], cache["dilation"], writeable=True)
    w_taps = w.reshape(G, Fg, Cg, KH, KW).transpose(3, 4, 0, 2, 1)  # (KH, KW, G, Cg, Fg)
    dtap = _scratch.get("dtap", (G, Cg, M), dtype)
    for i in range(KH):
        for j in range(KW):
            if Fg == 1:  # one filter per group: the "matmul" over Fg is a broadcast product,
                np.multiply(w_taps[i, j], dy_cm, out=dtap)  # much faster than a batch of GEMVs
            else:
                np.matmul(w_taps[i, j], dy_cm, out=dtap)  # (G, Cg, Fg) @ (G, Fg, M) -> (C, M)
            taps[:, i, j] += dtap.reshape(C, N, OH, OWc)
    return _unpad_to_nchw(dxp, cache), dw, db


def _unpad_to_nchw(dxp, cache):
    """Drop the padding (its gradient goes nowhere) and return to NCHW, as a new array."""
    N, C, H, W = cache["x_shape"]
    pt, _, pl, _ = cache["pads"]
    return dxp[:, :, pt : pt + H, pl : pl + W].transpose(1, 0, 2, 3).copy()


# ----------------------------------------------------------------------------------------------
# Depthwise convolution (C//groups == 1): taps multiplied straight from strided views
# ----------------------------------------------------------------------------------------------
# Filter f = c*Fg + m (m < Fg, the "depth multiplier") sees only input channel c, so
#     y[c, m, pos] = sum over taps (i, j) of w[c, m, i, j] * x_tap_ij[c, pos]
# -- KH*KW broadcast multiply-adds over the whole output, no column matrix needed.


def _depthwise_forward(xp, w, OH, OWc, stride, dilation):
    C, N = xp.shape[:2]
    F, _, KH, KW = w.shape
    wd = w.reshape(C, F // C, KH, KW, 1, 1, 1)  # (C, Fg, KH, KW) + room to broadcast (N, OH, OWc)
    taps = _tap_view(xp, KH, KW, OH, OWc, stride, dilation)  # (C, KH, KW, N, OH, OWc) view
    dtype = np.result_type(xp, w)
    y = _scratch.get("y_cm", (C, F // C, N, OH, OWc), dtype)  # (C, Fg, N, OH, OWc)
    prod = _scratch.get("dw_prod", y.shape, dtype)
    for i in range(KH):
        for j in range(KW):
            if i == j == 0:
                np.multiply(wd[:, :, i, j], taps[:, None, i, j], out=y)
            else:
                np.multiply(wd[:, :, i, j], taps[:, None, i, j], out=prod)
                y += prod
    return y


def _depthwise_backward(dy_cm, cache, need_dx):
    """dy_cm (F, N, OH, OWc) with zero garbage columns. Returns (dx, dw)."""
    xp, w = cache["xp"], cache["w"]
    F, _, KH, KW = w.shape
    C = xp.shape[0]
    OH, _, OWc = cache["out"]
    dy5 = dy_cm.reshape(C, F // C, *dy_cm.shape[1:])  # (C, Fg, N, OH, OWc)
    taps = _tap_view(xp, KH, KW, OH, OWc, cache["stride"], cache["dilation"])
    # dW[c, m, i, j] = sum over positions of dy[c, m, pos] * x_tap_ij[c, pos]
    dw = np.empty(w.shape, dtype=dy5.dtype).reshape(C, F // C, KH, KW)
    for i in range(KH):
        for j in range(KW):
            dw[:, :, i, j] = np.einsum("cmnhw,cnhw->cm", dy5, taps[:, i, j])
    dw = dw.reshape(w.shape)
    if not need_dx:
        return None, dw
    # dx_tap_ij[c, pos] += sum over m of w[c, m, i, j] * dy[c, m, pos], added at the tap's shift
    dxp = _scratch.get("dxp", xp.shape, dy5.dtype)
    dxp.fill(0)
    dx_taps = _tap_view(dxp, KH, KW, OH, OWc, cache["stride"], cache["dilation"], writeable=True)
    wd = w.reshape(C, F // C, KH, KW)
    for i in range(KH):
        for j in range(KW):
            dx_taps[:, i, j] += np.einsum("cm,cmnhw->cnhw", wd[:, :, i, j], dy5)
    return _unpad_to_nchw(dxp, cache), dw
