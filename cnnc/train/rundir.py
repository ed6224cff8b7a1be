"""The folder a training writes to (`--out DIR`): checked before any work, locked while in use.

* `check_out_dir` refuses, before the data is loaded, a folder that cannot hold a run: an empty
  name, a file, a path under a file, a folder that cannot be written, and (unless resuming or
  told to overwrite) a folder that already holds a run, which would otherwise be replaced.
* `locked(out)` holds an exclusive lock on DIR/.lock for as long as a training uses the folder,
  so a second training into the same folder fails at once instead of both writing and one run
  silently disappearing. The lock is the kernel's (flock): it goes with the process, however the
  process ends, so a killed run never leaves a stale lock behind (only, at worst, the empty
  file, which the next training reuses); a run that ends normally removes the file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..diagnostics import CnncError

LOCK = ".lock"
RUN_FILES = ("state.safetensors", "last.safetensors", "best.safetensors", "metrics.jsonl")

_held: dict[str, list] = {}  # real path of a folder -> [open lock file, depth] held here


def holds_run(out: str | os.PathLike) -> bool:
    """Whether the folder holds files of a run: checkpoints, or a metrics.jsonl with a record
    (its header line alone, written when a run starts, does not count)."""
    import json

    folder = Path(out)
    for name in RUN_FILES:
        path = folder / name
        try:
            if not path.is_file():
                continue
            if name != "metrics.jsonl":
                return True
            with open(path, "rb") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except (ValueError, RecursionError):
                        return True  # not ours to judge: keep it
                    if not (isinstance(record, dict) and "header" in record):
                        return True
        except OSError:
            continue
    return False


def check_out_dir(out: str, *, resume: bool = False, overwrite: bool = False) -> None:
    """Raise CnncError(code="usage" or "io") unless `out` can take this run's files."""
    if not str(out).strip():
        raise CnncError("--out needs a folder name, not an empty string", code="usage",
                        hint="pass --out DIR, or leave --out out")
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise CnncError(f"--out {out} is a file, not a folder", code="usage",
                        hint="choose a folder for the run's files")
    for parent in folder.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CnncError(f"--out {out} cannot be created: {parent} is a file",
                                code="usage", hint="choose a folder for the run's files")
            break
    if not resume and not overwrite and holds_run(folder):
        raise CnncError(f"{out} already holds a training run", code="usage",
                        notes=["training again would replace its checkpoints and metrics"],
                        hint="pass --resume to continue it, --overwrite to replace it, or "
                             "choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CnncError(f"cannot write to --out {out}: {exc.strerror or exc}", code="io",
                        hint="choose a folder you can write to") from exc


@contextlib.contextmanager
def locked(out: str | os.PathLike):
    """Hold DIR/.lock for the block; re-entrant within a process. CnncError if another process
    holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock (Windows): no lock
        yield
        return
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        key = str(folder.resolve())
    except OSError as exc:
        raise CnncError(f"cannot create the folder {out}: {exc.strerror or exc}",
                        code="io") from exc
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    path = folder / LOCK
    while True:
        try:
            f = open(path, "a+")
        except OSError as exc:
            raise CnncError(f"cannot write to {out}: {exc.strerror or exc}", code="io",
                            hint="choose a folder you can write to") from exc
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            owner = f.read().strip()
            f.close()
            raise CnncError(f"{out} is in use by another training"
                            + (f" (process {owner})" if owner.isdigit() else ""), code="usage",
                            hint="wait for it to finish, or choose another --out") from None
        # The holder removes the file when done; a file removed between our open and our
        # lock is not the lock any more: take the new one.
        try:
            if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        f.close()
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    _held[key] = [f, 1]
    try:
        yield
    finally:
        _held[key][1] -= 1
        if _held[key][1] == 0:
            del _held[key]
            with contextlib.suppress(OSError):
                path.unlink()  # while still locked: see the inode check above
            f.close()  # releases the lock
