"""Weights on disk: the safetensors format, written and read with numpy alone. Never pickle.

A safetensors file is

* 8 bytes: N, the header length, unsigned little-endian;
* N bytes: a JSON object, ``{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin,
  end]}, ..., "__metadata__": {str: str}}``, padded with spaces so the data starts at a
  multiple of 8;
* the tensors' raw little-endian bytes, row-major; offsets count from the end of the header and
  the tensors tile that buffer exactly, with no gaps and no overlaps.

Files written here are read by the `safetensors` library and the other way round. Writes are
atomic: a temporary file in the same folder, flushed and fsync'd, then renamed over the target,
so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from typing import Mapping

import numpy as np

from cnnc.diagnostics import CnncError

# safetensors dtype name -> numpy dtype as stored (little-endian). BF16 is read as raw uint16
# and widened to float32.
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}

# numpy kind+itemsize -> safetensors dtype name, for saving.
_SAVE_NAMES = {
    ("f", 8): "F64", ("f", 4): "F32", ("f", 2): "F16",
    ("i", 8): "I64", ("i", 4): "I32", ("i", 2): "I16", ("i", 1): "I8",
    ("u", 8): "U64", ("u", 4): "U32", ("u", 2): "U16", ("u", 1): "U8",
    ("b", 1): "BOOL",
}

MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit
METADATA_KEY = "__metadata__"


# ---------------------------------------------------------------------------------------------
# Atomic writes


def _atomic_write(path: str | os.PathLike, write) -> None:
    """Call write(file) on a fresh temporary file beside `path`, then rename it to `path`.

    The temporary file is created with the usual permissions (0666 less the umask), flushed and
    fsync'd before the rename; on any failure it is removed and `path` is left as it was.
    """
    target = Path(path)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnncError(f"could not create the folder {parent} for {target}: "
                        f"{exc.strerror or exc}", code="io") from exc
    while True:
        tmp = parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o666)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise CnncError(f"could not write {target}: {exc.strerror or exc}",
                            code="io") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise CnncError(f"could not write {target}: {exc.strerror or exc}",
                            hint="check that the disk has room and the folder is writable",
                            code="io") from exc
        raise
    _fsync_dir(parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically; creates parent folders."""
    data = text.encode("utf-8")
    _atomic_write(path, lambda f: f.write(data))


# ---------------------------------------------------------------------------------------------
# Saving


