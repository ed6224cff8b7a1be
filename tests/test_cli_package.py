"""The command-line package's shape: one module per command, one error renderer, no import
circle (nothing outside cnnc/cli imports it), and errors that have no place in a model file
rendered like every other diagnostic, as text or, under --json, as JSON on standard output."""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnc.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]


def cnnc(*args, **env):
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", **env}
    environment.pop("CNNC_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "cnnc", *map(str, args)], cwd=ROOT,
                          env=environment, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_is_one_module_with_add_parser_and_run(name):
    module = importlib.import_module(f"cnnc.cli.{name}")
    assert callable(module.add_parser) and callable(module.run)
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert name in sub.choices
    assert sub.choices[name].get_default("run") is module.run


def test_nothing_outside_the_cli_imports_it():
    """The CLI sits on top: library modules never import cnnc.cli (so no import circle)."""
    offenders = []
    for path in (ROOT / "cnnc").rglob("*.py"):
        rel = path.relative_to(ROOT / "cnnc")
        if rel.parts[0] in ("cli", "__main__.py"):
            continue
        package = ["cnnc", *rel.parts[:-1]]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                target = ".".join(base + (node.module.split(".") if node.module else []))
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            if any(n == "cnnc.cli" or n.startswith("cnnc.cli.") for n in names):
                offenders.append(str(rel))
    assert offenders == []


def test_an_error_without_a_place_renders_as_cnnc_error():
    r = cnnc("eval", "examples/quickstart.cnn", "--weights", "missing.safetensors")
    assert r.returncode == 1
    assert r.stderr.startswith("cnnc: error: the weights file missing.safetensors does not "
                               "exist  [weights]\nhint: ")
    assert "generated." not in r.stderr and r.stdout == ""


def test_json_commands_report_errors_as_json_on_stdout():
    r = cnnc("eval", "examples/quickstart.cnn", "--weights", "missing.safetensors", "--json")
    assert r.returncode == 1 and r.stderr == ""
    report = json.loads(r.stdout)
    assert report["ok"] is False
    (d,) = report["diagnostics"]
    assert (d["severity"], d["code"], d["file"], d["line"]) == ("error", "weights", None, None)
    assert "missing.safetensors" in d["message"]


def test_an_error_with_a_place_quotes_the_model_line(tmp_path):
    model = tmp_path / "m.cnn"
    model.write_text("input 28x28x1\nflatten\ndense 10 softmax\n")
    r = cnnc("train", model, "--data", "digits", "--epochs", "1")
    assert r.returncode == 1
    assert r.stderr.startswith(f"{model}:1:1: error:")
    assert "    1 | input 28x28x1" in r.stderr and "1 error generated." in r.stderr


def test_colour_only_when_asked_or_on_a_terminal():
    r = cnnc("eval", "examples/quickstart.cnn", "--weights", "missing.safetensors",
             NO_COLOR="", FORCE_COLOR="1")
    assert "\x1b[1;31merror:" in r.stderr
    r = cnnc("eval", "examples/quickstart.cnn", "--weights", "missing.safetensors", NO_COLOR="")
    assert "\x1b[" not in r.stderr


@pytest.mark.parametrize("command", ["check", "summary"])
def test_check_and_summary_import_no_exporter_or_image_library(command):
    code = f"""
import contextlib, io, sys
from cnnc.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main([{command!r}, "examples/zoo/resnet18.cnn"])
    except SystemExit as e:
        assert e.code == 0, e.code
print(sorted(m for m in ("onnx", "onnxruntime", "PIL", "torch", "numpy", "safetensors")
             if m in sys.modules))
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
