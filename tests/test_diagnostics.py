"""Golden diagnostics: each tests/diagnostics/NAME.cnn beside NAME.expected, the full plain-text
output of `cnnc check NAME.cnn` run in that folder (standard error, then standard output).

The expected files are the point: read them as a user would. To regenerate them after improving
a message, run

    CNNC_UPDATE_GOLDEN=1 python -m pytest tests/test_diagnostics.py

and read the diff before committing it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cnnc.cli import main

HERE = Path(__file__).parent / "diagnostics"
CASES = sorted(HERE.glob("*.cnn"))
UPDATE = bool(os.environ.get("CNNC_UPDATE_GOLDEN"))
ROOT = Path(__file__).resolve().parents[1]


def run_check(name: str, *flags: str, monkeypatch) -> tuple[int, str]:
    """`cnnc check NAME [flags]` in-process, in the diagnostics folder, without colour."""
    monkeypatch.chdir(HERE)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("CLICOLOR_FORCE", raising=False)
    out = io.StringIO()
    with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
        with pytest.raises(SystemExit) as exit_info:
            main(["check", name, *flags])
    return exit_info.value.code, out.getvalue()


def test_there_are_golden_cases():
    assert len(CASES) >= 30
    for case in CASES:
        assert case.with_suffix(".expected").exists() or UPDATE, f"{case.name} has no .expected"
    for expected in HERE.glob("*.expected"):
        assert expected.with_suffix(".cnn").exists(), f"{expected.name} has no .cnn"


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_golden(case, monkeypatch):
    code, output = run_check(case.name, monkeypatch=monkeypatch)
    expected_file = case.with_suffix(".expected")
    if UPDATE:
        expected_file.write_text(output, encoding="utf-8")
    expected = expected_file.read_text(encoding="utf-8")
    assert output == expected, f"`cnnc check {case.name}` changed; rerun with " \
        "CNNC_UPDATE_GOLDEN=1 and review the diff"
    assert code == (1 if re.search(r"^\S+:\d+:\d+: error:", output, re.M) else 0)
    assert "Traceback" not in output and "\x1b[" not in output


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_golden_carets_point_into_the_source(case, monkeypatch):
    """Every caret line underlines text that exists on the source line above it."""
    _, output = run_check(case.name, monkeypatch=monkeypatch)
    lines = output.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^  +\d+ \| (.*)$", line)
        if not m:
            continue
        source = m.group(1)
        caret = lines[i + 1]
        assert caret.startswith("       | "), caret
        marks = caret[len("       | "):]
        start = len(marks) - len(marks.lstrip(" "))
        assert marks.strip(" ").startswith("^")
        assert start <= len(source), (case.name, source, caret)


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_json_agrees_with_text(case, monkeypatch):
    code_text, text = run_check(case.name, monkeypatch=monkeypatch)
    code_json, out = run_check(case.name, "--json", monkeypatch=monkeypatch)
    assert code_text == code_json
    report = json.loads(out)
    assert report["ok"] == (code_json == 0)
    heads = re.findall(r"^(\S+):(\d+):(\d+): (error|warning): (.*)  \[([a-z-]+)\]$", text, re.M)
    assert [(d["file"], str(d["line"]), str(d["column"]), d["severity"], d["message"], d["code"])
            for d in report["diagnostics"]] == heads


def test_golden_matches_a_real_subprocess():
    """The in-process runner above sees what a user's terminal sees (minus colour)."""
    case = HERE / "add_shape_mismatch.cnn"
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "cnnc", "check", case.name], cwd=HERE,
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr + proc.stdout == case.with_suffix(".expected").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# What the golden files must show, asserted directly so a regenerated file cannot lose it.


def expected(name: str) -> str:
    return (HERE / f"{name}.expected").read_text(encoding="utf-8")


def test_mismatched_add_names_both_shapes_and_where_they_came_from():
    text = expected("add_shape_mismatch")
    assert "16x16x32" in text and "32x32x16" in text
    assert "note: the current tensor is 16x16x32, produced by `bn` at line 5" in text
    assert "note: `skip` is 32x32x16, produced by `relu` at line 7" in text
    assert "called at line 11" in text


def test_dense_on_an_image_suggests_flatten():
    text = expected("dense_needs_flatten")
    assert "add `flatten` before it (giving 5,408 features)" in text


def test_kernel_too_large_points_at_the_kernel():
    assert "kernel_too_large.cnn:3:9: error: the 9x9 window of `conv` is larger than its " \
           "input 8x8x3" in expected("kernel_too_large")
    assert "(padded: 7x7)" in expected("kernel_too_large_padded")
    assert "the image shrinks 5x5 (line 2) -> 3x3 (line 3) -> 1x1 (line 4)" in \
        expected("size_reaches_zero")


def test_several_independent_errors_in_one_run():
    text = expected("many_errors")
    assert text.count(": error: ") >= 6
    assert text.rstrip().endswith("6 errors generated.")


def test_did_you_mean():
    text = expected("unknown_names")
    for word in ("conv", "stride", "relu", "skip", "flatten"):
        assert f"did you mean `{word}`?" in text


def test_syntax_errors_point_at_the_cause():
    assert "syntax_unclosed_paren.cnn:5:6: error: this `(` is never closed" in \
        expected("syntax_unclosed_paren")
    assert "syntax_missing_value.cnn:2:19: error: `stride=` has no value" in \
        expected("syntax_missing_value")
    assert "matches no enclosing level (0 or 4)" in expected("syntax_bad_indent")
    assert "expected an indented body after `block basic(c):`" in \
        expected("syntax_body_not_indented")
