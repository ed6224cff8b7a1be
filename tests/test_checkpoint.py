"""Safetensors checkpoints written and read with numpy: round trips, interop, damage, atomicity."""

from __future__ import annotations

import json
import os
import pickle
import struct
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cnnc.diagnostics import CnncError
from cnnc.train import checkpoint
from cnnc.train.checkpoint import atomic_write_text, load_safetensors, save_safetensors

safetensors_numpy = pytest.importorskip("safetensors.numpy")

NUMPY_DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
                np.uint64, np.uint32, np.uint16, np.uint8, np.bool_]


def sample(dtype, shape=(3, 4), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    return (rng.standard_normal(shape) * 100).astype(dtype)


def temp_files(folder) -> list[str]:
    return [name for name in os.listdir(folder) if name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
def test_round_trip_every_dtype(tmp_path, dtype):
    tensors = {"a": sample(dtype), "scalar": sample(dtype, ()), "empty": sample(dtype, (0, 5)),
               "vector": sample(dtype, (7,), seed=1)}
    path = tmp_path / "w.safetensors"
    save_safetensors(path, tensors, {"format": "np"})
    loaded, meta = load_safetensors(path)
    assert meta == {"format": "np"}
    assert set(loaded) == set(tensors)
    for name, arr in tensors.items():
        assert loaded[name].dtype == arr.dtype, name
        assert loaded[name].shape == arr.shape, name
        np.testing.assert_array_equal(loaded[name], arr)
    # The arrays are ordinary writable arrays.
    loaded["a"][...] = 0


def test_mixed_dtypes_and_odd_layouts(tmp_path):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    tensors = {
        "transposed": base.T,  # not C-contiguous
        "strided": base[:, ::2],
        "big_endian": np.arange(5, dtype=">f8"),
        "byte": np.array([1, 2, 3], np.uint8),  # makes later tensors unaligned unless sorted
        "long": np.arange(3, dtype=np.int64),
        "flag": np.array([True]),
        "half": np.ones(3, np.float16),
    }
    path = tmp_path / "m.safetensors"
    save_safetensors(path, tensors)
    loaded, meta = load_safetensors(path)
    assert meta == {}
    for name, arr in tensors.items():
        np.testing.assert_array_equal(loaded[name], arr)
        assert loaded[name].dtype.isnative
        assert loaded[name].flags.aligned
    assert loaded["big_endian"].dtype == np.float64


def test_header_is_padded_and_valid_json(tmp_path):
    path = tmp_path / "w.safetensors"
    save_safetensors(path, {"x": np.zeros(3, np.float32)}, {"k": "v"})
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    assert (8 + n) % 8 == 0
    header = json.loads(raw[8:8 + n])
    assert header["x"] == {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}
    assert header["__metadata__"] == {"k": "v"}
    assert len(raw) == 8 + n + 12


def test_bf16_saved_and_loaded_as_float32(tmp_path):
    torch = pytest.importorskip("torch")
    values = np.array([0.0, -0.0, 1.0, 1 / 3, -2.7182817, 3.0e38, 1e-40, np.inf, -np.inf,
                       np.nan, 65504.0, 1.00390625, 1.01171875], np.float32)
    path = tmp_path / "bf.safetensors"
    save_safetensors(path, {"w": values, "keep": values}, dtypes={"w": "BF16"})
    loaded, _ = load_safetensors(path)
    assert loaded["w"].dtype == np.float32
    expected = torch.from_numpy(values).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(loaded["w"], expected)  # round to nearest even, like torch
    np.testing.assert_array_equal(loaded["keep"], values)
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    assert json.loads(raw[8:8 + n])["w"]["dtype"] == "BF16"


def test_dtypes_option_converts(tmp_path):
    path = tmp_path / "h.safetensors"
    save_safetensors(path, {"w": np.array([1.5, 2.25], np.float64)}, dtypes={"w": "F16"})
    loaded, _ = load_safetensors(path)
    assert loaded["w"].dtype == np.float16
    with pytest.raises(ValueError, match="unknown safetensors dtype"):
        save_safetensors(path, {"w": np.zeros(2)}, dtypes={"w": "F8"})
    with pytest.raises(ValueError, match="not saved"):
        save_safetensors(path, {"w": np.zeros(2)}, dtypes={"v": "F16"})


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(dtype=st.sampled_from(NUMPY_DTYPES),
                  shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)),
       st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=3))
def test_round_trip_property(tmp_path_factory, arr, metadata):
    path = tmp_path_factory.mktemp("prop") / "p.safetensors"
    save_safetensors(path, {"t": arr}, metadata)
    loaded, meta = load_safetensors(path)
    assert meta == metadata
    assert loaded["t"].dtype == arr.dtype and loaded["t"].shape == arr.shape
    np.testing.assert_array_equal(loaded["t"], arr)
    # The reference library agrees.
    ref = safetensors_numpy.load_file(str(path))
    np.testing.assert_array_equal(ref["t"], arr)


