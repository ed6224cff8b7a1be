"""Loss functions for training, each fused with its gradient.

Every function returns ``(loss, grad)``: the mean loss over the batch as a Python float and the
gradient of that mean with respect to the first argument (same shape and dtype). Fusing the
loss with its final activation (softmax, sigmoid) is both cheaper and numerically stable: the
gradient of softmax + cross-entropy is simply ``softmax - onehot``, and nothing ever takes the
log of a probability that underflowed to 0.
"""

from __future__ import annotations

import numpy as np


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against integer class labels.

    logits (N, K) float, labels (N,) int. Same as torch.nn.functional.cross_entropy.
    """
    N = logits.shape[0]
    labels = np.asarray(labels, dtype=np.intp)
    # log softmax = z - logsumexp(z); shift by the row max first so exp never overflows.
    shifted = logits - logits.max(axis=1, keepdims=True)  # (N, K), each row's max is 0
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1, keepdims=True)  # (N, 1), >= 1 so its log is safe
    rows = np.arange(N)
    loss = np.mean(np.log(sum_exp[:, 0]) - shifted[rows, labels])
    # d loss / d logits = (softmax - onehot) / N
    grad = exp / sum_exp
    grad[rows, labels] -= 1
    grad /= N
    return float(loss), grad


def sigmoid_binary_cross_entropy(logits, targets):
    """Mean binary cross-entropy of sigmoid(logits) against 0/1 targets, for one-output models.

    logits (N, 1) or (N,), targets the same number of 0/1 values. Same as
    torch.nn.functional.binary_cross_entropy_with_logits.
    """
    z = logits
    t = np.asarray(targets, dtype=z.dtype).reshape(z.shape)
    # -[t log s(z) + (1-t) log(1 - s(z))] rewritten so exp only sees non-positive numbers:
    #   = max(z, 0) - z t + log(1 + exp(-|z|))
    loss = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
    sig = np.exp(np.minimum(z, 0)) / (1 + np.exp(-np.abs(z)))  # stable sigmoid, both tails
    grad = (sig - t) / z.size  # d/dz of the mean
    return float(loss.mean()), grad


def mean_squared_error(pred, target):
    """Mean over ALL elements of (pred - target)**2, like torch's default reduction."""
    diff = pred - np.asarray(target, dtype=pred.dtype).reshape(pred.shape)
    return float(np.mean(diff * diff)), diff * (2.0 / diff.size)


LOSSES = {
    "cross_entropy": softmax_cross_entropy,
    "softmax_cross_entropy": softmax_cross_entropy,
    "binary_cross_entropy": sigmoid_binary_cross_entropy,
    "sigmoid_binary_cross_entropy": sigmoid_binary_cross_entropy,
    "mse": mean_squared_error,
    "mean_squared_error": mean_squared_error,
}
