"""Backends: a registry from name to backend, extended through the entry-point group
``cnnc.backends``.

A backend turns a checked model into a `Session` (see base.py): named parameters and state,
forward in train or eval mode, backward and an optimizer step, and weights in and out as NumPy
arrays. Adding a backend touches no op schema: it brings its own table from op name to kernel.
"""

from __future__ import annotations

from ..diagnostics import CnncError, did_you_mean

ENTRY_POINT_GROUP = "cnnc.backends"

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
