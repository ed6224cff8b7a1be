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

Ungrouped convolutions: two faster layouts
------------------------------------------
Most convolutions have groups == 1. For them the channel-major layout costs two transposes
whose inner runs are one output row long (OW numbers: numpy's per-row overhead dominates on
small images) and an input gradient built from KH*KW thin GEMMs. Two other layouts avoid that,
and each wins where the other loses, by the length of the contiguous runs its im2col copies:

* sample-major, when one image row (OW numbers) is longer than one kernel row of channels
  (KW*C numbers) -- a first layer on grey or RGB images. Columns are ``(N, C*KH*KW, OH*OW)``;
  the forward pass is one GEMM per image, ``W (F, K) @ cols[n] (K, P)``, whose result is
  already NCHW: no transpose at all. dW sums the per-image products; dx is one GEMM per image
  and a col2im over KH*KW taps.
* position-major otherwise -- every layer past the first, where channels are many and images
  small. The input is padded into NHWC once; columns are ``(N*OH*OW, KH*KW*C)`` with runs of
  KW*C contiguous numbers; forward, dW and each tap of dx are one GEMM each over all images,
  and only y and dy cross between NCHW and this layout (inner runs of OH*OW or F numbers).

Measured on benchmarks/numpy_backend.py's model (batch 64, one thread, CPU time), the two
convolutions' forward and backward went from 36 to 27 ms of a training step: the first
layer (C = 1) from 5.1 to about 1.5 ms, the second (C = 32, 14x14) from 30.5 to about 21.

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
    w = w.astype(dtype, copy=False)
    depthwise = Cg == 1 and F // G <= 4

    if G == 1 and not depthwise:
        layout = _ungrouped_layout(C, KW, OW)
        run = _sample_major_forward if layout == "sample" else _position_major_forward
        y, cols, xp_shape = run(x, w, b, pads, (sh, sw), (dh, dw), OH, OW)
        cache = {
            "layout": layout, "cols": cols, "w": w, "has_bias": b is not None, "x_shape": x.shape,
            "xp_shape": xp_shape, "stride": (sh, sw), "dilation": (dh, dw), "pads": (pt, pb, pl, pr),
            "groups": 1, "out": (OH, OW, OW),
        }
        return y, cache

    # With a horizontal stride of 1 we compute all Wp columns of each output row (see the
    # module docstring); otherwise just the OW real ones.
    OWc = Wp if sw == 1 else OW
    extra_rows = 1 if sw == 1 else 0
    M = N * OH * OWc  # output positions, all images together

    if depthwise:
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
        **saved, "layout": "channel", "w": w, "has_bias": b is not None, "x_shape": x.shape,
        "xp_shape": xp.shape,
        "stride": (sh, sw), "dilation": (dh, dw), "pads": (pt, pb, pl, pr), "groups": G,
        "out": (OH, OW, OWc),
    }
    return y, cache


def conv2d_backward(dy, cache, *, need_dx=True):
    """Gradients of conv2d.  Returns (dx, dw, db); db is None without bias.

    ``need_dx=False`` skips the input gradient (returned as None) -- the first layer of a
    network never needs it, and it is a third of the layer's backward cost.
    """
    if cache["layout"] == "sample":
        return _sample_major_backward(dy, cache, need_dx)
    if cache["layout"] == "position":
        return _position_major_backward(dy, cache, need_dx)
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


# ----------------------------------------------------------------------------------------------
# groups == 1: sample-major and position-major columns (see the module docstring)
# ----------------------------------------------------------------------------------------------


def _ungrouped_layout(C: int, KW: int, OW: int) -> str:
    """"sample" when an output row is the longer contiguous run for im2col to copy, else
    "position" (a kernel row of channels, KW*C numbers, is)."""
    return "sample" if OW > KW * C else "position"


def _zero_border(xp: np.ndarray, pads, rows_axis: int) -> None:
    """Zero the padding of xp, whose rows and columns are axes rows_axis and rows_axis + 1;
    the interior is about to be overwritten."""
    pt, pb, pl, pr = pads
    H, W = xp.shape[rows_axis] - pt - pb, xp.shape[rows_axis + 1] - pl - pr
    lead = (slice(None),) * rows_axis
    for index in ((slice(0, pt),), (slice(pt + H, None),), (slice(pt, pt + H), slice(0, pl)),
                  (slice(pt, pt + H), slice(pl + W, None))):
        xp[lead + index] = 0


def _strided(xp, shape, strides, writeable=False):
    # Different kernel taps overlap in memory: write through such a view one tap at a time.
    return as_strided(xp, shape=shape, strides=strides, writeable=writeable)


def _sample_major_forward(x, w, b, pads, stride, dilation, OH, OW):
    """Columns (N, C*KH*KW, OH*OW); y[n] = W @ cols[n], already NCHW."""
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    pt, pb, pl, pr = pads
    xp = _scratch.get("xp", (N, C, H + pt + pb, W + pl + pr), x.dtype)
    _zero_border(xp, pads, 2)
    xp[:, :, pt : pt + H, pl : pl + W] = x
    sn, sc, srow, scol = xp.strides
    taps = _strided(xp, (N, C, KH, KW, OH, OW), (sn, sc, dh * srow, dw * scol, sh * srow, sw * scol))
    # a copy even where the view is already contiguous (1x1, unpadded): xp is scratch
    cols = taps.copy().reshape(N, C * KH * KW, OH * OW)  # kept for dW
    y = np.matmul(w.reshape(F, -1), cols)  # (N, F, OH*OW): one GEMM per image
    if b is not None:
        y += b[:, None]
    return y.reshape(N, F, OH, OW), cols, xp.shape