# ---------------------------------------------------------------------------------------------
# interop with the safetensors library


def test_our_files_read_by_the_library(tmp_path):
    from safetensors import safe_open

    tensors = {f"t{i}": sample(dt, (2, 3), seed=i) for i, dt in enumerate(NUMPY_DTYPES)}
    tensors["scalar"] = np.float32(1.5)
    path = tmp_path / "ours.safetensors"
    save_safetensors(path, tensors, {"cnnc": "0.1", "model": "lenet"})
    ref = safetensors_numpy.load_file(str(path))
    assert set(ref) == set(tensors)
    for name, arr in tensors.items():
        assert ref[name].dtype == np.asarray(arr).dtype
        np.testing.assert_array_equal(ref[name], arr)
    with safe_open(str(path), framework="np") as f:
        assert f.metadata() == {"cnnc": "0.1", "model": "lenet"}


def test_library_files_read_by_us(tmp_path):
    tensors = {f"t{i}": sample(dt, (3, 2), seed=i) for i, dt in enumerate(NUMPY_DTYPES)}
    tensors["zero"] = np.zeros((0,), np.float32)
    path = tmp_path / "theirs.safetensors"
    safetensors_numpy.save_file(tensors, str(path), metadata={"source": "library"})
    loaded, meta = load_safetensors(path)
    assert meta == {"source": "library"}
    for name, arr in tensors.items():
        assert loaded[name].dtype == arr.dtype
        np.testing.assert_array_equal(loaded[name], arr)


def test_bf16_interop_with_torch_files(tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    t = torch.linspace(-3, 3, 11).to(torch.bfloat16).reshape(11, 1)
    path = tmp_path / "torch.safetensors"
    safetensors_torch.save_file({"w": t}, str(path), metadata={"a": "b"})
    loaded, meta = load_safetensors(path)
    assert meta == {"a": "b"} and loaded["w"].dtype == np.float32
    np.testing.assert_array_equal(loaded["w"], t.float().numpy())
    # ... and ours is read back by the library as bfloat16.
    ours = tmp_path / "ours.safetensors"
    save_safetensors(ours, {"w": t.float().numpy()}, dtypes={"w": "BF16"})
    back = safetensors_torch.load_file(str(ours))["w"]
    assert back.dtype == torch.bfloat16 and torch.equal(back, t)


# ---------------------------------------------------------------------------------------------
# damaged files


def _file_with_header(tmp_path, header: object, data: bytes = b"", raw: bytes | None = None):
    text = raw if raw is not None else json.dumps(header).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def _good_file(tmp_path):
    path = tmp_path / "good.safetensors"
    save_safetensors(path, {"a": np.arange(4, dtype=np.float32),
                            "b": np.arange(3, dtype=np.int64)}, {"k": "v"})
    return path


F32_4 = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}


