"""Damaged and hostile inputs, each ending in one clear diagnostic before any long work: model
sources (huge literals, devices, pipes, closed stdin), data files (IDX, npz), weights files, and
command-line values the `train:` section would refuse. One test per repro of the trial that found
them (issue 12)."""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import cnnc
from cnnc.diagnostics import CnncError
from cnnc.pipeline import read_source
from cnnc.train.checkpoint import load_safetensors, save_safetensors

ROOT = Path(__file__).resolve().parents[1]
SMALL = "input 8x8x1; flatten; dense 10\n"


def cnnc_cli(*args, stdin=None, cwd=None, timeout=600, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("CNNC_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "cnnc", *args], stdin=stdin, text=True,
                          capture_output=True, cwd=cwd or ROOT, env=env, timeout=timeout, **kw)


def clean(proc, code=1):
    """Exit `code`, no traceback, no internal error."""
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr


def only_error(text: str):
    model = cnnc.compile(text)
    assert not model.ok
    return model.errors[0]


# ---------------------------------------------------------------------------------------------
# Model sources


@pytest.mark.parametrize("text, code", [
    ("input 28x28x1; conv 1" + "0" * 5000 + " 3; flatten; dense 10", "too-large"),
    ("input 28x28x1; conv 8 3x" + "9" * 5000 + "; flatten; dense 10", "too-large"),
    ("input 28x28x1; flatten; dropout 0." + "1" * 5000 + "; dense 10", None),
    ("input 28x28x1; flatten; dense 10; leaky_relu 1" + "0" * 5000, "too-large"),
    ("input 1" + "0" * 4400 + "x28x1; flatten; dense 10", "too-large"),
    ("input 28x28x1; conv " + "0" * 4700 + "8 3; flatten; dense 10", None),  # leading zeros
    ("input " + "0" * 4700 + "28x28x1; flatten; dense 10", None),
])
def test_huge_literals_are_diagnostics(text, code):
    model = cnnc.compile(text)
    if code is None:  # a long fraction is a fine number
        assert model.ok, model.diagnostics
        return
    assert [d.code for d in model.errors] == [code]
    assert len(model.errors[0].message) < 200  # the number is shown by its length


def test_split_into_billions_of_parts_is_a_short_diagnostic():
    # found by fuzzing: the hint listed every part's name, 2**31 of them, and never finished
    model = cnnc.compile("input 8x8x3\nsplit 2147483647\n")
    assert [d.code for d in model.errors] == ["bad-value"]
    assert "a, b, c, ..., p2147483647 = split 2147483647" in model.errors[0].hint
    assert len(model.errors[0].hint) < 200


def test_pool_zero_says_the_size_range():
    err = only_error("input 28x28x1; pool 0; flatten; dense 10")
    assert err.message == "`pool`: size must be at least 1, but got `0`"
    assert (err.span.line, err.span.column) == (1, 21)


@pytest.mark.parametrize("layer, words", [
    ("bn momentum=2", "momentum must be in [0, 1]"),
    ("leaky_relu 1e308", "too large for float32"),
    ("elu alpha=1e39", "too large for float32"),
])
def test_values_a_backend_cannot_take_are_refused_by_check(layer, words):
    err = only_error(f"input 8x8x2; {layer}; flatten; dense 10")
    assert words in err.message


@pytest.mark.parametrize("setting, words", [
    ("lr 0", "lr must be a number above 0"),
    ("optimizer sgd nesterov=true", "nesterov=true needs SGD with a momentum above 0"),
    ("optimizer adam nesterov=true", "nesterov=true needs SGD"),
])
def test_training_settings_that_would_crash_are_refused_by_check(setting, words):
    err = only_error(f"{SMALL}train:\n  {setting}\n")
    assert words in err.message and err.span.line == 3


def test_sources_that_are_not_files(tmp_path):
    _, [d] = read_source("/dev/zero")  # 0 bytes says stat; it never ends
    assert d.code == "io" and "over 16,777,216 bytes" in d.message
    _, [d] = read_source("/dev/null")
    assert "nothing to read" in d.message
    _, [d] = read_source(tmp_path)
    assert "directory" in d.message
    fifo = tmp_path / "pipe.cnn"
    os.mkfifo(fifo)
    started = time.monotonic()
    _, [d] = read_source(fifo)  # no writer: an error after a short wait, not a hang
    assert "nothing to read" in d.message
    assert time.monotonic() - started < 120  # a hang guard (the wait is 2 s), not a timing check


def test_cli_reads_devices_closed_stdin_and_stdin_strictly(tmp_path):
    proc = cnnc_cli("check", "/dev/zero", "--json", timeout=600)
    clean(proc)
    assert json.loads(proc.stdout)["diagnostics"][0]["code"] == "io"
    proc = cnnc_cli("check", "-", stdin=subprocess.DEVNULL)
    clean(proc)  # empty input: the program has no input statement
    closed = subprocess.run(
        [sys.executable, "-c", "import os, sys, runpy; os.close(0); sys.stdin = None; "
         "sys.argv = ['cnnc', 'check', '-', '--json']; runpy.run_module('cnnc', "
         "run_name='__main__')"], capture_output=True, text=True, cwd=ROOT, timeout=600,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    clean(closed)
    assert json.loads(closed.stdout)["diagnostics"][0]["message"] == "standard input is closed"
    bad = tmp_path / "bad.cnn"
    bad.write_bytes(b"input 8x8x1; flatten\xff; dense 10\n")
    with open(bad, "rb") as f:
        piped = subprocess.run([sys.executable, "-m", "cnnc", "check", "-", "--json"],
                               stdin=f, capture_output=True, cwd=ROOT, timeout=600,
                               env=dict(os.environ, PYTHONPATH=str(ROOT)))
    from_file = cnnc_cli("check", str(bad), "--json")
    [a], [b] = (json.loads(p.stdout)["diagnostics"] for p in (piped, from_file))
    assert a["message"] == b["message"] and a["code"] == "io"  # the same bytes, the same error


# ---------------------------------------------------------------------------------------------
# Data files


def _idx(path: Path, magic: int, dims, data: bytes, gz=False):
    raw = struct.pack(f">I{len(dims)}I", magic, *dims) + data
    path.write_bytes(gzip.compress(raw) if gz else raw)


def _idx_folder(folder: Path, images_dims, image_bytes: bytes, gz=False):
    folder.mkdir()
    suffix = ".gz" if gz else ""
    for split in ("train", "t10k"):
        _idx(folder / f"{split}-images-idx3-ubyte{suffix}", 0x803, images_dims, image_bytes, gz)
        _idx(folder / f"{split}-labels-idx1-ubyte", 0x801, (10,), bytes(10))


def _load(spec):
    from cnnc.data import load_dataset

    return load_dataset(spec)


def test_idx_header_that_overflows_int64(tmp_path):
    # 2**32-1 cubed wraps int64 to a small number; the check must not be fooled.
    _idx_folder(tmp_path / "d", (2**32 - 1,) * 3, bytes(100))
    with pytest.raises(CnncError, match="truncated"):
        _load(f"idx:{tmp_path / 'd'}")
    _idx_folder(tmp_path / "e", (2**16, 2**16, 2**16), bytes(100))
    with pytest.raises(CnncError, match="truncated"):
        _load(f"idx:{tmp_path / 'e'}")


def test_gzip_idx_that_inflates_past_its_header(tmp_path):
    _idx_folder(tmp_path / "d", (10, 8, 8), bytes(10 * 64 + 5_000_000), gz=True)
    with pytest.raises(CnncError, match="followed by extra bytes"):
        _load(f"idx:{tmp_path / 'd'}")


def test_gzip_idx_claiming_more_than_memory(tmp_path):
    _idx_folder(tmp_path / "d", (2**31, 2**15, 2**15), bytes(64), gz=True)
    with pytest.raises(CnncError, match="more than this machine's memory"):
        _load(f"idx:{tmp_path / 'd'}")


def _npy(a) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(a))
    return buf.getvalue()


def _npz(path: Path, members: dict, compress=False):
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=mode) as z:
        for name, data in members.items():
            z.writestr(name, data)


