"""`cnnc predict`: image files through the real command line.

The key check: a PNG written from a Fashion-MNIST test image is given the class that `cnnc eval`
counts for that image (eval on a one-image test split labelled with predict's class scores 1,
labelled with any other class 0), so predict reads and scales pixels exactly as training did.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from cnnc.data.idx import CLASS_NAMES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = """input 28x28x1
conv 8 3x3 relu
pool 2
flatten
dense 10 softmax
train:
    data fashion-mnist
    epochs 1
    batch 64
"""


def cnnc(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    env.pop("CNNC_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "cnnc", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small model trained one epoch on 3,000 Fashion-MNIST images, and 20 test images."""
    from cnnc.data import load_dataset
    from cnnc.diagnostics import CnncError

    try:
        ds = load_dataset("fashion-mnist")
    except CnncError as e:
        pytest.skip(f"Fashion-MNIST is not installed: {e.message}")
    tmp = tmp_path_factory.mktemp("predict")
    to_u8 = lambda x: np.rint(x[..., 0] * 255).astype(np.uint8)  # noqa: E731 - the IDX bytes
    train_x, train_y = to_u8(ds.train_x[:3000]), ds.train_y[:3000]
    test_x, test_y = to_u8(ds.test_x[:20]), ds.test_y[:20]
    np.savez(tmp / "small.npz", x_train=train_x, y_train=train_y, x_test=test_x, y_test=test_y)
    (tmp / "m.cnn").write_text(MODEL)
    r = cnnc("train", tmp / "m.cnn", "--data", f"npz:{tmp / 'small.npz'}", "--out", tmp / "run")
    assert r.returncode == 0, r.stderr
    return tmp, train_x, train_y, test_x, test_y


def test_predict_gives_the_class_eval_counts(trained):
    tmp, train_x, train_y, test_x, _ = trained
    images = tmp / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(test_x[i], mode="L").save(images / f"test_{i}.png")
    r = cnnc("predict", tmp / "m.cnn", "--weights", tmp / "run" / "best.safetensors", images,
             "--top", "3", "--json")
    assert r.returncode == 0, r.stderr
    predictions = json.loads(r.stdout)["predictions"]
    assert [Path(p["file"]).name for p in predictions] == ["test_0.png", "test_1.png"]
    for i, p in enumerate(predictions):
        top = p["top"]
        assert len(top) == 3
        assert list(top[0]) == ["class", "name", "probability"]
        probs = [t["probability"] for t in top]
        assert probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1
        best = top[0]["class"]
        assert top[0]["name"] == CLASS_NAMES["fashion-mnist"][best]
        # eval on this one image: labelled with predict's class it is counted right, else wrong
        for label, accuracy in ((best, 1.0), ((best + 1) % 10, 0.0)):
            data = tmp / f"one_{i}_{label}.npz"
            np.savez(data, x_train=train_x, y_train=train_y, x_test=test_x[i:i + 1],
                     y_test=np.array([label]))
            ev = cnnc("eval", tmp / "m.cnn", "--weights", tmp / "run" / "best.safetensors",
                      "--data", f"npz:{data}", "--json")
            assert ev.returncode == 0, ev.stderr
            assert json.loads(ev.stdout)["accuracy"] == accuracy


def test_text_output_rgb_and_resizing(trained):
    tmp, *_ = trained
    # an RGB JPEG of another size: converted to grey and resized to 28x28
    rgb = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb, mode="RGB").save(tmp / "photo.jpg")
    r = cnnc("predict", tmp / "m.cnn", "--weights", tmp / "run" / "best.safetensors",
             tmp / "photo.jpg", "--top", "2")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"{tmp / 'photo.jpg'}: ") and lines[0].endswith("%)")
    assert len(lines) == 2 and lines[1].startswith("    ")
    assert any(name in r.stdout for name in CLASS_NAMES["fashion-mnist"])


def test_errors_are_clear(trained, tmp_path):
    tmp, *_ = trained
    weights = tmp / "run" / "best.safetensors"
    (tmp_path / "notes.png").write_text("not an image")
    r = cnnc("predict", tmp / "m.cnn", "--weights", weights, tmp_path / "notes.png")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "is not an image" in r.stderr
    r = cnnc("predict", tmp / "m.cnn", "--weights", weights, tmp_path / "missing.png")
    assert r.returncode == 1 and "does not exist" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cnnc("predict", tmp / "m.cnn", "--weights", weights, empty)
    assert r.returncode == 1 and "holds no images" in r.stderr
    (tmp_path / "seg.cnn").write_text("input 28x28x1\nconv 3 3x3 pad=same\n")
    r = cnnc("predict", tmp_path / "seg.cnn", "--weights", weights, tmp_path / "notes.png",
             "--json")
    assert r.returncode == 1
    report = json.loads(r.stdout)
    assert report["ok"] is False and "not one score per class" in \
        report["diagnostics"][0]["message"]
    r = cnnc("predict", tmp / "m.cnn", "--weights", weights)
    assert r.returncode == 2  # no image: a malformed command line
