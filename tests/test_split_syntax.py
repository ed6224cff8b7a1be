"""`a, b = split 2`: several names on one statement, parsed with spans, built into one layer per
part, and the parts used as ordinary named tensors (in blocks too)."""

from __future__ import annotations

import cnnc
from cnnc.syntax import ast
from cnnc.syntax.parser import parse


def test_several_targets_parse_with_spans():
    program, diagnostics = parse("input 4x4x6\nkeep, x = split 2\n", "m.cnn")
    assert diagnostics == []
    stmt = program.items[1]
    assert isinstance(stmt, ast.Assign)
    assert [name for name, _ in stmt.targets] == ["keep", "x"]
    (_, first), (_, second) = stmt.targets
    assert (first.line, first.column, first.end_column) == (2, 1, 5)
    assert (second.line, second.column, second.end_column) == (2, 7, 8)
    assert stmt.call.head == "split" and stmt.span.column == 1


def test_one_target_is_unchanged():
    program, _ = parse("input 4x4x6\nskip = here\n")
    assert program.items[1].targets == ((program.items[1].target, program.items[1].target_span),)
    assert program.items[1].more_targets == ()


def test_a_trailing_comma_is_a_syntax_error():
    _, diagnostics = parse("input 4x4x6\nkeep, = split 2\n")
    assert [d.code for d in diagnostics] == ["syntax"]
    assert diagnostics[0].span.line == 2


def test_parts_are_layers_and_the_last_is_current():
    model = cnnc.compile("input 5x5x6\nkeep, x = split 2\nconv 4 1x1\nconcat keep here\n")
    assert model.ok, model.diagnostics
    g = model.graph
    assert g["keep"].shape == (5, 5, 3) and g["x"].shape == (5, 5, 3)
    assert (g["keep"].attrs["part"], g["x"].attrs["part"]) == (0, 1)
    assert g["conv_1"].inputs == ["x"]  # the last part is the current tensor
    assert g["concat_1"].inputs == ["keep", "conv_1"]
    assert model.output_shape == (5, 5, 7)


def test_split_sizes_and_flat_features():
    model = cnnc.compile("input 10\na, b, c = split 2x3x5\nconcat c a b\n")
    assert model.ok, model.diagnostics
    assert [model.graph[n].shape for n in "abc"] == [(2,), (3,), (5,)]
    assert model.output_shape == (10,)


def test_split_inside_a_block_repeated():
    text = """input 6x6x8
block unit(c):
    keep, x = split 2
    conv c 1x1 relu
    concat keep here
    shuffle 2
unit(4) x3
"""
    model = cnnc.compile(text)
    assert model.ok, model.diagnostics
    names = [layer.name for layer in model.graph.layers()]
    assert "unit_1.keep" in names and "unit_3.x" in names
    assert model.output_shape == (6, 6, 8)


def test_split_in_json_summary_has_one_row_per_part():
    model = cnnc.compile("input 2x2x4\na, b = split 2\nadd a b\n")
    rows = model.summary().rows
    assert [r.description for r in rows[1:3]] == ["split 2 (part 1 of 2)",
                                                 "split 2 (part 2 of 2)"]


def test_wrong_name_counts_are_diagnostics():
    for text, code in [("input 4x4x6\nx = split 2\n", "bad-value"),
                       ("input 4x4x6\nsplit 3\n", "bad-value"),
                       ("input 4x4x6\na, b = dense 3\n", "bad-value"),
                       ("input 4x4x6\na, b, c = split 2\n", "bad-value"),
                       ("input 4x4x6\na, b = split 1\n", "bad-value"),
                       ("input 4x4x6\na, a = split 2\n", "duplicate-name"),
                       ("input 4x4x6\na, input = split 2\n", "duplicate-name"),
                       ("input 4x4x6\na, b, c, d = split 4\nconcat a b c d\n", "shape")]:
        model = cnnc.compile(text)
        assert not model.ok, text
        assert {d.code for d in model.errors} == {code}, (text, model.diagnostics)
