"""Weights from outside a run: a cnnc safetensors file or a PyTorch state_dict, matched to a
model's layers.

    tensors = read_weights("resnet18.pth")           # name -> float32 array, in file order
    weights, report = match_weights(model.graph, tensors, initial, source="resnet18.pth",
                                    partial=False)

A PyTorch file is read with `torch.load(weights_only=True)`: tensors and containers only, no
code is ever unpickled. A checkpoint dict holding the state dict under "state_dict", "model" or
"model_state_dict" is opened, DataParallel's "module." prefix dropped, and BatchNorm's
`num_batches_tracked` counters (cnnc keeps none) left out.

Matching, in two passes:
1. by name: a tensor named as cnnc names the parameter ("basic_1.conv_1.weight") with the
   shape the model needs;
2. by graph order and shape, for what is left: the model's layers and the file's layers are
   grouped into units -- a conv or dense layer with the batch norm that normalises its output
   (the norm that reads it, in the graph; the norm that follows it, in the file) -- and each
   model unit takes the first unused file unit with exactly its parameter shapes. A file from
   another framework that builds the same network in the same order (torchvision's ResNet-18
   for examples/zoo/resnet18.cnn) matches entirely, even where a block lists its shortcut
   after its main path and the model file before.

With partial=False (eval, export, predict: `--weights`) anything that does not match is an
error naming each layer and both shapes. With partial=True (`train --init`) what matches is
loaded and the rest keeps its initial values; the report lists both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .diagnostics import CnncError

_NESTED = ("state_dict", "model_state_dict", "model", "net", "weights")
_NORM_PARAMS = ("weight", "bias", "running_mean", "running_var")


@dataclass
class MatchReport:
    by_name: list[str] = field(default_factory=list)  # model keys loaded by their own name
    by_order: list[tuple[str, str]] = field(default_factory=list)  # (model key, file key)
    left: list[tuple[str, tuple]] = field(default_factory=list)  # model keys left at init
    unused: list[tuple[str, tuple]] = field(default_factory=list)  # file keys nothing took

    @property
    def loaded(self) -> int:
        return len(self.by_name) + len(self.by_order)


# -- reading -------------------------------------------------------------------------------------


def _is_safetensors(path: str) -> bool:
    """A safetensors file starts with its header's length (8 bytes) and the header's '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n <= os.path.getsize(path) - 8


def read_weights(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict, str]:
    """(name -> float32 array in the file's order, metadata, "safetensors" or "torch")."""
    path = str(path)
    if not os.path.exists(path):
        raise CnncError(f"the weights file {path} does not exist", code="weights",
                        hint="check the path, or train the model first to create it")
    if os.path.isdir(path):
        raise CnncError(f"{path} is a directory, not a weights file", code="weights",
                        hint="name a .safetensors file (a run folder holds best.safetensors "
                             "and last.safetensors) or a PyTorch .pt/.pth state dict")
    try:
        sniff = _is_safetensors(path)
    except OSError as e:
        raise CnncError(f"could not read the weights file {path}: {e.strerror or e}",
                        code="io") from None
    if sniff:
        from .train.checkpoint import load_safetensors

        tensors, meta = load_safetensors(path)
        return tensors, meta, "safetensors"
    return _read_torch(path), {}, "torch"


