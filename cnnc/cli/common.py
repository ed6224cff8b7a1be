"""What several commands share: reading the model file, argument types, the flags of commands
that run a model (--backend, --data, --device) and what those flags turn into (a training
configuration, a data set checked against the model, backend options).

Nothing heavy at import time: `cnnc check` imports this module too.
"""

from __future__ import annotations

import argparse
import contextvars
import os
import re

# Data sets that are searched for in folders: `--data DIR` with one of these in the model's
# `train:` section means "look for it in DIR".
_SEARCHED = ("fashion-mnist", "mnist")


# ---------------------------------------------------------------------------------------------
# The model file


# The `--set NAME=VALUE` pairs of the command being run (every command takes --set; `main` sets
# this, so that every command compiles its model with them without passing them along).
SET_PARAMS: contextvars.ContextVar[tuple] = contextvars.ContextVar("cnnc_set_params",
                                                                   default=())


def set_pair(text: str) -> tuple[str, str]:
    """argparse type of --set: `NAME=VALUE`."""
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not value or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        hint = " (write the model file before --set)" if not sep and (
            text.endswith(".cnn") or os.path.exists(text)) else ""
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}{hint}")
    return name, value


def add_set_flag(p) -> None:
    """--set NAME=VALUE [NAME=VALUE ...], repeatable: the model's parameters."""
    p.add_argument("--set", dest="params", action="extend", nargs="+", type=set_pair,
                   default=[], metavar="NAME=VALUE",
                   help="set a parameter the model declares (`param width=1.0`); repeat the "
                        "flag or give several pairs: --set width=0.5 depth=2")


def compile_path(path: str, params: list | dict | None = None, *,
                 input_shape: tuple | None = None):
    """The compiled model of a file (or of standard input for `-`), diagnostics and all, with
    the command's --set values (or `params`); its source is remembered so later errors can
    quote it. `input_shape`: evaluate it at that input instead of the declared one (--input)."""
    from ..pipeline import compile_file
    from .report import remember_source

    if params is None:
        params = SET_PARAMS.get()
    # `-`: standard input, read as strictly as a file
    model = compile_file(path, params, input_shape=input_shape)
    remember_source(model.file, model.source)
    return model


def load_model(path: str, *, json: bool = False, params: list | dict | None = None,
               input_shape: tuple | None = None):
    """The compiled model, ready to run. Warnings are printed (as text, on standard error);
    errors raise CompileError, which `cnnc.cli.main` prints with every diagnostic."""
    from ..diagnostics import WARNING
    from .report import print_diagnostics

    model = compile_path(path, params, input_shape=input_shape)
    model.raise_for_errors()
    warnings = [d for d in model.diagnostics if d.severity == WARNING]
    if warnings and not json:
        print_diagnostics(warnings)
    return model


# ---------------------------------------------------------------------------------------------
# Argument types and shared flags


# The ranges of the `train:` section's settings (cnnc/train/config.py), so that a flag is
# refused where the same value in a model file would be.
MAX_INT = 2**31 - 1
FLOAT32_MAX = 3.4028234663852886e38


def _whole(text: str) -> int:
    try:
        # Python refuses to convert over 4,300 digits; over 20 is out of range anyway.
        return int(text) if len(text.strip()) <= 20 else MAX_INT + 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _whole(text)
    if not 1 <= value <= MAX_INT:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {MAX_INT}, got "
                                         f"{text[:30]}")
    return value


def seed(text: str) -> int:
    value = _whole(text)
    if not 0 <= value <= MAX_INT:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {MAX_INT}, got "
                                         f"{text[:30]}")
    return value


