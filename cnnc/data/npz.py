"""`npz:PATH`: a data set saved with numpy.savez.

The archive holds x_train, y_train, x_test, y_test (or train_x, train_y, test_x, test_y), and
optionally num_classes (a scalar). Images are (N, H, W) or (N, H, W, C); uint8 (or any integers
in 0..255) are divided by 255, floats are kept and must lie in [0, 1]. Labels are (N,) or (N, 1)
integers, or one-hot (N, K). Nothing is ever unpickled.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib

import numpy as np

from cnnc.data._registry import Dataset, format_shape, register_dataset
from cnnc.diagnostics import CnncError

KEY_SETS = (("x_train", "y_train", "x_test", "y_test"),
            ("train_x", "train_y", "test_x", "test_y"))

MAX_LABEL = 2**31 - 1  # the most classes a model can have (a size in a model file)

HOW_TO_SAVE = ("save it with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...) "
               "from plain numeric arrays")


def _err(path: str, msg: str, hint: str = HOW_TO_SAVE, **kw) -> CnncError:
    return CnncError(f"the data file {path} {msg}", hint=hint, code="data", **kw)


def _images(path: str, key: str, a: np.ndarray) -> np.ndarray:
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4:
        raise _err(path, f"has '{key}' of shape {a.shape}; images must be (N, H, W) or "
                         "(N, H, W, C)")
    if a.dtype == np.uint8:
        x = a.astype(np.float32)
        np.divide(x, np.float32(255.0), out=x)
        return x
    if a.dtype.kind in "iu":
        if a.size and (a.min() < 0 or a.max() > 255):
            raise _err(path, f"has integer images '{key}' with values {a.min()}..{a.max()}; "
                             "integer pixels must be 0..255",
                       hint="scale the images to floats in [0, 1] before saving")
        return a.astype(np.float32) / np.float32(255.0)
    if a.dtype.kind == "f":
        x = a.astype(np.float32)
        if x.size:
            if not np.isfinite(x).all():
                raise _err(path, f"has NaN or infinite values in '{key}'",
                           hint="clean the data before saving")
            lo, hi = float(x.min()), float(x.max())
            if lo < 0.0 or hi > 1.0:
                hint = ("these look like 0..255 pixels: divide them by 255 before saving"
                        if lo >= 0 and hi <= 255 else "scale the images to [0, 1] before saving")
                raise _err(path, f"has float images '{key}' with values {lo:g}..{hi:g}; cnnc "
                                 "expects float pixels in [0, 1]", hint=hint)
        return x
    raise _err(path, f"has images '{key}' of type {a.dtype}; expected uint8 or floats")


def _labels(path: str, key: str, a: np.ndarray) -> np.ndarray:
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    elif a.ndim == 2 and a.shape[1] > 1:
        if not (np.isin(a, (0, 1)).all() and (a.sum(axis=1) == 1).all()):
            raise _err(path, f"has 2-D labels '{key}' of shape {a.shape} that are not one-hot")
        return np.argmax(a, axis=1).astype(np.int64)
    if a.ndim != 1:
        raise _err(path, f"has labels '{key}' of shape {a.shape}; expected (N,)")
    if a.dtype.kind == "f":
        if a.size and not (np.isfinite(a).all() and (a == np.round(a)).all()):
            raise _err(path, f"has labels '{key}' that are not whole numbers")
    elif a.dtype.kind not in "iub":
        raise _err(path, f"has labels '{key}' of type {a.dtype}; expected integers")
    # Checked in the array's own type: uint64 2**64-1 must not wrap to -1 in int64.
    if a.size and a.min() < 0:
        raise _err(path, f"has a negative label ({a.min()}) in '{key}'; labels are class "
                         "indices 0..K-1")
    if a.size and a.max() > MAX_LABEL:
        raise _err(path, f"has a label {a.max():,} in '{key}', larger than any class index "
                         f"cnnc takes (at most {MAX_LABEL:,}); labels are class indices 0..K-1")
    return a.astype(np.int64)


def _check_members(path: str, keys) -> None:
    """Check each wanted member's .npy header against the bytes the archive declares for it,
    and the total against the machine's memory, before numpy allocates anything: a 1 KB file
    may claim trillions of values, and a zip member may inflate far past its stored size."""
    from cnnc.memory import data_limit, human_bytes

    total = 0
    try:
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            for key in keys:
                info = infos.get(key + ".npy")
                if info is None:
                    raise _err(path, f"holds '{key}' but not as a .npy array (the member is "
                                     f"'{key}', without .npy)" if key in infos
                               else f"lacks the member '{key}.npy'")
                with zf.open(info) as f:
                    try:
                        version = np.lib.format.read_magic(f)
                        if version == (1, 0):
                            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                        elif version == (2, 0):
                            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                        else:
                            shape, _, dtype = np.lib.format._read_array_header(f, version)
                        header_len = f.tell()
                    except (ValueError, OSError, EOFError, SyntaxError, zlib.error,
                            zipfile.BadZipFile) as exc:
                        raise _err(path, f"has a member '{key}.npy' that is not a .npy array "
                                         f"({exc})") from exc
                if dtype.hasobject:
                    raise _err(path, f"holds Python objects in '{key}', which could only be "
                                     "read by unpickling; cnnc never unpickles data (it can run "
                                     "arbitrary code)", hint="save plain numeric arrays, not "
                                                             "object arrays or lists of arrays")
                nbytes = math.prod(shape) * dtype.itemsize
                if nbytes != info.file_size - header_len:
                    raise _err(path, f"has a damaged array '{key}': its header says shape "
                                     f"{tuple(shape)} of {dtype} ({nbytes:,} bytes) but the "
                                     f"archive stores {max(info.file_size - header_len, 0):,} "
                                     "bytes for it")
                total += nbytes + math.prod(shape) * 4  # as stored, then as float32
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError,
            zlib.error, ValueError) as exc:
        raise _err(path, f"could not be read: {exc}") from exc
    if total > data_limit():
        raise _err(path, f"needs {human_bytes(total)} in memory, more than this machine has "
                         f"({human_bytes(data_limit())} available)",
                   hint="use a smaller data set (or a machine with more memory)")


def load_npz_file(path: str, name: str | None = None) -> Dataset:
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None
    if mode is None:
        raise CnncError(f"the data file {path} does not exist", code="data",
                        hint="check the path after `npz:`")
    if not stat.S_ISREG(mode):
        what = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise CnncError(f"the data file {path} is {what}, not an .npz archive", code="data",
                        hint="pass the path of the .npz file after `npz:`")
    if not zipfile.is_zipfile(path):
        hint = HOW_TO_SAVE
        try:
            with open(path, "rb") as f:
                if f.read(6) == b"\x93NUMPY":
                    hint = "this is a single array (.npy); " + HOW_TO_SAVE
        except OSError:
            pass
        raise _err(path, "is not an .npz archive (a zip file of arrays)", hint=hint)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, NotImplementedError, RuntimeError,
            zlib.error, EOFError) as exc:
        raise _err(path, f"could not be read: {exc}") from exc
    with archive:
        keys = list(archive.files)
        chosen = next((ks for ks in KEY_SETS if all(k in keys for k in ks)), None)
        if chosen is None:
            wanted = " or ".join(", ".join(ks) for ks in KEY_SETS)
            raise _err(path, f"lacks the arrays cnnc needs: expected {wanted}; found "
                             f"{', '.join(keys) if keys else 'no arrays'}")
        wanted = chosen + (("num_classes",) if "num_classes" in keys else ())
        _check_members(path, wanted)
        arrays = {}
        for key in wanted:
            try:
                arrays[key] = archive[key]
            except ValueError as exc:
                raise _err(path, f"holds Python objects in '{key}', which could only be read by "
                                 "unpickling; cnnc never unpickles data (it can run arbitrary "
                                 "code)", hint="save plain numeric arrays, not object arrays or "
                                               "lists of arrays") from exc
            except (OSError, zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError,
                    zlib.error) as exc:
                raise _err(path, f"has a damaged array '{key}': {exc}") from exc
    kx, ky, ktx, kty = chosen
    train_x, test_x = _images(path, kx, arrays[kx]), _images(path, ktx, arrays[ktx])
    train_y, test_y = _labels(path, ky, arrays[ky]), _labels(path, kty, arrays[kty])
    for xk, yk, x, y in ((kx, ky, train_x, train_y), (ktx, kty, test_x, test_y)):
        if len(x) != len(y):
            raise _err(path, f"has {len(x):,} images in '{xk}' but {len(y):,} labels in '{yk}'")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise _err(path, f"has {format_shape(train_x.shape[1:])} images in '{kx}' but "
                         f"{format_shape(test_x.shape[1:])} in '{ktx}'")
    if len(train_x) == 0:
        raise _err(path, f"has no training images ('{kx}' is empty)")
    top = int(max(train_y.max(), test_y.max() if test_y.size else 0)) + 1
    if "num_classes" in arrays:
        nc = arrays["num_classes"]
        if nc.shape != () or nc.dtype.kind not in "iu" or int(nc) < top:
            raise _err(path, f"has num_classes {nc!r}, which is not an integer of at least "
                             f"{top} (the largest label + 1)")
        num_classes = int(nc)
    else:
        num_classes = top
    return Dataset(name or f"npz:{path}", train_x, train_y, test_x, test_y, num_classes,
                   f"{len(train_x):,} train / {len(test_x):,} test images of "
                   f"{format_shape(train_x.shape[1:])}, {num_classes} classes, from {path}")


@register_dataset("npz", "arrays saved with numpy.savez: npz:PATH (x_train, y_train, x_test, "
                         "y_test)", argument="PATH")
def load_npz(arg=None, **_options) -> Dataset:
    if not arg:
        raise CnncError("`npz:` needs a file: npz:PATH", hint=HOW_TO_SAVE, code="data")
    return load_npz_file(arg)
