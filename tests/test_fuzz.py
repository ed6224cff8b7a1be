"""Malformed input never crashes cnnc: it gets diagnostics, and the CLI an exit code.

A corpus of hostile files (empty, binary, NUL, invalid UTF-8, 5 MB, 10,000 nested blocks, deep
indentation, long lines, 100k semicolons, unicode names, CRLF, tabs...) and hypothesis
properties on random text and on random mutations (delete, insert, duplicate, swap tokens and
characters) of the examples. The invariants: `cnnc.compile` returns a Model and never raises;
its diagnostics render as text and JSON with spans inside the source; a clean model summarises;
the CLI never prints a traceback and exits 0, 1 or 2.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnc
from cnnc.diagnostics import CODES, render_json, render_text

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(ROOT.glob("examples/**/*.cnn"))
SEEDS = [p.read_text(encoding="utf-8") for p in EXAMPLES] or [
    "input 28x28x1; conv 32 3x3 relu; pool 2; flatten; dense 10 softmax\n"]
SEEDS.append("""\
block basic(c, s=1):
    skip = here
    conv c 3x3 stride=s pad=same bias=false; bn; relu
    conv c 3x3 pad=same bias=false; bn
    add skip
    relu
input 32x32x3
conv 16 3 pad=1x1x1x1 relu
basic(16) x2
a = conv 8 1
from input
b = conv 8 3 pad=0x2x1x1
concat a b
pool avg 3 stride=2 pad=1 ceil=true
gap; dropout 0.5; dense 10 softmax
train:
    data digits; epochs 2; optimizer sgd lr=0.1 momentum=0.9
