"""IDX data sets: `fashion-mnist`, `mnist`, and any folder of the four IDX files (`idx:DIR`).

The four files are ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each raw or gzip'd (``.gz``); the
spelling ``train-images.idx3-ubyte`` of some mirrors is accepted too.

`fashion-mnist` and `mnist` are searched for, in order, in

1. the ``--data DIR`` folder (the `data_dir` argument),
2. each folder in ``$CNNC_DATA`` (separated like PATH),
3. the user cache folder, ``$XDG_CACHE_HOME/cnnc`` or ``~/.cache/cnnc``,
4. for fashion-mnist, ``/usr/share/datasets/fashion-mnist`` (Debian's dataset-fashion-mnist),

and in each of the first three, both ``ROOT/<name>/`` and ``ROOT/`` itself. Found nowhere, they
are downloaded into the cache folder (`cnnc.data.download`; ``$CNNC_OFFLINE=1`` turns that off).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from cnnc.data._registry import Dataset, format_shape, register_dataset
from cnnc.diagnostics import CnncError

IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension

# (split, kind, dims) for the four files, in the order they are read.
FILES = (("train", "images", 3), ("train", "labels", 1),
         ("t10k", "images", 3), ("t10k", "labels", 1))

# Folders that a system package fills, searched last. Tests may change this.
SYSTEM_DIRS: dict[str, list[str]] = {
    "fashion-mnist": ["/usr/share/datasets/fashion-mnist"],
}

FASHION_DESCRIPTION = (
    "Fashion-MNIST: 28x28 grayscale images of clothing, 10 classes, 60,000 train / 10,000 test "
    "(H. Xiao, K. Rasul and R. Vollgraf, 2017, arXiv:1708.07747; MIT licence)")
MNIST_DESCRIPTION = (
    "MNIST: 28x28 grayscale handwritten digits, 10 classes, 60,000 train / 10,000 test "
    "(Y. LeCun, C. Cortes and C. J. C. Burges, 1998)")

HOW_TO_GET = {
    "fashion-mnist": (
        "on Debian or Ubuntu, `apt-get install dataset-fashion-mnist`; or download the four "
        ".gz files from the data/fashion folder of the GitHub repository "
        "zalandoresearch/fashion-mnist into one of the folders above (for example "
        "{example}) and run again"),
    "mnist": (
        "download the four MNIST files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; Yann LeCun's MNIST page or one "
        "of its mirrors has them) into one of the folders above (for example {example}) and "
        "run again"),
}


def file_names(split: str, kind: str, dims: int) -> list[str]:
    """The accepted names of one file, preferred first (raw before gzip'd: faster to read)."""
    bases = [f"{split}-{kind}-idx{dims}-ubyte", f"{split}-{kind}.idx{dims}-ubyte"]
    return bases + [b + ".gz" for b in bases]


def cache_dir() -> Path:
    """The user cache folder: $XDG_CACHE_HOME/cnnc, or ~/.cache/cnnc."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "cnnc"


def search_folders(name: str, data_dir: str | None = None) -> list[tuple[Path, str]]:
    """Every folder looked in for data set `name`, in order, each with why it is looked in."""
    roots: list[tuple[Path, str]] = []
    if data_dir:
        roots.append((Path(data_dir), "--data"))
    for part in os.environ.get("CNNC_DATA", "").split(os.pathsep):
        if part.strip():
            roots.append((Path(part.strip()), "$CNNC_DATA"))
    roots.append((cache_dir(), "user cache"))
    folders: list[tuple[Path, str]] = []
    for root, why in roots:
        folders.append((root / name, why))
        folders.append((root, why))
    for d in SYSTEM_DIRS.get(name, []):
        folders.append((Path(d), "system package"))
    seen: set[str] = set()
    unique = []
    for folder, why in folders:
        key = os.path.normcase(os.path.abspath(folder))
        if key not in seen:
            seen.add(key)
            unique.append((folder, why))
    return unique


def find_files(folder: Path) -> tuple[list[Path] | None, list[str]]:
    """The four files in `folder` (None if not all are there) and the names of those missing."""
    found: list[Path] = []
    missing: list[str] = []
    for split, kind, dims in FILES:
        for candidate in file_names(split, kind, dims):
            p = folder / candidate
            if p.is_file():
                found.append(p)
                break
        else:
            missing.append(file_names(split, kind, dims)[0] + "[.gz]")
    return (found if not missing else None), missing


def _open_regular(path: Path):
    """Open a data file for reading; refuse what is not a regular file (a named pipe would block,
    a device never end)."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise CnncError(f"could not read the data file {path}: {exc.strerror or exc}",
                        code="io") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise CnncError(f"the data file {path} is not a regular file"
                        + (" but a folder" if stat.S_ISDIR(mode) else ""),
                        hint="pass the path of the data file itself", code="data")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read one IDX file (raw or gzip'd) of unsigned bytes, checking its header against its size.

    The header is checked before the data is read or decompressed: a header that claims more
    than the machine's memory, or a gzip stream that inflates past what the header says (a
    decompression bomb), is refused without allocating it. Returns a read-only uint8 array with
    the header's dimensions.
    """
    from cnnc.memory import data_limit, human_bytes

    kind = "images" if magic == IMAGE_MAGIC else "labels"
    ndim = magic & 0xFF
    header = 4 + 4 * ndim

    def corrupt(problem: str) -> CnncError:
        return CnncError(f"the data file {path} is not a valid IDX {kind} file: {problem}",
                         hint="the file is corrupt or not what its name says; download it again",
                         code="data")

    with _open_regular(path) as f:
        try:
            raw_size = os.fstat(f.fileno()).st_size
            start = f.read(2)
            f.seek(0)
            gzipped = start == b"\x1f\x8b"
            stream = gzip.GzipFile(fileobj=f, mode="rb") if gzipped else f
            after = " after decompression" if gzipped else ""
            head = stream.read(header)
            if len(head) < 4:
                raise corrupt(f"it is {len(head)} bytes long{after}, too short even for the "
                              "4-byte magic number")
            found = int.from_bytes(head[:4], "big")
            if found != magic:
                what = {IMAGE_MAGIC: "an image file", LABEL_MAGIC: "a label file"}.get(found)
                extra = f" (that of {what})" if what else ""
                raise corrupt(f"its magic number is 0x{found:08X}{extra}; expected "
                              f"0x{magic:08X} (unsigned bytes, {ndim} dimension"
                              f"{'s' * (ndim != 1)})")
            if len(head) < header:
                raise corrupt(f"it is {len(head)} bytes long{after}, shorter than its "
                              f"{header}-byte header")
            dims = struct.unpack(f">{ndim}I", head[4:])
            count = math.prod(dims)  # Python integers: no overflow
            shown = " x ".join(f"{d:,}" for d in dims)
            if ndim == 3 and (dims[1] == 0 or dims[2] == 0):
                raise corrupt(f"its header says the images are {dims[1]}x{dims[2]} pixels")
            if not gzipped and raw_size != header + count:
                state = "truncated" if raw_size < header + count else "followed by extra bytes"
                raise corrupt(f"its header says {shown} = {count:,} bytes of data, "
                              f"{header + count:,} bytes in all, but the file is "
                              f"{raw_size:,} bytes: it is {state}")
            # uint8 values, then float32 pixels: five bytes a value.
            if count * 5 > data_limit():
                raise CnncError(f"the data file {path} claims {shown} values "
                                f"({human_bytes(count)}), more than this machine's memory "
                                f"holds ({human_bytes(data_limit())} available)",
                                hint="the file is corrupt, or too large for this machine",
                                code="data")
            data = stream.read(count + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise CnncError(
                f"the data file {path} is not a valid gzip file or is truncated ({exc})",
                hint="download it again", code="data") from exc
    if len(data) != count:
        state = "truncated" if len(data) < count else "followed by extra bytes"
        raise corrupt(f"its header says {shown} = {count:,} bytes of data, "
                      f"{header + count:,} bytes in all, but the file is "
                      f"{'longer' if len(data) > count else f'{header + len(data):,} bytes'}"
                      f"{after}: it is {state}")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def load_idx_folder(files: list[Path], name: str, description: str, *,
                    max_classes: int | None) -> Dataset:
    """Read the four files (in FILES order) into a Dataset, checking they fit together."""
    train_img, train_lab, test_img, test_lab = files
    parts = {}
    for img_path, lab_path, split in ((train_img, train_lab, "train"),
                                      (test_img, test_lab, "test")):
        images = read_idx(img_path, IMAGE_MAGIC)
        labels = read_idx(lab_path, LABEL_MAGIC)
        if len(images) != len(labels):
            raise CnncError(
                f"the {split} files of data set '{name}' do not match: {img_path} has "
                f"{len(images):,} images but {lab_path} has {len(labels):,} labels",
                hint="one of the two files is from another data set or version; download both "
                     "again", code="data")
        if len(images) == 0:
            raise CnncError(f"the data file {img_path} has no images", code="data")
        if max_classes is not None and labels.size and labels.max() >= max_classes:
            bad = int(np.argmax(labels >= max_classes))
            raise CnncError(
                f"the data file {lab_path} has label {labels[bad]} at index {bad:,}; the "
                f"labels of '{name}' are 0..{max_classes - 1}",
                hint="the file is corrupt or from another data set; download it again",
                code="data")
        parts[split] = (images, labels, img_path)
    (trx, try_, trp), (tex, tey, tep) = parts["train"], parts["test"]
    if trx.shape[1:] != tex.shape[1:]:
        raise CnncError(
            f"the images of data set '{name}' differ in size: {trp} has "
            f"{format_shape(trx.shape[1:])} images but {tep} has {format_shape(tex.shape[1:])}",
            hint="the two files come from different data sets", code="data")
    if max_classes is None:
        num_classes = int(max(try_.max(), tey.max() if tey.size else 0)) + 1
    else:
        num_classes = max_classes
    return Dataset(name, _pixels(trx), try_.astype(np.int64), _pixels(tex),
                   tey.astype(np.int64), num_classes, description)


def _pixels(images: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 to (N, H, W, 1) float32 in [0, 1]."""
    x = images.astype(np.float32)
    np.divide(x, np.float32(255.0), out=x)
    return x[..., None]


