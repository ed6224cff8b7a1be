"""`folder:PATH` (or a bare folder path): the user's own images, one sub-folder per class.

    pets/                      pets/
        cat/ 001.jpg ...   or      train/ cat/ ... dog/ ...
        dog/ 001.png ...           test/  cat/ ... dog/ ...

The layout Keras' image_dataset_from_directory, torchvision's ImageFolder and Ultralytics'
classify read. Class names are the sub-folders' names, sorted (label 0 is the first). PNG, JPEG
and BMP files are read with Pillow (imported only here), converted to the model's channels (1:
grey, 3: RGB, 4: RGBA) and resized to its input size (bilinear). With `train/` and `test/`
sub-folders those are the splits; otherwise a seeded fifth of each class is held out for testing.

Decoded images are cached as uint8 arrays in the user's cache folder (never beside the user's
files), under a key made of the folder, the target size, and every image's name, size and
modification time: a changed, added or removed file makes a new key, so a stale cache is never
read. Files that cannot be read are listed in one error, or skipped (and counted) when the
caller asks for that (`--skip-bad-images`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from cnnc.data._registry import Dataset, format_shape, register_dataset
from cnnc.diagnostics import CnncError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
TEST_FRACTION = 0.2  # held out per class when the folder has no test/ split
MODES = {1: "L", 3: "RGB", 4: "RGBA"}
MODE_WORDS = {"L": "grey", "RGB": "RGB", "RGBA": "RGBA"}
DEFAULT_SHAPE = (64, 64, 3)  # when no model says (a flat input cannot)
CACHE_VERSION = 1
_TEST_STREAM = 0x7E57
SHOWN_BAD = 20  # bad files listed by name in the error; the rest counted


# ---------------------------------------------------------------------------------------------
# Finding the files


def is_image_folder(path: str | os.PathLike) -> bool:
    """Whether `path` looks like a class-per-folder image set (a sub-folder holding images, or
    train/ with class sub-folders); used to tell it from a folder of IDX files."""
    root = Path(path)
    try:
        subs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    except OSError:
        return False
    for d in subs:
        if d.name in ("train", "test") and any(c.is_dir() for c in d.iterdir()):
            return True
        if any(f.suffix.lower() in EXTENSIONS for f in d.iterdir() if f.is_file()):
            return True
    return False


def _class_folders(root: Path, what: str) -> list[Path]:
    if not root.is_dir():
        raise CnncError(f"the image folder {root} does not exist", code="data")
    subs = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: d.name)
    if not subs:
        loose = [f for f in root.iterdir() if f.suffix.lower() in EXTENSIONS]
        raise CnncError(
            f"the image folder {root} has no class sub-folders" +
            (f" (it holds {len(loose):,} images directly)" if loose else ""),
            notes=[f"{what} needs one sub-folder per class, named after the class, each "
                   "holding that class's images: PATH/cat/001.jpg, PATH/dog/001.png, ..."],
            hint="move the images into one folder per class", code="data")
    return subs


def _images_in(folder: Path) -> tuple[list[Path], int]:
    """The image files under `folder` (sub-folders included, sorted), and how many other files
    were passed over."""
    found, other = [], 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if name.lower().endswith(EXTENSIONS):
                found.append(Path(dirpath) / name)
            else:
                other += 1
    return found, other


def _scan(root: Path, classes: list[str] | None, split: str | None):
    """[(file, label)], class names, other files passed over. `classes` (from train/) fixes the
    names when reading test/."""
    where = root / split if split else root
    subs = _class_folders(where, f"folder:{root}")
    names = [d.name for d in subs]
    if classes is not None:
        extra = [n for n in names if n not in classes]
        if extra:
            raise CnncError(
                f"{where} has class folders that {root / 'train'} lacks: {', '.join(extra)}",
                hint="give train/ and test/ the same class folders", code="data")
    else:
        classes = names
    files, other = [], 0
    for d in subs:
        images, skipped = _images_in(d)
        other += skipped
        if not images:
            raise CnncError(f"the class folder {d} holds no images",
                            notes=[f"images are files ending {', '.join(EXTENSIONS)}"],
                            hint="add images to it or remove it", code="data")
        label = classes.index(d.name)
        files.extend((f, label) for f in images)
    return files, classes, other


# ---------------------------------------------------------------------------------------------
# Decoding, with the cache


def _decode(path: Path, size: tuple[int, int], mode: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        if img.mode == "P" or (img.mode in ("LA", "La", "PA") and mode != "RGBA"):
            img = img.convert("RGBA")
        if img.mode == "RGBA" and mode != "RGBA":
            # transparent pixels show as black, as they would over a black background
            background = Image.new("RGBA", img.size, (0, 0, 0, 255))
            img = Image.alpha_composite(background, img)
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.float64)
            top = 65535.0 if arr.max() > 255 else 255.0
            img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
        img = img.convert(mode)
        h, w = size
        if img.size != (w, h):
            img = img.resize((w, h), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    return arr.reshape(h, w, -1)


def _cache_key(root: Path, entries: list[tuple[Path, int]], shape) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_VERSION, str(root.resolve()), list(shape)]).encode())
    for path, label in entries:
        st = path.stat()
        h.update(f"{path}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _cache_folder() -> Path:
    from cnnc.data.idx import cache_dir

    return cache_dir() / "folders"


def _decode_all(root: Path, entries, shape):
    """uint8 images (N, H, W, C) and labels of `entries`, from the cache when it is current;
    and the bad files [(path, reason)]."""
    h, w, c = shape
    try:
        key = _cache_key(root, entries, shape)
    except OSError:
        key = None  # a file vanished while being listed: decoding reports it
    cache = _cache_folder() / f"{key}.npz" if key else None
    if cache is not None and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                images, labels = z["images"], z["labels"]
                bad = json.loads(str(z["bad"]))
            return images, labels, [(Path(p), r) for p, r in bad]
        except Exception:  # a damaged cache file is decoded afresh and rewritten
            pass
    mode = MODES[c]
    images = np.empty((len(entries), h, w, c), dtype=np.uint8)
    labels = np.empty(len(entries), dtype=np.int64)
    good, bad = 0, []
    for path, label in entries:
        try:
            images[good] = _decode(path, (h, w), mode)
        except Exception as exc:  # Pillow raises many kinds for a damaged or foreign file
            bad.append((path, _reason(exc)))
            continue
        labels[good] = label
        good += 1
    images, labels = images[:good], labels[:good]
    if cache is not None:
        _write_cache(cache, images, labels, bad)
    return images, labels, bad


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if type(exc).__name__ == "UnidentifiedImageError":
        return "not an image Pillow can read (damaged, or another format)"
    return text


def _write_cache(cache: Path, images, labels, bad) -> None:
    """Write atomically; a cache that cannot be written is only slower next time."""
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, images=images, labels=labels,
                     bad=np.array(json.dumps([(str(p), r) for p, r in bad])))
        os.replace(tmp, cache)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# The data set


def _target_shape(input_shape, first: Path) -> tuple[int, int, int]:
    if input_shape is not None and len(input_shape) == 3:
        h, w, c = (int(d) for d in input_shape)
        if c not in MODES:
            raise CnncError(
                f"the model's input has {c} channels; images convert to 1 (grey), 3 (RGB) or "
                "4 (RGBA)", hint="make the model's input HxWx1, HxWx3 or HxWx4", code="data")
        return h, w, c
    if input_shape is not None:
        raise CnncError(
            f"the model's input is flat ({format_shape(input_shape)} values), so an image "
            "folder cannot know what size to make its images",
            hint="give the model an image input (e.g. `input 28x28x1`) and `flatten` it",
            code="data")
    from PIL import Image

    with Image.open(first) as img:  # no model: the first image's size, in grey or RGB
        return img.size[1], img.size[0], 1 if img.mode in ("L", "1", "I", "I;16") else 3


def _held_out(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded fifth of each class (at least one image of a class with two or more)."""
    rng = np.random.default_rng([int(seed) % 2**64, _TEST_STREAM])
    test = np.zeros(len(labels), dtype=bool)
    for k in np.unique(labels):
        rows = np.flatnonzero(labels == k)
        n = len(rows)
        take = min(max(1, int(round(n * TEST_FRACTION))), n - 1) if n > 1 else 0
        test[rng.permutation(rows)[:take]] = True
    return test