X, Y = np.zeros((10, 8, 8), np.uint8), np.arange(10) % 2


def _good_members(**replace):
    members = {"x_train.npy": _npy(X), "y_train.npy": _npy(Y), "x_test.npy": _npy(X),
               "y_test.npy": _npy(Y)}
    members.update(replace)
    return members


def test_npz_member_that_is_not_npy(tmp_path):
    _npz(tmp_path / "a.npz", _good_members(**{"x_train.npy": b"not an array at all"}))
    with pytest.raises(CnncError, match="not a .npy array"):
        _load(f"npz:{tmp_path / 'a.npz'}")


def test_npz_claiming_trillions_of_values_is_refused_before_allocating(tmp_path):
    header = _npy(np.zeros((2, 2), np.float32)).replace(b"(2, 2)", b"(80000, 80000000)")
    _npz(tmp_path / "a.npz", _good_members(**{"x_train.npy": header}))
    assert (tmp_path / "a.npz").stat().st_size < 2000
    with pytest.raises(CnncError, match="damaged array 'x_train'"):
        _load(f"npz:{tmp_path / 'a.npz'}")


def test_npz_zip_bomb_is_refused_before_inflating(tmp_path):
    big = np.zeros((5_000, 100, 100), np.uint8)  # 50 MB of zeros, deflated to 50 KB
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False,
                                                "shape": big.shape})
    header = head.getvalue()
    # a stored header that agrees with the member's declared size, which exceeds the machine
    with zipfile.ZipFile(tmp_path / "a.npz", "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in _good_members().items():
            if name != "x_train.npy":
                z.writestr(name, data)
        with z.open("x_train.npy", "w") as f:
            f.write(header)
            f.write(memoryview(big).cast("B"))
    from cnnc import memory

    old = memory.data_limit
    memory.data_limit = lambda: 16 << 20  # a machine with 16 MiB to spare
    try:
        # this message comes from the headers, before anything is inflated
        with pytest.raises(CnncError, match="more than this machine has"):
            _load(f"npz:{tmp_path / 'a.npz'}")
    finally:
        memory.data_limit = old


def test_npz_uint64_label_is_not_called_negative(tmp_path):
    np.savez(tmp_path / "a.npz", x_train=X, y_train=np.full(10, 2**64 - 1, np.uint64),
             x_test=X, y_test=Y.astype(np.uint64))
    with pytest.raises(CnncError, match="18,446,744,073,709,551,615") as err:
        _load(f"npz:{tmp_path / 'a.npz'}")
    assert "negative" not in err.value.message


def test_npz_path_that_is_a_folder_or_a_pipe(tmp_path):
    (tmp_path / "x.npz").mkdir()
    with pytest.raises(CnncError, match="is a folder"):
        _load(f"npz:{tmp_path / 'x.npz'}")
    os.mkfifo(tmp_path / "p.npz")
    with pytest.raises(CnncError, match="not a regular file"):
        _load(f"npz:{tmp_path / 'p.npz'}")


@pytest.mark.parametrize("spec", ["shapes:" + "9" * 5000, "shapes:8x8x1:2:" + "9" * 5000,
                                  "shapes:8x8x1:\u00b2", "shapes:8x8x1:3:\u00b2"])
def test_data_specs_with_absurd_numbers(spec):
    with pytest.raises(CnncError, match="too large to be real|not a whole number"):
        _load(spec)


# ---------------------------------------------------------------------------------------------
# Weights files


def test_safetensors_header_nested_100k_deep(tmp_path):
    header = b"[" * 100_000
    (tmp_path / "w.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(CnncError, match="not valid JSON"):
        load_safetensors(tmp_path / "w.safetensors")


def test_safetensors_sparse_10gb_is_refused_from_its_header(tmp_path):
    path = tmp_path / "w.safetensors"
    save_safetensors(path, {"a": np.zeros(4, np.float32)})
    with open(path, "r+b") as f:
        f.truncate(10 << 30)  # sparse: no disk used
    # the header's claims are checked against the size before the 10 GB would be read
    with pytest.raises(CnncError, match="belong to no tensor"):
        load_safetensors(path)


def test_safetensors_fifo_and_folder(tmp_path):
    os.mkfifo(tmp_path / "w.safetensors")
    with pytest.raises(CnncError, match="not a regular file"):
        load_safetensors(tmp_path / "w.safetensors")
    with pytest.raises(CnncError, match="is a folder"):
        load_safetensors(tmp_path)


@pytest.mark.parametrize("dtype", [np.int32, np.bool_, np.uint8])
def test_integer_and_boolean_weights_are_refused(dtype):
    model = cnnc.compile(SMALL)
    session = model.to_backend("numpy")
    weights = {k: v.astype(dtype) for k, v in session.get_weights().items()}
    with pytest.raises(CnncError, match="do not fit") as err:
        session.set_weights(weights, "w.safetensors")
    assert any("weights are floating-point numbers" in n for n in err.value.notes)


def test_non_finite_weights_are_refused():
    session = cnnc.compile(SMALL).to_backend("numpy")
    weights = session.get_weights()
    weights["dense_1.bias"][3] = np.nan
    with pytest.raises(CnncError, match="do not fit") as err:
        session.set_weights(weights, "w.safetensors")
    assert err.value.notes == ["dense_1.bias: the file holds NaN or infinite values (weights of "
                               "a diverged run?)"]


# ---------------------------------------------------------------------------------------------
# The command line: values refused before any work


@pytest.mark.parametrize("flags", [["--momentum", "-1"], ["--weight-decay", "-1"],
                                   ["--seed", "-1"], ["--seed", "9" * 23],
                                   ["--epochs", "9" * 30], ["--lr", "nan"],
                                   ["--val-split", "1"], ["--max-memory", "lots"],
                                   ["--max-memory", "0"]])
def test_flags_the_train_section_would_refuse(tmp_path, flags):
    (tmp_path / "m.cnn").write_text(SMALL)
    proc = cnnc_cli("train", str(tmp_path / "m.cnn"), *flags, cwd=tmp_path)
    clean(proc, 2)
    assert "error: argument " + flags[0] in proc.stderr


def test_nesterov_without_momentum_from_flags(tmp_path):
    (tmp_path / "m.cnn").write_text(SMALL + "train:\n  optimizer sgd momentum=0.9 nesterov=true\n")
    proc = cnnc_cli("train", str(tmp_path / "m.cnn"), "--momentum", "0", cwd=tmp_path)
    clean(proc)
    assert "nesterov=true needs SGD with a momentum above 0" in proc.stderr


def test_losses_that_cannot_train_the_model(tmp_path):
    (tmp_path / "m.cnn").write_text("input 8x8x1; flatten; dense 10 softmax\n")
    proc = cnnc_cli("train", str(tmp_path / "m.cnn"), "--epochs", "1", "--loss", "bce",
                    cwd=tmp_path)
    clean(proc)
    assert "binary cross-entropy (bce) scores one output" in proc.stderr
    assert "m.cnn:1:23" in proc.stderr
    from cnnc.backends.base import plan_loss

    with pytest.raises(CnncError, match="always 1"):
        plan_loss(cnnc.compile("input 8x8x1; flatten; dense 1 softmax"), "bce")


def test_a_model_without_parameters_is_not_trained(tmp_path):
    (tmp_path / "m.cnn").write_text("input 32; leaky_relu; sigmoid\n")
    proc = cnnc_cli("train", str(tmp_path / "m.cnn"), "--backend", "torch", cwd=tmp_path)
    clean(proc)
    assert "no trainable parameters" in proc.stderr and "m.cnn:1:1" in proc.stderr
    pytest.importorskip("torch")
    session = cnnc.compile("input 32; leaky_relu; sigmoid").to_backend("torch", device="cpu")
    from cnnc.train.config import TrainConfig

    with pytest.raises(CnncError, match="no trainable parameters"):
        session.configure_optimizer(TrainConfig())


def test_sigmoid_outputs_with_cross_entropy_get_a_warning(tmp_path):
    (tmp_path / "m.cnn").write_text("input 8x8x1; flatten; dense 10 sigmoid\n")
    proc = cnnc_cli("train", str(tmp_path / "m.cnn"), "--epochs", "1", "--limit", "64",
                    cwd=tmp_path)
    clean(proc, 0)
    assert "warning: the model ends in sigmoid over 10 outputs" in proc.stderr


@pytest.mark.parametrize("layer, column", [("flatten; dense 100000000", 25),
                                           ("conv 100000 3 pad=same", 16),
                                           ("conv 8 2147483647x1 pad=same", 16)])
def test_models_too_large_for_memory_are_refused_before_allocating(tmp_path, layer, column):
    (tmp_path / "m.cnn").write_text(f"input 28x28x1; {layer}; flatten; dense 10\n")
    proc = cnnc_cli("train", str(tmp_path / "m.cnn"), "--epochs", "1", cwd=tmp_path)
    clean(proc)
    assert "[memory]" in proc.stderr and "the largest part is layer" in proc.stderr
    assert f"m.cnn:1:{column}: error: training this model needs about" in proc.stderr
    assert "parameters |" not in proc.stdout  # refused before the run's header: nothing built


def test_max_memory_limits_small_models_too(tmp_path):
    (tmp_path / "m.cnn").write_text(SMALL)
    proc = cnnc_cli("train", str(tmp_path / "m.cnn"), "--max-memory", "10KiB", cwd=tmp_path)
    clean(proc)
    assert "more than the 10 KiB --max-memory" in proc.stderr
    # read as `cnnc check --max-memory` reads it: 10K is 10,000 bytes
    proc = cnnc_cli("train", str(tmp_path / "m.cnn"), "--max-memory", "10K", cwd=tmp_path)
    clean(proc)
    assert "more than the 9.77 KiB --max-memory" in proc.stderr


def test_memory_guard_uses_the_training_step_estimate():
    """The guard's figure is the one `cnnc summary --batch N --optimizer ...` prints (held against
    a real step by benchmarks/memory.py), worked out here by hand for a small model."""
    from cnnc.analysis.memory import training
    from cnnc.train.config import TrainConfig
    from cnnc.train.memory import estimate

    model = cnnc.compile("input 4x4x1\nconv 2 1x1 relu\nflatten\ndense 3")
    params = (1 * 2 + 2) + (32 * 3 + 3)
    # adam: weights, gradients and two moments a parameter. Autograd keeps the conv's input
    # (for its weight gradient) and its output (relu's backward reads it; dense reads the same
    # tensor through the flatten view, counted once): 16 + 32 values an example.
    kept = 16 + 32
    # on top, at the peak: the gradients of flatten's output and input while its backward runs
    transient = 32 + 32
    need = estimate(model, 5, TrainConfig(optimizer="adam"))
    assert need.total == 4 * (4 * params + 5 * kept + 5 * transient)
    assert need.total == training(model.graph, 5, "adam").total_bytes
    assert need.layer.name == "dense_1"  # 4 x 99 parameters x 4 bytes beat 32 x 5 values kept
    sgd = estimate(model, 5, TrainConfig(optimizer="sgd", momentum=0.0))
    assert need.total - sgd.total == 4 * 2 * params  # plain SGD keeps no state
    wide = estimate(model, 10_000, TrainConfig(optimizer="adam"))
    assert wide.layer.name == "conv_1"  # at a large batch what the conv keeps dominates
    # evaluation: the parameters and the outputs alive at once (input and conv output, 16 + 32)
    evaluation = estimate(model, 5)
    assert evaluation.total == 4 * (params + 5 * (16 + 32))


def test_memory_guard_imports_nothing_heavy():
    """The guard runs before the backend is chosen: it must not pull in torch (or numpy)."""
    code = ("import sys, cnnc\n"
            "from cnnc.train.config import TrainConfig\n"
            "from cnnc.train.memory import check_memory\n"
            "m = cnnc.compile('input 8x8x1; conv 4 3 relu; flatten; dense 10')\n"
            "check_memory(m, 64, TrainConfig()); check_memory(m, 64)\n"
            "print(sorted(k for k in ('torch', 'numpy') if k in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_ctrl_c_while_starting_up_is_not_a_traceback():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = ("import cnnc.cli as c, argparse\n"
            "def boom(*a, **k): raise KeyboardInterrupt\n"
            "argparse.ArgumentParser.parse_args = boom\n"
            "c.main(['check', 'x'])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr


def test_fuzz_script_reduced(capsys):
    """benchmarks/fuzz.py (grammar-aware and byte-level mutation of programs, damaged data,
    weights and run folders) in a reduced form: no internal error, no hang."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fuzz", ROOT / "benchmarks" / "fuzz.py")
    fuzz = importlib.util.module_from_spec(spec)
    sys.modules["fuzz"] = fuzz  # its dataclasses look their module up there
    spec.loader.exec_module(fuzz)
    code = fuzz.main(["--programs", "600", "--files", "240", "--seed", "5"])
    table = capsys.readouterr().out
    assert code == 0, table
    total = next(line for line in table.splitlines() if line.startswith("all"))
    cases, ok, diagnostics, internal, hangs = (int(w.replace(",", "")) for w in total.split()[1:6])
    assert (cases, internal, hangs) == (840, 0, 0) and ok + diagnostics == cases
    assert ok > 0 and diagnostics > 0  # the generator makes valid programs and broken ones
