"""Batch normalisation and dropout, forward and backward.

Batch norm normalises every channel (4-D input, statistics over N, H, W) or every feature (2-D
input, statistics over N) to zero mean and unit variance, then scales by gamma and shifts by
beta. In training it uses the batch's own statistics and updates running averages for later
evaluation, exactly as torch.nn.BatchNorm does:

    running_mean = (1 - momentum) * running_mean + momentum * batch_mean
    running_var  = (1 - momentum) * running_var  + momentum * batch_var * n / (n - 1)

i.e. the normalisation uses the biased variance (divide by n) but the running estimate stores
the unbiased one (divide by n - 1).
"""

from __future__ import annotations

import numpy as np


def _stat_axes(x):
    if x.ndim == 4:
        return (0, 2, 3), (1, -1, 1, 1)  # per channel: reduce over N, H, W; reshape (C,) -> (1,C,1,1)
    if x.ndim == 2:
        return (0,), (1, -1)  # per feature
    raise ValueError(f"batchnorm expects a 2-D or 4-D input, got shape {x.shape}")


def batchnorm_forward(x, gamma, beta, running_mean, running_var, *, training, momentum=0.1, eps=1e-5):
    """Returns (y, cache). In training, updates running_mean / running_var IN PLACE."""
    axes, bshape = _stat_axes(x)
    if training:
        n = x.size // x.shape[1]  # values per channel
        mean = x.mean(axis=axes)  # (C,)
        xc = x - mean.reshape(bshape)  # centred input
        var = np.mean(xc * xc, axis=axes)  # biased variance, used to normalise
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * var * (n / max(n - 1, 1))  # unbiased, as torch stores it
    else:
        xc = x - running_mean.reshape(bshape)
        var = running_var
    inv_std = 1.0 / np.sqrt(var + eps)  # (C,)
    xhat = xc * inv_std.reshape(bshape)  # normalised input
    y = xhat * gamma.reshape(bshape) + beta.reshape(bshape)
    cache = {"xhat": xhat, "inv_std": inv_std, "gamma": gamma, "training": training}
    return y, cache


def batchnorm_backward(dy, cache):
    """Returns (dx, dgamma, dbeta)."""
    xhat, inv_std, gamma = cache["xhat"], cache["inv_std"], cache["gamma"]
    axes, bshape = _stat_axes(dy)
    dbeta = dy.sum(axis=axes)  # beta is added to every position of its channel
    dgamma = (dy * xhat).sum(axis=axes)  # gamma multiplies xhat
    scale = (gamma * inv_std).reshape(bshape)
    if not cache["training"]:
        # Eval mode: mean and variance are constants, so y is an affine function of x.
        return dy * scale, dgamma, dbeta
    # Training: the batch mean and variance depend on x too. Differentiating through them gives
    # the well-known compact form (n = values per channel):
    #   dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat))
    n = dy.size // dy.shape[1]
    dx = dy - (dbeta / n).reshape(bshape) - xhat * (dgamma / n).reshape(bshape)
    dx *= scale
    return dx, dgamma, dbeta


def dropout_forward(x, p, rng, training):
    """Inverted dropout: zero each element with probability p and scale survivors by 1/(1-p),
    so the expected value is unchanged and evaluation needs no rescaling. ``rng`` is a
    numpy.random.Generator, so runs are reproducible."""
    if not training or p == 0:
        return x, {"mask": None}
    if p >= 1:
        mask = np.zeros_like(x)
    else:
        keep = rng.random(x.shape, dtype=x.dtype if x.dtype in (np.float32, np.float64) else np.float64) >= p
        mask = keep * np.asarray(1.0 / (1.0 - p), dtype=x.dtype)  # 0 or 1/(1-p)
    return x * mask, {"mask": mask}


def dropout_backward(dy, cache):
    mask = cache["mask"]
    return dy if mask is None else dy * mask


def stochastic_depth_forward(x, p, rng, training, mode="row"):
    """Stochastic depth (Huang et al. 2016), as torchvision.ops.StochasticDepth computes it.

    Put on a residual branch just before the `add`: in training, each EXAMPLE's branch is zeroed
    with probability p ("row": one draw per example, its whole tensor) -- or the whole batch's
    at once ("batch") -- and survivors are scaled by 1/(1-p), so the expectation is unchanged.
    In evaluation it is the identity.
    """
    if not training or p == 0:
        return x, {"mask": None}
    shape = (x.shape[0],) + (1,) * (x.ndim - 1) if mode == "row" else (1,) * x.ndim
    keep = rng.random(shape) >= p  # (N, 1, 1, 1): one draw per example
    mask = (keep * (1.0 / (1.0 - p))).astype(x.dtype)
    return x * mask, {"mask": mask}


def stochastic_depth_backward(dy, cache):
    mask = cache["mask"]
    return dy if mask is None else dy * mask
