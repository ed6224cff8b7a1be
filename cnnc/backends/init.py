"""Initial weights, owned by cnnc so that every backend starts from identical arrays.

Each op declares its parameters' initial values with its schema (cnnc.ops.Param: a shape and
an initializer); this module holds the initializers, by name:

- he_uniform (He et al. 2015, "Delving deep into rectifiers", the uniform form):
  U(-b, b) with b = sqrt(6 / fan_in), fan_in the product of the shape past its first axis
  ((cin/groups)*kh*kw for a conv, the input size for dense). This keeps the variance of
  activations roughly constant through ReLU layers, the common case in CNNs; it is PyTorch's
  kaiming_uniform_ with its ReLU gain. (conv and dense weights)
- zeros (biases, as Keras does, so an untrained network's outputs start centred; batchnorm's
  shift and running mean), ones (batchnorm's scale and running variance);
- a number: every element that value.

Each random array has its own generator, seeded by (seed, CRC-32 of the parameter's full name),
so adding a layer does not change the initial weights of the others, and a model's weights
depend on nothing but its layer names, shapes and the seed.
"""

from __future__ import annotations

import zlib
from math import prod, sqrt
from numbers import Real

import numpy as np


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def he_uniform(shape: tuple, rng: np.random.Generator) -> np.ndarray:
    bound = sqrt(6.0 / prod(shape[1:]))
    return rng.uniform(-bound, bound, size=shape)


# name -> fn(shape, rng) -> float64 array. rng is the parameter's own generator (see above);
# deterministic initializers ignore it (it is made only when used).
INITIALIZERS = {
    "he_uniform": he_uniform,
    "zeros": lambda shape, rng: np.zeros(shape),
    "ones": lambda shape, rng: np.ones(shape),
}
_RANDOM = {"he_uniform"}


def register_initializer(name: str, fn, *, random: bool = True) -> None:
    """Add an initializer fn(shape, rng) -> array that schemas may name in ops.Param."""
    if name in INITIALIZERS:
        raise ValueError(f"duplicate registration for initializer {name!r}")
    INITIALIZERS[name] = fn
    if random:
        _RANDOM.add(name)


def initial_value(init, shape: tuple, seed: int, key: str) -> np.ndarray:
    """The float64 initial value of the parameter `key` ("layer.param")."""
    if isinstance(init, Real) and not isinstance(init, bool):
        return np.full(shape, float(init))
    try:
        fn = INITIALIZERS[init]
    except KeyError:
        raise ValueError(f"unknown initializer {init!r} for {key}; known: "
                         f"{', '.join(INITIALIZERS)} or a number") from None
    return fn(shape, _rng(seed, key) if init in _RANDOM else None)


def initial_weights(graph, seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    """Every parameter and buffer of the graph, keyed "layer_name.param_name" (PyTorch layouts)."""
    out: dict[str, np.ndarray] = {}
    for layer in graph.layers():
        for name, shape in (*layer.params.items(), *layer.buffers.items()):
            key = f"{layer.name}.{name}"
            out[key] = initial_value(layer.init[name], shape, seed, key).astype(dtype)
    return out


