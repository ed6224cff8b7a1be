"""The op registry: one schema per op, declared in one module per op family.

A schema is the one home of an op's meaning. It says what the op takes (positional arguments
and key=value options, with types, defaults and validation), how many inputs it reads
(`n_inputs`), how input shapes map to an output shape *and to the settled attributes* (the
resolved stride, explicit pads, groups, pool mode, defaults...), what parameters it owns with
their initial values, and how many multiply-accumulates it costs. Shape rules are pure: they
read the attributes as written and return `Inferred(shape, settled)`; they never write into
their input. Backends and the summary read only the settled attributes (`layer.settled`).

Activations live in one table (`Activation`, `register_activation`, `activations()`): name,
parameters with defaults, summary, and whether a loss absorbs it at the model's output. Each
activation is also an op (`relu` as a layer), and conv/dense take one fused (`conv 32 3 relu`).

A schema holds no kernel: backends keep those, registered per (backend, op) with
`cnnc.backends.register_kernel`, so adding a backend touches no file here.

Third-party packages add ops through the entry-point group ``cnnc.ops``: each entry point names a
module (imported for its `register` calls) or a callable returning an OpSchema or a list of them.
"""

from __future__ import annotations

import _thread
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

REQUIRED = object()
ENTRY_POINT_GROUP = "cnnc.ops"


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
    max: float | None = None  # inclusive upper bound
    help: str = ""
    # other names accepted for it in key=value form (`negative_slope=` for leaky_relu's slope)
    aliases: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


class Inferred(NamedTuple):
    """What a shape rule returns: the output shape and the attributes it settled.

    `settled` holds only what the rule decided beyond the attributes as written (resolved
    stride, explicit pads (top, bottom, left, right), groups, defaults that depend on the
    input...); the layer's settled attributes are the written ones updated with these. A rule
    may also return a bare shape when it settles nothing.
    """

    shape: tuple
    settled: dict = {}


class Param(NamedTuple):
    """A parameter (or buffer) an op owns: its shape and its initial value.

    init: the name of an initializer ("he_uniform", "zeros", "ones"; backends/init.py holds
    them, and `register_initializer` adds more) or a number, every element's initial value
    (layer scale's 1e-6). A schema's `params` may give a bare shape instead: that means
    Param(shape, "he_uniform") for a parameter and Param(shape, "zeros") for a buffer.
    """

    shape: tuple
    init: str | float = "he_uniform"


def _no_params(attrs, in_shapes):
    return {}


def _no_macs(attrs, in_shapes, out_shape):
    return 0


@dataclass
class OpSchema:
    name: str
    summary: str
    # (attrs as written, input shapes) -> Inferred(shape, settled) or a bare shape. Pure: the
    # attrs come read-only. A ShapeError says what is wrong.
    infer: Callable[[dict, list[tuple]], Inferred | tuple]
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
    # How many tensors the op reads: 1 (the current tensor), 0 (input), k >= 2, or None for
    # any number >= 2. An op reading several is written like `add`: `mul gate`, `concat a b`
    # (the operands are named tensors; the current one comes first unless named itself).
    n_inputs: int | None = 1
    # The functions below take the SETTLED attributes (written ones plus what infer settled).
    # params: trainable, name -> Param (or a bare shape), in PyTorch's layout
    params: Callable[[dict, list[tuple]], dict] = _no_params
    buffers: Callable[[dict, list[tuple]], dict] = _no_params  # non-trainable state, likewise
    macs: Callable[[dict, list[tuple], tuple], int] = _no_macs
    # (effective kernel h, w, stride h, w) for the receptive field, or None if not windowed
    window: Callable[[dict], tuple] | None = None
    # the op as a short phrase for the summary table, e.g. "conv 32 3x3 s2 same relu"
    describe: Callable[[dict], str] | None = None
    doc: str = ""
    # An op with several outputs (`a, b = split 2`): how many, from the bound attrs. The builder
    # makes one layer per output, named by the statement, each with attrs["part"] = its index.
    outputs: Callable[[dict], int] | None = None

    @property
    def merges(self) -> bool:
        """Whether a statement of this op names the tensors it reads (add, concat, ...)."""
        return self.n_inputs is None or self.n_inputs >= 2


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
    from . import (  # noqa: F401  (they register)
        activation,
        channels,
        conv,
        conv_transpose,
        dense,
        io,
        merge,
        norm,
        pool,
        residual,
        upsample,
    )
    _builtins_loaded = True