def _sample_major_backward(dy, cache, need_dx):
    w, cols = cache["w"], cache["cols"]
    N, C, H, W = cache["x_shape"]
    F, _, KH, KW = w.shape
    OH, OW, _ = cache["out"]
    dtype = np.result_type(dy, w)
    dy = np.ascontiguousarray(dy, dtype=dtype)
    db = dy.sum(axis=(0, 2, 3)) if cache["has_bias"] else None
    d3 = dy.reshape(N, F, OH * OW)
    # dW = sum over images of dy[n] @ cols[n].T; the (N, F, K) partial products are small
    # because this layout is only chosen for few input channels.
    dw = np.matmul(d3, cols.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)
    if not need_dx:
        return None, dw, db
    dcols = np.matmul(w.reshape(F, -1).T, d3, out=_scratch.get("dcols", cols.shape, dtype))
    dcols = dcols.reshape(N, C, KH, KW, OH, OW)
    dxp = _scratch.get("dxp", cache["xp_shape"], dtype)  # (N, C, Hp, Wp)
    dxp.fill(0)
    (sh, sw), (dh, dw_) = cache["stride"], cache["dilation"]
    sn, sc, srow, scol = dxp.strides
    taps = _strided(dxp, (N, C, KH, KW, OH, OW), (sn, sc, dh * srow, dw_ * scol, sh * srow, sw * scol),
                    writeable=True)
    for i in range(KH):
        for j in range(KW):  # col2im: within one tap no two positions alias, so += is exact
            taps[:, :, i, j] += dcols[:, :, i, j]
    pt, _, pl, _ = cache["pads"]
    return dxp[:, :, pt : pt + H, pl : pl + W].copy(), dw, db


def _position_major_forward(x, w, b, pads, stride, dilation, OH, OW):
    """Columns (N*OH*OW, KH*KW*C) read from the input padded into NHWC; y_pm = cols @ W.T."""
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    pt, pb, pl, pr = pads
    xp = _scratch.get("xp", (N, H + pt + pb, W + pl + pr, C), x.dtype)
    _zero_border(xp, pads, 1)
    xp[:, pt : pt + H, pl : pl + W] = x.transpose(0, 2, 3, 1)  # pad and go channels-last: one pass
    sn, srow, scol, sc = xp.strides
    taps = _strided(xp, (N, OH, OW, KH, KW, C), (sn, sh * srow, sw * scol, dh * srow, dw * scol, sc))
    # a copy even where the view is already contiguous (1x1, unpadded): xp is scratch
    cols = taps.copy().reshape(N * OH * OW, KH * KW * C)  # kept for dW
    w_pm = w.transpose(0, 2, 3, 1).reshape(F, KH * KW * C)  # w's rows in the columns' order
    y_pm = np.matmul(cols, w_pm.T, out=_scratch.get("y_pm", (N * OH * OW, F), x.dtype))
    y = np.empty((N, F, OH, OW), dtype=x.dtype)
    to_nchw = y_pm.reshape(N, OH * OW, F).transpose(0, 2, 1)
    if b is None:
        np.copyto(y.reshape(N, F, OH * OW), to_nchw)
    else:  # the transpose and the bias share one pass
        np.add(to_nchw, b[:, None], out=y.reshape(N, F, OH * OW))
    return y, cols, xp.shape


def _position_major_backward(dy, cache, need_dx):
    w, cols = cache["w"], cache["cols"]
    N, C, H, W = cache["x_shape"]
    F, _, KH, KW = w.shape
    OH, OW, _ = cache["out"]
    M = N * OH * OW
    dtype = np.result_type(dy, w)
    db = dy.sum(axis=(0, 2, 3), dtype=dtype) if cache["has_bias"] else None
    dy_pm = _scratch.get("dy_pm", (N, OH * OW, F), dtype)
    np.copyto(dy_pm, dy.reshape(N, F, OH * OW).transpose(0, 2, 1))
    dy_pm = dy_pm.reshape(M, F)
    dw = np.matmul(dy_pm.T, cols)  # (F, KH*KW*C), rows in (kh, kw, c) order
    dw = np.ascontiguousarray(dw.reshape(F, KH, KW, C).transpose(0, 3, 1, 2))
    if not need_dx:
        return None, dw, db
    # dx one kernel tap at a time: the tap's share of every position, (M, F) @ (F, C), added
    # into the padded NHWC gradient where im2col read that tap (contiguous runs of OW*C).
    dxp = _scratch.get("dxp", cache["xp_shape"], dtype)  # (N, Hp, Wp, C)
    dxp.fill(0)
    (sh, sw), (dh, dw_) = cache["stride"], cache["dilation"]
    sn, srow, scol, sc = dxp.strides
    taps = _strided(dxp, (N, OH, OW, KH, KW, C), (sn, sh * srow, sw * scol, dh * srow, dw_ * scol, sc),
                    writeable=True)
    w_taps = np.ascontiguousarray(w.transpose(2, 3, 0, 1))  # (KH, KW, F, C): BLAS-ready
    dtap = _scratch.get("dtap", (M, C), dtype)
    for i in range(KH):
        for j in range(KW):
            np.matmul(dy_pm, w_taps[i, j], out=dtap)
            taps[:, :, :, i, j] += dtap.reshape(N, OH, OW, C)
    pt, _, pl, _ = cache["pads"]
    return np.ascontiguousarray(dxp[:, pt : pt + H, pl : pl + W].transpose(0, 3, 1, 2)), dw, db


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
