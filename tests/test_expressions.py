"""Expressions and model parameters: evaluated as Python evaluates them, usable wherever a number
or a size goes, overridden with --set on every command and recorded where a run is saved.

The references are Python's own arithmetic and torchvision's `_make_divisible`, copied here
(torchvision cannot be imported in this environment)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnc
from cnnc.ir.expr import make_divisible

ROOT = Path(__file__).resolve().parents[1]


def torchvision_make_divisible(v: float, divisor: int, min_value=None) -> int:
    """torchvision.models._utils._make_divisible, verbatim."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    # Make sure that round down does not go down by more than 10%.
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def channels(expr: str, **params) -> object:
    """The channel count `conv EXPR 1x1` gets, with the model parameters given."""
    decl = ("param " + " ".join(f"{k}={v}" for k, v in params.items()) + "\n") if params else ""
    m = cnnc.compile(f"{decl}input 4x4x3\nconv {expr} 1x1\n")
    assert m.ok, [d.message for d in m.diagnostics]
    return m.graph.layers()[-1].shape[-1]


@pytest.mark.parametrize("expr,value", [
    ("2 + 3 * 4", 14), ("(2 + 3) * 4", 20), ("7 // 2", 3), ("7 % 4", 3), ("-7 // 2 + 10", 6),
    ("10 - 2 - 3", 5), ("100 // 10 // 5", 2), ("round(7 / 2)", 4), ("round(5 / 2)", 2),
    ("floor(7 / 2)", 3), ("ceil(7 / 2)", 4), ("min(9, 4, 6)", 4), ("max(1, 8)", 8),
    ("make_divisible(35.2, 8)", 32), ("ceil(100 * 1.1)", 111), ("round(2.675 * 100)", 268),
    ("32 -1", 31), ("2-1", 1), ("+5", 5), ("- -5", 5), ("2 * (3 + (4 - 1))", 12),
])
def test_arithmetic_is_pythons(expr, value):
    # The reference is Python evaluating the same text (with its functions).
    py = eval(expr, {"round": round, "floor": math.floor, "ceil": math.ceil, "min": min,
                     "max": max, "make_divisible": torchvision_make_divisible})
    assert py == value
    assert channels(expr) == value


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.floats(min_value=0.1, max_value=5000, allow_nan=False),
       st.sampled_from([1, 2, 4, 8, 16]), st.one_of(st.none(), st.integers(1, 64)))
def test_make_divisible_is_torchvisions(v, divisor, least):
    assert make_divisible(v, divisor, least) == torchvision_make_divisible(v, divisor, least)


def test_parameters_reach_input_blocks_repeats_and_train():
    text = """\
param width=1.0 depth=2 size=32 classes=10 lr=0.1 * 0.5
block ir(c, out, s=1, hidden=c * 6):
    conv hidden 1x1; bn; relu6
    dwconv 3x3 stride=s pad=1; bn; relu6
    conv out 1x1; bn
input [size, size, 3]
conv make_divisible(32 * width, 8) 3x3 stride=2 pad=1
ir(make_divisible(32 * width, 8), round(16 * width)) x(depth)
conv 8 1x1 x(depth + 1)
gap
dense classes softmax
train:
    data shapes; epochs depth; optimizer sgd lr=lr
"""
    m = cnnc.compile(text)
    assert m.ok, [d.message for d in m.diagnostics]
    layers = {layer.name: layer for layer in m.graph.layers()}
    assert m.input_shape == (32, 32, 3) and m.output_shape == (10,)
    assert layers["ir_1.conv_1"].shape[-1] == layers["ir_2.conv_1"].shape[-1] == 192
    assert "ir_3.conv_1" not in layers and "conv_4" in layers and "conv_5" not in layers
    assert m.train_config.epochs == 2 and m.train_config.lr == pytest.approx(0.05, abs=0)
    assert m.params == {"width": 1.0, "depth": 2, "size": 32, "classes": 10, "lr": 0.05}

    half = cnnc.compile(text, params={"width": 0.5, "size": "16 + 8"})
    assert half.ok, [d.message for d in half.diagnostics]
    assert half.input_shape == (24, 24, 3) and half.params["width"] == 0.5
    assert {la.name: la for la in half.graph.layers()}["conv_1"].shape[-1] == 16


