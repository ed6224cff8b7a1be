"""`shapes`: synthetic images of geometric patterns, any size, any number of classes.

Spec: ``shapes[:HxWxC[:K[:N]]]``

* ``HxWxC``: image size (``HxW`` means one channel). Default: the model's input shape, else
  28x28x1. At least 8x8.
* ``K``: number of classes, at least 2. Default: the model's number of outputs (2 for a single
  sigmoid unit), else 4.
* ``N``: number of training images; the test part has N/4 (at least K). Default 2,000 / 500.

An empty field keeps its default: ``shapes::10`` is the model's size with 10 classes.

Each class is one pattern: 0 filled square, 1 filled disk, 2 plus, 3 ring, 4 triangle, 5 diagonal
cross, 6 hollow square, and from 7 on, stripes in a round window at evenly spaced angles (two
stripe widths alternate). Every image draws its position, size, rotation (a little), brightness,
colour (per channel) and noise level at random, so a small CNN learns the classes but not at once.
Classes are balanced to within one image. The images depend only on the seed and the spec.
"""

from __future__ import annotations

import math
import re

import numpy as np

from cnnc.data._registry import Dataset, format_shape, register_dataset
from cnnc.diagnostics import CnncError

DEFAULT_SHAPE = (28, 28, 1)
DEFAULT_CLASSES = 4
DEFAULT_TRAIN = 2000
MIN_SIZE = 8
MAX_VALUES = 125_000_000  # refuse specs whose training images would take over 500 MB

BASE_PATTERNS = ("square", "disk", "plus", "ring", "triangle", "x", "frame")

_SIZE_RE = re.compile(r"^(\d+)x(\d+)(?:x(\d+))?$")


def pattern_name(k: int, num_classes: int) -> str:
    if k < len(BASE_PATTERNS):
        return BASE_PATTERNS[k]
    j, m = k - len(BASE_PATTERNS), num_classes - len(BASE_PATTERNS)
    return f"stripes at {180.0 * j / m:.0f} degrees"


def parse_spec(arg: str | None, input_shape, num_classes) -> tuple[tuple[int, int, int], int, int]:
    """(H, W, C), K and N from the spec's argument and the model's defaults."""
    fields = (arg or "").split(":")
    if len(fields) > 3:
        raise _usage(f"the spec 'shapes:{arg}' has {len(fields)} fields after 'shapes:'; "
                     "it takes at most 3")
    fields += [""] * (3 - len(fields))
    size_f, k_f, n_f = (f.strip().lower() for f in fields)
    if any(len(part) > 12 for f in (size_f, k_f, n_f) for part in f.split("x")):
        raise _usage(f"the spec 'shapes:{arg[:40]}' has a number too large to be real")

    if size_f:
        m = _SIZE_RE.match(size_f)
        if not m:
            raise _usage(f"'{size_f}' is not an image size")
        shape = (int(m[1]), int(m[2]), int(m[3] or 1))
    elif input_shape is not None and len(input_shape) == 3:
        shape = tuple(int(d) for d in input_shape)
    elif input_shape is not None:
        dims = format_shape(input_shape)
        raise _usage(f"the model's input ({dims}) is not an image, so `shapes` cannot take its "
                     "size from it", hint_extra=f" (for a flat input of {dims} values, an image "
                     "of that many values, e.g. shapes:HxWxC with H*W*C equal to it)")
    else:
        shape = DEFAULT_SHAPE
    h, w, c = shape
    if h < MIN_SIZE or w < MIN_SIZE or c < 1:
        raise _usage(f"shapes images must be at least {MIN_SIZE}x{MIN_SIZE} with at least one "
                     f"channel; got {format_shape(shape)}")

    if k_f:
        if not (k_f.isascii() and k_f.isdigit()):
            raise _usage(f"the number of classes '{k_f}' is not a whole number")
        k = int(k_f)
    elif num_classes is not None:
        k = 2 if int(num_classes) == 1 else int(num_classes)
    else:
        k = DEFAULT_CLASSES
    if not 2 <= k <= 1000:
        raise _usage(f"shapes needs 2 to 1000 classes; got {k}")

    if n_f:
        if not (n_f.isascii() and n_f.isdigit()):
            raise _usage(f"the number of training images '{n_f}' is not a whole number")
        n = int(n_f)
    else:
        n = DEFAULT_TRAIN
    if n < k:
        raise _usage(f"{n} training images cannot cover {k} classes; give at least {k}")
    if n * h * w * c > MAX_VALUES:
        raise _usage(f"{n:,} images of {format_shape(shape)} would take "
                     f"{n * h * w * c * 4 / 1e9:.1f} GB; ask for fewer or smaller images")
    return (h, w, c), k, n


def _usage(msg: str, hint_extra: str = "") -> CnncError:
    return CnncError(msg, hint="write shapes, shapes:HxWxC, shapes:HxWxC:K or shapes:HxWxC:K:N, "
                               "e.g. shapes:32x32x3:5:2000" + hint_extra, code="data")


