"""The parser tables are lark's, for the grammar as it is, and cnnc runs them as lark would.

- cnnc/syntax/tables.py is exactly what `python -m cnnc.syntax.generate` writes from
  grammar/cnn.lark (so the grammar stays the one source of truth);
- cnnc's own driver (cnnc/syntax/lalr.py) and lark itself, given the same tables, the same
  indenter and the same AST builder, agree on every file in the repository and on random text:
  the same AST with the same spans, or the same error at the same place expecting the same
  terminals;
- parsing imports no lark.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnc.syntax import generate, lalr
from cnnc.syntax import parser as cnnc_parser

lark = pytest.importorskip("lark")

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted([*ROOT.glob("examples/**/*.cnn"), *ROOT.glob("tests/diagnostics/*.cnn")])


def test_tables_are_what_the_grammar_gives():
    from cnnc.syntax import tables

    assert lark.__version__ == tables.LARK_VERSION, \
        f"the tables were made by lark {tables.LARK_VERSION}; install that version (the test " \
        f"extra pins it) or regenerate them with this one ({lark.__version__})"
    committed = generate.TABLES.read_text(encoding="utf-8")
    assert committed == generate.generate(), \
        "cnnc/syntax/tables.py is out of date: run `python -m cnnc.syntax.generate`"


def test_the_grammar_has_only_the_intended_conflicts():
    """Arguments follow each other without commas, so LALR(1) sees two readings in three places,
    which lark settles by shifting (docs/language.md, Grammar): an operator continues the
    argument before it, a name before `(` calls a function, and `(` after a statement's head is
    read as a parenthesised expression (meaning the same as the argument list). Any other
    conflict is new: check that the grammar change reads as intended before updating this."""
    from cnnc.syntax import tables

    assert tables.SHIFTED_CONFLICTS == {"LPAR": 2, "MINUS": 1, "PLUS": 1, "RPAR": 1}


def test_generating_twice_gives_the_same_file():
    """lark numbers states differently from run to run (hash seeds); the file must not change."""
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-m", "cnnc.syntax.generate", "--check"],
                             cwd=ROOT, env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT),
                                            "PATH": ""}, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


class _ToCnncTokens:
    """lark's postlexer slot: hand cnnc's indenter cnnc tokens, as cnnc's lexer would."""

    always_accept = generate.ALWAYS_ACCEPT

    def process(self, stream):
        tokens = (lalr.Token(t.type, str(t), t.start_pos, t.line, t.column, t.end_line,
                             t.end_column, t.end_pos) for t in stream)
        return cnnc_parser._Indenter()(tokens)


class _Builder:
    """lark's transformer slot: each rule goes to the builder of the parse in progress."""

    def __init__(self):
        self.current = None

    def __getattr__(self, name):
        if not callable(getattr(cnnc_parser._AstBuilder, name, None)):
            raise AttributeError(name)
        return lambda children: getattr(self.current, name)(children)


_LARK = []


def _outcome_by_lark(text: str):
    if not _LARK:
        grammar = generate.GRAMMAR.read_text(encoding="utf-8")
        _LARK.append(lark.Lark(grammar, parser="lalr", lexer="contextual",
                               postlex=_ToCnncTokens(), transformer=_Builder(),
                               keep_all_tokens=True, maybe_placeholders=True))
    parser = _LARK[0]
    builder = parser.options.transformer.current = cnnc_parser._AstBuilder("t.cnn", text)
    try:
        return ("ok", parser.parse(text), builder.diagnostics)
    except lark.exceptions.UnexpectedCharacters as e:
        return ("chars", e.line, e.column, e.pos_in_stream, set(e.allowed))
    except lark.exceptions.UnexpectedToken as e:
        t = e.token
        return ("token", t.type, str(t), t.line, t.column, set(e.expected))
    except cnnc_parser._IndentError as e:
        return ("indent", e.token.line, e.message)


def _outcome_by_cnnc(text: str):
    builder = cnnc_parser._AstBuilder("t.cnn", text)
    try:
        return ("ok", lalr.parse(text, builder, cnnc_parser._Indenter()), builder.diagnostics)
    except lalr.UnexpectedCharacters as e:
        return ("chars", e.line, e.column, e.pos_in_stream, e.allowed)
    except lalr.UnexpectedToken as e:
        t = e.token
        return ("token", t.type, t.value, t.line, t.column, e.expected)
    except cnnc_parser._IndentError as e:
        return ("indent", e.token.line, e.message)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_cnnc_parses_every_file_as_lark_does(path):
    text = path.read_text(encoding="utf-8")
    text = text if text.endswith("\n") else text + "\n"
    assert _outcome_by_cnnc(text) == _outcome_by_lark(text)


FRAGMENTS = ["conv", "32", "3x3", "block", "blocks", "b", "(", ")", ",", "=", ":", ";", "\n",
             "\n    ", "\n\t", " ", "#c", "\\\n", "'s'", '"', "x", "-1", "1e-3", "[", "é",
             "train", "relu", "input", "skip", "add", "x2", "2.5", "\r\n", "-", "block b(c):"]


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30))
def test_cnnc_parses_random_text_as_lark_does(parts):
    text = " ".join(parts) + "\n"
    assert _outcome_by_cnnc(text) == _outcome_by_lark(text)


def test_parsing_imports_no_lark():
    code = ("import sys; from cnnc.pipeline import compile_text; "
            "m = compile_text('input 28x28x1; conv 8 3x3 relu; flatten; dense 10'); "
            "assert m.ok; print('lark' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.stdout.strip() == "False", out.stdout + out.stderr
