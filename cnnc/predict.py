"""Predictions on image files: read them as the model's input, run the model, rank its classes.

    files = image_files(["photo.png", "folder/"])
    x = load_images(files, model.input_shape)        # N x H x W x C float32 in [0, 1]
    probs = class_probabilities(model, session.predict(x))
    names = class_names(model, weights_path, metadata)

Images are read with Pillow (PNG, JPEG and whatever else it opens), turned upright by their EXIF
orientation, converted to the model's channels (1: grey, "L"; 3: RGB; an alpha channel is
dropped), resized to the model's height and width when they differ (bilinear; the aspect ratio
is not kept, as Keras's load_img(target_size=...) does), and scaled to [0, 1] by dividing by 255 --
how every cnnc data set scales its pixels (the digits' 0..16 by 16), so a PNG written from a
data set's image gives the model exactly what training gave it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .diagnostics import CnncError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

def image_files(paths: list[str]) -> list[str]:
    """The files to predict: each file named, and the images in each folder named (sorted)."""
    files = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(str(f) for f in Path(p).iterdir()
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CnncError(f"the folder {p} holds no images", code="io",
                                notes=[f"images are files ending in "
                                       f"{', '.join(IMAGE_SUFFIXES)}"])
            files.extend(found)
        elif os.path.exists(p):
            files.append(p)
        else:
            raise CnncError(f"{p} does not exist", code="io")
    return files


def load_images(files: list[str], input_shape: tuple) -> np.ndarray:
    """The files as one N x H x W x C float32 batch in [0, 1], ready for the model."""
    if len(input_shape) != 3:
        raise CnncError(f"the model's input is {input_shape[0]} numbers, not an image, so it "
                        "cannot read image files", code="data",
                        hint="predict works on models whose input is HxWxC")
    h, w, c = input_shape
    if c not in (1, 3):
        raise CnncError(f"the model's input has {c} channels; images are read as grey (1) or "
                        "RGB (3)", code="data")
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError:
        raise CnncError("reading images needs Pillow", code="data",
                        hint="pip install Pillow") from None
    out = np.empty((len(files), h, w, c), dtype=np.float32)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as img:
                img = ImageOps.exif_transpose(img)
                img = img.convert("L" if c == 1 else "RGB")
                if img.size != (w, h):
                    img = img.resize((w, h), Image.BILINEAR)
                a = np.asarray(img, dtype=np.float32)
        except (UnidentifiedImageError, Image.DecompressionBombError) as e:
            raise CnncError(f"{f} is not an image Pillow can read (PNG, JPEG, ...)",
                            code="data", notes=[str(e)[:200]] if str(e) else []) from None
        except OSError as e:
            raise CnncError(f"{f} could not be read as an image: {e.strerror or e}",
                            code="data") from None
        out[i] = (a / np.float32(255.0)).reshape(h, w, c)
    return out


def class_probabilities(model, outputs: np.ndarray) -> np.ndarray:
    """N x K probabilities from the model's outputs. A final softmax (or a sigmoid over several
    outputs) gives them already; one sigmoid output is P(class 1); anything else is read as
    logits, as cnnc's cross-entropy loss reads it, and goes through a softmax."""
    out_shape = model.output_shape
    if len(out_shape) != 1:
        raise CnncError(f"the model's output is an image ({'x'.join(map(str, out_shape))}), "
                        "not one score per class", code="backend",
                        hint="predict needs a classifier: end the model with `dense K softmax`")
    outputs = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    last = model.graph[model.graph.output].activation
    if out_shape[0] == 1:
        p1 = outputs[:, 0] if last == "sigmoid" else 1 / (1 + np.exp(-outputs[:, 0]))
        return np.stack([1 - p1, p1], axis=1)
    if last in ("softmax", "sigmoid"):
        return outputs
    z = outputs - outputs.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def class_names(model, weights_path: str | None, metadata: dict, classes: int) -> list | None:
    """Names for the classes, or None: from the weights file's metadata, the run folder's
    run.json beside it, or the model's data set when its classes are known."""
    candidates = []
    if metadata.get("classes"):
        candidates.append(metadata["classes"])
    if weights_path:
        run_json = Path(weights_path).resolve().parent / "run.json"
        try:
            candidates.append(json.loads(run_json.read_text()).get("classes"))
        except (OSError, ValueError, AttributeError, RecursionError):
            pass
    data = model.train_config.data if model.train_config is not None else None
    known = known_class_names()
    if data in known:
        candidates.append(list(known[data]))
    for names in candidates:
        if isinstance(names, str):
            try:
                names = json.loads(names)
            except (ValueError, RecursionError):
                continue
        if isinstance(names, list) and len(names) == classes:
            return [str(n) for n in names]
    return None


def known_class_names() -> dict:
    """The class names of the built-in data sets that name their classes (Fashion-MNIST's)."""
    from .data.idx import CLASS_NAMES

    return CLASS_NAMES


def top_classes(probs: np.ndarray, k: int, names: list | None) -> list[list[dict]]:
    """For each row, its k most probable classes, best first (ties: the lower index first)."""
    out = []
    for row in probs:
        order = np.argsort(-row, kind="stable")[:k]
        out.append([{"class": int(i), "name": names[i] if names else None,
                     "probability": float(row[i])} for i in order])
    return out