CLASS_NAMES = {
    # Fashion-MNIST's labels, as its README lists them
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
    "mnist": tuple(str(d) for d in range(10)),
}


def load_known(name: str, description: str, data_dir: str | None) -> Dataset:
    """Find data set `name` in the search folders and load it, or explain where it was sought."""
    looked: list[str] = []
    for folder, why in search_folders(name, data_dir):
        if not folder.is_dir():
            looked.append(f"{folder} ({why}; does not exist)")
            continue
        files, missing = find_files(folder)
        if files is not None:
            ds = load_idx_folder(files, name, description, max_classes=10)
            ds.class_names = list(CLASS_NAMES[name])
            return ds
        if len(missing) == len(FILES):
            looked.append(f"{folder} ({why}; no IDX files)")
        else:
            looked.append(f"{folder} ({why}; has only {len(FILES) - len(missing)} of the 4 "
                          f"files, missing {', '.join(missing)})")
    notes = [f"looked in {line}" for line in looked]
    if not os.environ.get("CNNC_DATA"):
        notes.append("$CNNC_DATA is not set")
    example = data_dir and Path(data_dir) / name or cache_dir() / name
    hint = HOW_TO_GET[name].format(example=example)
    message = f"the data set '{name}' was not found on this machine"
    from cnnc.data import download

    if download.downloadable(name):
        if os.environ.get("CNNC_OFFLINE"):
            notes.append("$CNNC_OFFLINE is set, so it was not downloaded")
        else:
            try:
                folder = download.download(name, cache_dir() / name)
            except CnncError as e:
                if e.code != "data":
                    raise
                raise CnncError(message + " and could not be downloaded",
                                notes=[*notes, e.message, *e.notes],
                                hint=f"{e.hint}; or {hint}", code="data") from None
            files, _ = find_files(folder)
            return load_idx_folder(files, name, description, max_classes=10)
    raise CnncError(message, notes=notes, hint=hint, code="data")