@pytest.mark.parametrize("header, data, phrase", [
    (None, b"", "too short"),
    ({"a": F32_4}, b"\0" * 10, "truncated"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, b"\0" * 16,
     "span 16 bytes"),
    ({"a": {"dtype": "Q9", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16, "dtype 'Q9'"),
    ({"a": {"dtype": "O", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16, "dtype 'O'"),
    ({"a": F32_4, "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, b"\0" * 16,
     "overlaps"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, b"\0" * 16,
     "unused bytes"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 16,
     "belong to no tensor"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b"", "shape [-1]"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4, "begin must"),
    ({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4, "lacks data_offsets"),
    ({"a": [1, 2]}, b"", "not a JSON object"),
    ([1, 2], b"", "JSON list"),
    ({"__metadata__": {"k": 1}}, b"", "__metadata__"),
])
def test_corrupt_headers(tmp_path, header, data, phrase):
    if header is None:
        path = tmp_path / "bad.safetensors"
        path.write_bytes(b"\1\0\0")
    else:
        path = _file_with_header(tmp_path, header, data)
    with pytest.raises(CnncError) as info:
        load_safetensors(path)
    assert info.value.code == "weights"
    assert str(path) in info.value.message
    assert phrase in info.value.message
    assert info.value.hint


@pytest.mark.parametrize("raw, phrase", [
    (b"{not json}", "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b'{"a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, '
     b'"a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}', "appears twice"),
    (b" ", "too short for a JSON object"),
])
def test_bad_json(tmp_path, raw, phrase):
    path = _file_with_header(tmp_path, None, raw=raw)
    with pytest.raises(CnncError, match=phrase) as info:
        load_safetensors(path)
    assert str(path) in info.value.message


def test_absurd_header_lengths(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with pytest.raises(CnncError, match="over the") as info:
        load_safetensors(path)
    assert str(path) in info.value.message
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(CnncError, match="only 2 bytes follow"):
        load_safetensors(path)


def test_every_truncation_of_a_good_file_is_caught(tmp_path):
    good = _good_file(tmp_path).read_bytes()
    path = tmp_path / "cut.safetensors"
    for cut in range(len(good)):
        path.write_bytes(good[:cut])
        with pytest.raises(CnncError) as info:
            load_safetensors(path)
        assert str(path) in info.value.message and info.value.code == "weights"


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    with pytest.raises(CnncError) as info:
        load_safetensors(path)
    assert str(path) in info.value.message and info.value.code == "weights"


def test_missing_file(tmp_path):
    with pytest.raises(CnncError) as info:
        load_safetensors(tmp_path / "absent.safetensors")
    assert info.value.code == "weights"
    assert "absent.safetensors" in info.value.message and "does not exist" in info.value.message


# ---------------------------------------------------------------------------------------------
# atomic writes


class _FailingFile:
    """Wraps a file; the second write writes half its data, then fails like a full disk."""

    def __init__(self, f):
        self._f = f
        self.writes = 0

    def write(self, data):
        self.writes += 1
        if self.writes >= 2:
            view = memoryview(data).cast("B")
            self._f.write(view[: len(view) // 2])
            raise OSError(28, "No space left on device")
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = _good_file(tmp_path)
    before = path.read_bytes()
    real_fdopen = os.fdopen
    monkeypatch.setattr(checkpoint.os, "fdopen", lambda *a, **k: _FailingFile(real_fdopen(*a, **k)))
    with pytest.raises(CnncError) as info:
        save_safetensors(path, {"a": np.ones(1000, np.float32)})
    assert info.value.code == "io" and str(path) in info.value.message
    assert "No space left" in info.value.message
    assert path.read_bytes() == before
    assert temp_files(tmp_path) == []
    monkeypatch.undo()
    assert load_safetensors(path)[1] == {"k": "v"}


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_interrupted_save_leaves_no_half_file(tmp_path, monkeypatch, where):
    path = _good_file(tmp_path)
    before = path.read_bytes()
    fresh = tmp_path / "new" / "fresh.safetensors"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # not an OSError: passed through untouched

    monkeypatch.setattr(checkpoint.os, where, crash)
    for target in (path, fresh):
        with pytest.raises(KeyboardInterrupt):
            save_safetensors(target, {"a": np.ones(10, np.float32)})
    assert path.read_bytes() == before
    assert not fresh.exists()
    assert temp_files(tmp_path) == [] and temp_files(tmp_path / "new") == []


def test_save_creates_parent_folders_and_replaces(tmp_path):
    path = tmp_path / "a" / "b" / "w.safetensors"
    save_safetensors(path, {"x": np.zeros(2, np.float32)})
    save_safetensors(path, {"y": np.ones(3, np.int32)})
    loaded, _ = load_safetensors(path)
    assert list(loaded) == ["y"]
    assert temp_files(path.parent) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_saved_file_has_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "w.safetensors"
        save_safetensors(path, {"x": np.zeros(2, np.float32)})
        atomic_write_text(tmp_path / "m.json", "{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644


def test_atomic_write_text(tmp_path, monkeypatch):
    path = tmp_path / "deep" / "meta.json"
    atomic_write_text(path, '{"name": "lenet", "µ": 1}\n')
    assert path.read_text(encoding="utf-8") == '{"name": "lenet", "µ": 1}\n'
    atomic_write_text(path, "{}")
    assert path.read_text() == "{}"

    def fail(*args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(checkpoint.os, "replace", fail)
    with pytest.raises(CnncError) as info:
        atomic_write_text(path, "lost")
    assert info.value.code == "io" and str(path) in info.value.message
    assert path.read_text() == "{}"
    assert temp_files(path.parent) == []


def test_unwritable_folder_is_a_cnnc_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CnncError) as info:
        save_safetensors(blocker / "sub" / "w.safetensors", {"x": np.zeros(1)})
    assert info.value.code == "io"


# ---------------------------------------------------------------------------------------------
# never pickle


def test_object_and_other_non_numeric_arrays_are_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    objects = np.empty(2, dtype=object)
    for bad in (objects, np.array(["a", "b"]), np.array([1 + 2j]),
                np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f4")])):
        with pytest.raises(TypeError, match="safetensors"):
            save_safetensors(path, {"x": bad})
    assert not path.exists()
    with pytest.raises(TypeError, match="str to str"):
        save_safetensors(path, {"x": np.zeros(1)}, {"epochs": 3})
    with pytest.raises(ValueError, match="invalid tensor name"):
        save_safetensors(path, {"__metadata__": np.zeros(1)})


def test_pickle_is_never_used(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used")

    for name in ("dumps", "loads", "dump", "load", "Pickler", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    monkeypatch.setattr(np, "save", forbidden)
    path = tmp_path / "w.safetensors"
    save_safetensors(path, {"x": np.arange(3.0)}, {"a": "b"})
    loaded, _ = load_safetensors(path)
    np.testing.assert_array_equal(loaded["x"], np.arange(3.0))
    source = open(checkpoint.__file__, encoding="utf-8").read()
    assert "import pickle" not in source and "allow_pickle" not in source