def test_a_file_without_expressions_compiles_as_before():
    m = cnnc.compile("input 28x28x1; conv 32 3x3 relu; pool 2; flatten; dense 10 softmax")
    assert m.ok and m.params == {} and m.summary().total_params == 54410


def test_summary_shows_values_and_parameters():
    text = "param width=0.5\ninput 8x8x3\nconv round(64 * width) 3x3 pad=same\nflatten\n"
    s = cnnc.compile(text).summary()
    assert s.rows[1].description.startswith("conv 32 3x3")
    assert s.to_json()["params"] == {"width": 0.5}


def cli(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "cnnc", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_set_on_the_command_line(tmp_path):
    model = tmp_path / "m.cnn"
    model.write_text("param width=1.0 depth=1\ninput 8x8x3\n"
                     "conv make_divisible(16 * width, 8) 3x3 pad=same x(depth)\ngap\ndense 4\n")
    base = json.loads(cli("summary", model, "--json").stdout)
    assert base["params"] == {"width": 1.0, "depth": 1}
    proc = cli("summary", model, "--json", "--set", "width=2", "depth=3")
    one = json.loads(proc.stdout)
    two = json.loads(cli("summary", model, "--set", "width=2", "--set", "depth=3",
                         "--json").stdout)
    assert one == two and one["params"] == {"width": 2, "depth": 3}
    assert [la["description"].split()[1] for la in one["layers"] if la["op"] == "conv"] == \
        ["32", "32", "32"]
    check = cli("check", model, "--set", "width=0.5")
    assert check.returncode == 0 and "ok" in check.stdout
    bad = cli("check", model, "--set", "widht=2")
    assert bad.returncode == 1 and "no parameter `widht`" in bad.stderr
    assert "`width`, `depth`" in bad.stderr and "did you mean `width`" in bad.stderr
    malformed = cli("check", model, "--set", "width")
    assert malformed.returncode == 2 and "NAME=VALUE" in malformed.stderr


def test_a_run_records_its_parameters_and_resume_refuses_others(tmp_path):
    from cnnc.train.checkpoint import load_safetensors

    model = tmp_path / "m.cnn"
    model.write_text("param width=1.0\ninput 8x8x1\nflatten\ndense round(16 * width) relu\n"
                     "dense 10 softmax\n")
    out = tmp_path / "run"
    proc = cli("train", model, "--epochs", 1, "--limit", 100, "--out", out, "--set", "width=2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, meta = load_safetensors(out / "last.safetensors")
    assert json.loads(meta["params"]) == {"width": 2}
    again = cli("train", model, "--epochs", 2, "--out", out, "--resume", "--set", "width=1")
    assert again.returncode == 1 and "other parameter values" in again.stderr
    assert "--set width=2" in again.stderr
    same = cli("train", model, "--epochs", 2, "--out", out, "--resume", "--set", "width=2")
    assert same.returncode == 0, same.stdout + same.stderr


def test_eval_with_damaged_parameter_metadata_warns_not_crashes(tmp_path):
    # found by fuzzing: `params` in a weights file's metadata was trusted to be a JSON object
    from cnnc.train.checkpoint import load_safetensors, save_safetensors

    model = tmp_path / "m.cnn"
    model.write_text("param width=1.0\ninput 8x8x1\nflatten\ndense round(16 * width) relu\n"
                     "dense 10 softmax\ntrain:\n    data digits\n")
    out = tmp_path / "run"
    assert cli("train", model, "--epochs", 1, "--limit", 100, "--out", out).returncode == 0
    tensors, meta = load_safetensors(out / "last.safetensors")
    for damaged in ("5", "{", "[" * 100_000):
        save_safetensors(tmp_path / "w.safetensors", tensors,
                         {**meta, "params": damaged, "model_sha256": "0" * 64})
        proc = cli("eval", model, "--weights", tmp_path / "w.safetensors")
        assert proc.returncode == 0, proc.stderr
        assert "was trained with other parameter values" in proc.stderr
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