@register_dataset("fashion-mnist", "Fashion-MNIST, 28x28x1 clothing images, 10 classes "
                                   "(MIT licence); downloaded on first use")
def load_fashion_mnist(arg=None, *, data_dir=None, **_options) -> Dataset:
    return load_known("fashion-mnist", FASHION_DESCRIPTION, data_dir)


@register_dataset("mnist", "MNIST handwritten digits, 28x28x1, 10 classes; downloaded on "
                           "first use")
def load_mnist(arg=None, *, data_dir=None, **_options) -> Dataset:
    return load_known("mnist", MNIST_DESCRIPTION, data_dir)


@register_dataset("idx", "a folder of the four IDX files (train-images-idx3-ubyte, ...)",
                  argument="DIR")
def load_idx_dir(arg=None, **_options) -> Dataset:
    if not arg:
        raise CnncError("`idx:` needs a folder: idx:DIR", code="data")
    folder = Path(arg)
    if not folder.is_dir():
        raise CnncError(f"the IDX data folder {folder} does not exist", code="data")
    files, missing = find_files(folder)
    if files is None:
        raise CnncError(
            f"the folder {folder} is not an IDX data set: it lacks {', '.join(missing)}",
            notes=["an IDX data set folder holds train-images-idx3-ubyte, "
                   "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
                   "t10k-labels-idx1-ubyte, each raw or gzip'd (.gz)"],
            hint="pass the folder that holds the four files", code="data")
    return load_idx_folder(files, f"idx:{arg}", f"IDX data set from {folder}",
                           max_classes=None)
