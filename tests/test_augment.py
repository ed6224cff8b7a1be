"""Training-time augmentation: what each transform does (against references written here with
np.pad, np.flip and slicing), that the choices depend only on (seed, epoch, batch, rank), and
that both backends train on exactly the same augmented batches."""

from __future__ import annotations

import json

import numpy as np
import pytest

import cnnc
from cnnc.data import Dataset
from cnnc.train import engine
from cnnc.train.augment import ERASE_AREA, Augmentation, BatchPlan, apply_numpy, check_applicable, plan_batch
from cnnc.train.config import TrainConfig
from cnnc.train.engine import read_header, read_metrics, train


def images(n=16, h=9, w=7, c=2, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w), dtype=np.float32) + 0.5  # no zeros


def augment(aug, x, **kw):
    n, _, h, w = x.shape
    args = dict(seed=0, epoch=1, batch=0) | kw
    return apply_numpy(x, plan_batch(aug, n, h, w, **args))


def test_off_is_identity_and_flip_mirrors_about_half():
    x = images(n=400)
    assert np.array_equal(augment(Augmentation(), x), x)
    out = augment(Augmentation(flip=True), x)
    flipped = [np.array_equal(o, np.flip(i, axis=2)) for o, i in zip(out, x)]
    same = [np.array_equal(o, i) for o, i in zip(out, x)]
    assert all(f != s for f, s in zip(flipped, same))  # every image is one or the other
    assert 160 < sum(flipped) < 240  # p = 1/2: 200 +- 4 standard deviations


def test_a_flip_only_plan_is_the_gather_it_stands_for():
    # Mirroring alone skips the per-pixel plan; it must move pixels as that plan would, and
    # choose the same images as a plan that also shifts (each transform draws on its own).
    x = images(n=64)
    n, _, h, w = x.shape
    plan = plan_batch(Augmentation(flip=True), n, h, w, seed=3, epoch=2, batch=1)
    assert plan.flip_only and plan.index is None and 10 < plan.flip.sum() < 54
    cols = np.where(plan.flip[:, None, None], w - 1 - np.arange(w), np.arange(w))
    index = (np.arange(h)[None, :, None] * w + cols).reshape(n, -1)
    gather = BatchPlan(index, np.ones((n, h * w), bool), h, w)
    assert np.array_equal(apply_numpy(x, plan), apply_numpy(x, gather))
    shifted = plan_batch(Augmentation(flip=True, shift=1), n, h, w, seed=3, epoch=2, batch=1)
    assert not shifted.flip_only and np.array_equal(shifted.flip, plan.flip)


def test_shift_is_pad_and_crop_with_every_offset_used():
    s = 2
    x = images(n=300)
    out = augment(Augmentation(shift=s), x)
    _, _, h, w = x.shape
    offsets = set()
    for o, i in zip(out, x):
        padded = np.pad(i, ((0, 0), (s, s), (s, s)))  # torchvision RandomCrop(padding=s)
        crops = [(a, b) for a in range(2 * s + 1) for b in range(2 * s + 1)
                 if np.array_equal(o, padded[:, a:a + h, b:b + w])]
        assert crops, "an output that is no crop of the padded image"
        offsets.update(crops)
    assert len(offsets) == (2 * s + 1) ** 2


def test_erase_blanks_one_rectangle_of_the_documented_size():
    x = images(n=400, h=20, w=20, c=3)
    out = augment(Augmentation(erase=0.5), x)
    erased = 0
    for o, i in zip(out, x):
        blank = (o == 0).all(axis=0)
        assert np.array_equal(o[:, ~blank], i[:, ~blank])  # the rest untouched
        if not blank.any():
            continue
        erased += 1
        rows, cols = np.flatnonzero(blank.any(axis=1)), np.flatnonzero(blank.any(axis=0))
        box = np.zeros_like(blank)
        box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
        assert np.array_equal(blank, box), "not one rectangle"
        # rounding each side to whole pixels moves the area by at most a side's length
        area = blank.sum()
        assert ERASE_AREA[0] * 400 - 20 <= area <= ERASE_AREA[1] * 400 + 40
    assert 160 < erased < 240