_plugin_errors: list[str] = []  # "plugin `name` (module:attr): what went wrong"
# Re-entrant: a plugin's module may itself look an op up while it loads. (_thread, not
# threading: it is built in, and `cnnc check` should not pay for importing threading.)
_plugins_lock = _thread.RLock()


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


def lookup(name: str, *, plugins: bool = True) -> tuple[OpSchema, dict] | None:
    """The schema for an op name or alias, with the attrs the alias fixes; None if unknown.
    With plugins=False, plugins not loaded yet are not loaded for this (a cheap question)."""
    _load_builtins()
    for attempt in range(2):
        if name in _REGISTRY:
            return _REGISTRY[name], {}
        if name in _ALIASES:
            schema = _REGISTRY[_ALIASES[name]]
            return schema, dict(schema.alias_attrs.get(name, {}))
        if attempt == 0 and plugins:
            _load_plugins()
        else:
            break
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


# -- the activation table ------------------------------------------------------------------------


class Activation(NamedTuple):
    """One activation: everything the checker, the summary and the backends know of it.

    params: its parameters with their defaults (PyTorch's), each written positionally or as
    key=value on a standalone layer (`leaky_relu 0.2`, `elu alpha=0.5`); fused into conv or
    dense (`conv 32 3 elu`) it takes the defaults. absorbed_by: the loss (`cross_entropy`,
    `bce`) that applies this activation itself when it ends the model, reading the logits.
    Each backend brings one kernel per activation (see cnnc.backends.register_kernel).
    (A NamedTuple, as Param and Inferred: a frozen dataclass costs milliseconds to define, and
    `cnnc check` pays for every class the op registry defines.)
    """

    name: str
    summary: str
    params: tuple[Arg, ...] = ()
    absorbed_by: str | None = None

    def defaults(self) -> dict:
        return {a.name: a.default for a in self.params}


_ACTIVATIONS: dict[str, Activation] = {}


def register_activation(activation: Activation) -> OpSchema:
    """Add an activation: its table entry and its op (the standalone layer `NAME`)."""
    if activation.name in _ACTIVATIONS:
        raise ValueError(f"duplicate registration for activation {activation.name!r}")
    from .activation import activation_schema

    schema = register(activation_schema(activation))
    _ACTIVATIONS[activation.name] = activation
    return schema


def find_activation(name: str | None) -> Activation | None:
    """The table entry of an activation; None for a name that is none (loaded ones only)."""
    _load_builtins()
    return _ACTIVATIONS.get(name) if name else None


def activations() -> list[Activation]:
    _load_builtins()
    _load_plugins()
    return list(_ACTIVATIONS.values())


class _ActivationNames(Sequence):
    """The activation names, live: plugins' included (loaded on a miss, as `lookup` does).
    `ACTIVATIONS` is the choices of the `activation` argument of conv, dwconv and dense."""

    def _names(self) -> list[str]:
        _load_builtins()
        return list(_ACTIVATIONS)

    def __contains__(self, name) -> bool:
        _load_builtins()
        if name in _ACTIVATIONS:
            return True
        _load_plugins()
        return name in _ACTIVATIONS

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self):
        return iter(self._names())

    def __repr__(self) -> str:
        return repr(tuple(self._names()))


ACTIVATIONS = _ActivationNames()
