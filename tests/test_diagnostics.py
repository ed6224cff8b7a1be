"""Golden diagnostics: each tests/diagnostics/NAME.cnn beside NAME.expected, the full plain-text
output of `cnnc check NAME.cnn` run in that folder (standard error, then standard output).

A case whose first line is `# check: FLAGS` (like `# check: --set widht=0.5`) runs as
`cnnc check NAME.cnn FLAGS`.

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


def case_flags(case: Path) -> list[str]:
    """The flags a case asks for on its first line, `# check: --set width=2`."""
    import shlex

    first = case.read_text(encoding="utf-8").split("\n", 1)[0]
    return shlex.split(first[len("# check:"):]) if first.startswith("# check:") else []


def test_there_are_golden_cases():
    assert len(CASES) >= 30
    for case in CASES:
        assert case.with_suffix(".expected").exists() or UPDATE, f"{case.name} has no .expected"
    for expected in HERE.glob("*.expected"):
        assert expected.with_suffix(".cnn").exists(), f"{expected.name} has no .cnn"


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_golden(case, monkeypatch):
    code, output = run_check(case.name, *case_flags(case), monkeypatch=monkeypatch)
    expected_file = case.with_suffix(".expected")
    if UPDATE:
        expected_file.write_text(output, encoding="utf-8")
    expected = expected_file.read_text(encoding="utf-8")
    assert output == expected, f"`cnnc check {case.name}` changed; rerun with " \
        "CNNC_UPDATE_GOLDEN=1 and review the diff"
    assert code == (1 if re.search(r"^(\S+:\d+:\d+|cnnc): error:", output, re.M) else 0)
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
    flags = case_flags(case)
    code_text, text = run_check(case.name, *flags, monkeypatch=monkeypatch)
    code_json, out = run_check(case.name, "--json", *flags, monkeypatch=monkeypatch)
    assert code_text == code_json
    report = json.loads(out)
    assert report["ok"] == (code_json == 0)
    heads = re.findall(r"^(\S+):(\d+):(\d+): (error|warning): (.*)  \[([a-z-]+)\]$", text, re.M)
    heads += [(None, "None", "None", *h) for h in
              re.findall(r"^cnnc: (error|warning): (.*)  \[([a-z-]+)\]$", text, re.M)]
    def key(h):
        return (h[0] is not None, h)

    assert sorted([(d["file"], str(d["line"]), str(d["column"]), d["severity"], d["message"],
                    d["code"]) for d in report["diagnostics"]], key=key) == sorted(heads, key=key)


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


def test_a_pool_alias_contradicted_is_an_error_at_the_word():
    text = expected("pool_alias_conflict")
    assert "pool_alias_conflict.cnn:3:9: error: `avgpool` is average pooling; `max` " \
           "contradicts it  [bad-value]" in text
    assert "hint: write `pool max 2`\n" in text
    assert "hint: write `pool avg 2 stride=1`\n" in text
    assert "`maxpool` pools a window; `global` contradicts it" in text
    assert "pool_alias_conflict.cnn:6:5: error: `gap` is global average pooling; `max` " \
           "contradicts it" in text
    assert "hint: for global max pooling write `gmp` or `pool global max`" in text
    assert text.rstrip().endswith("7 errors generated.")  # not the redundant lines 11-13


def test_a_pool_option_that_does_not_apply_is_an_error_at_the_option():
    text = expected("pool_option_not_applicable")
    assert "pool_option_not_applicable.cnn:4:9: error: `stride=` does not apply to global " \
           "pooling, which pools the whole image into one value per channel  " \
           "[unknown-option]" in text
    assert "`keepdims=` applies only to global pooling" in text
    assert "hint: remove it; for global max pooling that keeps a 1x1xC image, write " \
           "`gmp keepdims=true`" in text
    assert "`count_pad=` applies only to average pooling:" in text
    assert "`count_pad=` applies only to average pooling with padding" in text
    assert text.rstrip().endswith("5 errors generated.")  # not lines 18-21


def test_activation_options_say_whose_they_are():
    text = expected("activation_options")
    lines = [int(n) for n in re.findall(r"^activation_options\.cnn:(\d+):", text, re.M)]
    assert lines == [7, 8, 9, 10, 11, 12]  # lines 3-6, by position and by name, are fine
    assert "hint: did you mean `alpha`?" in text
    assert "hint: `elu` takes alpha=" in text
    assert "hint: `relu` takes no options; `alpha=` is a parameter of `elu`" in text
    assert "`leaky_relu` takes slope=, like `leaky_relu slope=0.2`" in text
    assert "`leaky_relu`: slope is given twice (first as `0.1`)" in text
    assert "a fused activation takes its defaults" in text


def test_a_training_setting_given_two_ways_is_set_twice():
    text = expected("train_set_twice")
    assert "train_set_twice.cnn:7:5: error: `lr` is set twice  [train-section]\n" in text
    assert "note: first set at line 6, by `lr=1e-3` of `optimizer`" in text
    assert "note: first set at line 6, by `momentum=0.9` of `optimizer`" in text
    assert "train_set_twice.cnn:6:40: error: `weight_decay` is set twice" in text
    assert "note: first set at line 5, by `weight_decay 1e-4`" in text
    assert "`batch` and `batch_size` set the same thing" in text
    assert "`val_split` and `val` set the same thing" in text
    assert text.count("is set twice") == 6


def test_a_block_parameter_used_as_a_layer_is_named_as_a_parameter():
    text = expected("block_param_as_layer")
    assert "unknown layer" not in text
    assert "error: `act` is a parameter of block `convact`; a parameter stands for a value " \
           "(a number, size or option), not a layer  [unknown-op]" in text
    assert "fuse it into the layer before: `conv c 3x3 act`" in text
    assert "error: `n` is a parameter of block `head`" in text
    assert text.rstrip().endswith("2 errors generated.")  # the second call is not reported again


def test_every_diagnostic_code_is_documented():
    from cnnc.diagnostics import CODES

    doc = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Diagnostics"):doc.index("## Limits")]
    missing = [code for code in CODES if f"`{code}`" not in section]
    assert not missing, f"docs/language.md does not list {missing}"


def test_every_code_the_source_raises_is_known():
    import re

    from cnnc.diagnostics import CODES

    used = set()
    for path in (ROOT / "cnnc").rglob("*.py"):
        used |= set(re.findall(r'code="([a-z-]+)"', path.read_text(encoding="utf-8")))
    assert used and not used - set(CODES), f"codes missing from CODES: {used - set(CODES)}"
