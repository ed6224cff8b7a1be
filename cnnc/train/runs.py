"""Run folders: where `cnnc train` keeps a run when no --out is given, and what a run folder
holds beyond the engine's checkpoints.

    runs/<model name>/1/, runs/<model name>/2/, ...   (a new number for every run)

A run folder holds everything to reproduce and reuse the run:

* ``model.cnn``: the model text as trained;
* ``run.json``: the resolved settings (the file's `train:` section with the flags over it), the
  backend, the data set, the augmentation, the class names and the command line;
* ``metrics.jsonl``, ``last.safetensors``, ``best.safetensors``, ``state.safetensors`` (the
  engine's, see cnnc/train/engine.py) and ``curves.svg`` (the loss and accuracy so far).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

from ..diagnostics import CnncError
from .checkpoint import atomic_write_text

RUNS = "runs"
MODEL = "model.cnn"
RUN_JSON = "run.json"
CURVES = "curves.svg"


def _folder_name(name: str) -> str:
    """A model name as a folder name: letters, digits, '.', '_' and '-' kept."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
    return cleaned[:80]


def new_run_dir(model_name: str, base: str | Path = RUNS) -> Path:
    """Create and return base/<model name>/<n>, n one more than the largest there. Two runs
    started at once get different folders (mkdir either creates a folder or fails)."""
    parent = Path(base) / _folder_name(model_name)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        taken = [int(p.name) for p in parent.iterdir() if p.name.isdigit()]
    except OSError as exc:
        raise CnncError(f"could not create the run folder under {parent}: "
                        f"{exc.strerror or exc}", hint="pass --out DIR to write elsewhere",
                        code="io") from exc
    n = max(taken, default=0) + 1
    while True:
        folder = parent / str(n)
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            n += 1
        except OSError as exc:
            raise CnncError(f"could not create the run folder {folder}: {exc.strerror or exc}",
                            hint="pass --out DIR to write elsewhere", code="io") from exc


def write_run_files(out: str | Path, model, config, *, backend: str, dataset, argv=None) -> None:
    """model.cnn and run.json in a run folder."""
    from .augment import Augmentation

    out = Path(out)
    atomic_write_text(out / MODEL, model.source)
    record = {
        "model_file": str(model.file),
        "model": MODEL,
        "backend": backend,
        "data": dataset.name,
        "image_shape": list(dataset.image_shape),
        "preparation": getattr(dataset, "preparation", "") or None,
        "classes": list(dataset.class_names) if dataset.class_names else None,
        "settings": asdict(config),
        "augment": Augmentation.of(config).to_json(),
        "command": list(argv) if argv is not None else None,
    }
    atomic_write_text(out / RUN_JSON, json.dumps(record, indent=2) + "\n")