def _float32_to_bf16(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even; NaN stays NaN."""
    bits = np.asarray(a, dtype=np.float32, order="C").view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        rounded[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)
    return rounded


def _bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _prepare(name: str, value, as_dtype: str | None) -> tuple[str, np.ndarray]:
    """(safetensors dtype, C-contiguous little-endian array of the bytes to store)."""
    a = np.asarray(value)
    if a.dtype.hasobject or (a.dtype.kind not in "fiub" and a.dtype.name != "bfloat16"):
        raise TypeError(f"tensor {name!r} has dtype {a.dtype}; safetensors stores only numbers "
                        "and booleans (object arrays would need pickle, which cnnc never uses)")
    if as_dtype is not None:
        if as_dtype not in DTYPES:
            raise ValueError(f"unknown safetensors dtype {as_dtype!r} for tensor {name!r}; "
                             f"known: {', '.join(DTYPES)}")
        if as_dtype == "BF16":
            if a.dtype.name != "bfloat16":
                a = _float32_to_bf16(a.astype(np.float32))
            return "BF16", np.asarray(a, order="C").view(np.uint16).astype("<u2")
        a = a.astype(DTYPES[as_dtype])
        return as_dtype, np.asarray(a, order="C")
    if a.dtype.name == "bfloat16" and a.dtype.itemsize == 2:  # ml_dtypes' bfloat16
        return "BF16", np.asarray(a, order="C").view(np.uint16).astype("<u2")
    key = (a.dtype.kind, a.dtype.itemsize)
    if key not in _SAVE_NAMES:
        raise TypeError(f"tensor {name!r} has dtype {a.dtype}, which safetensors cannot store")
    st = _SAVE_NAMES[key]
    return st, np.asarray(a, dtype=DTYPES[st], order="C")


def encode_safetensors(tensors: Mapping[str, np.ndarray],
                       metadata: Mapping[str, str] | None = None,
                       dtypes: Mapping[str, str] | None = None) -> tuple[bytes, list[np.ndarray]]:
    """The header bytes (length prefix included) and the arrays whose bytes follow, in order."""
    dtypes = dict(dtypes or {})
    unknown = set(dtypes) - set(tensors)
    if unknown:
        raise ValueError(f"dtypes names tensors that are not saved: {sorted(unknown)}")
    prepared = []
    for name, value in tensors.items():
        if not isinstance(name, str) or not name or name == METADATA_KEY:
            raise ValueError(f"invalid tensor name {name!r}")
        st, arr = _prepare(name, value, dtypes.get(name))
        prepared.append((name, st, arr))
    # Widest items first, so every tensor starts at a multiple of its item size.
    prepared.sort(key=lambda t: (-t[2].dtype.itemsize, t[0]))
    header: dict[str, object] = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"metadata must map str to str; got {k!r}: {v!r}")
        header[METADATA_KEY] = dict(metadata)
    offset = 0
    for name, st, arr in prepared:
        header[name] = {"dtype": st, "shape": [int(d) for d in arr.shape],
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    return len(text).to_bytes(8, "little") + text, [arr for _, _, arr in prepared]


def save_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                     metadata: Mapping[str, str] | None = None, *,
                     dtypes: Mapping[str, str] | None = None) -> None:
    """Write `tensors` (name -> numpy array) and string `metadata` to `path`, atomically.

    Stored as each array's own type (float64/32/16, int64/32/16/8, uint64/32/16/8, bool); an
    entry of `dtypes` (name -> "BF16", "F16", ...) stores that tensor converted to that type.
    Object arrays and other non-numeric types raise TypeError: nothing is ever pickled.
    Creates parent folders. OSError becomes CnncError(code="io").
    """
    head, arrays = encode_safetensors(tensors, metadata, dtypes)

    def write(f) -> None:
        f.write(head)
        for arr in arrays:
            if arr.nbytes:
                f.write(memoryview(arr.reshape(-1)).cast("B"))

    _atomic_write(path, write)


# ---------------------------------------------------------------------------------------------
# Loading


def load_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file: (name -> array, metadata). BF16 tensors come back as float32.

    Every structural problem (short file, absurd header length, bad JSON, unknown dtype, offsets
    out of range, overlapping or leaving gaps, shape that does not match the byte count) raises
    CnncError(code="weights") naming the file; a file that cannot be opened raises code "weights"
    when missing, "io" otherwise. The arrays are writable and in native byte order.
    """
    import stat

    p = Path(path)
    try:
        # O_NONBLOCK: a named pipe with no writer must not block the open.
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError as exc:
        raise CnncError(f"the weights file {p} does not exist",
                        hint="check the path, or train the model first to create it",
                        code="weights") from exc
    except OSError as exc:
        raise CnncError(f"could not read the weights file {p}: {exc.strerror or exc}",
                        code="io") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise CnncError(f"the weights file {p} is {what}", code="weights",
                            hint="pass the path of a .safetensors file")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as f:
            fd = None
            size = st.st_size
            # The header first: its claims are checked against the file's size before the
            # data (which may be gigabytes, or a sparse file's nothing) is read.
            head = f.read(min(size, 8))
            n = _header_length(head, size, p)
            header = f.read(n)
            if len(header) != n:
                raise _corrupt(p, f"only {8 + len(header):,} of its {size:,} bytes could be "
                                  "read")
            _parse_header(header, size - 8 - n, p)
            from cnnc.memory import available_bytes, human_bytes

            avail = available_bytes()
            if avail is not None and size > avail:
                raise CnncError(f"the weights file {p} is {human_bytes(size)}, more than this "
                                f"machine's memory ({human_bytes(avail)} available)",
                                code="weights")
            buf = bytearray(size)
            buf[:8 + n] = head + header
            got = 8 + n + (f.readinto(memoryview(buf)[8 + n:]) or 0)
    except OSError as exc:
        raise CnncError(f"could not read the weights file {p}: {exc.strerror or exc}",
                        code="io") from exc
    finally:
        if fd is not None:
            os.close(fd)
    if got != size:
        raise _corrupt(p, f"only {got:,} of its {size:,} bytes could be read")
    return decode_safetensors(buf, p)


def _corrupt(path, problem: str) -> CnncError:
    return CnncError(f"the weights file {path} is not a valid safetensors file: {problem}",
                     hint="the file is damaged or of another format; save the weights again "
                          "(or copy the file again)", code="weights")


def decode_safetensors(buf: bytearray | bytes, path: str | os.PathLike = "<bytes>"
                       ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse safetensors bytes; see load_safetensors. Arrays share `buf` when it is a bytearray."""
    size = len(buf)
    n = _header_length(buf[:8], size, path)
    entries, metadata, names = _parse_header(bytes(buf[8:8 + n]), size - 8 - n, path)
    data_start = 8 + n
    tensors: dict[str, np.ndarray] = {}
    for begin, _end, name, st, shape in sorted(entries, key=lambda e: e[2]):
        dt = DTYPES[st]
        count = math.prod(shape)
        arr = np.frombuffer(buf, dtype=dt, count=count, offset=data_start + begin)
        if not arr.flags.aligned or not arr.flags.writeable or not dt.isnative:
            arr = arr.astype(dt.newbyteorder("=") if dt.itemsize > 1 else dt)
        if st == "BF16":
            arr = _bf16_to_float32(arr)
        tensors[name] = arr.reshape(shape)
    return {k: tensors[k] for k in names if k in tensors}, dict(metadata)


def _header_length(head: bytes, size: int, path) -> int:
    """The header length the first 8 bytes give, checked against the file's size."""
    if size < 8 or len(head) < 8:
        raise _corrupt(path, f"it is {size} bytes long, too short for the 8-byte header length")
    n = int.from_bytes(head[:8], "little")
    if n > MAX_HEADER:
        raise _corrupt(path, f"its header length field says {n:,} bytes, over the "
                             f"{MAX_HEADER:,}-byte limit")
    if 8 + n > size:
        raise _corrupt(path, f"its header length field says {n:,} bytes, but only {size - 8:,} "
                             "bytes follow: the file is truncated or not safetensors")
    if n < 2:
        raise _corrupt(path, f"its header is {n} bytes long, too short for a JSON object")
    return n


def _parse_header(text: bytes, data_len: int, path):
    """(entries (begin, end, name, dtype, shape) sorted by offset, metadata, names in file
    order) of a safetensors JSON header, every claim checked against the data's length."""

    def no_duplicates(pairs):
        out = {}
        for k, v in pairs:
            if k in out:
                raise ValueError(f"the name {k!r} appears twice")
            out[k] = v
        return out

    try:  # RecursionError: 100,000 nested `[` exhaust the JSON parser's stack

        header = json.loads(text.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _corrupt(path, f"its header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _corrupt(path, f"its header is a JSON {type(header).__name__}, not an object")

    metadata = header.pop(METADATA_KEY, None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise _corrupt(path, f"its {METADATA_KEY} is not an object of strings")

    entries = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise _corrupt(path, f"the entry for tensor {name!r} is not a JSON object")
        missing = [k for k in ("dtype", "shape", "data_offsets") if k not in info]
        if missing:
            raise _corrupt(path, f"the entry for tensor {name!r} lacks {', '.join(missing)}")
        st, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(st, str) or st not in DTYPES:
            raise _corrupt(path, f"tensor {name!r} has dtype {st!r}, which cnnc does not read "
                                 f"(it reads {', '.join(DTYPES)})")
        if (not isinstance(shape, list)
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                           for d in shape)):
            raise _corrupt(path, f"tensor {name!r} has shape {shape!r}; expected a list of "
                                 "non-negative integers")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise _corrupt(path, f"tensor {name!r} has data_offsets {offsets!r}; expected "
                                 "[begin, end]")
        begin, end = offsets
        if not 0 <= begin <= end:
            raise _corrupt(path, f"tensor {name!r} has data_offsets [{begin}, {end}]; begin must "
                                 "be at least 0 and at most end")
        if end > data_len:
            raise _corrupt(path, f"tensor {name!r} ends at byte {end:,} of the data, but the "
                                 f"data is only {data_len:,} bytes: the file is truncated")
        itemsize = DTYPES[st].itemsize
        count = math.prod(shape)
        if len(shape) > 64:
            raise _corrupt(path, f"tensor {name!r} has {len(shape)} dimensions")
        if count * itemsize != end - begin:
            raise _corrupt(path, f"tensor {name!r} has shape {shape} of {st} ({count:,} values "
                                 f"x {itemsize} bytes = {count * itemsize:,} bytes) but its "
                                 f"data_offsets [{begin}, {end}] span {end - begin:,} bytes")
        entries.append((begin, end, name, st, shape))

    entries.sort(key=lambda e: (e[0], e[1]))
    pos, prev = 0, None
    for begin, end, name, _, _ in entries:
        if begin < pos:
            raise _corrupt(path, f"tensor {name!r} (bytes {begin:,}..{end:,}) overlaps tensor "
                                 f"{prev!r} (which ends at byte {pos:,})")
        if begin > pos:
            raise _corrupt(path, f"there are {begin - pos:,} unused bytes before tensor "
                                 f"{name!r} (bytes {pos:,}..{begin:,} belong to no tensor)")
        pos, prev = end, name
    if pos != data_len:
        raise _corrupt(path, f"the data is {data_len:,} bytes but the tensors cover only "
                             f"{pos:,}; {data_len - pos:,} bytes at the end belong to no tensor")
    return entries, metadata, list(header)

