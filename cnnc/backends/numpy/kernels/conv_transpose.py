"""Transposed 2-D convolution ("deconvolution"), forward and backward, as PyTorch's
ConvTranspose2d defines it.

A convolution maps a large image to a small one; its transpose maps back, spreading each input
pixel over a kernel-sized patch of the output, patches spaced `stride` apart. It is exactly the
gradient of a convolution with respect to its input, which is how the arithmetic below goes:

    cols (Cout*KH*KW, N*H*W) = W.T @ x        one GEMM per group
    canvas[c, n, h*sh + i*dh, w*sw + j*dw] += cols[c, i, j, n, h, w]     for every tap (i, j)
    y = canvas cropped by the padding (top, bottom, left, right), plus the bias

The canvas is the full output, (H-1)*sh + dh*(KH-1) + 1 rows. Padding crops it (PyTorch's
`padding` crops p from each side); output_padding adds rows at the bottom and columns at the
right, which no tap reaches once the crop has taken none of them away, so they hold the bias
alone. Hence the output size

    out = (in - 1)*s - (pad_before + pad_after) + d*(k - 1) + output_padding + 1

Backward reads the same taps from the cropped-back canvas of dy (im2col), so both passes are
one GEMM per group for the data plus one for the weights.

Shapes (PyTorch layouts): x (N, Cin, H, W), w (Cin, Cout//G, KH, KW), b (Cout,).
"""

from __future__ import annotations

import numpy as np

from .conv import _tap_view


def conv_transpose_output_size(size: int, kernel: int, stride: int = 1, pads=(0, 0),
                               output_padding: int = 0, dilation: int = 1) -> int:
    """Output length along one axis.

    >>> conv_transpose_output_size(4, 3, stride=2, pads=(1, 1), output_padding=1)
    8
    """
    return (size - 1) * stride - pads[0] - pads[1] + dilation * (kernel - 1) + output_padding + 1


def conv_transpose2d_forward(x, w, b=None, *, stride=(1, 1), pads=(0, 0, 0, 0),
                             output_padding=(0, 0), dilation=(1, 1), groups=1):
    """y = conv_transpose(x, w) + b. Returns (y, cache)."""
    N, C, H, W = x.shape
    Cw, Fg, KH, KW = w.shape
    G = groups
    if Cw != C or C % G:
        raise ValueError(f"conv_transpose2d: input has {C} channels, weight {w.shape} "
                         f"with groups={G}")
    F = Fg * G
    sh, sw = stride
    dh, dw = dilation
    pt, pb, pl, pr = pads
    oph, opw = output_padding
    full_h = (H - 1) * sh + dh * (KH - 1) + 1
    full_w = (W - 1) * sw + dw * (KW - 1) + 1
    OH, OW = full_h - pt - pb + oph, full_w - pl - pr + opw
    if OH < 1 or OW < 1:
        raise ValueError(f"conv_transpose2d: output would be {OH}x{OW}")
    dtype = np.result_type(x, w)
    M = N * H * W
    Cg = C // G
    x_cm = x.astype(dtype, copy=False).transpose(1, 0, 2, 3).reshape(G, Cg, M)
    wg = w.astype(dtype, copy=False).reshape(G, Cg, Fg * KH * KW)
    cols = np.matmul(wg.transpose(0, 2, 1), x_cm)  # (G, Fg*KH*KW, M)
    cols = cols.reshape(F, KH, KW, N, H, W)
    # rows below the full output (output_padding past the crop) receive no tap: zeros
    Hc, Wc = max(full_h, pt + OH), max(full_w, pl + OW)
    canvas = np.zeros((F, N, Hc, Wc), dtype=dtype)
    taps = _tap_view(canvas, KH, KW, H, W, stride, dilation, writeable=True)
    for i in range(KH):
        for j in range(KW):
            taps[:, i, j] += cols[:, i, j]  # within one tap no two positions alias
    y = canvas[:, :, pt:pt + OH, pl:pl + OW].transpose(1, 0, 2, 3)
    y = y + b.reshape(F, 1, 1).astype(dtype) if b is not None else np.ascontiguousarray(y)
    cache = {"x_cm": x_cm, "w": w, "has_bias": b is not None, "x_shape": x.shape,
             "canvas": (Hc, Wc), "stride": (sh, sw), "dilation": (dh, dw), "pads": pads,
             "groups": G}
    return y, cache


def conv_transpose2d_backward(dy, cache, *, need_dx=True):
    """Gradients of conv_transpose2d. Returns (dx, dw, db); db is None without bias."""
    w = cache["w"]
    N, C, H, W = cache["x_shape"]
    Cw, Fg, KH, KW = w.shape
    G = cache["groups"]
    F, Cg = Fg * G, C // G
    pt, _, pl, _ = cache["pads"]
    Hc, Wc = cache["canvas"]
    OH, OW = dy.shape[2:]
    dtype = np.result_type(dy, w)
    dcanvas = np.zeros((F, N, Hc, Wc), dtype=dtype)
    dcanvas[:, :, pt:pt + OH, pl:pl + OW] = dy.transpose(1, 0, 2, 3)
    # im2col of the output gradient: what every tap of every input pixel wrote to
    dcols = _tap_view(dcanvas, KH, KW, H, W, cache["stride"], cache["dilation"]).copy()
    dcols = dcols.reshape(G, Fg * KH * KW, N * H * W)
    db = dy.sum(axis=(0, 2, 3)) if cache["has_bias"] else None
    dw = np.matmul(cache["x_cm"], dcols.transpose(0, 2, 1)).reshape(w.shape)
    if not need_dx:
        return None, dw, db
    wg = w.astype(dtype, copy=False).reshape(G, Cg, Fg * KH * KW)
    dx = np.matmul(wg, dcols).reshape(C, N, H, W).transpose(1, 0, 2, 3)
    return np.ascontiguousarray(dx), dw, db