def _bad_error(root: Path, bad, total: int) -> CnncError:
    notes = [f"{p}: {r}" for p, r in bad[:SHOWN_BAD]]
    if len(bad) > SHOWN_BAD:
        notes.append(f"... and {len(bad) - SHOWN_BAD:,} more")
    return CnncError(f"{len(bad):,} of the {total:,} image files in {root} could not be read",
                     notes=notes, hint="fix or remove them, or pass --skip-bad-images to "
                                       "train without them", code="data")


def load_image_folder(path: str, *, input_shape=None, seed: int = 0,
                      skip_bad_images: bool = False) -> Dataset:
    root = Path(path)
    if not root.is_dir():
        raise CnncError(f"the image folder {root} does not exist", code="data",
                        hint="check the path")
    split = (root / "train").is_dir() and (root / "test").is_dir() \
        and any(d.is_dir() for d in (root / "train").iterdir())
    if split:
        train, classes, other = _scan(root, None, "train")
        test, _, other_test = _scan(root, classes, "test")
        other += other_test
        entries = train + test
    else:
        entries, classes, other = _scan(root, None, None)
    if len(classes) < 2:
        raise CnncError(f"the image folder {root} has one class ({classes[0]}); a classifier "
                        "needs at least two", hint="add a sub-folder for each other class",
                        code="data")
    shape = _target_shape(input_shape, entries[0][0])
    images, labels, bad = _decode_all(root, entries, shape)
    if bad and not skip_bad_images:
        raise _bad_error(root, bad, len(entries))
    if len(images) == 0:
        raise CnncError(f"none of the {len(entries):,} image files in {root} could be read",
                        notes=[f"{p}: {r}" for p, r in bad[:SHOWN_BAD]], code="data")

    if split:
        bad_set = {p for p, _ in bad}
        is_test = np.array([i >= len(train) for i, (p, _) in enumerate(entries)
                            if p not in bad_set])
        how = "test split from test/"
    else:
        is_test = _held_out(labels, seed)
        how = f"{TEST_FRACTION:.0%} of each class held out for testing (seed {seed})"
    x = images.astype(np.float32)
    np.divide(x, np.float32(255.0), out=x)
    h, w, c = shape
    prep = (f"images converted to {MODE_WORDS[MODES[c]]} and resized to {h}x{w}; {how}"
            + (f"; skipped {len(bad):,} unreadable file{'s' * (len(bad) != 1)}" if bad else ""))
    counts = np.bincount(labels, minlength=len(classes))
    empty = [classes[k] for k in range(len(classes)) if counts[k] == 0]
    if empty:  # every image of a class was unreadable and skipped
        raise CnncError(f"no readable images are left in the class folder"
                        f"{'s' * (len(empty) != 1)} {', '.join(empty)} of {root}", code="data")
    desc = (f"{len(images):,} images in {len(classes)} classes ({', '.join(classes[:6])}"
            f"{', ...' if len(classes) > 6 else ''}) from {root}"
            + (f"; {other:,} other files passed over" if other else ""))
    ds = Dataset(f"folder:{path}", x[~is_test], labels[~is_test], x[is_test], labels[is_test],
                 len(classes), desc, list(classes))
    ds.preparation = prep
    return ds


@register_dataset("folder", "your images, one sub-folder per class (optionally under train/ "
                            "and test/): folder:PATH", argument="PATH")
def load_folder(arg=None, *, input_shape=None, seed=0, skip_bad_images=False,
                **_options) -> Dataset:
    if not arg:
        raise CnncError("`folder:` needs a folder: folder:PATH", code="data",
                        hint="PATH holds one sub-folder of images per class")
    return load_image_folder(arg, input_shape=input_shape, seed=seed,
                             skip_bad_images=skip_bad_images)