def test_choices_depend_only_on_seed_epoch_batch_rank_and_each_transform_alone():
    aug = Augmentation(flip=True, shift=3, erase=0.5)
    a = plan_batch(aug, 8, 10, 10, seed=1, epoch=2, batch=3)
    b = plan_batch(aug, 8, 10, 10, seed=1, epoch=2, batch=3)
    assert np.array_equal(a.index, b.index) and np.array_equal(a.keep, b.keep)
    for other in (dict(seed=2, epoch=2, batch=3), dict(seed=1, epoch=3, batch=3),
                  dict(seed=1, epoch=2, batch=4), dict(seed=1, epoch=2, batch=3, rank=1)):
        c = plan_batch(aug, 8, 10, 10, **other)
        assert not (np.array_equal(a.index, c.index) and np.array_equal(a.keep, c.keep))
    # turning erasing on leaves the shifts and flips as they were
    x = images(n=32)
    without = augment(Augmentation(flip=True, shift=2), x)
    with_erase = augment(Augmentation(flip=True, shift=2, erase=0.5), x)
    kept = with_erase != 0
    assert np.array_equal(with_erase[kept], without[kept])


def test_augmentation_needs_an_image_input():
    with pytest.raises(cnnc.CnncError, match="flat"):
        check_applicable(Augmentation(flip=True), (784,))
    with pytest.raises(cnnc.CnncError, match="out of view"):
        check_applicable(Augmentation(shift=28), (28, 28, 1))
    check_applicable(Augmentation(), (784,))


def test_train_section_settings():
    model = cnnc.compile("input 8x8x1\nflatten\ndense 2 softmax\ntrain:\n    flip\n"
                         "    shift 2\n    erase 0.25\n")
    assert model.ok, model.diagnostics
    cfg = model.train_config
    assert (cfg.flip, cfg.shift, cfg.erase) == (True, 2, 0.25)
    model = cnnc.compile("input 8x8x1\nflatten\ndense 2 softmax\ntrain:\n    flip false\n")
    assert model.ok and model.train_config.flip is False
    bad = cnnc.compile("input 8x8x1\nflatten\ndense 2 softmax\ntrain:\n    erase 1.5\n")
    assert not bad.ok and "erase" in str(bad.diagnostics[0].message)


# ---------------------------------------------------------------------------------------------
# Both backends, through the training engine


MODEL = """
input 10x8x2
conv 3 3x3 pad=same relu
flatten
dense 3 softmax
"""


class Recorder:
    """Wraps a session: records the augmented batch each training step trains on."""

    def __init__(self, session):
        self.session = session
        self.batches = []

    def __getattr__(self, name):
        return getattr(self.session, name)

    def train_step(self, data, idx, augment=None):
        self.batches.append(self.session.augmented(data, idx, augment)[0])
        return self.session.train_step(data, idx, augment=augment)


@pytest.mark.parametrize("transforms", [dict(flip=True, shift=2, erase=0.5), dict(flip=True)],
                         ids=["gather", "flip-only"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_both_backends_train_on_identical_augmented_batches(tmp_path, layout, transforms):
    pytest.importorskip("torch")
    model = cnnc.compile(MODEL)
    rng = np.random.default_rng(5)
    ds = Dataset("rand", rng.random((40, 10, 8, 2), dtype=np.float32) + 0.5,
                 np.arange(40) % 3, rng.random((6, 10, 8, 2), dtype=np.float32), np.arange(6) % 3,
                 3, "random", ["a", "b", "c"])
    config = TrainConfig(epochs=2, batch_size=16, seed=4, val_split=0.2, **transforms)
    runs = {}
    for backend in ("numpy", "torch"):
        options = {"channels_last": layout == "channels_last"} if backend == "torch" else {}
        rec = Recorder(model.to_backend(backend, seed=0, **options))
        train(model, rec, ds, config, out_dir=tmp_path / backend)
        runs[backend] = rec.batches
    assert len(runs["numpy"]) == len(runs["torch"]) == 2 * 2  # 32 training images, batch 16
    for a, b in zip(runs["numpy"], runs["torch"]):
        assert a.shape == b.shape and np.array_equal(a, np.ascontiguousarray(b))
    header = read_header(tmp_path / "numpy" / engine.METRICS)
    assert header["augment"] == {"flip": False, "shift": 0, "erase": 0.0} | transforms
    if "erase" in transforms:  # really augmented: blanks appear, and not only at the borders
        assert any((b == 0).any() for b in runs["numpy"])
    assert header["classes"] == ["a", "b", "c"] and header["settings"]["seed"] == 4
    assert [r["epoch"] for r in read_metrics(tmp_path / "numpy" / engine.METRICS)[:2]] == [1, 2]
    meta = json.loads((tmp_path / "torch" / engine.METRICS).read_text().splitlines()[0])
    assert meta["header"]["backend"] == "torch"