def _float(text: str) -> float:
    """A finite number that float32 arithmetic can hold."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not abs(value) <= FLOAT32_MAX:
        raise argparse.ArgumentTypeError(f"expected a finite number (at most 3.4e38), "
                                         f"got {text[:30]}")
    return value


def positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def input_dims(text: str) -> tuple:
    """--input HxWxC (or HxW, one channel, or N, a flat input), as the `input` statement."""
    parts = text.strip().lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 224x224x3, got {text!r}") from None
    if not 1 <= len(dims) <= 3 or min(dims) < 1 or max(dims) > 2**31 - 1:
        raise argparse.ArgumentTypeError(f"expected a size like 224x224x3 (HxWxC, HxW or N, "
                                         f"each at least 1), got {text!r}")
    return dims


def add_input_flag(p) -> None:
    p.add_argument("--input", type=input_dims, metavar="HxWxC", dest="input_shape",
                   help="evaluate the model at this input instead of the one it declares")


def amount(text: str) -> int:
    """1M, 300M, 256KiB, 8GiB: a count or a number of bytes."""
    from ..analysis.memory import parse_amount

    try:
        return parse_amount(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def non_negative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {value}")
    return value


def fraction(text: str) -> float:
    value = _float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction of at least 0 and below 1, "
                                         f"got {value}")
    return value


def memory_size(text: str) -> int:
    """--max-memory of train and eval: an amount as `cnnc check --max-memory` reads it (4G is
    4 x 10^9 bytes, 4GiB 4 x 2^30), above 0."""
    value = amount(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected an amount of memory above 0, got {text!r}")
    return value


def add_run_flags(p) -> None:
    """--backend, --data, --device: the flags of every command that runs a model."""
    p.add_argument("--backend", default=None, metavar="NAME",
                   help="numpy (default) or torch, or a plugin's")
    p.add_argument("--data", metavar="NAME|PATH",
                   help="digits, fashion-mnist, mnist, shapes, npz:PATH, a folder of images "
                        "(one sub-folder per class) or of IDX files")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="image folders: skip files that cannot be read (they are counted) "
                        "instead of stopping")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="torch: where to run (auto takes a GPU when there is one)")
    p.add_argument("--max-memory", type=memory_size, metavar="SIZE",
                   help="refuse a model whose estimated memory exceeds SIZE (like 4G, 512M or 8GiB; "
                        "default: the memory available)")


# ---------------------------------------------------------------------------------------------
# What the run flags turn into


def train_config(model, args):
    """The model file's `train:` settings with the command line's flags over them."""
    from ..train.config import TrainConfig

    base = model.train_config or TrainConfig()
    flags = {k: getattr(args, k, None) for k in
             ("epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "schedule",
              "loss", "seed", "val_split", "data", "flip", "shift", "erase", "precision")}
    if flags["data"] is not None and _search_folder(flags["data"], base.data):
        flags["data"] = None  # a folder to search for the file's data set; see load_data
    return base.merged(**flags)


def _search_folder(data: str, spec: str) -> bool:
    """Whether `--data DATA` names a folder to look for the file's data set in (`spec`, one of
    those searched for), rather than a data set of its own (a folder of class folders)."""
    if spec not in _SEARCHED or not os.path.isdir(data):
        return False
    from ..data.folder import is_image_folder

    return not is_image_folder(data)


def check_config(config) -> None:
    """Refuse settings the `train:` section would refuse, whether they came from the file or
    from flags (the file's own are reported with their line by `cnnc check`): combinations such
    as nesterov=true in the file with --momentum 0."""
    from ..diagnostics import CnncError
    from ..train.config import config_problems

    found = config_problems(config)
    if found:
        field, message, hint = found[0]
        raise CnncError(message, code="usage", notes=[m for _, m, _ in found[1:]],
                        hint=hint or f"pass a valid --{field.replace('_', '-')}")


def backend_options(args) -> dict:
    options = {"device": getattr(args, "device", None)}
    if getattr(args, "channels_last", None) is not None:
        options["channels_last"] = args.channels_last
    if getattr(args, "compile", False):
        options["compile"] = True
    return {k: v for k, v in options.items() if v is not None}


def training_session(model, args, config):
    """The backend session `cnnc train` trains with (and `cnnc bench` times): --backend
    (default numpy), the backend options of the flags, the precision and loss of `config`."""
    backend = args.backend or "numpy"
    options = backend_options(args)
    if backend == "numpy":
        if config.precision not in ("auto", "fp32"):
            from ..diagnostics import CnncError

            raise CnncError(f"the NumPy backend is the float32 reference: --precision "
                            f"{config.precision} is for --backend torch", code="usage")
    else:
        options["precision"] = config.precision
    # A training step allocates and frees the same large arrays each time; keeping freed
    # memory in this process (glibc) instead of handing it back saves about a fifth of a NumPy
    # step (benchmarks/numpy_backend.py) and a few percent of a torch one on a CPU (its
    # memory-bound kernels: batch norm, pooling and their gradients write fresh buffers).
    # A process-wide choice, so the command makes it.
    from ..memory import keep_freed_memory

    keep_freed_memory()
    return model.to_backend(backend, seed=config.seed, loss=config.loss, **options)


def _data_span(model, from_file: bool):
    """Where a data problem points: the `train:` section's `data` line when the name came from
    there, else the model's input statement."""
    if from_file:
        try:
            from ..syntax import ast
            from ..syntax.parser import parse

            program, _ = parse(model.source, model.file)
            for item in program.items:
                if isinstance(item, ast.Section) and item.name == "train":
                    for stmt in item.body:
                        if isinstance(stmt, ast.Call) and stmt.head == "data":
                            return stmt.span
        except Exception:  # pragma: no cover - the input line is a fine fallback
            pass
    return model.graph[model.graph.input].span


def load_data(model, args, config, *, limit=None):
    """The data set for `config.data` (or `--data`), checked against the model before any
    backend is built. Raises CnncError with a span set."""
    from ..data import check_fits, load_dataset
    from ..diagnostics import CnncError

    spec, data_dir = config.data, None
    from_file = getattr(args, "data", None) is None and model.train_config is not None
    if getattr(args, "data", None) is not None and _search_folder(args.data, spec):
        data_dir = args.data  # `--data DIR`: look for the file's data set in DIR
        from_file = True
    classes = model.output_shape[0] if len(model.output_shape) == 1 else None
    try:
        ds = load_dataset(spec, data_dir=data_dir, input_shape=model.input_shape,
                          num_classes=classes, seed=config.seed,
                          skip_bad_images=getattr(args, "skip_bad_images", False))
    except CnncError as e:
        e.span = e.span or _data_span(model, from_file)
        raise
    try:
        check_fits(ds, model.input_shape, classes)
    except CnncError as e:
        e.span = e.span or _data_span(model, False)
        raise
    if limit is not None and limit < len(ds.train_x):
        ds.train_x, ds.train_y = ds.train_x[:limit], ds.train_y[:limit]
    return ds
