"""Memory, budgets, diff, verify and --input: the analyses and their commands.

The training-memory model is held to what autograd really keeps: every tensor PyTorch saves for
the backward pass of cnnc's torch module is caught with saved_tensors_hooks, and their storages
(each counted once, parameters left out) must add up to exactly the bytes cnnc predicts.
benchmarks/memory.py compares the whole step's peak with the process's memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cnnc
from cnnc.analysis import memory
from cnnc.analysis.diff import diff

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, stdin=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cnnc", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, input=stdin)


# -- memory ----------------------------------------------------------------------------------


def test_inference_peak_frees_each_output_after_its_last_reader():
    # 8x8x4 = 256 values; the skip keeps the first conv's output alive across the second
    model = cnnc.compile("input 8x8x4\nconv 4 3 pad=same\nskip = here\nconv 4 3 pad=same\n"
                         "add skip\nflatten\ndense 2")
    m = memory.inference(model.graph)
    image = 8 * 8 * 4 * 4  # bytes of one 8x8x4 float32 tensor
    # at `add`: conv_1's output (the skip), conv_2's output and the sum are alive (the input
    # was freed after conv_1)
    assert m.peak_bytes == 3 * image and m.peak_layer == "add_1"
    assert m.keep_all_bytes == 4 * image + image + 2 * 4  # flatten is a view, but counted here
    assert m.peak(1) == m.peak_bytes // 4


def _saved_by_autograd(model, batch: int) -> int:
    """The bytes of the distinct storages autograd saves in one training forward pass of cnnc's
    torch module (the logits into the loss, as cnnc trains), parameters and labels left out."""
    import torch

    net = model.to_backend("torch", device="cpu", channels_last=False).module.train()
    shape = model.input_shape
    x = torch.rand(batch, shape[2], *shape[:2]) if len(shape) == 3 else torch.rand(batch, *shape)
    y = torch.zeros(batch, dtype=torch.long)
    saved = {}

    def pack(t):
        if t.numel() > 1:  # the loss's scalars are not activations
            storage = t.untyped_storage()
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.nn.functional.cross_entropy(net(x, logits=True), y)
    ignore = {p.untyped_storage().data_ptr() for p in (*net.parameters(), *net.buffers())}
    ignore.add(y.untyped_storage().data_ptr())  # the labels
    return sum(n for ptr, n in saved.items() if ptr not in ignore)


@pytest.mark.parametrize("path", ["examples/fashion_cnn.cnn", "examples/fashion_bn.cnn",
                                  "examples/inception_block.cnn", "examples/digits_resnet.cnn",
                                  "examples/lenet5.cnn", "examples/digits_modern.cnn",
                                  "examples/fashion_fast.cnn", "examples/design.cnn"])
def test_kept_activations_are_what_autograd_saves(path):
    pytest.importorskip("torch")
    model = cnnc.compile(str(ROOT / path))
    assert memory.training(model.graph, 3, "sgd", 0.9).saved_bytes == \
        _saved_by_autograd(model, 3)


# ReLU (or ReLU6) before a max pool runs after it in the torch module (cnnc/ir/commute.py):
# standalone and fused, one that cannot move (two readers), global max pooling. Each ends in
# softmax, which the loss absorbs and whose output it keeps (as the examples' do).
MOVED_RELUS = {
    "standalone relu6": "input 8x8x2\nconv 4 3 pad=same\nrelu6\npool 2\nflatten\ndense 3 softmax",
    "fused relu6": "input 8x8x2\nconv 4 3 pad=same relu6\npool 3 stride=2 pad=1\nflatten\n"
                   "dense 3 softmax",
    "two readers": "input 8x8x2\nconv 4 3 pad=same relu\nr = here\npool 2\nupsample 2\n"
                   "add r\nflatten\ndense 3 softmax",
    "global": "input 8x8x2\nconv 4 3 pad=same\nbn\nrelu\ngmp\ndense 3 softmax",
}


@pytest.mark.parametrize("name", sorted(MOVED_RELUS))
def test_kept_activations_follow_the_moved_relu(name):
    pytest.importorskip("torch")
    model = cnnc.compile(MOVED_RELUS[name])
    assert memory.training(model.graph, 3, "sgd", 0.9).saved_bytes == \
        _saved_by_autograd(model, 3)


def test_training_memory_parts_and_largest_batch():
    model = cnnc.compile(str(ROOT / "examples/fashion_cnn.cnn"))
    params = 421_642 * 4
    adam = memory.training(model.graph, 32, "adam")
    sgd = memory.training(model.graph, 32, "sgd", 0.0)
    assert adam.param_bytes == adam.gradient_bytes == params
    assert adam.optimizer_bytes == 2 * params and sgd.optimizer_bytes == 0
    assert memory.training(model.graph, 64, "adam").saved_bytes == 2 * adam.saved_bytes
    limit = memory.training(model.graph, 100, "adam").total_bytes
    assert memory.largest_batch(model.graph, limit, "adam") == 100
    assert memory.largest_batch(model.graph, limit - 1, "adam") == 99
    assert memory.largest_batch(model.graph, 1000, "adam") == 0


def test_amounts():
    assert memory.parse_amount("1M") == 1_000_000
    assert memory.parse_amount("256KiB") == 262_144
    assert memory.parse_amount("1.5G") == 1_500_000_000
    for bad in ("", "1Q", "-1M", "abc", "1e999"):
        with pytest.raises(ValueError):
            memory.parse_amount(bad)


def test_summary_json_has_memory_and_sizes():
    r = cli("summary", "examples/zoo/resnet18.cnn", "--json", "--batch", "16",
            "--optimizer", "momentum", "--fit", "8GiB")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    training = out["memory"]["training"]
    assert training["batch"] == 16 and training["optimizer_bytes"] == training["gradient_bytes"]
    assert out["memory"]["fit"]["largest_batch"] > 16
    assert out["sizes"]["min_input"] == [1, 1]
    assert out["memory"]["inference"]["peak_activation_bytes"]["int8"] * 4 == \
        out["memory"]["inference"]["peak_activation_bytes"]["float32"]
    r = cli("summary", "examples/zoo/resnet18.cnn", "--batch", "16", "--fit", "8GiB")
    assert r.returncode == 0 and "Largest batch that fits in 8.00 GiB" in r.stdout


# -- --input ---------------------------------------------------------------------------------


def test_input_flag_evaluates_another_size():
    r = cli("summary", "examples/zoo/resnet18.cnn", "--input", "64x64x3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["input"] == [64, 64, 3] and out["total_params"] == 11_699_112
    assert out["layers"][-2]["output_shape"] == [512]
    r = cli("check", "examples/keras_seed.cnn", "--input", "32x32x1")
    assert r.returncode == 0 and "1,846,346 parameters" in r.stdout  # a larger first dense
    r = cli("check", "examples/keras_seed.cnn", "--input", "2x2x1")
    assert r.returncode == 1 and "kernel-too-large" in r.stderr
    r = cli("check", "examples/quickstart.cnn", "--input", "8x0x1")
    assert r.returncode == 2 and "--input" in r.stderr


# -- budgets ---------------------------------------------------------------------------------

SEED = "input 28x28x1\nconv 32 3x3 relu\npool 2\nflatten\ndense 128 relu\ndense 10 softmax\n"


def test_budget_is_located_where_the_running_total_crosses(tmp_path):
    path = tmp_path / "m.cnn"
    path.write_text(SEED + "budget:\n    params 500K\n")
    r = cli("check", str(path))
    assert r.returncode == 1
    assert f"{path}:5:1: error: over the parameter budget" in r.stderr
    assert "the budget is set at line 8" in r.stderr and "693,962" in r.stderr
    r = cli("check", str(path), "--max-params", "1M", "--max-macs", "100K", "--json")
    out = json.loads(r.stdout)
    assert r.returncode == 1 and not out["ok"]
    assert [(d["code"], d["line"]) for d in out["diagnostics"]] == [("over-budget", 2)]
    r = cli("check", str(path), "--max-params", "1M")
    assert r.returncode == 0, r.stderr
    r = cli("check", str(path), "--max-memory", "64KiB")
    assert r.returncode == 1 and "over the memory budget" in r.stderr


def test_budget_section_diagnostics():
    model = cnnc.compile(SEED + "budget:\n    parms 1M\n    macs 1M\n    macs 2M\n    "
                                "memory big\n")
    got = [(d.code, d.span.line, d.message) for d in model.diagnostics]
    assert ("budget", 8, "unknown budget `parms`") in got
    assert ("budget", 10, "`macs` is set twice") in got
    assert any(c == "budget" and line == 11 for c, line, _ in got)


def test_running_budget_check_by_hand():
    # MACs: conv_1 26*26*32*9 = 194,688; dense_1 5,408*128 = 692,224; dense_2 1,280
    total = 194_688 + 692_224 + 1_280
    assert cnnc.compile(SEED + f"budget:\n    macs {total}\n").ok  # equal is within
    over = cnnc.compile(SEED + f"budget:\n    macs {total - 1}\n")
    assert [(d.code, d.span.line) for d in over.errors] == [("over-budget", 6)]
    first = cnnc.compile(SEED + "budget:\n    macs 194687\n")
    assert [(d.code, d.span.line) for d in first.errors] == [("over-budget", 2)]


# -- diff ------------------------------------------------------------------------------------


def test_diff_matches_layers_by_structure():
    a = cnnc.compile(SEED)
    b = cnnc.compile(SEED.replace("pool 2\n", "pool 2\nbn\n").replace("dense 128", "dense 64"))
    d = diff(a, b)
    assert [x.op for x in d.added] == ["batchnorm"] and not d.removed
    changed = {x.name: what for x, y, what in d.changed}
    assert changed["dense_1"]["params"] == (692_352, 346_176)
    assert "inputs" in changed["flatten_1"]
    assert d.totals["params"] == (693_962, 693_962 - 692_352 + 346_176 - 1290 + 650 + 128)
    assert diff(a, cnnc.compile(SEED)).same


def test_diff_cli_json(tmp_path):
    other = tmp_path / "b.cnn"
    other.write_text(SEED.replace("relu", "gelu", 1))
    r = cli("diff", "examples/keras_seed.cnn", str(other), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= {"added", "removed", "changed", "totals"}


# -- verify ----------------------------------------------------------------------------------


def test_verify_passes_on_an_example_and_catches_a_wrong_kernel():
    pytest.importorskip("torch")
    from cnnc.analysis.verify import verify
    from cnnc.backends import kernels, register_kernel

    model = cnnc.compile(str(ROOT / "examples/digits_resnet.cnn"))
    assert all(r.ok for r in verify(model, gradients=True))
    original = kernels("torch")["relu6"]
    try:
        def wrong(x):  # relu6 that clips at 0.5
            import torch
            return torch.clamp(x, 0.0, 0.5)

        register_kernel("torch", "relu6", wrong, replace=True)
        bad = cnnc.compile("input 6x6x1\nconv 4 3 relu6\nconv 4 3\nflatten\ndense 3")
        rows = verify(bad, batch=4, seed=3)
        rows_bad = [r.name for r in rows if not r.ok]
        assert rows_bad and rows_bad[0] == "conv_1"
    finally:
        register_kernel("torch", "relu6", original, replace=True)


def test_verify_cli():
    pytest.importorskip("torch")  # verify compares the NumPy reference with the torch backend
    r = cli("verify", "examples/quickstart.cnn", "--grad", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] and any(x["kind"] == "gradient" for x in out["layers"])


def test_numpy_trace_holds_every_layer():
    model = cnnc.compile(SEED)
    s = model.to_backend("numpy")
    trace: dict = {}
    out = s.forward(np.zeros((1, 1, 28, 28), np.float32), training=False, trace=trace)
    assert list(trace) == [l.name for l in model.graph.layers()]
    assert trace["dense_2"] is out


def test_verify_without_pytorch_says_so():
    code = ("import sys; sys.modules['torch'] = None\n"
            "sys.argv = ['cnnc', 'verify', 'examples/quickstart.cnn']\n"
            "from cnnc.cli import main\nmain()\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                       capture_output=True)
    assert r.returncode == 1 and "PyTorch is not installed" in r.stderr, r.stderr
