"""`--data folder:PATH`: the user's own images, one sub-folder per class, read with Pillow.

The images here are drawn with Pillow and written as PNG, JPEG and BMP; what cnnc reads back is
compared with Pillow's own decoding, conversion and resizing of the same files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnc.data import load_dataset
from cnnc.diagnostics import CnncError

Image = pytest.importorskip("PIL.Image")

ROOT = Path(__file__).resolve().parents[1]

MODEL = """input 12x12x1
conv 4 3x3 relu
flatten
dense 2 softmax
train:
    epochs 2
    batch 8
"""


def draw(path: Path, kind: int, i: int, size=(20, 16), mode="RGB") -> None:
    """A class-0 image is a bright square, class 1 a bright bar, on a dark ground."""
    rng = np.random.default_rng(i + 100 * kind)
    img = rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8)
    if kind == 0:
        img[4:12, 5:13] = 220
    else:
        img[:, 8:11] = 220
    Image.fromarray(img).convert(mode).save(path)


def make_folder(root: Path, n=10, split=False) -> Path:
    exts = [".png", ".jpg", ".bmp"]
    for part in (["train", "test"] if split else [None]):
        base = root / part if part else root
        for kind, name in enumerate(["circle", "bar"]):
            (base / name).mkdir(parents=True, exist_ok=True)
            for i in range(n if part != "test" else 3):
                draw(base / name / f"{i:02d}{exts[i % 3]}", kind, i)
    return root


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_classes_labels_conversion_and_resizing_match_pillow(tmp_path):
    root = make_folder(tmp_path / "imgs")
    (root / "circle" / "notes.txt").write_text("not an image")
    ds = load_dataset(f"folder:{root}", input_shape=(12, 10, 1), seed=0)
    assert ds.class_names == ["bar", "circle"] and ds.num_classes == 2  # sorted names
    assert ds.image_shape == (12, 10, 1)
    assert len(ds.train_x) + len(ds.test_x) == 20
    assert len(ds.test_x) == 4 and sorted(ds.test_y.tolist()) == [0, 0, 1, 1]  # 20% per class
    assert "grey" in ds.preparation and "12x10" in ds.preparation and "seed 0" in ds.preparation
    # every image is Pillow's grey, bilinear 10x12 version of one of the files, labelled by its
    # folder
    expected = {}
    for label, name in enumerate(ds.class_names):
        for f in sorted((root / name).iterdir()):
            if f.suffix != ".txt":
                ref = Image.open(f).convert("L").resize((10, 12), Image.Resampling.BILINEAR)
                expected[np.asarray(ref).tobytes()] = label
    for x, y in zip(np.concatenate([ds.train_x, ds.test_x]),
                    np.concatenate([ds.train_y, ds.test_y])):
        key = np.rint(x[..., 0] * 255).astype(np.uint8).tobytes()
        assert expected.pop(key) == y
    assert not expected
    # the held-out split depends on the seed
    other = load_dataset(f"folder:{root}", input_shape=(12, 10, 1), seed=1)
    assert not np.array_equal(other.test_x, ds.test_x)


def test_rgb_and_a_bare_path_and_train_test_folders(tmp_path):
    root = make_folder(tmp_path / "split", split=True)
    ds = load_dataset(str(root), input_shape=(8, 8, 3))
    assert ds.name == f"folder:{root}" and ds.image_shape == (8, 8, 3)
    assert (len(ds.train_x), len(ds.test_x)) == (20, 6)
    assert "test/" in ds.preparation
    f = root / "test" / "circle" / "00.png"
    ref = np.asarray(Image.open(f).convert("RGB").resize((8, 8), Image.Resampling.BILINEAR))
    assert any(np.array_equal(np.rint(x * 255).astype(np.uint8), ref) for x in ds.test_x)


def test_cache_is_used_and_invalidated_when_a_file_changes(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "imgs", n=5)
    first = load_dataset(f"folder:{root}", input_shape=(6, 6, 1))
    caches = list((tmp_path / "cache" / "cnnc" / "folders").glob("*.npz"))
    assert len(caches) == 1 and not any(p.suffix == ".npz" for p in root.rglob("*"))
    import cnnc.data.folder as folder

    calls = []
    real = folder._decode
    monkeypatch.setattr(folder, "_decode", lambda *a: calls.append(a) or real(*a))
    again = load_dataset(f"folder:{root}", input_shape=(6, 6, 1))
    assert calls == [] and np.array_equal(first.train_x, again.train_x)
    target = root / "bar" / "00.png"
    Image.new("RGB", (20, 16), (255, 255, 255)).save(target)
    os.utime(target, ns=(1, 1))  # a different time, whatever the clock's resolution
    changed = load_dataset(f"folder:{root}", input_shape=(6, 6, 1))
    assert len(calls) == 10
    everything = np.concatenate([changed.train_x, changed.test_x])
    assert (everything == 1.0).all(axis=(1, 2, 3)).sum() == 1  # the new white image is read


def test_broken_files_are_listed_or_skipped_and_empty_classes_refused(tmp_path):
    root = make_folder(tmp_path / "imgs")
    (root / "bar" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "circle" / "empty.jpg").write_bytes(b"")
    with pytest.raises(CnncError) as err:
        load_dataset(f"folder:{root}", input_shape=(8, 8, 1))
    text = err.value.message + " ".join(err.value.notes)
    assert "2 of the 22" in err.value.message and "broken.png" in text and "empty.jpg" in text
    assert "--skip-bad-images" in err.value.hint
    ds = load_dataset(f"folder:{root}", input_shape=(8, 8, 1), skip_bad_images=True)
    assert len(ds.train_x) + len(ds.test_x) == 20 and "skipped 2" in ds.preparation
    (root / "empty_class").mkdir()
    with pytest.raises(CnncError, match="empty_class holds no images"):
        load_dataset(f"folder:{root}", input_shape=(8, 8, 1), skip_bad_images=True)


def test_flat_model_and_one_class_are_refused(tmp_path):
    root = make_folder(tmp_path / "imgs", n=3)
    with pytest.raises(CnncError, match="flat"):
        load_dataset(f"folder:{root}", input_shape=(64,))
    only = tmp_path / "one" / "cat"
    only.mkdir(parents=True)
    draw(only / "a.png", 0, 0)
    with pytest.raises(CnncError, match="at least two"):
        load_dataset(f"folder:{tmp_path / 'one'}", input_shape=(8, 8, 1))


def cnnc(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "cnnc", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_train_from_the_command_line_names_the_broken_file_then_skips_it(tmp_path):
    root = make_folder(tmp_path / "imgs")
    (root / "circle" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    model = tmp_path / "m.cnn"
    model.write_text(MODEL)
    proc = cnnc("train", model, "--data", f"folder:{root}", "--out", tmp_path / "run",
                cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "broken.jpg" in proc.stderr and "--skip-bad-images" in proc.stderr
    proc = cnnc("train", model, "--data", root, "--skip-bad-images", "--out", tmp_path / "run",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "converted to grey and resized to 12x12" in proc.stdout
    assert "skipped 1 unreadable file" in proc.stdout
    header = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert header["header"]["classes"] == ["bar", "circle"]
    from cnnc.train.checkpoint import load_safetensors

    _, meta = load_safetensors(tmp_path / "run" / "last.safetensors")
    assert json.loads(meta["classes"]) == ["bar", "circle"]


def test_a_folder_of_classes_overrides_a_files_searched_data_set(tmp_path):
    from types import SimpleNamespace

    from cnnc.cli.common import load_data, train_config
    from cnnc.pipeline import compile_text

    root = make_folder(tmp_path / "imgs", n=4)
    model = compile_text("input 8x8x1\nflatten\ndense 2 softmax\ntrain:\n    data fashion-mnist\n",
                         "m.cnn")
    args = SimpleNamespace(data=str(root), skip_bad_images=False)
    config = train_config(model, args)
    assert config.data == str(root)
    ds = load_data(model, args, config)
    assert ds.class_names == ["bar", "circle"] and ds.image_shape == (8, 8, 1)
