"""Data sets: the registry, every loader, their error messages, and check_fits."""

from __future__ import annotations

import gzip
import os
import socket
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cnnc.data as data
from cnnc.data import Dataset, _registry, check_fits, dataset_names, idx, load_dataset, register_dataset
from cnnc.diagnostics import CnncError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated_search(tmp_path, monkeypatch):
    """No test sees the user's cache or $CNNC_DATA."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("CNNC_DATA", raising=False)


@pytest.fixture
def no_system_dirs(monkeypatch, tmp_path):
    monkeypatch.setattr(idx, "SYSTEM_DIRS", {"fashion-mnist": [str(tmp_path / "no-system")]})


def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray, split: str = "train",
              gz: bool = False, spelling: str = "-") -> tuple[Path, Path]:
    """Write an images and a labels IDX file; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    paths = []
    for kind, arr, magic in (("images", images, 0x803), ("labels", labels, 0x801)):
        arr = np.asarray(arr, dtype=np.uint8)
        blob = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
        p = folder / f"{split}-{kind}{spelling}idx{arr.ndim}-ubyte{suffix}"
        p.write_bytes(gzip.compress(blob) if gz else blob)
        paths.append(p)
    return paths[0], paths[1]


def small_idx(folder: Path, *, gz: bool = False, n_train: int = 30, n_test: int = 10,
              h: int = 5, w: int = 4, fill: int = 0, spelling: str = "-") -> None:
    """A tiny 4-file IDX data set; `fill` marks which copy it is (the first pixel)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
        images[:, 0, 0] = fill
        write_idx(folder, images, np.arange(n) % 10, split, gz, spelling)


# ---------------------------------------------------------------------------------------------
# digits


def test_digits_is_the_shipped_default():
    assert data.DEFAULT_DATASET == "digits"
    ds = load_dataset("digits")
    assert ds.name == "digits"
    assert ds.image_shape == (8, 8, 1)
    assert ds.num_classes == 10
    assert len(ds.train_x) + len(ds.test_x) == 1797
    assert (len(ds.train_x), len(ds.test_x)) == (1438, 359)
    for x in (ds.train_x, ds.test_x):
        assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    for y in (ds.train_y, ds.test_y):
        assert y.dtype == np.int64 and set(np.unique(y)) == set(range(10))
    assert "Alpaydin" in ds.description and "CC BY 4.0" in ds.description


def test_digits_split_is_stratified_and_fixed():
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=123)
    np.testing.assert_array_equal(a.train_x, b.train_x)
    np.testing.assert_array_equal(a.test_y, b.test_y)
    train_counts = np.bincount(a.train_y, minlength=10)
    test_counts = np.bincount(a.test_y, minlength=10)
    frac = test_counts / (train_counts + test_counts)
    assert np.all(np.abs(frac - 0.2) < 0.01), frac
    # The pixels are the file's integers / 16.
    assert set(np.unique(a.train_x * 16)) <= set(range(17))


def test_digits_citation_is_shipped():
    from importlib import resources

    readme = resources.files("cnnc.data").joinpath("DIGITS_README.md").read_text()
    assert "Alpaydin" in readme and "CC BY 4.0" in readme
    assert resources.files("cnnc.data").joinpath("digits.csv.gz").is_file()


# ---------------------------------------------------------------------------------------------
# IDX: the real Fashion-MNIST, and files written here


@pytest.mark.skipif(not FASHION_DIR.is_dir(),
                    reason="Fashion-MNIST is not installed at /usr/share/datasets/fashion-mnist "
                           "(apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_from_the_system_package():
    ds = load_dataset("fashion-mnist")
    assert ds.name == "fashion-mnist"
    assert ds.train_x.shape == (60000, 28, 28, 1) and ds.test_x.shape == (10000, 28, 28, 1)
    assert ds.train_x.dtype == np.float32 and ds.train_y.dtype == np.int64
    assert ds.num_classes == 10
    assert np.bincount(ds.train_y).tolist() == [6000] * 10
    assert np.bincount(ds.test_y).tolist() == [1000] * 10
    assert ds.train_x.min() == 0.0 and ds.train_x.max() == 1.0
    assert abs(float(ds.train_x.mean()) - 0.2860) < 0.001  # the published mean pixel
    assert ds.train_y[0] == 9 and ds.test_y[0] == 9  # both start with an ankle boot
    assert "Xiao" in ds.description and "MIT" in ds.description
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("nested", [False, True])
def test_idx_files_in_data_dir(tmp_path, gz, nested, no_system_dirs):
    root = tmp_path / "data"
    small_idx(root / "mnist" if nested else root, gz=gz)
    ds = load_dataset("mnist", data_dir=str(root))
    assert ds.name == "mnist"
    assert ds.train_x.shape == (30, 5, 4, 1) and ds.test_x.shape == (10, 5, 4, 1)
    assert ds.num_classes == 10
    assert ds.train_y.tolist() == [i % 10 for i in range(30)]
    assert ds.train_x.max() <= 1.0 and ds.train_x.dtype == np.float32


def test_idx_pixels_are_divided_by_255(tmp_path):
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    write_idx(tmp_path, images, [3])
    write_idx(tmp_path, images, [4], split="t10k")
    ds = load_dataset(str(tmp_path))
    np.testing.assert_allclose(ds.train_x[0, :, :, 0], [[0, 1], [0.2, 0.4]], rtol=1e-6)


def test_idx_mirror_spelling_is_accepted(tmp_path):
    small_idx(tmp_path, spelling=".")
    assert load_dataset(f"idx:{tmp_path}").train_x.shape == (30, 5, 4, 1)


def test_a_directory_spec_is_an_idx_folder(tmp_path):
    small_idx(tmp_path, gz=True)
    ds = load_dataset(str(tmp_path))
    assert ds.name == f"idx:{tmp_path}"
    assert ds.num_classes == 10


def test_cnnc_data_is_honoured(tmp_path, monkeypatch, no_system_dirs):
    small_idx(tmp_path / "store" / "mnist", fill=7)
    monkeypatch.setenv("CNNC_DATA", str(tmp_path / "nothing") + os.pathsep
                       + str(tmp_path / "store"))
    ds = load_dataset("mnist")
    assert ds.train_x[0, 0, 0, 0] == pytest.approx(7 / 255)


def test_search_order(tmp_path, monkeypatch):
    """--data, then $CNNC_DATA, then the cache folder, then the system folder."""
    places = {
        "data": tmp_path / "d" / "fashion-mnist",
        "env": tmp_path / "e" / "fashion-mnist",
        "cache": tmp_path / "xdg-cache" / "cnnc" / "fashion-mnist",
        "system": tmp_path / "sys" / "fashion-mnist",
    }
    for fill, folder in enumerate(places.values(), start=1):
        small_idx(folder, fill=fill)
    monkeypatch.setattr(idx, "SYSTEM_DIRS", {"fashion-mnist": [str(places["system"])]})
    monkeypatch.setenv("CNNC_DATA", str(tmp_path / "e"))

    def first_pixel(**kw):
        return round(float(load_dataset("fashion-mnist", **kw).train_x[0, 0, 0, 0]) * 255)

    assert first_pixel(data_dir=str(tmp_path / "d")) == 1
    assert first_pixel() == 2
    monkeypatch.delenv("CNNC_DATA")
    assert first_pixel() == 3
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "elsewhere"))
    assert first_pixel() == 4


def test_cache_folder_defaults_to_home(tmp_path, monkeypatch, no_system_dirs):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    small_idx(tmp_path / "home" / ".cache" / "cnnc" / "mnist")
    assert load_dataset("mnist").train_x.shape == (30, 5, 4, 1)


def test_missing_dataset_lists_every_place_looked(tmp_path, monkeypatch, no_system_dirs):
    monkeypatch.setenv("CNNC_DATA", str(tmp_path / "env"))
    partial = tmp_path / "given" / "fashion-mnist"
    small_idx(partial)
    (partial / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(CnncError) as info:
        load_dataset("fashion-mnist", data_dir=str(tmp_path / "given"))
    err = info.value
    assert err.code == "data"
    assert "'fashion-mnist' was not found" in err.message
    text = "\n".join(err.notes)
    for place in (partial, tmp_path / "given", tmp_path / "env" / "fashion-mnist",
                  tmp_path / "env", tmp_path / "xdg-cache" / "cnnc" / "fashion-mnist",
                  tmp_path / "no-system"):
        assert str(place) in text, place
    assert "missing t10k-labels-idx1-ubyte" in text
    assert "apt-get install dataset-fashion-mnist" in err.hint
    assert "zalandoresearch/fashion-mnist" in err.hint


def test_missing_mnist_says_how_to_get_it(no_system_dirs):
    with pytest.raises(CnncError) as info:
        load_dataset("mnist")
    assert "$CNNC_DATA is not set" in info.value.notes
    assert "train-images-idx3-ubyte.gz" in info.value.hint
    assert "cnnc" in info.value.hint  # names the cache folder to put them in


def _corrupt_case(tmp_path: Path, case: str) -> tuple[Path, str]:
    """Write a tiny IDX set into tmp_path, damage one file; return it and a phrase expected."""
    small_idx(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte"
    labels = tmp_path / "train-labels-idx1-ubyte"
    if case == "magic":
        blob = bytearray(images.read_bytes())
        blob[3] = 0x02
        images.write_bytes(bytes(blob))
        return images, "magic number is 0x00000802"
    if case == "swapped":
        blob = labels.read_bytes()
        labels.write_bytes(images.read_bytes())
        images.write_bytes(blob)
        return images, "that of a label file"
    if case == "truncated":
        images.write_bytes(images.read_bytes()[:-7])
        return images, "truncated"
    if case == "extra":
        labels.write_bytes(labels.read_bytes() + b"\0\0")
        return labels, "extra bytes"
    if case == "short-header":
        images.write_bytes(images.read_bytes()[:9])
        return images, "shorter than its 16-byte header"
    if case == "empty":
        labels.write_bytes(b"")
        return labels, "0 bytes long"
    if case == "count":
        rng = np.random.default_rng(1)
        write_idx(tmp_path, rng.integers(0, 255, (30, 5, 4)), np.zeros(29))
        return labels, "30 images but"
    if case == "label":
        write_idx(tmp_path, np.zeros((30, 5, 4)), np.full(30, 12))
        return labels, "label 12 at index 0"
    if case == "gzip":
        images.unlink()
        bad = tmp_path / "train-images-idx3-ubyte.gz"
        small = tmp_path / "other"
        small_idx(small, gz=True)
        bad.write_bytes((small / "train-images-idx3-ubyte.gz").read_bytes()[:40])
        return bad, "not a valid gzip file or is truncated"
    if case == "sizes":
        write_idx(tmp_path, np.zeros((10, 6, 4)), np.zeros(10), split="t10k")
        return tmp_path / "t10k-images-idx3-ubyte", "differ in size"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["magic", "swapped", "truncated", "extra", "short-header",
                                  "empty", "count", "label", "gzip", "sizes"])
def test_corrupt_idx_files_name_the_file(tmp_path, case, no_system_dirs):
    folder = tmp_path / "mnist"
    bad, phrase = _corrupt_case(folder, case)
    with pytest.raises(CnncError) as info:
        load_dataset("mnist", data_dir=str(tmp_path))
    assert info.value.code == "data"
    assert str(bad) in info.value.message
    assert phrase in info.value.message


def test_truncated_file_gives_the_sizes(tmp_path):
    small_idx(tmp_path)
    images = tmp_path / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:100])
    with pytest.raises(CnncError) as info:
        load_dataset(f"idx:{tmp_path}")
    msg = info.value.message
    assert "10 x 5 x 4" in msg and "216" in msg and "100 bytes" in msg


def test_idx_folder_lacking_files(tmp_path):
    small_idx(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(CnncError, match="lacks t10k-images-idx3-ubyte"):
        load_dataset(f"idx:{tmp_path}")


def test_generic_idx_counts_its_classes(tmp_path):
    write_idx(tmp_path, np.zeros((6, 3, 3)), [0, 1, 2, 0, 1, 2])
    write_idx(tmp_path, np.zeros((2, 3, 3)), [2, 0], split="t10k")
    assert load_dataset(str(tmp_path)).num_classes == 3


def test_loading_60k_idx_images_is_fast(tmp_path):
    rng = np.random.default_rng(0)
    write_idx(tmp_path, rng.integers(0, 256, (60000, 28, 28), dtype=np.uint8),
              rng.integers(0, 10, 60000), gz=False)
    write_idx(tmp_path, rng.integers(0, 256, (10000, 28, 28), dtype=np.uint8),
              rng.integers(0, 10, 10000), split="t10k")
    # CPU time of this process, not wall time: other processes' load does not count (on a
    # machine at load 15 the wall time reached 11.9 s; the CPU time measured 0.15-0.66 s)
    start = time.process_time()
    ds = load_dataset(str(tmp_path))
    assert ds.train_x.shape == (60000, 28, 28, 1)
    assert time.process_time() - start < 5


# ---------------------------------------------------------------------------------------------
# shapes


def test_shapes_is_deterministic_per_seed():
    a = load_dataset("shapes:16x16x1:3:90", seed=4)
    b = load_dataset("shapes:16x16x1:3:90", seed=4)
    c = load_dataset("shapes:16x16x1:3:90", seed=5)
    np.testing.assert_array_equal(a.train_x, b.train_x)
    np.testing.assert_array_equal(a.test_y, b.test_y)
    assert not np.array_equal(a.train_x, c.train_x)


def test_shapes_spec_and_balance():
    ds = load_dataset("shapes:12x20x3:5:203")
    assert ds.name == "shapes:12x20x3:5:203"
    assert ds.image_shape == (12, 20, 3)
    assert ds.num_classes == 5
    assert len(ds.train_x) == 203 and len(ds.test_x) == 50
    for y in (ds.train_y, ds.test_y):
        counts = np.bincount(y, minlength=5)
        assert counts.max() - counts.min() <= 1
    assert ds.train_x.dtype == np.float32
    assert 0.0 <= ds.train_x.min() and ds.train_x.max() <= 1.0


def test_shapes_defaults_come_from_the_model():
    ds = load_dataset("shapes", input_shape=(32, 24, 3), num_classes=12)
    assert ds.image_shape == (32, 24, 3) and ds.num_classes == 12
    assert (len(ds.train_x), len(ds.test_x)) == (2000, 500)
    assert load_dataset("shapes", input_shape=(16, 16, 1), num_classes=1).num_classes == 2
    plain = load_dataset("shapes")
    assert plain.image_shape == (28, 28, 1) and plain.num_classes == 4
    partial = load_dataset("shapes::6:60", input_shape=(10, 10, 2))
    assert partial.image_shape == (10, 10, 2) and partial.num_classes == 6
    assert load_dataset("shapes:9x11").image_shape == (9, 11, 1)


def test_shapes_classes_differ():
    """Each class has its own pattern: class means are far apart compared with the noise."""
    ds = load_dataset("shapes:24x24x1:8:800", seed=1)
    x = ds.train_x.reshape(len(ds.train_x), -1)
    means = np.stack([x[ds.train_y == k].mean(0) for k in range(8)])
    pred = np.argmin(((ds.test_x.reshape(len(ds.test_x), -1)[:, None] - means) ** 2).sum(-1), 1)
    acc = (pred == ds.test_y).mean()
    assert acc > 1.5 / 8  # well above chance, even for a nearest-mean classifier


@pytest.mark.parametrize("spec, phrase", [
    ("shapes:4x4x1", "at least 8x8"),
    ("shapes:16x16x1:1", "2 to 1000 classes"),
    ("shapes:abc", "not an image size"),
    ("shapes:16x16x1:x", "not a whole number"),
    ("shapes:16x16x1:5:3", "cannot cover 5 classes"),
    ("shapes:16x16x1:2:10:1", "at most 3"),
    ("shapes:4000x4000x3:2:2000", "GB"),
])
def test_shapes_bad_specs(spec, phrase):
    with pytest.raises(CnncError) as info:
        load_dataset(spec)
    assert phrase in info.value.message and info.value.code == "data"
    assert "shapes:HxWxC" in info.value.hint


def test_shapes_needs_a_size_for_a_flat_model():
    with pytest.raises(CnncError, match="not an image"):
        load_dataset("shapes", input_shape=(64,))


# ---------------------------------------------------------------------------------------------
# npz


def test_npz_uint8_and_float(tmp_path):
    p = tmp_path / "set.npz"
    rng = np.random.default_rng(0)
    np.savez(p, x_train=rng.integers(0, 256, (20, 6, 6), dtype=np.uint8), y_train=np.arange(20) % 3,
             x_test=rng.random((5, 6, 6)).astype(np.float64), y_test=np.array([0, 1, 2, 0, 1]))
    ds = load_dataset(f"npz:{p}")
    assert ds.name == f"npz:{p}"
    assert ds.image_shape == (6, 6, 1) and ds.num_classes == 3
    assert ds.train_x.dtype == np.float32 and ds.train_x.max() <= 1.0
    np.testing.assert_allclose(ds.test_x[..., 0], np.load(p)["x_test"], rtol=1e-6)
    # An existing .npz path works without the prefix.
    assert load_dataset(str(p)).name == f"npz:{p}"


def test_npz_alternative_names_channels_and_one_hot(tmp_path):
    p = tmp_path / "alt.npz"
    np.savez(p, train_x=np.zeros((4, 5, 5, 3), np.float32), train_y=np.eye(4, dtype=np.int64),
             test_x=np.ones((2, 5, 5, 3), np.float32), test_y=np.array([[1], [3]]),
             num_classes=np.array(6))
    ds = load_dataset(str(p))
    assert ds.image_shape == (5, 5, 3)
    assert ds.train_y.tolist() == [0, 1, 2, 3] and ds.test_y.tolist() == [1, 3]
    assert ds.num_classes == 6


def test_npz_missing_keys_lists_what_is_there(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, images=np.zeros((2, 4, 4)), labels=np.zeros(2))
    with pytest.raises(CnncError) as info:
        load_dataset(f"npz:{p}")
    msg = info.value.message
    assert str(p) in msg and "x_train" in msg and "found images, labels" in msg


def test_npz_with_pickled_objects_is_refused(tmp_path):
    p = tmp_path / "pickled.npz"
    objects = np.empty(2, dtype=object)
    objects[0], objects[1] = np.zeros((3, 3)), np.zeros((4, 4))
    np.savez(p, x_train=objects, y_train=np.zeros(2), x_test=np.zeros((1, 3, 3)),
             y_test=np.zeros(1))
    with pytest.raises(CnncError) as info:
        load_dataset(str(p))
    assert "x_train" in info.value.message and "unpickl" in info.value.message
    assert str(p) in info.value.message


@pytest.mark.parametrize("arrays, phrase", [
    (dict(x_train=np.full((2, 4, 4), 200.0), y_train=[0, 1], x_test=np.zeros((1, 4, 4)),
          y_test=[0]), "divide them by 255"),
    (dict(x_train=np.zeros((3, 4, 4)), y_train=[0, 1], x_test=np.zeros((1, 4, 4)),
          y_test=[0]), "3 images in 'x_train' but 2 labels"),
    (dict(x_train=np.zeros((2, 4, 4)), y_train=[0, 1], x_test=np.zeros((1, 5, 4)),
          y_test=[0]), "4x4x1 images in 'x_train' but 5x4x1"),
    (dict(x_train=np.zeros((2, 4)), y_train=[0, 1], x_test=np.zeros((1, 4)),
          y_test=[0]), "images must be"),
    (dict(x_train=np.zeros((2, 4, 4)), y_train=[0, -1], x_test=np.zeros((1, 4, 4)),
          y_test=[0]), "negative label"),
    (dict(x_train=np.zeros((2, 4, 4)), y_train=[0.5, 1], x_test=np.zeros((1, 4, 4)),
          y_test=[0]), "not whole numbers"),
    (dict(x_train=np.zeros((2, 4, 4)), y_train=["a", "b"], x_test=np.zeros((1, 4, 4)),
          y_test=[0]), "expected integers"),
])
def test_npz_bad_contents(tmp_path, arrays, phrase):
    p = tmp_path / "bad.npz"
    np.savez(p, **{k: np.asarray(v) for k, v in arrays.items()})
    with pytest.raises(CnncError) as info:
        load_dataset(str(p))
    assert phrase in info.value.message + (info.value.hint or "")
    assert str(p) in info.value.message


def test_npz_not_an_archive(tmp_path):
    single = tmp_path / "one.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(CnncError) as info:
        load_dataset(f"npz:{single}")
    assert "not an .npz archive" in info.value.message and ".npy" in info.value.hint
    with pytest.raises(CnncError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")
    with pytest.raises(CnncError, match="does not exist"):
        load_dataset(str(tmp_path / "nope.npz"))
    text = tmp_path / "data.csv"
    text.write_text("1,2\n")
    with pytest.raises(CnncError, match="is a file"):
        load_dataset(str(text))


# ---------------------------------------------------------------------------------------------
# check_fits


def _ds(shape=(8, 8, 1), classes=10) -> Dataset:
    return Dataset("digits", np.zeros((2, *shape), np.float32), np.zeros(2, np.int64),
                   np.zeros((1, *shape), np.float32), np.zeros(1, np.int64), classes, "test")


def test_check_fits_accepts_matching_models():
    check_fits(_ds(), (8, 8, 1), 10)
    check_fits(_ds(), (64,), 10)  # flat input
    check_fits(_ds(), (8, 8, 1), None)
    check_fits(_ds(classes=2), (8, 8, 1), 1)  # one sigmoid unit
    check_fits(_ds(classes=2), (8, 8, 1), 2)


def test_check_fits_image_mismatch():
    with pytest.raises(CnncError) as info:
        check_fits(_ds(), (28, 28, 1), 10)
    err = info.value
    assert err.code == "data"
    assert err.message == "the data set 'digits' has 8x8x1 images but the model's input is 28x28x1"
    # the hint names the data sets that do fit (tests/test_download.py checks it in full)
    assert "`fashion-mnist` (" in err.hint and "`mnist` (" in err.hint
    with pytest.raises(CnncError) as info:  # nothing known fits: the synthetic data set
        check_fits(_ds(), (30, 30, 1), 10)
    assert "8x8x1" in info.value.hint and "shapes:30x30x1" in info.value.hint


def test_check_fits_channel_mismatch_notes_it():
    with pytest.raises(CnncError) as info:
        check_fits(_ds(), (8, 8, 3), 10)
    assert "1 channel and the model expects 3" in info.value.notes[0]


def test_check_fits_flat_mismatch():
    with pytest.raises(CnncError) as info:
        check_fits(_ds(), (784,), 10)
    assert "64 values each" in info.value.message and "784" in info.value.message


def test_check_fits_class_counts():
    with pytest.raises(CnncError) as info:
        check_fits(_ds(), (8, 8, 1), 5)
    assert info.value.message == "the model has 5 outputs but the data set 'digits' has 10 classes"
    assert "10 outputs" in info.value.hint
    with pytest.raises(CnncError, match="single output unit.*2-class.*10 classes"):
        check_fits(_ds(), (8, 8, 1), 1)


def test_check_fits_odd_input_rank():
    with pytest.raises(CnncError, match="neither an image"):
        check_fits(_ds(), (8, 8), 10)


# ---------------------------------------------------------------------------------------------
# the registry and spec resolution


def test_builtin_names():
    assert {"digits", "fashion-mnist", "mnist", "shapes", "npz", "idx"} <= set(dataset_names())
    assert dataset_names() == sorted(dataset_names())


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("digits", "again")(lambda arg, **kw: None)
    with pytest.raises(ValueError, match="invalid data set name"):
        register_dataset("Bad:Name", "no")


def test_unknown_name_suggests_and_lists():
    with pytest.raises(CnncError) as info:
        load_dataset("fashion_mnist")
    err = info.value
    assert err.message == "unknown data set 'fashion_mnist'"
    assert "fashion-mnist" in err.hint
    assert "digits" in err.notes[0] and "shapes" in err.notes[0]
    with pytest.raises(CnncError) as info:
        load_dataset("zzzz")
    assert info.value.hint is not None and "npz" in info.value.hint


def test_argument_to_a_dataset_without_one():
    with pytest.raises(CnncError, match="takes no argument"):
        load_dataset("digits:foo")
    with pytest.raises(CnncError, match="no data set was named"):
        load_dataset("  ")


def test_a_registered_loader_is_validated(monkeypatch):
    monkeypatch.setitem(_registry._REGISTRY, "broken", _registry.DatasetEntry(
        "broken", "returns a bad data set",
        lambda arg, **kw: Dataset("broken", np.zeros((2, 3, 3, 1), np.float32), np.array([0, 5]),
                                  np.zeros((1, 3, 3, 1), np.float32), np.array([0]), 2, "")))
    with pytest.raises(CnncError, match="labels range over 0..5 but num_classes is 2"):
        load_dataset("broken")


@pytest.fixture
def fake_plugin(tmp_path, monkeypatch):
    """A distribution on sys.path whose entry points offer data sets in group cnnc.datasets."""
    site = tmp_path / "site"
    dist = site / "cnnc_fake_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cnnc-fake-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[cnnc.datasets]\n"
        "tiny-plugin = cnnc_fake_plugin_mod:load_tiny\n"
        "self-registering = cnnc_fake_plugin_reg\n"
        "broken-plugin = cnnc_fake_plugin_missing:load\n")
    (site / "cnnc_fake_plugin_mod.py").write_text(
        "import numpy as np\n"
        "from cnnc.data import Dataset\n"
        "def load_tiny(arg, seed=0):\n"
        "    '''Four tiny images from a plugin.'''\n"
        "    x = np.full((4, 2, 2, 1), 0.5, np.float32)\n"
        "    y = np.array([0, 1, 0, 1])\n"
        "    return Dataset('tiny-plugin', x, y, x[:2], y[:2], 2, f'tiny {arg} {seed}')\n")
    (site / "cnnc_fake_plugin_reg.py").write_text(
        "import numpy as np\n"
        "from cnnc.data import Dataset, register_dataset\n"
        "@register_dataset('self-registering', 'registers itself')\n"
        "def load(arg, **kw):\n"
        "    x = np.zeros((3, 4, 4, 1), np.float32)\n"
        "    return Dataset('self-registering', x, np.arange(3), x, np.arange(3), 3, 'reg')\n")
    monkeypatch.syspath_prepend(str(site))
    yield
    for name in ("tiny-plugin", "self-registering", "broken-plugin"):
        _registry._REGISTRY.pop(name, None)
    for mod in ("cnnc_fake_plugin_mod", "cnnc_fake_plugin_reg"):
        sys.modules.pop(mod, None)


def test_entry_point_plugins(fake_plugin):
    assert "tiny-plugin" not in _registry._REGISTRY  # not imported before it is asked for
    assert {"tiny-plugin", "self-registering", "broken-plugin"} <= set(dataset_names())
    assert "cnnc_fake_plugin_mod" not in sys.modules
    ds = load_dataset("tiny-plugin:abc", seed=3)
    assert ds.name == "tiny-plugin" and ds.description == "tiny abc 3"
    assert ds.train_y.dtype == np.int64  # coerced by the registry's validation
    assert _registry._REGISTRY["tiny-plugin"].help == "Four tiny images from a plugin."
    assert load_dataset("self-registering").num_classes == 3
    with pytest.raises(CnncError) as info:
        load_dataset("broken-plugin")
    assert "cnnc-fake-plugin" in info.value.message and "failed to load" in info.value.message


def test_nothing_is_downloaded(monkeypatch, no_system_dirs):
    """No loader opens a network connection, even for a data set that is missing."""
    def refuse(*args, **kwargs):
        raise AssertionError("a data set loader tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for name in ("mnist", "fashion-mnist"):
        with pytest.raises(CnncError, match="not found"):
            load_dataset(name)
    load_dataset("digits")
    load_dataset("shapes:8x8x1:2:10")
