"""Layer normalisation, forward and backward.

Layer norm normalises each example's values at each position over its CHANNELS (4-D input
``(N, C, H, W)``: statistics over C, separately for every n, h, w -- ConvNeXt's LayerNorm2d) or
over its FEATURES (2-D input ``(N, F)``, torch.nn.LayerNorm(F)), then scales by gamma and
shifts by beta, both per channel:

    y = (x - mean) / sqrt(var + eps) * gamma + beta      (var: the biased variance, / C)

Unlike batch norm it has no running statistics: training and evaluation compute the same thing.
"""

from __future__ import annotations

import numpy as np


def _bshape(x) -> tuple:
    """How a per-channel (C,) vector broadcasts against x."""
    if x.ndim == 4:
        return (1, -1, 1, 1)
    if x.ndim == 2:
        return (1, -1)
    raise ValueError(f"layernorm expects a 2-D or 4-D input, got shape {x.shape}")


def layernorm_forward(x, gamma, beta, *, eps=1e-5):
    """Returns (y, cache); statistics over axis 1 (channels or features)."""
    bshape = _bshape(x)
    mean = x.mean(axis=1, keepdims=True)  # (N, 1, H, W): one mean per example and position
    xc = x - mean
    var = np.mean(xc * xc, axis=1, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + eps)  # (N, 1, H, W)
    xhat = xc * inv_std
    y = xhat * gamma.reshape(bshape) + beta.reshape(bshape)
    return y, {"xhat": xhat, "inv_std": inv_std, "gamma": gamma}


def layernorm_backward(dy, cache):
    """Returns (dx, dgamma, dbeta)."""
    xhat, inv_std, gamma = cache["xhat"], cache["inv_std"], cache["gamma"]
    bshape = _bshape(dy)
    sum_axes = (0, 2, 3) if dy.ndim == 4 else (0,)  # gamma and beta are shared by these
    dbeta = dy.sum(axis=sum_axes)
    dgamma = (dy * xhat).sum(axis=sum_axes)
    # The mean and variance depend on x through the same channel axis that is normalised, so
    # batch norm's compact form holds with the roles swapped (means over channels, not N):
    #   dx = inv_std * (g - mean_c(g) - xhat * mean_c(g * xhat)),   g = dy * gamma
    g = dy * gamma.reshape(bshape)
    dx = g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True)
    dx *= inv_std
    return dx, dgamma, dbeta
