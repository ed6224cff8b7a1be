"""The data set registry: names to loaders, built-ins first, plugins on demand.

Built-in loaders register themselves when their module is imported (`cnnc.data` imports them all).
Third-party packages add data sets through the entry-point group ``cnnc.datasets``; those are
imported only when a name is looked up that no loaded module has registered, so a broken or slow
plugin costs nothing until it is asked for.

An entry point may name either

* a loader function (``mypkg.data:load_moons``), registered under the entry point's name with the
  first line of its docstring as help, or
* a module or function whose import calls `register_dataset` itself (then the entry point's name
  should be the registered name).

A loader is called as ``loader(arg, data_dir=..., input_shape=..., num_classes=..., seed=...)``:
`arg` is what follows the first ``:`` of the spec (``shapes:32x32x3`` gives ``"32x32x3"``), or
None. A loader that does not take all of those keywords gets only those it names.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from cnnc.diagnostics import CnncError

ENTRY_POINT_GROUP = "cnnc.datasets"

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass
class Dataset:
    """A classification data set split into train and test parts.

    Images are (N, H, W, C) float32 in [0, 1]; labels are (N,) int64 class indices in
    [0, num_classes).
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    description: str
    class_names: list[str] | None = None  # one name per label, when the data set has them
    preparation: str = ""  # how the images were made to fit the model, for the training header

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        h, w, c = self.train_x.shape[1:]
        return (int(h), int(w), int(c))


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    help: str
    loader: Callable[..., Dataset]
    argument: str | None = None  # what may follow "name:" in a spec, e.g. "PATH"; None: nothing
    plugin: str | None = None  # "distribution (module:attr)" for data sets from entry points


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(name: str, help: str, *, argument: str | None = None,
                     _plugin: str | None = None):
    """Decorator: register `loader` under `name`. Refuses a name that is already taken.

    `argument` names what the spec may carry after ``name:`` (``"PATH"``, ``"HxWxC[:K[:N]]"``);
    leave it None for a data set that takes none, and a spec like ``digits:foo`` is refused.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"invalid data set name {name!r}: use lower-case letters, digits, "
                         "'.', '_' and '-', starting with a letter or digit")

    def decorate(loader: Callable[..., Dataset]) -> Callable[..., Dataset]:
        if name in _REGISTRY:
            raise ValueError(f"data set {name!r} is already registered "
                             f"(by {_REGISTRY[name].loader.__module__})")
        _REGISTRY[name] = DatasetEntry(name, help, loader, argument, _plugin)
        return loader

    return decorate


def dataset_names() -> list[str]:
    """The names of all data sets: registered ones and those that plugins offer (not imported)."""
    names = set(_REGISTRY)
    names.update(ep.name for ep in _entry_points())
    return sorted(names)


def dataset_help() -> dict[str, str]:
    """Name to one-line help, for the registered data sets (plugins not yet loaded show theirs
    once loaded; until then their entry point)."""
    out = {name: e.help for name, e in _REGISTRY.items()}
    for ep in _entry_points():
        out.setdefault(ep.name, f"(plugin: {ep.value})")
    return dict(sorted(out.items()))


def _entry_points() -> list:
    from importlib.metadata import entry_points

    try:
        return list(entry_points(group=ENTRY_POINT_GROUP))
    except Exception:  # a broken distribution's metadata must not break cnnc
        return []


def lookup(name: str) -> DatasetEntry | None:
    """The entry for `name`, loading a plugin that offers it if no module has registered it."""
    entry = _REGISTRY.get(name)
    if entry is not None:
        return entry
    for ep in _entry_points():
        if ep.name != name:
            continue
        dist = getattr(getattr(ep, "dist", None), "name", None) or "an installed package"
        origin = f"{dist} ({ep.value})"
        try:
            obj = ep.load()
        except Exception as exc:
            raise CnncError(
                f"the data set plugin '{name}' from {origin} failed to load: "
                f"{type(exc).__name__}: {exc}",
                hint=f"reinstall or update {dist}, or uninstall it if it is not needed",
                code="data") from exc
        if name not in _REGISTRY:
            if not callable(obj) or inspect.ismodule(obj):
                raise CnncError(
                    f"the data set plugin '{name}' from {origin} neither registered '{name}' "
                    "nor is a loader function",
                    hint=f"this is a bug in {dist}; its entry point in group "
                         f"'{ENTRY_POINT_GROUP}' must name a loader function or a module that "
                         "calls cnnc.data.register_dataset",
                    code="data")
            doc = (inspect.getdoc(obj) or "").strip().splitlines()
            register_dataset(name, doc[0] if doc else f"plugin from {dist}", argument="ARG",
                             _plugin=origin)(obj)
        return _REGISTRY[name]
    return None


def call_loader(entry: DatasetEntry, arg: str | None, **options) -> Dataset:
    """Call a loader with the keywords it accepts."""
    try:
        params = inspect.signature(entry.loader).parameters
    except (TypeError, ValueError):
        params = {}
    if params and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        options = {k: v for k, v in options.items() if k in params}
    return entry.loader(arg, **options)


def validate_dataset(ds: object, origin: str) -> Dataset:
    """Check that a loader kept the Dataset contract; coerce harmless dtype differences.

    `origin` says where the data came from, for the message. Raises CnncError(code="data").
    """
    if not isinstance(ds, Dataset):
        raise CnncError(f"the loader of {origin} returned {type(ds).__name__}, not a "
                        "cnnc.data.Dataset", code="data")

    def bad(msg: str) -> CnncError:
        return CnncError(f"the data set '{ds.name}' ({origin}) is malformed: {msg}", code="data")

    for part in ("train", "test"):
        x = np.asarray(getattr(ds, f"{part}_x"))
        y = np.asarray(getattr(ds, f"{part}_y"))
        if x.ndim != 4:
            raise bad(f"{part} images have shape {x.shape}; expected (N, H, W, C)")
        if x.dtype.kind != "f":
            raise bad(f"{part} images are {x.dtype}; expected float32 in [0, 1]")
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise bad(f"{part} labels have shape {y.shape} and type {y.dtype}; expected (N,) "
                      "integers")
        if y.dtype != np.int64:
            y = y.astype(np.int64)
        if len(x) != len(y):
            raise bad(f"{len(x):,} {part} images but {len(y):,} {part} labels")
        setattr(ds, f"{part}_x", x)
        setattr(ds, f"{part}_y", y)
    if ds.train_x.shape[1:] != ds.test_x.shape[1:]:
        raise bad(f"train images are {format_shape(ds.train_x.shape[1:])} but test images are "
                  f"{format_shape(ds.test_x.shape[1:])}")
    if len(ds.train_x) == 0:
        raise bad("it has no training images")
    if not isinstance(ds.num_classes, (int, np.integer)) or ds.num_classes < 1:
        raise bad(f"num_classes is {ds.num_classes!r}; expected a positive integer")
    ds.num_classes = int(ds.num_classes)
    if ds.class_names is not None:
        names = [str(n) for n in ds.class_names]
        if len(names) != ds.num_classes:
            raise bad(f"it names {len(names)} classes but has {ds.num_classes}")
        ds.class_names = names
    for part in ("train", "test"):
        y = getattr(ds, f"{part}_y")
        if y.size and (y.min() < 0 or y.max() >= ds.num_classes):
            raise bad(f"{part} labels range over {y.min()}..{y.max()} but num_classes is "
                      f"{ds.num_classes}")
    return ds


def format_shape(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


def check_fits(ds: Dataset, input_shape: tuple, num_classes: int | None) -> None:
    """Raise CnncError(code="data") unless the model (its input shape and number of outputs)
    can be trained on `ds`.

    `input_shape` is the model's (H, W, C), or (N,) for a flat input, which fits images with
    H*W*C == N (the caller flattens them). `num_classes` is the model's number of outputs; 1
    (a single sigmoid unit) fits a 2-class data set; None skips the check.
    """
    shape = tuple(int(d) for d in input_shape)
    img = ds.image_shape
    size = math.prod(img)
    if len(shape) == 3:
        if shape != img:
            notes = []
            if shape[:2] == img[:2]:
                notes.append(f"the sizes agree but the data has {img[2]} channel"
                             f"{'s' * (img[2] != 1)} and the model expects {shape[2]}")
            raise CnncError(
                f"the data set '{ds.name}' has {format_shape(img)} images but the model's "
                f"input is {format_shape(shape)}",
                notes=notes,
                hint=_fitting_hint(shape, num_classes) or
                f"make the model's input {format_shape(img)}, or use a data set with "
                f"{format_shape(shape)} images (`shapes:{format_shape(shape)}` makes "
                "synthetic ones)",
                code="data")
    elif len(shape) == 1:
        if shape[0] != size:
            raise CnncError(
                f"the data set '{ds.name}' has {format_shape(img)} images ({size:,} values "
                f"each) but the model's flat input takes {shape[0]:,} values",
                hint=_fitting_hint(shape, num_classes) or
                f"make the model's input {format_shape(img)} (or flat with {size} "
                f"values), or use a data set with {shape[0]:,} values per image",
                code="data")
    else:
        raise CnncError(
            f"the model's input shape {format_shape(shape)} is neither an image (HxWxC) nor "
            f"flat (N), so the data set '{ds.name}' with {format_shape(img)} images cannot "
            "feed it",
            hint=f"make the model's input {format_shape(img)}",
            code="data")
    if num_classes is None:
        return
    k = int(num_classes)
    if k == 1:
        if ds.num_classes != 2:
            raise CnncError(
                f"the model has a single output unit (a yes/no classifier), which needs a "
                f"2-class data set, but '{ds.name}' has {ds.num_classes} classes",
                hint=f"give the model's last layer {ds.num_classes} outputs (one per class)",
                code="data")
    elif k != ds.num_classes:
        raise CnncError(
            f"the model has {k} outputs but the data set '{ds.name}' has "
            f"{ds.num_classes} classes",
            hint=f"give the model's last layer {ds.num_classes} outputs (one per class)"
                 + (" or a single sigmoid unit" if ds.num_classes == 2 else ""),
            code="data")


def _fitting_hint(shape: tuple, num_classes) -> str | None:
    """Names the known data sets that do fit the model, saying which are installed."""
    from cnnc.data.fit import hint

    return hint(shape, None if num_classes is None else int(num_classes))


def load_dataset(spec: str, *, data_dir: str | None = None, input_shape: tuple | None = None,
                 num_classes: int | None = None, seed: int = 0,
                 skip_bad_images: bool = False) -> Dataset:
    """Load the data set that `spec` names. Raises CnncError(code="data") for a person to read.

    `spec` is resolved in this order:

    1. a registered name (``digits``, ``fashion-mnist``, ``shapes``, ...), or a plugin's;
    2. ``name:ARG`` for a registered name that takes an argument (``npz:PATH``,
       ``shapes:32x32x3:5``, ``idx:DIR``);
    3. an existing directory: a folder of class sub-folders of images (``folder:DIR``), or
       else of the four IDX files (``idx:DIR``);
    4. an existing ``.npz`` file (like ``npz:PATH``).

    `data_dir` (the ``--data DIR`` option) is searched first for downloadable data sets;
    `input_shape` and `num_classes` are the model's, used by synthetic data sets for their
    defaults (fit is checked separately by `check_fits`), and by image folders for the size and
    channels to convert to; `seed` seeds synthetic data and held-out splits; `skip_bad_images`
    lets an image folder skip unreadable files instead of refusing them.
    """
    import os

    if not isinstance(spec, str) or not spec.strip():
        raise CnncError("no data set was named", hint=_known_hint(), code="data")
    spec = spec.strip()
    options = dict(data_dir=data_dir, input_shape=input_shape, num_classes=num_classes,
                   seed=seed, skip_bad_images=skip_bad_images)

    entry = lookup(spec)
    arg: str | None = None
    if entry is None and ":" in spec:
        head, _, rest = spec.partition(":")
        # A one-letter head is a Windows drive ("C:\data"), not a data set name.
        if len(head) > 1 and _NAME_RE.match(head):
            entry = lookup(head)
            if entry is not None:
                arg = rest
                if entry.argument is None:
                    raise CnncError(
                        f"the data set '{head}' takes no argument, but the spec '{spec}' "
                        f"gives it '{rest}'",
                        hint=f"write just `{head}`", code="data")
    if entry is None:
        if os.path.isdir(spec):
            from cnnc.data.folder import is_image_folder

            entry, arg = lookup("folder" if is_image_folder(spec) else "idx"), spec
        elif os.path.isfile(spec) and spec.lower().endswith(".npz"):
            entry, arg = lookup("npz"), spec
        elif os.path.isfile(spec):
            raise CnncError(
                f"'{spec}' is a file, but cnnc reads data sets from .npz files, folders of "
                "images (one sub-folder per class) or folders of IDX files",
                hint="save the arrays with numpy.savez as x_train, y_train, x_test, y_test and "
                     "pass the .npz file", code="data")
        elif os.sep in spec or "/" in spec or spec.lower().endswith(".npz"):
            raise CnncError(f"the data set path '{spec}' does not exist",
                            hint="check the path, or name a data set: " + _known_list(),
                            code="data")
        else:
            from cnnc.diagnostics import did_you_mean

            names = dataset_names()
            guess = did_you_mean(spec.partition(":")[0], names)
            raise CnncError(f"unknown data set '{spec}'",
                            notes=[f"known data sets: {', '.join(names)}"],
                            hint=guess or "name a known data set, an .npz file or a folder of "
                                          "IDX files", code="data")
    origin = f"plugin {entry.plugin}" if entry.plugin else f"data set '{entry.name}'"
    ds = call_loader(entry, arg, **options)
    return validate_dataset(ds, origin)


def _known_list() -> str:
    return ", ".join(dataset_names())


def _known_hint() -> str:
    return "name one of: " + _known_list() + "; or an .npz file or a folder of IDX files"