""")

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check_model(model, source: str | None = None) -> None:
    """The invariants every compile result keeps, whatever the input."""
    from cnnc.analysis.summary import total_params

    text = model.source if source is None else source
    n_lines = max(len(text.splitlines()), 1) + 1
    for d in model.diagnostics:
        assert d.code in CODES, f"undocumented diagnostic code {d.code!r}"
        assert d.severity in ("error", "warning")
        assert 1 <= d.span.line <= n_lines and d.span.column >= 1, d
        assert (d.span.end_line, d.span.end_column) >= (d.span.line, d.span.column), d
        assert d.message.strip(), d
    # the renderers show every diagnostic, where it is and what it says
    rendered = render_text(model.diagnostics, {model.file: model.source})
    for d in model.diagnostics:
        assert f"{d.span.file}:{d.span.line}:{d.span.column}: {d.severity}: " in rendered, d
    report = json.loads(render_json(model.diagnostics))
    assert [(r["code"], r["line"], r["column"]) for r in report["diagnostics"]] == \
        [(d.code, d.span.line, d.span.column) for d in model.diagnostics]
    assert report["ok"] == (not any(d.severity == "error" for d in model.diagnostics))
    # the same text compiles to the same diagnostics: nothing depends on state left behind
    again = cnnc.compile(model.source, file=model.file) if model.source else model
    assert [(d.code, d.span, d.message) for d in again.diagnostics] == \
        [(d.code, d.span, d.message) for d in model.diagnostics]
    if model.ok:
        layers = list(model.graph.layers())
        assert model.graph.input in model.graph and model.graph.output in model.graph
        for layer in layers:
            assert layer.shape and all(isinstance(n, int) and n >= 1 for n in layer.shape), layer
        summary = model.summary()
        # the summary's totals are its rows' sums, and what `cnnc check` counts on its own
        assert summary.total_params == sum(r.params for r in summary.rows) \
            == total_params(model.graph)
        assert summary.macs == sum(r.macs for r in summary.rows)
        assert [r.name for r in summary.rows] == [layer.name for layer in layers]
        json.dumps(summary.to_json())


# ---------------------------------------------------------------------------------------------
# the corpus

def _nested_blocks(n: int) -> str:
    """n blocks, each calling the next: a 10,000-deep call chain."""
    lines = [f"block b{i}():\n    b{i + 1}\n" for i in range(n)]
    return "".join(lines) + f"block b{n}():\n    relu\ninput 8x8x1\nb0\n"


def _deep_indentation(n: int) -> str:
    return "".join(" " * i + f"block b{i}():\n" for i in range(n)) + " " * n + "relu\n"


CORPUS: dict[str, bytes] = {
    "empty": b"",
    "whitespace": b"   \n\t\n  \r\n\f\n",
    "only a comment": b"# nothing here",
    "binary": random.Random(0).randbytes(4096),
    "nul": b"\x00",
    "nul in a line": b"input 8x8x1\nconv 4\x003\n",
    "invalid utf-8": b"input 8x8x1\nconv 4 3 \xff\xfe relu\n",
    "truncated utf-8": b"input 8x8x1\n\xc3",
    "utf-16": "input 8x8x1\n".encode("utf-16"),
    "bom only": b"\xef\xbb\xbf",
    "bom": b"\xef\xbb\xbfinput 8x8x1\nflatten\n",
    "5 MB": b"conv 8 3 relu\n" * (5 * 1024 * 1024 // 14),
    "5 MB comment": b"#" + b"x" * (5 * 1024 * 1024),
    "10,000 nested blocks": _nested_blocks(10_000).encode(),
    "1,000 nested blocks": _nested_blocks(1_000).encode(),
    "1,000 levels of indentation": _deep_indentation(1_000).encode(),
    "10,000 parentheses": b"input 8x8x1\nconv" + b"(" * 10_000 + b"\n",
    "10,000 closing parentheses": b"input 8x8x1\nconv" + b")" * 10_000 + b"\n",
    "long line": b"input 8x8x1 " + b"relu " * 20_000,
    "long line of options": b"input 8x8x1\nconv 4 3 " + b"stride=1 " * 10_000,
    "1 MB name": b"input 8x8x1\n" + b"a" * (1 << 20),
    "100k semicolons": b"input 8x8x1" + b";" * 100_000,
    "100k statements": b"input 8x8x1; " + b"relu; " * 100_000,
    "unicode names": "input 8x8x1\ncönv 3 3\nñame = here\n日本 = conv 3\nrelu\u200b\n".encode(),
    "unicode digits": "input ٨x٨x١\n".encode(),
    "emoji": "input 8x8x1 # 🧠\nconv 4 3 🧠\n".encode(),
    "crlf": b"input 8x8x1\r\nconv 4 3 relu\r\n\r\nflatten\r\ndense 2\r\n",
    "lone cr": b"input 8x8x1\rconv 4 3\rflatten\r",
    "crlf block": b"block b(c):\r\n    conv c 3\r\n    relu\r\ninput 8x8x1\r\nb 4\r\n",
    "tabs": b"input\t8x8x1\nblock b(c):\n\tconv c 3\n\trelu\nb\t4\n",
    "mixed tabs and spaces": b"block b(c):\n\tconv c 3\n        relu\n    relu\ninput 8x8x1\nb 4\n",
    "huge numbers": b"input 99999999999999999999999x1\nconv 1e400 3\ndense 0x0\n",
    "huge repeat": b"input 8x8x1\nrelu x99999999999\nrelu x10000\n",
    "repeat bomb": b"block a():\n    relu\nblock b():\n    a x10000\ninput 8x8x1\nb x10000\n",
    "tensor bomb": b"input 65535x65535x65535\nconv 2147483647 1\n",
    "keywords alone": b"block\ntrain:\n:\n(\n)\nx3\nhere\nfrom\nadd\n=\nblock b():\n",
    "eof after header": b"input 8x8x1\nblock b():",
    "line continuation at eof": b"input 8x8x1 \\",
    "unterminated string": b"input 8x8x1\ntrain:\n    data \"digits\n",
    "quotes": b"input '8x8x1'\nconv \"4\" 3\n",
    "negative everything": b"input -8x-8x-1\nconv -4 -3 stride=-1 pad=-1\ndropout -1\n",
    "nested sections": b"train:\n    train:\n        epochs 1\n"
                       b"block b():\n    train:\n        x 1\n",
    "block in block": b"block a():\n    block b():\n        relu\ninput 8x8x1\na\n",
    "self merge": b"input 8x8x1\nadd here here here\nconcat input input\n",
    "merge flat": b"input 8x8x1\nx = flatten\nadd x\nconcat x input\n",
    "everything after dense": b"input 8x8x1\nflatten\ndense 4\nconv 2 3\npool 2\ngap\nbn\n",
}


def _compile_bytes(data: bytes, tmp_path: Path):
    path = tmp_path / "fuzz.cnn"
    path.write_bytes(data)
    return cnnc.compile(path)


@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_file(name, tmp_path):
    model = _compile_bytes(CORPUS[name], tmp_path)
    check_model(model)


@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_text(name):
    """The same through `cnnc.compile(text)`, where the bytes decode."""
    try:
        text = CORPUS[name].decode("utf-8")
    except UnicodeDecodeError:
        text = CORPUS[name].decode("utf-8", errors="replace")
    if "\n" not in text and ";" not in text:
        text += "\n"  # a single line could be taken for a file name
    check_model(cnnc.compile(text), text.removeprefix("\ufeff"))


def test_corpus_diagnostics_are_the_expected_ones(tmp_path):
    def codes(name):
        return {d.code for d in _compile_bytes(CORPUS[name], tmp_path).diagnostics}

    assert codes("binary") == {"io"} and codes("nul") == {"io"}
    assert codes("invalid utf-8") == {"io"}
    assert codes("5 MB") == {"too-large"} and codes("100k statements") == {"too-large"}
    assert codes("10,000 nested blocks") == {"too-large"}
    assert codes("1,000 nested blocks") == {"block-recursion"}
    assert codes("repeat bomb") == {"too-large"}
    assert codes("tensor bomb") == {"too-large"}
    assert codes("crlf") == set() and codes("crlf block") == set() and codes("bom") == set()
    assert codes("tabs") == set()
    assert "syntax" in codes("unicode names")


CLI_CASES = ["empty", "binary", "invalid utf-8", "5 MB", "10,000 nested blocks", "crlf",
             "100k semicolons", "unicode names"]


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_never_prints_a_traceback(name, tmp_path):
    path = tmp_path / "fuzz.cnn"
    path.write_bytes(CORPUS[name])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    for command in (["check", str(path)], ["summary", str(path)],
                    ["check", "--json", str(path)]):
        r = subprocess.run([sys.executable, "-m", "cnnc", *command], capture_output=True,
                           env=env, timeout=120)
        out = r.stdout + r.stderr
        assert b"Traceback" not in out and b"internal error" not in out, out[-2000:]
        assert r.returncode in (0, 1, 2), (command, r.returncode)
        if "--json" in command:
            json.loads(r.stdout)


# ---------------------------------------------------------------------------------------------
# hypothesis: random text, and random mutations of real programs

WORDS = ["input", "conv", "pool", "dense", "flatten", "dropout", "bn", "relu", "softmax", "add",
         "concat", "from", "here", "block", "train", "gap", "dwconv", "max", "avg", "global",
         "stride=", "pad=", "same", "valid", "dilation=", "groups=", "bias=", "ceil=", "true",
         "x", "x2", "28x28x1", "3x3", "0", "1", "2", "3", "32", "0.5", "1e9", "-1", "1x2x3x4",
         "skip", "a", "b", "c", "=", "(", ")", ",", ";", ":", "#", "\n", "\n    ", "\n\t", " ",
         " ", " ", "\\\n", "'", '"', "epochs", "data", "digits", "lr="]

program_text = st.lists(st.sampled_from(WORDS), max_size=60).map("".join)


@SETTINGS
@given(text=st.text(max_size=300))
def test_random_unicode_text(text):
    if "\n" not in text and ";" not in text:
        text += "\n"
    check_model(cnnc.compile(text), text.removeprefix("\ufeff"))


@SETTINGS
@given(text=program_text)
def test_random_token_soup(text):
    text += "\n"
    check_model(cnnc.compile(text), text)


_TOKENS = re.compile(r"\s+|[A-Za-z_][\w-]*|[0-9][\w.]*|.", re.S)


def mutate(source: str, rng: random.Random, n: int) -> str:
    """n random edits of tokens or characters: delete, insert, duplicate, swap."""
    for _ in range(n):
        if rng.random() < 0.5:
            units = _TOKENS.findall(source)
            pool = WORDS
        else:
            units = list(source)
            pool = list("x0123456789=();:#\n\t -,.\"'\\abc") + ["\r\n", "\x00", "é", "\u200b"]
        if not units:
            units = [""]
        i, j = rng.randrange(len(units)), rng.randrange(len(units))
        op = rng.choice(["delete", "insert", "duplicate", "swap", "replace"])
        if op == "delete":
            del units[i]
        elif op == "insert":
            units.insert(i, rng.choice(pool))
        elif op == "duplicate":
            units.insert(i, units[j])
        elif op == "swap":
            units[i], units[j] = units[j], units[i]
        else:
            units[i] = rng.choice(pool)
        source = "".join(units)
    return source


@SETTINGS
@given(seed=st.sampled_from(range(len(SEEDS))), rng=st.randoms(use_true_random=False),
       n=st.integers(1, 8))
def test_mutated_examples(seed, rng, n):
    text = mutate(SEEDS[seed], rng, n)
    if "\n" not in text and ";" not in text:
        text += "\n"
    check_model(cnnc.compile(text), text.removeprefix("\ufeff"))


def test_mutations_do_find_errors():
    """The mutator is not a no-op: most mutants are faulty, some still compile."""
    rng = random.Random(7)
    results = [cnnc.compile(mutate(SEEDS[i % len(SEEDS)], rng, 3) + "\n").ok for i in range(100)]
    assert 5 <= sum(results) <= 95
