"""Initial weights, owned by cnnc so that every backend starts from identical arrays.

The scheme (He et al. 2015, "Delving deep into rectifiers"), in the uniform form:
- conv and dense weights ~ U(-b, b) with b = sqrt(6 / fan_in), fan_in = (cin/groups)*kh*kw or
  the dense input size. This keeps the variance of activations roughly constant through ReLU
  layers, the common case in CNNs; it is PyTorch's kaiming_uniform_ with its ReLU gain.
- biases 0 (as Keras does), so an untrained network's outputs start centred.
- batchnorm: scale 1, shift 0, running mean 0, running variance 1 (as everyone does).

Each array has its own generator, seeded by (seed, CRC-32 of the parameter's full name), so
adding a layer does not change the initial weights of the others, and a model's weights depend
on nothing but its layer names, shapes and the seed.
"""

from __future__ import annotations

import zlib
from math import prod, sqrt

import numpy as np


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def initial_weights(graph, seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    """Every parameter and buffer of the graph, keyed "layer_name.param_name" (PyTorch layouts)."""
    out: dict[str, np.ndarray] = {}
    for layer in graph.layers():
        for pname, shape in layer.params.items():
            key = f"{layer.name}.{pname}"
            if layer.op == "batchnorm":
                value = np.ones(shape) if pname == "weight" else np.zeros(shape)
            elif pname == "bias":
                value = np.zeros(shape)
            else:
                fan_in = prod(shape[1:])
                bound = sqrt(6.0 / fan_in)
                value = _rng(seed, key).uniform(-bound, bound, size=shape)
            out[key] = value.astype(dtype)
        for bname, shape in layer.buffers.items():
            key = f"{layer.name}.{bname}"
            value = np.ones(shape) if bname == "running_var" else np.zeros(shape)
            out[key] = value.astype(dtype)
    return out


def parameter_names(graph) -> list[str]:
    """Trainable parameter names, in graph order."""
    return [f"{layer.name}.{p}" for layer in graph.layers() for p in layer.params]


def buffer_names(graph) -> list[str]:
    return [f"{layer.name}.{b}" for layer in graph.layers() for b in layer.buffers]
