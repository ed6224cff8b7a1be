"""Element-wise activations (and softmax), forward and backward side by side.

``activation_forward(x, kind, **params) -> (y, cache)`` and ``activation_backward(dy, cache)``.
Each activation caches whatever makes its derivative cheapest: for ReLU, tanh and sigmoid the
derivative can be written with the OUTPUT y alone (e.g. tanh' = 1 - y**2), so we keep y; for the
others we keep x.

The derivatives at kinks follow PyTorch exactly (relu'(0) = 0, relu6'(6) = 0, leaky_relu'(0) =
slope), so that this reference and the PyTorch backend agree bit for bit on where gradients flow.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.polynomial import chebyshev as _cheb

# ----------------------------------------------------------------------------------------------
# erf / erfc without scipy
# ----------------------------------------------------------------------------------------------
# Exact GELU needs erf, which numpy lacks (and math.erf is scalar only). We use the classic
# representation, valid for z >= 0,
#
#     erfc(z) = exp(-z**2) * h(t),     t = 2 / (2 + z)  in (0, 1]
#
# where h is smooth and slowly varying (h ~ 1/(z*sqrt(pi)) for large z). We build a Chebyshev
# interpolant of h ONCE, at import time, from Python's own math.erfc at the Chebyshev nodes, and
# evaluate it vectorised with numpy's Clenshaw recurrence. Degree 24 gives ~1e-14 absolute error
# (float64 gradient checks need that); degree 12 gives ~1e-9, plenty for float32 and twice as fast.


def _h_scalar(z: float) -> float:
    """h(z) = erfc(z) * exp(z**2), computed accurately for any z >= 0."""
    if z < 25.0:
        return math.erfc(z) * math.exp(z * z)
    # For large z, erfc underflows; use the asymptotic series, which is accurate to 1e-17 here.
    total, term = 1.0, 1.0
    for k in range(1, 12):
        term *= -(2 * k - 1) / (2 * z * z)
        total += term
    return total / (z * math.sqrt(math.pi))


def _fit_h(degree: int) -> np.ndarray:
    def h_of_u(u):  # u in [-1, 1] (Chebyshev's interval) -> t = (u + 1)/2 -> z = 2/t - 2
        t = (np.asarray(u, dtype=np.float64) + 1.0) / 2.0
        return np.array([_h_scalar(2.0 / ti - 2.0) if ti > 0 else 0.0 for ti in np.ravel(t)])

    return _cheb.chebinterpolate(h_of_u, degree)


_H_COEF = {np.dtype(np.float64): _fit_h(24), np.dtype(np.float32): _fit_h(12).astype(np.float32)}


def erfc(x: np.ndarray) -> np.ndarray:
    """Vectorised complementary error function, accurate to ~1e-14 (float64) / ~1e-8 (float32)."""
    x = np.asarray(x)
    if x.dtype not in _H_COEF:
        x = x.astype(np.float64)
    coef = _H_COEF[x.dtype]
    z = np.abs(x)
    u = 4.0 / (2.0 + z) - 1.0  # 2*t - 1, the Chebyshev variable in [-1, 1]
    out = np.exp(-z * z) * _cheb.chebval(u, coef)
    # erfc(-z) = 2 - erfc(z), i.e. add (2 - 2*out) where x < 0 (arithmetic, not np.where: see
    # the note on np.where below)
    out += (x < 0) * (2.0 - 2.0 * out)
    return out.astype(x.dtype, copy=False)


def erf(x: np.ndarray) -> np.ndarray:
    """Vectorised error function, 1 - erfc(x); near 0 (where that would lose relative
    precision) the Taylor series  2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))  instead."""
    x = np.asarray(x)
    out = np.atleast_1d(1.0 - erfc(x))
    xs = np.atleast_1d(x).astype(out.dtype)
    small = np.abs(xs) < 0.5
    if small.any():
        z = xs[small]
        term, total, z2 = z, z.copy(), z * z
        for n in range(1, 13):  # 0.5**25 / 12! is far below float64 precision
            term = term * (-z2) / n
            total += term / (2 * n + 1)
        out[small] = total * (2.0 / math.sqrt(math.pi))
    return out.reshape(np.shape(x))


# ----------------------------------------------------------------------------------------------
# The activations. Each entry: forward(x, **params) -> (y, saved); backward(dy, saved, **params).
# ----------------------------------------------------------------------------------------------
# A performance note: piecewise functions are written with masks used as 0/1 numbers
# (``dy * (x > 0)``) rather than np.where. np.where branches per element, and on activations
# that are positive about half the time, at random, it is ~10x slower than the arithmetic form.

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _relu_f(x):
    y = np.maximum(x, 0)
    return y, y


def _relu_b(dy, y):
    # relu' is 1 where the output is positive, else 0 (also at exactly 0, as torch).
    return dy * (y > 0)


def _relu6_f(x):
    return np.clip(x, 0, 6), x


def _relu6_b(dy, x):
    return dy * ((x > 0) & (x < 6))


def _leaky_f(x, slope=0.01):
    # y = x * k with k = 1 where x > 0, else slope. k is also exactly the derivative: keep it.
    k = (x > 0).astype(x.dtype)
    k *= 1 - slope
    k += slope
    return x * k, k


def _leaky_b(dy, k, slope=0.01):
    return dy * k


def _elu_f(x, alpha=1.0):
    # x for x > 0, alpha*(exp(x) - 1) otherwise. Both pieces at once: for x > 0 the second term
    # is alpha*expm1(0) = 0, for x <= 0 the first is 0. (expm1 avoids cancellation near 0, and
    # the min() keeps exp from overflowing for large positive x.)
    return np.maximum(x, 0) + alpha * np.expm1(np.minimum(x, 0)), x


def _elu_b(dy, x, alpha=1.0):
    e = alpha * np.exp(np.minimum(x, 0))  # the derivative for x <= 0; equals alpha for x > 0
    return dy * (e + (x > 0) * (1 - e))  # ... so this is 1 for x > 0 and e otherwise


def _tanh_f(x):
    y = np.tanh(x)
    return y, y


def _tanh_b(dy, y):
    return dy * (1 - y * y)


def _sigmoid(x):
    # 1/(1+exp(-x)) overflows exp for very negative x. Written as
    #     exp(min(x, 0)) / (1 + exp(-|x|))      (= 1/(1+e^-x) for x >= 0, e^x/(1+e^x) for x < 0)
    # no exp can overflow, and the negative tail keeps full relative precision.
    return np.exp(np.minimum(x, 0)) / (1 + np.exp(-np.abs(x)))


def _sigmoid_f(x):
    y = _sigmoid(x)
    return y, y


def _sigmoid_b(dy, y):
    return dy * y * (1 - y)


def _silu_f(x):
    return x * _sigmoid(x), x


def _silu_b(dy, x):
    s = _sigmoid(x)
    return dy * (s * (1 + x * (1 - s)))  # d/dx [x s(x)] = s + x s (1 - s)


def _gelu_f(x):
    # gelu(x) = x * Phi(x), Phi the standard normal CDF = erfc(-x/sqrt2)/2. Written with erfc it
    # stays accurate for very negative x, where 1 + erf(x) would cancel to 0.
    phi_cdf = 0.5 * erfc(-x * _SQRT_HALF)
    return x * phi_cdf, (x, phi_cdf)


def _gelu_b(dy, saved):
    x, phi_cdf = saved
    pdf = _INV_SQRT_2PI * np.exp(-0.5 * x * x)  # standard normal density
    return dy * (phi_cdf + x * pdf)


def _softmax_f(x):
    # Over axis 1 (the class / channel axis). Subtracting the max changes nothing mathematically
    # but keeps exp from overflowing.
    e = np.exp(x - x.max(axis=1, keepdims=True))
    y = e / e.sum(axis=1, keepdims=True)
    return y, y


def _softmax_b(dy, y):
    # Jacobian-vector product without forming the Jacobian: dx = y * (dy - <dy, y>)
    return y * (dy - (dy * y).sum(axis=1, keepdims=True))


def _hardsigmoid_f(x):
    # PyTorch's definition: relu6(x + 3) / 6, i.e. 0 below -3, 1 above 3, a line between.
    return np.clip(x + 3, 0, 6) / 6, x


def _hardsigmoid_b(dy, x):
    # 1/6 strictly inside (-3, 3), 0 at and beyond the kinks (as torch's hardsigmoid_backward)
    return dy * ((x > -3) & (x < 3)) / 6


def _hardswish_f(x):
    # PyTorch's definition: x * relu6(x + 3) / 6 (MobileNetV3's cheap stand-in for silu).
    return x * np.clip(x + 3, 0, 6) / 6, x


def _hardswish_b(dy, x):
    # 0 for x <= -3, x/3 + 1/2 strictly between, 1 for x >= 3: what torch's backward gives,
    # kinks included (measured on torch 2.13: 0 at -3, 1 at 3).
    inside = (x > -3) & (x < 3)
    return dy * (inside * (x / 3 + 0.5) + (x >= 3))


# The NumPy backend's kernel of each activation (registered by ../lowering.py): name ->
# (forward(x, **params) -> (y, saved), backward(dy, saved, **params) -> dx).
ACTIVATION_KERNELS = {
    "relu": (_relu_f, _relu_b),
    "relu6": (_relu6_f, _relu6_b),
    "leaky_relu": (_leaky_f, _leaky_b),
    "elu": (_elu_f, _elu_b),
    "tanh": (_tanh_f, _tanh_b),
    "sigmoid": (_sigmoid_f, _sigmoid_b),
    "silu": (_silu_f, _silu_b),
    "gelu": (_gelu_f, _gelu_b),
    "softmax": (_softmax_f, _softmax_b),
    "hardsigmoid": (_hardsigmoid_f, _hardsigmoid_b),
    "hardswish": (_hardswish_f, _hardswish_b),
}

ACTIVATION_KINDS = tuple(ACTIVATION_KERNELS)


def activation_forward(x, kind, **params):
    """y = act(x). params: leaky_relu ``slope`` (0.01), elu ``alpha`` (1.0)."""
    try:
        forward, _ = ACTIVATION_KERNELS[kind]
    except KeyError:
        raise ValueError(f"unknown activation {kind!r}; known: {', '.join(ACTIVATION_KINDS)}") from None
    y, saved = forward(x, **params)
    return y, {"kind": kind, "saved": saved, "params": params}


def activation_backward(dy, cache):
    _, backward = ACTIVATION_KERNELS[cache["kind"]]
    return backward(dy, cache["saved"], **cache["params"])
