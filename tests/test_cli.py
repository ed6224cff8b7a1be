"""The command line as a user (or a script) meets it: `python -m cnnc` in a subprocess.

Exit codes (0 clean, 1 errors, 2 usage), the JSON shapes DESIGN.md promises, plain text when
piped, several files, `-` for standard input, and a cheap start: `check` and `summary` import
neither torch nor numpy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOOD = "input 28x28x1; conv 32 3x3 relu; pool 2; flatten; dense 10 softmax\n"
BAD = "input 28x28x1\nconv 32 3x3 relu\npool 2\ndense 10 softmax\n"
DIAGNOSTIC_KEYS = ["severity", "file", "line", "column", "end_line", "end_column", "code",
                   "message", "notes", "hint"]


def cnnc(*args: str, stdin: str | None = None, cwd: Path | None = None, **env: str):
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("NO_COLOR", "FORCE_COLOR", "CLICOLOR_FORCE")}
    environment["PYTHONPATH"] = str(ROOT) + os.pathsep + environment.get("PYTHONPATH", "")
    environment.update(env)
    return subprocess.run([sys.executable, "-m", "cnnc", *args], input=stdin, text=True,
                          capture_output=True, cwd=cwd or ROOT, env=environment, timeout=120)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "good.cnn").write_text(GOOD)
    (tmp_path / "bad.cnn").write_text(BAD)
    (tmp_path / "warn.cnn").write_text("input 8x8x1\nside = conv 2 3\nfrom input\nflatten\n")
    return tmp_path


def test_check_clean_exits_0(files):
    r = cnnc("check", "good.cnn", cwd=files)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "good.cnn: ok (5 layers, 54,410 parameters)\n"
    assert r.stderr == ""


def test_check_quiet_prints_only_diagnostics(files):
    r = cnnc("check", "-q", "good.cnn", "warn.cnn", cwd=files)
    assert r.returncode == 0 and r.stdout == ""
    assert "warn.cnn:2:8: warning:" in r.stderr


def test_check_errors_exit_1(files):
    r = cnnc("check", "bad.cnn", cwd=files)
    assert r.returncode == 1
    assert r.stderr.startswith("bad.cnn:4:1: error: `dense` needs a flat input")
    assert "    4 | dense 10 softmax\n       | ^~~~~~~~~~~~~~~~\n" in r.stderr
    assert "hint: add `flatten` before it" in r.stderr
    assert r.stderr.rstrip().endswith("1 error generated.")
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("args", [(), ("check",), ("frobnicate", "x.cnn"), ("check", "--nope",
                                                                                "x.cnn"),
                                  ("summary",), ("summary", "a.cnn", "b.cnn"),
                                  ("train", "x.cnn", "--epochs", "0")])
def test_usage_errors_exit_2(args):
    r = cnnc(*args)
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert "usage:" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_and_unreadable_files_are_diagnostics(files):
    r = cnnc("check", "nope.cnn", str(files), cwd=files)
    assert r.returncode == 1
    assert "nope.cnn:1:1: error: no such file  [io]" in r.stderr
    assert "this is a directory, not a model file" in r.stderr


def test_check_json_schema(files):
    r = cnnc("check", "--json", "bad.cnn", "warn.cnn", cwd=files)
    assert r.returncode == 1
    report = json.loads(r.stdout)
    assert list(report) == ["ok", "diagnostics"]
    assert report["ok"] is False
    assert [d["severity"] for d in report["diagnostics"]] == ["error", "warning"]
    for d in report["diagnostics"]:
        assert list(d) == DIAGNOSTIC_KEYS
        assert isinstance(d["notes"], list)
        assert all(isinstance(d[k], int) for k in ("line", "column", "end_line", "end_column"))
    error = report["diagnostics"][0]
    assert (error["file"], error["line"], error["column"], error["end_line"],
            error["end_column"], error["code"]) == ("bad.cnn", 4, 1, 4, 17, "needs-flatten")
    assert error["notes"] == ["the input to this layer is 13x13x32, produced by `pool 2` at "
                              "line 3"]
    assert error["hint"].startswith("add `flatten` before it")
    assert r.stderr == ""


def test_check_json_clean(files):
    r = cnnc("check", "--json", "good.cnn", cwd=files)
    assert r.returncode == 0
    assert json.loads(r.stdout) == {"ok": True, "diagnostics": []}


def test_several_files_in_one_run(files):
    r = cnnc("check", "good.cnn", "bad.cnn", "warn.cnn", cwd=files)
    assert r.returncode == 1
    assert "good.cnn: ok" in r.stdout and "warn.cnn: ok" in r.stdout
    assert "bad.cnn: ok" not in r.stdout
    assert "bad.cnn:4:1: error" in r.stderr and "warn.cnn:2:8: warning" in r.stderr
    assert "1 error, 1 warning generated." in r.stderr


def test_stdin(files):
    r = cnnc("check", "-", stdin=BAD)
    assert r.returncode == 1
    assert r.stderr.startswith("<stdin>:4:1: error:")
    assert "    4 | dense 10 softmax" in r.stderr
    r = cnnc("summary", "-", "--json", stdin=GOOD)
    assert r.returncode == 0 and json.loads(r.stdout)["total_params"] == 54_410
    r = cnnc("check", "-", "good.cnn", stdin=GOOD, cwd=files)
    assert r.returncode == 0 and r.stdout.count(": ok") == 2


def test_summary_table(files):
    r = cnnc("summary", "good.cnn", cwd=files)
    assert r.returncode == 0, r.stderr
    for text in ("Model: good", "conv 32 3x3 relu", "26x26x32", "5408", "Total params: 54,410",
                 "Trainable params: 54,410", "Non-trainable params: 0", "MACs per image"):
        assert text in r.stdout, text


def test_summary_json_schema(files):
    r = cnnc("summary", "--json", "good.cnn", cwd=files)
    assert r.returncode == 0
    data = json.loads(r.stdout)
    assert {"model", "input", "layers", "total_params", "trainable_params",
            "non_trainable_params", "macs"} <= set(data)
    assert data["model"] == "good" and data["input"] == [28, 28, 1]
    assert (data["total_params"], data["trainable_params"], data["non_trainable_params"]) == \
        (54_410, 54_410, 0)
    assert data["macs"] == 194_688 + 54_080
    assert [(layer["name"], layer["op"], layer["output_shape"], layer["params"], layer["macs"])
            for layer in data["layers"]] == [
        ("input", "input", [28, 28, 1], 0, 0),
        ("conv_1", "conv", [26, 26, 32], 320, 194_688),
        ("pool_1", "pool", [13, 13, 32], 0, 0),
        ("flatten_1", "flatten", [5408], 0, 0),
        ("dense_1", "dense", [10], 54_090, 54_080),
    ]


def test_summary_of_a_faulty_model(files):
    r = cnnc("summary", "bad.cnn", cwd=files)
    assert r.returncode == 1 and r.stdout == ""
    assert "bad.cnn:4:1: error" in r.stderr
    r = cnnc("summary", "--json", "bad.cnn", cwd=files)
    assert r.returncode == 1
    assert json.loads(r.stdout)["ok"] is False


def test_plain_text_when_piped(files):
    """No ANSI escapes when the output is not a terminal, even with a colour TERM."""
    for args in (("check", "bad.cnn", "warn.cnn"), ("summary", "good.cnn")):
        r = cnnc(*args, cwd=files, TERM="xterm-256color")
        assert "\x1b[" not in r.stdout + r.stderr
    r = cnnc("check", "bad.cnn", cwd=files, FORCE_COLOR="1")
    assert "\x1b[" in r.stderr  # colour can still be asked for
    r = cnnc("check", "bad.cnn", cwd=files, FORCE_COLOR="1", NO_COLOR="1")
    assert "\x1b[" not in r.stderr  # and NO_COLOR wins


@pytest.mark.parametrize("command", ["check", "summary"])
def test_check_and_summary_do_not_import_torch_numpy_or_networkx(command):
    code = f"""
import contextlib, io, sys
from cnnc.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main([{command!r}, "examples/design.cnn"])
    except SystemExit as e:
        assert e.code == 0, e.code
print("torch" in sys.modules, "numpy" in sys.modules, "rich" in sys.modules,
      "networkx" in sys.modules)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    torch, numpy, rich, networkx = r.stdout.split()
    assert (torch, numpy, networkx) == ("False", "False", "False")
    assert rich == ("False" if command == "check" else "True")


def test_version():
    r = cnnc("--version")
    assert r.returncode == 0 and r.stdout.startswith("cnnc ")
