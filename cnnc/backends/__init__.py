"""Backends: a registry from name to backend, extended through the entry-point group
``cnnc.backends``; and the kernels each backend has for each op, extended with
`register_kernel` or through the entry-point group ``cnnc.kernels``.

A backend turns a checked model into a `Session` (see base.py): named parameters and state,
forward in train or eval mode, backward and an optimizer step, and weights in and out as NumPy
arrays. Adding a backend touches no op schema: it brings its own kernels.

A kernel reads only the layer's settled attributes (`layer.settled`), its input shapes
(`layer.in_shapes`) and output shape (`layer.shape`): the schema decided everything else. A
layer's fused activation (`conv 32 3 relu`) is applied by the backend's graph runner after the
kernel, from the activation's own kernel; a kernel never applies it. Kernels by backend:

numpy, an op: a pair ``(forward, backward)``::

    forward(layer, params, inputs, ctx) -> (y, cache)       # inputs: list of NCHW / (N, F) arrays
    backward(layer, params, cache, dy, ctx) -> (dinputs, dparams)  # a list, and name -> grad

  `params` maps the layer's parameter and buffer names to arrays (update buffers in place);
  `ctx.training`, `ctx.rng` (dropout's generator), `ctx.need_dx` (False: the input gradient
  may be None).

numpy, an activation: ``(forward(x, **params) -> (y, saved), backward(dy, saved, **params) ->
  dx)``, params being the activation's (`slope=`...).

torch, an op: ``lower(layer, in_shapes) -> nn.Module``; the module's forward takes the inputs
  (N x C x H x W or N x F) positionally; its parameters and buffers are named as the schema
  names them (the state dict keys are "layer.param").

torch, an activation: ``fn(x, **params) -> y``.

Entry points of ``cnnc.kernels`` are named ``BACKEND`` or ``BACKEND.anything``; each names a
module (imported for its `register_kernel` calls) or a callable (called once, with no
arguments). A backend loads its own entry points the first time it builds a session.
"""

from __future__ import annotations

import threading

from ..diagnostics import CnncError, did_you_mean

ENTRY_POINT_GROUP = "cnnc.backends"
KERNEL_ENTRY_POINT_GROUP = "cnnc.kernels"

# name -> "module:attribute", imported on first use so `numpy` never pulls in torch
_BUILTIN = {"numpy": "cnnc.backends.numpy:NumpyBackend",
            "torch": "cnnc.backends.torch:TorchBackend"}
_REGISTRY: dict[str, object] = {}


def register_backend(name: str, backend) -> None:
    if name in _REGISTRY:
        raise ValueError(f"duplicate registration for backend {name!r}")
    _REGISTRY[name] = backend


def _load(target: str):
    from importlib import import_module

    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)


def backend_names() -> list[str]:
    from importlib.metadata import entry_points

    names = set(_BUILTIN) | set(_REGISTRY)
    names |= {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def get_backend(name: str):
    """The backend object registered under `name` (instantiated if a class was registered)."""
    if name not in _REGISTRY:
        target = None
        if name in _BUILTIN:
            target = _BUILTIN[name]
        else:
            from importlib.metadata import entry_points

            for ep in entry_points(group=ENTRY_POINT_GROUP):
                if ep.name == name:
                    target = ep.value
                    break
        if target is None:
            hint = did_you_mean(name, backend_names()) or \
                f"the backends are {', '.join(backend_names())}"
            raise CnncError(f"unknown backend `{name}`", hint=hint, code="backend")
        try:
            obj = _load(target)
        except ImportError as e:
            raise CnncError(f"backend `{name}` cannot be loaded: {e}", code="backend",
                            hint="install what it needs, e.g. `pip install torch`"
                            if "torch" in str(e) else None) from None
        _REGISTRY[name] = obj() if isinstance(obj, type) else obj
    return _REGISTRY[name]


# -- kernels ------------------------------------------------------------------------------------

_KERNELS: dict[str, dict[str, object]] = {}  # backend name -> op name -> kernel
_kernel_plugins_loaded: set[str] = set()
_kernel_plugin_errors: dict[str, list[str]] = {}
_kernel_plugins_lock = threading.RLock()  # re-entrant: a plugin may ask for kernels as it loads


def register_kernel(backend: str, op: str, kernel, *, replace: bool = False) -> None:
    """Give backend `backend` its kernel for op `op` (the forms are in this module's docstring).

    Refuses an (backend, op) already given, unless replace=True."""
    table = _KERNELS.setdefault(backend, {})
    if op in table and not replace:
        raise ValueError(f"duplicate kernel for op {op!r} in backend {backend!r}")
    table[op] = kernel


# The modules holding the built-in backends' kernels (they register them when imported).
_BUILTIN_KERNELS = {"numpy": "cnnc.backends.numpy.lowering",
                    "torch": "cnnc.backends.torch.lowering"}


def kernels(backend: str) -> dict[str, object]:
    """Backend `backend`'s kernels, op name -> kernel: its built-in ones, those registered so
    far and those its `cnnc.kernels` entry points register (loaded on the first call)."""
    if backend not in _kernel_plugins_loaded:
        with _kernel_plugins_lock:  # another thread may be loading them: wait, not load twice
            if backend not in _kernel_plugins_loaded:
                if backend in _BUILTIN_KERNELS:
                    from importlib import import_module

                    import_module(_BUILTIN_KERNELS[backend])
                _load_kernel_plugins(backend)
                _kernel_plugins_loaded.add(backend)
    return _KERNELS.setdefault(backend, {})


def register_builtin_kernels(backend: str, table: dict) -> None:
    """For the built-in backends' own modules: their kernels, except for ops whose kernel was
    given already (a user's register_kernel(..., replace=True) made before they were imported)."""
    own = _KERNELS.setdefault(backend, {})
    for op, kernel in table.items():
        own.setdefault(op, kernel)


def kernel_plugin_errors(backend: str) -> list[str]:
    """Why kernel plugins of `backend` failed to load, one line each."""
    kernels(backend)
    return list(_kernel_plugin_errors.get(backend, ()))


def _load_kernel_plugins(backend: str) -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=KERNEL_ENTRY_POINT_GROUP):
        if ep.name.split(".", 1)[0] != backend:
            continue
        try:
            obj = ep.load()  # a module registers on import; a callable registers when called
            if callable(obj):
                obj()
        except Exception as e:  # a broken plugin must not break the backend's other ops
            _kernel_plugin_errors.setdefault(backend, []).append(
                f"the kernel plugin `{ep.name}` ({ep.value}) failed to load: "
                f"{type(e).__name__}: {e}")


def missing_kernel(backend: str, op: str) -> CnncError:
    """The error for a model using an op that `backend` has no kernel for."""
    return CnncError(f"backend '{backend}' has no kernel for op '{op}'", code="backend",
                     notes=kernel_plugin_errors(backend),
                     hint=f"a plugin op brings its kernels: "
                          f"cnnc.backends.register_kernel({backend!r}, {op!r}, ...), or an "
                          f"entry point in the group `cnnc.kernels`")