def _masks(k: int, num_classes: int, yy: np.ndarray, xx: np.ndarray, p: dict) -> np.ndarray:
    """Coverage in [0, 1] of pattern `k` for a batch: (n, H, W). p holds (n, 1, 1) parameters."""
    dx, dy = xx - p["cx"], yy - p["cy"]
    cos, sin = np.cos(p["angle"]), np.sin(p["angle"])
    u = cos * dx + sin * dy
    v = -sin * dx + cos * dy
    r = p["r"]
    t = np.maximum(1.0, 0.18 * r)  # stroke half-width
    name = BASE_PATTERNS[k] if k < len(BASE_PATTERNS) else "stripes"
    au, av = np.abs(u), np.abs(v)
    if name == "square":
        d = np.maximum(au, av) - 0.8 * r
    elif name == "disk":
        d = np.hypot(u, v) - r
    elif name in ("plus", "x"):  # "x" differs by its rotation, set in _params
        d = np.minimum(np.maximum(au - r, av - t), np.maximum(au - t, av - r))
    elif name == "ring":
        d = np.abs(np.hypot(u, v) - 0.75 * r) - t
    elif name == "triangle":
        d = -np.inf
        for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6):  # outward edge normals
            d = np.maximum(d, math.cos(a) * u + math.sin(a) * v - 0.5 * r)
    elif name == "frame":
        d = np.abs(np.maximum(au, av) - 0.7 * r) - t
    else:
        window = np.clip(0.5 - (np.hypot(u, v) - r), 0.0, 1.0)
        j = k - len(BASE_PATTERNS)
        period = np.maximum(3.0, r * (0.5 if j % 2 else 0.7))
        wave = np.sin(2 * math.pi * u / period + p["phase"])
        return window * np.clip(0.5 + 2.0 * wave, 0.0, 1.0)
    return np.clip(0.5 - d, 0.0, 1.0)


def _params(k: int, num_classes: int, n: int, h: int, w: int, rng: np.random.Generator) -> dict:
    """Random position, size and rotation of n images of class k, each (n, 1, 1)."""
    side = min(h, w)
    r = rng.uniform(0.18, 0.34, n) * side
    cx = rng.uniform(r, w - r)
    cy = rng.uniform(r, h - r)
    jitter = math.radians(15)
    if k < len(BASE_PATTERNS):
        base = math.pi / 4 if BASE_PATTERNS[k] == "x" else 0.0
        angle = base + rng.uniform(-jitter, jitter, n)
    else:
        m = num_classes - len(BASE_PATTERNS)
        step = math.pi / m
        angle = (k - len(BASE_PATTERNS)) * step + rng.uniform(-0.25, 0.25, n) * min(step, jitter)
        r = r * 1.3
        cx = np.clip(cx, r * 0.6, w - r * 0.6)
        cy = np.clip(cy, r * 0.6, h - r * 0.6)
    phase = rng.uniform(0, 2 * math.pi, n)
    shaped = {"r": r, "cx": cx, "cy": cy, "angle": angle, "phase": phase}
    return {key: val.reshape(n, 1, 1).astype(np.float32) for key, val in shaped.items()}


def generate(n: int, shape: tuple[int, int, int], num_classes: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, H, W, C) float32 in [0, 1] and their balanced labels (n,) int64."""
    h, w, c = shape
    labels = rng.permutation(np.arange(n, dtype=np.int64) % num_classes)
    images = np.empty((n, h, w, c), dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + np.float32(0.5)
    chunk = max(1, 4_000_000 // (h * w))
    for k in range(num_classes):
        idx = np.flatnonzero(labels == k)
        for start in range(0, len(idx), chunk):
            sel = idx[start:start + chunk]
            m = len(sel)
            mask = _masks(k, num_classes, yy, xx, _params(k, num_classes, m, h, w, rng))
            bg = rng.uniform(0.0, 0.35, (m, 1, 1, c)).astype(np.float32)
            fg = rng.uniform(0.55, 1.0, (m, 1, 1, c)).astype(np.float32)
            sigma = rng.uniform(0.02, 0.12, (m, 1, 1, 1)).astype(np.float32)
            noise = rng.standard_normal((m, h, w, c), dtype=np.float32) * sigma
            img = bg + (fg - bg) * mask[..., None] + noise
            images[sel] = np.clip(img, 0.0, 1.0)
    return images, labels


@register_dataset("shapes", "synthetic geometric patterns of any size and class count: "
                            "shapes[:HxWxC[:K[:N]]]", argument="HxWxC[:K[:N]]")
def load_shapes(arg=None, *, input_shape=None, num_classes=None, seed=0, **_options) -> Dataset:
    shape, k, n = parse_spec(arg, input_shape, num_classes)
    n_test = max(k, n // 4)
    train_seq, test_seq = np.random.SeedSequence([int(seed) % 2**64, *shape, k, n]).spawn(2)
    train_x, train_y = generate(n, shape, k, np.random.default_rng(train_seq))
    test_x, test_y = generate(n_test, shape, k, np.random.default_rng(test_seq))
    patterns = ", ".join(pattern_name(i, k) for i in range(min(k, 8))) + (", ..." if k > 8 else "")
    name = f"shapes:{format_shape(shape)}:{k}:{n}"
    desc = (f"synthetic {format_shape(shape)} images of {k} patterns ({patterns}), "
            f"{n:,} train / {n_test:,} test, seed {seed}")
    return Dataset(name, train_x, train_y, test_x, test_y, k, desc)