def _read_torch(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise CnncError(f"{path} is not a safetensors file, and reading a PyTorch file needs "
                        "torch, which is not installed", code="weights",
                        hint="pip install torch, or convert the weights to safetensors") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, zip errors, refused globals: all mean "not weights"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CnncError(f"{path} is neither a safetensors file nor a PyTorch state dict that "
                        f"loads with weights_only=True", code="weights",
                        notes=[f"torch.load said: {first[:300]}"],
                        hint="save the weights with torch.save(model.state_dict(), PATH) or as "
                             "safetensors") from None
    return _flatten_state(obj, path)


def _flatten_state(obj, path) -> dict[str, np.ndarray]:
    import torch

    if isinstance(obj, dict):
        for key in _NESTED:  # a training checkpoint: {"epoch": ..., "state_dict": {...}}
            inner = obj.get(key)
            if isinstance(inner, dict) and any(isinstance(v, torch.Tensor)
                                               for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CnncError(f"{path} holds no state dict (a mapping from names to tensors)",
                        code="weights",
                        hint="save the weights with torch.save(model.state_dict(), PATH)")
    out = {}
    names = [k for k, v in obj.items() if isinstance(v, torch.Tensor)]
    strip = all(k.startswith("module.") for k in names)  # saved from DataParallel/DDP
    for k in names:
        if k.endswith("num_batches_tracked"):
            continue
        v = obj[k]
        if not v.is_floating_point():
            raise CnncError(f"{path}: the tensor {k} is {str(v.dtype).replace('torch.', '')}, "
                            "not floating point", code="weights")
        out[k[len("module."):] if strip else k] = v.detach().to(torch.float32).cpu().numpy()
    return out


# -- matching ------------------------------------------------------------------------------------


def _shape(v) -> tuple:
    return tuple(int(d) for d in v)


def _model_units(graph, keys: set[str]) -> list[list[tuple[str, str, tuple]]]:
    """The model's unmatched parameters as units: [(layer name, param, shape), ...] each; a
    batch norm joins the conv/dense whose output it reads."""
    units: list[list] = []
    unit_of: dict[str, list] = {}
    for layer in graph.layers():
        entries = [(layer.name, p, _shape(s)) for p, s in {**layer.params,
                                                             **layer.buffers}.items()
                   if f"{layer.name}.{p}" in keys]
        if not entries:
            continue
        src = layer.inputs[0] if layer.inputs else None
        # what the norm normalises: the nearest layer with parameters, through activations
        while src is not None and src not in unit_of and len(graph[src].inputs) == 1 and \
                not graph[src].params and graph[src].op != "input":
            src = graph[src].inputs[0]
        if layer.op == "batchnorm" and src in unit_of and \
                not any(graph[n].op == "batchnorm" for n, *_ in unit_of[src]):
            unit_of[src].extend(entries)
            unit_of[layer.name] = unit_of[src]
            continue
        unit = list(entries)
        units.append(unit)
        unit_of[layer.name] = unit
    return units


def _is_norm(entries) -> bool:
    names = {p for _, p, _ in entries}
    return names <= set(_NORM_PARAMS) and "running_mean" in names and \
        all(len(s) == 1 for _, _, s in entries)


def _file_units(tensors: dict[str, np.ndarray], keys: list[str]):
    """The file's unmatched tensors as units, in file order: layers by name prefix, a batch norm
    joined to the weight layer just before it when its size is that layer's output count."""
    layers: dict[str, list] = {}
    for k in keys:
        prefix, _, pname = k.rpartition(".")
        layers.setdefault(prefix, []).append((prefix, pname, _shape(tensors[k].shape)))
    units: list[list] = []
    for entries in layers.values():
        if units and _is_norm(entries) and not _is_norm(units[-1]):
            head = units[-1]
            outs = {s[0] for _, p, s in head if p == "weight" and len(s) >= 2}
            if outs and all(s == (next(iter(outs)),) for _, _, s in entries) and \
                    not any(_is_norm([e]) for e in head[1:]) and len(head) <= 2:
                head.extend(entries)
                continue
        units.append(list(entries))
    return units


def _signature(unit) -> tuple:
    """What must agree for two units to match: each layer's parameters and shapes, in order."""
    layers: dict[str, list] = {}
    for name, p, s in unit:
        layers.setdefault(name, []).append((p, s))
    return tuple(tuple(sorted(v)) for v in layers.values())


def match_weights(graph, tensors: dict[str, np.ndarray], initial: dict[str, np.ndarray], *,
                  source: str, partial: bool) -> tuple[dict[str, np.ndarray], MatchReport]:
    """Every weight of the model (initial ones where nothing matched, with partial=True)."""
    expected = {k: _shape(v.shape) for k, v in initial.items()}
    report = MatchReport()
    out = {k: np.array(v, dtype=np.float32) for k, v in initial.items()}
    taken: set[str] = set()
    renamed: list[tuple[str, tuple, tuple]] = []  # same name, another shape
    for k, shape in expected.items():
        if k in tensors:
            given = _shape(tensors[k].shape)
            if given == shape:
                out[k] = np.asarray(tensors[k], dtype=np.float32)
                report.by_name.append(k)
                taken.add(k)
            else:
                renamed.append((k, given, shape))
    left_keys = {k for k in expected if k not in taken}
    file_left = [k for k in tensors if k not in taken]
    if left_keys and file_left:
        file_units = _file_units(tensors, file_left)
        used = [False] * len(file_units)
        sigs = [_signature(u) for u in file_units]
        for unit in _model_units(graph, left_keys):
            sig = _signature(unit)
            for i, fsig in enumerate(sigs):
                if not used[i] and fsig == sig:
                    used[i] = True
                    fl = {}
                    for name, p, _ in file_units[i]:
                        fl.setdefault(name, []).append(p)
                    # layers pair up in order; parameters by name within a layer
                    mlayers = list(dict.fromkeys(n for n, _, _ in unit))
                    for mname, fname in zip(mlayers, fl):
                        for _, p, _ in (e for e in unit if e[0] == mname):
                            mk, fk = f"{mname}.{p}", f"{fname}.{p}"
                            out[mk] = np.asarray(tensors[fk], dtype=np.float32)
                            report.by_order.append((mk, fk))
                            taken.add(mk)
                            taken.add(fk)
                    break
    report.left = [(k, expected[k]) for k in expected if k not in taken]
    report.unused = [(k, _shape(tensors[k].shape)) for k in tensors if k not in taken]
    if report.left and (not partial or report.loaded == 0) or (not partial and report.unused):
        raise _mismatch(report, renamed, source, partial)
    return out, report


def _mismatch(report: MatchReport, renamed, source: str, partial: bool) -> CnncError:
    notes = []
    renamed_keys = {k for k, _, _ in renamed}
    for k, given, want in renamed[:8]:
        notes.append(f"layer {k.rpartition('.')[0]}: {k} is {_fmt(given)} in the file, the "
                     f"model needs {_fmt(want)}")
    others = [(k, s) for k, s in report.left if k not in renamed_keys]
    spare = [(k, s) for k, s in report.unused if k not in renamed_keys]
    for i, (k, want) in enumerate(others[:8]):
        if i < len(spare):
            fk, fs = spare[i]
            notes.append(f"layer {k.rpartition('.')[0]}: {k} needs {_fmt(want)}; the file's "
                         f"next unmatched tensor, {fk}, is {_fmt(fs)}")
        else:
            notes.append(f"layer {k.rpartition('.')[0]}: {k} ({_fmt(want)}) is not in the file")
    if len(others) > 8:
        notes.append(f"... and {len(others) - 8} more of the model's tensors unmatched")
    extra = spare[len(others):]
    if extra:
        shown = ", ".join(f"{k} {_fmt(s)}" for k, s in extra[:6])
        notes.append(f"not in the model: {shown}" + (" ..." if len(extra) > 6 else ""))
    if partial:
        msg = f"nothing in {source} fits this model"
        hint = "is it the weights of another network?"
    else:
        n = len(report.left) + len(extra)
        msg = (f"the weights in {source} do not fit this model ({report.loaded} of "
               f"{report.loaded + len(report.left)} tensors matched, {n} mismatch"
               f"{'es' * (n != 1)})")
        hint = ("to start training from weights that fit only in part, use "
                "`cnnc train FILE --init W`")
    return CnncError(msg, notes=notes, code="weights", hint=hint)


def _fmt(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


# -- for the commands ----------------------------------------------------------------------------


def load_weights(model, path, *, seed: int = 0, partial: bool = False):
    """(weights for every tensor of the model, report, file metadata)."""
    from .backends.init import initial_weights

    tensors, meta, _ = read_weights(path)
    initial = initial_weights(model.graph, seed)
    weights, report = match_weights(model.graph, tensors, initial, source=str(path),
                                    partial=partial)
    return weights, report, meta
