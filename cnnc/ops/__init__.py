"""The op registry: one schema per op, declared in one module per op family.

A schema says what an op takes (positional arguments and key=value options, with types,
defaults and validation), how it maps input shapes to an output shape, what parameters it owns
and how many multiply-accumulates it costs. It holds no kernel: backends keep those, in a table
from op name to kernel, so adding a backend touches no file here.

Third-party packages add ops through the entry-point group ``cnnc.ops``: each entry point names a
module (imported for its `register` calls) or a callable returning an OpSchema or a list of them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

REQUIRED = object()
ENTRY_POINT_GROUP = "cnnc.ops"
ACTIVATIONS = ("relu", "relu6", "tanh", "sigmoid", "softmax", "leaky_relu", "elu", "gelu",
               "silu")


class ShapeError(Exception):
    """Raised by a shape rule; the checker turns it into a diagnostic at the layer's statement,
    or at the argument named by `arg` (e.g. "kernel", "groups") where the statement wrote one."""

    def __init__(self, message: str, *, hint: str | None = None, notes=(), code: str = "shape",
                 arg: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.notes = list(notes)
        self.code = code
        self.arg = arg


@dataclass(frozen=True)
class Arg:
    """One argument of an op: positional or key=value.

    type: int, float, size (K or KxK), pad (valid|same|P|PHxPW|TxBxLxR), bool, enum,
    dims (HxWxC, HxW or N).
    """

    name: str
    type: str
    default: Any = REQUIRED
    choices: tuple = ()
    min: float | None = None  # inclusive lower bound for numbers and every size component
    max_exclusive: float | None = None
    help: str = ""
    # other names accepted for it in key=value form (`negative_slope=` for leaky_relu's slope)
    aliases: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def _no_params(attrs, in_shapes):
    return {}


def _no_macs(attrs, in_shapes, out_shape):
    return 0


@dataclass
class OpSchema:
    name: str
    summary: str
    infer: Callable[[dict, list[tuple]], tuple]
    positional: tuple[Arg, ...] = ()
    options: tuple[Arg, ...] = ()
    aliases: tuple[str, ...] = ()
    # attrs fixed by an alias, e.g. `gap` is `pool` with kind=global
    alias_attrs: dict = field(default_factory=dict)
    # When a statement headed by an alias writes an argument the alias fixes, with another
    # value (`avgpool max 2`): alias_conflict(alias, attrs, written, rest) gives
    # (argument name, message, hint), or None when the written values agree. `attrs` are the
    # bound ones, `written` the names of the arguments the statement wrote, `rest` the statement
    # after its head. Without it, any written value that differs from the fixed one conflicts.
    alias_conflict: Callable[[str, dict, set, str], tuple | None] | None = None
    # attrs every instance has, whatever was written (dwconv is conv with depthwise=True)
    fixed: dict = field(default_factory=dict)
    n_inputs: int | None = 1  # None: any number >= 2 (merges)
    params: Callable[[dict, list[tuple]], dict] = _no_params  # trainable: name -> shape
    buffers: Callable[[dict, list[tuple]], dict] = _no_params  # non-trainable state
    macs: Callable[[dict, list[tuple], tuple], int] = _no_macs
    # (effective kernel h, w, stride h, w) for the receptive field, or None if not windowed
    window: Callable[[dict], tuple] | None = None
    # the op as a short phrase for the summary table, e.g. "conv 32 3x3 s2 same relu"
    describe: Callable[[dict], str] | None = None
    # positional arguments that mean "the layer's activation" (conv 32 3x3 relu)
    doc: str = ""

    def all_args(self) -> tuple[Arg, ...]:
        return self.positional + self.options


_REGISTRY: dict[str, OpSchema] = {}
_ALIASES: dict[str, str] = {}
_builtins_loaded = False
_plugins_loaded = False


def register(schema: OpSchema) -> OpSchema:
    """Add an op. Refuses a name or alias already taken, as torch's decomposition registry does."""
    for name in (schema.name, *schema.aliases):
        if name in _REGISTRY or name in _ALIASES:
            raise ValueError(f"duplicate registration for op {name!r}")
    _REGISTRY[schema.name] = schema
    for alias in schema.aliases:
        _ALIASES[alias] = schema.name
    return schema


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    # The flag is set only once every module has registered: a thread that finds it unset
    # imports them too, and Python's import lock makes it wait for the first thread's imports.
    from . import activation, conv, dense, io, merge, norm, pool  # noqa: F401  (they register)
    _builtins_loaded = True


_plugin_errors: list[str] = []  # "plugin `name` (module:attr): what went wrong"
# Re-entrant: a plugin's module may itself look an op up while it loads.
_plugins_lock = threading.RLock()


def _load_plugins() -> None:
    """Import the `cnnc.ops` entry points. A plugin that fails to load is noted, not fatal:
    its ops are then unknown, and the unknown-layer diagnostic says why (plugin_errors())."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    with _plugins_lock:  # another thread may be loading them: wait for it, not load them twice
        if not _plugins_loaded:
            _load_plugins_now()
            _plugins_loaded = True


def _load_plugins_now() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()  # a module registers itself on import; a callable returns schemas
            if isinstance(obj, OpSchema):
                made = [obj]
            elif callable(obj):
                made = obj()
                if isinstance(made, OpSchema):
                    made = [made]
            else:
                made = []
            for schema in made or ():
                if isinstance(schema, OpSchema) and schema.name not in _REGISTRY:
                    register(schema)
        except Exception as e:  # a broken plugin must not break the compiler
            _plugin_errors.append(f"the op plugin `{ep.name}` ({ep.value}) failed to load: "
                                  f"{type(e).__name__}: {e}")


def plugin_errors() -> list[str]:
    """Why op plugins failed to load, one line each (empty when all loaded)."""
    _load_plugins()
    return list(_plugin_errors)


def lookup(name: str) -> tuple[OpSchema, dict] | None:
    """The schema for an op name or alias, with the attrs the alias fixes; None if unknown."""
    _load_builtins()
    for attempt in range(2):
        if name in _REGISTRY:
            return _REGISTRY[name], {}
        if name in _ALIASES:
            schema = _REGISTRY[_ALIASES[name]]
            return schema, dict(schema.alias_attrs.get(name, {}))
        if attempt == 0:
            _load_plugins()
    return None


def get(name: str) -> OpSchema:
    found = lookup(name)
    if found is None:
        raise KeyError(f"unknown op {name!r}")
    return found[0]


def names(*, plugins: bool = True) -> list[str]:
    """Every op name and alias a statement may start with."""
    _load_builtins()
    if plugins:
        _load_plugins()
    return sorted([*_REGISTRY, *_ALIASES])


def schemas() -> list[OpSchema]:
    _load_builtins()
    _load_plugins()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]
