"""The language front to back: every construct parses and builds the graph it should.

Parsing (text -> AST with spans), building (blocks expanded, names resolved, a networkx DAG),
and what falls out of the graph: input order of merges, layer names, pruning of unreachable
branches, receptive fields. The doctests of the shape helpers and the summary run here too.
"""

from __future__ import annotations

import doctest

import pytest

import cnnc
from cnnc.syntax import ast
from cnnc.syntax.parser import parse


def build(text: str):
    model = cnnc.compile(text)
    assert model.ok, model.diagnostics
    return model


def ops_of(model) -> list[str]:
    return [layer.op for layer in model.graph.layers()]


def names_of(model) -> list[str]:
    return [layer.name for layer in model.graph.layers()]


EVERYTHING = """\
# Every construct of the language, once.
block basic(c, s=1):                       # a block with a default
    skip = here
    conv c 3x3 stride=s pad=same bias=false; bn; relu
    conv c 3x3 pad=same bias=false; bn
    add skip
    relu

block down(c):
    x = here
    conv c 1x1 stride=2 bias=false; skip = bn
    from x
    conv c 3 stride=2 pad=same
    add skip

input 32x32x3   ; # a statement may end in `;`
conv 16 3 pad=1x1x1x1 relu
basic(16) x2
basic 16 s=1
d = down(32)
a = conv 8 1
from d
b = conv 8 3 pad=0x2x1x1 dilation=1 \\
    groups=1
c = here
concat a b c
pool avg 3x3 stride=1 pad=1 ceil=true count_pad=false
pool max 2 ceil=true
dwconv 3 pad=same relu6
leaky_relu 0.2; elu; gelu; silu; tanh
dropout 0.25
gap
dense 10 softmax

train:
    data digits
    optimizer sgd lr=0.1 momentum=0.9
    epochs 2; batch 16
"""


# ---------------------------------------------------------------------------------------------
# the parser


def test_parse_gives_an_ast_with_spans():
    program, diagnostics = parse("input 28x28x1\nconv 32 3x3 relu stride=2\n", "m.cnn")
    assert diagnostics == [] and program.parsed
    inp, conv = program.items
    assert isinstance(conv, ast.Call) and conv.head == "conv"
    assert [(v.kind, v.value) for v in conv.args] == [("int", 32), ("dims", (3, 3)),
                                                      ("name", "relu")]
    (opt,) = conv.options
    assert (opt.key, opt.value.value) == ("stride", 2)
    assert (conv.head_span.line, conv.head_span.column, conv.head_span.end_column) == (2, 1, 5)
    assert (opt.key_span.column, opt.span.end_column) == (18, 26)
    assert inp.args[0].value == (28, 28, 1) and inp.span.file == "m.cnn"


@pytest.mark.parametrize("text,kind,value", [
    ("32", "int", 32), ("0.5", "float", 0.5), ("1e-3", "float", 0.001), ("3x3", "dims", (3, 3)),
    ("0x1x0x1", "dims", (0, 1, 0, 1)), ("same", "name", "same"),
    ('"npz:a b.npz"', "string", "npz:a b.npz"), ("'x'", "string", "x"),
    ("fashion-mnist", "name", "fashion-mnist"), ("2147483647", "int", 2**31 - 1),
])
def test_values(text, kind, value):
    program, diagnostics = parse(f"f {text}")
    assert diagnostics == []
    (v,) = program.items[0].args
    assert (v.kind, v.value) == (kind, value)


@pytest.mark.parametrize("text,code", [("3x", "bad-number"), ("2.5x2", "bad-number"),
                                       ("3X3", "bad-number"), ("2147483648", "too-large"),
                                       ("3x99999999999", "too-large"), ("1e999", "too-large")])
def test_malformed_numbers_are_reported_but_leave_a_tree(text, code):
    program, diagnostics = parse(f"conv 8 {text}")
    assert [d.code for d in diagnostics] == [code]
    assert program.parsed and program.items[0].has_error_value


def test_a_malformed_number_does_not_hide_other_errors():
    model = cnnc.compile("input 28x28x1\nconv 8 3x\ndropout 2\nconv 9999999999 3\nflaten")
    assert [d.code for d in model.errors] == ["bad-number", "bad-value", "too-large",
                                             "unknown-op"]


def test_separators_comments_continuations_and_line_endings():
    expected = ["input", "conv", "flatten", "dense"]
    for text in [
        "input 8x8x1; conv 4 3 relu; flatten; dense 2",
        "input 8x8x1\nconv 4 3 relu\nflatten\ndense 2\n",
        "# head\n\ninput 8x8x1  # trailing\n   # indented comment\nconv 4 3 relu;\n\nflatten;\n"
        "dense 2",
        "input 8x8x1\nconv 4 \\\n    3 relu\nflatten; dense 2",
        "input 8x8x1\r\nconv 4 3 relu\r\n\r\nflatten\r\ndense 2\r\n",
        "\ufeffinput 8x8x1\nconv(4, 3, relu)\nflatten()\ndense(2)",
        "input 8x8x1\nconv(4,\n     3,\n     relu)\nflatten\ndense 2",
    ]:
        model = cnnc.compile(text)
        assert model.ok, (text, model.diagnostics)
        assert ops_of(model) == expected, text


def test_tabs_indent_a_body():
    model = build("block b(c):\n\tconv c 3\n\trelu\ninput 8x8x1\nb 4")
    assert names_of(model) == ["input", "b_1.conv_1", "b_1.relu_1"]


def test_parse_never_raises_and_recovers_line_by_line():
    program, diagnostics = parse("input 28x28x1\nconv 32 3x3 @\npool 2 = 3\ndense 10)\n")
    assert not program.parsed
    assert [(d.span.line, d.code) for d in diagnostics] == [(2, "syntax"), (3, "syntax"),
                                                            (4, "syntax")]


# ---------------------------------------------------------------------------------------------
# every construct builds


def test_everything_builds():
    model = build(EVERYTHING)
    assert model.diagnostics == []
    g = model.graph
    assert g.input == "input" and g.output == "dense_1"
    assert model.input_shape == (32, 32, 3) and model.output_shape == (10,)
    names = names_of(model)
    # blocks are expanded with their instance name as a prefix; a repeat gives _1, _2, ...
    for n in ("basic_1.conv_1", "basic_1.batchnorm_1", "basic_1.add_1", "basic_2.relu_2",
              "basic_3.conv_2", "d.skip", "d.conv_2", "d.add_1", "a", "b", "concat_1"):
        assert n in names, n
    assert g["basic_1.add_1"].inputs == ["basic_1.batchnorm_2", "conv_1"]
    assert g["basic_2.add_1"].inputs == ["basic_2.batchnorm_2", "basic_1.relu_2"]
    assert g["d.add_1"].inputs == ["d.conv_2", "d.skip"]
    assert g["d.skip"].op == "batchnorm"
    assert g["a"].inputs == ["d.add_1"] and g["b"].inputs == ["d.add_1"]
    assert g["concat_1"].inputs == ["a", "b", "b"]  # `c = here` named b's output
    assert g["concat_1"].shape == (16, 16, 24)
    assert g["b"].settled["pads"] == (0, 2, 1, 1)
    assert g["conv_1"].settled["pads"] == (1, 1, 1, 1)
    assert g["pool_1"].attrs["ceil"] is True and g["pool_1"].attrs["kind"] == "avg"
    assert g["pool_3"].attrs["kind"] == "global" and g["pool_3"].shape == (24,)
    assert g["leaky_relu_1"].attrs["slope"] == 0.2
    assert g["dwconv_1"].attrs["activation"] == "relu6"
    # the graph is a DAG with an edge for every input
    import networkx as nx

    assert nx.is_directed_acyclic_graph(g.nx)
    for layer in g.layers():
        for src in layer.inputs:
            assert g.nx.has_edge(src, layer.name)
    assert not g.is_sequential()
    cfg = model.train_config
    assert (cfg.data, cfg.optimizer, cfg.lr, cfg.momentum, cfg.epochs, cfg.batch_size) == \
        ("digits", "sgd", 0.1, 0.9, 2, 16)


def test_block_call_forms_are_equivalent():
    head = "block basic(c, s=1):\n    conv c 3 stride=s pad=same\n    relu\ninput 32x32x3\n"
    forms = ["basic(64, s=2)", "basic 64 s=2", "basic(64, 2)", "basic 64 2", "basic(c=64, s=2)",
             "basic(s=2, c=64)", "basic(\n  64,\n  s=2,\n)"]
    graphs = []
    for form in forms:
        model = build(head + form)
        graphs.append([(layer.name, layer.op, layer.shape) for layer in model.graph.layers()])
    assert all(g == graphs[0] for g in graphs)
    assert graphs[0][-1] == ("basic_1.relu_1", "relu", (16, 16, 64))


def test_block_defaults_and_scopes():
    text = """
block b(c, k=3, act=relu):
    t = conv c k act
    from t
input 16x16x1
b 4
b 4 k=5 act=tanh
t = here
"""
    model = build(text)
    g = model.graph
    assert g["b_1.t"].attrs["kernel"] == (3, 3) and g["b_1.t"].attrs["activation"] == "relu"
    assert g["b_2.t"].attrs["kernel"] == (5, 5) and g["b_2.t"].attrs["activation"] == "tanh"
    assert model.output_shape == (10, 10, 4)  # the name `t` inside the block is its own


def test_repeat_counts():
    model = build("input 16x16x1\nconv 4 3 pad=same relu x3\nblock b():\n    relu\nb x2\nb() x2")
    assert names_of(model) == ["input", "conv_1", "conv_2", "conv_3", "b_1.relu_1", "b_2.relu_1",
                               "b_3.relu_1", "b_4.relu_1"]
    assert [layer.inputs for layer in model.graph.layers()][1:4] == [["input"], ["conv_1"],
                                                                      ["conv_2"]]


def test_names_here_and_from():
    model = build("input 8x8x3\nx = here\nconv 4 3\nfrom x\ny = conv 5 1\nfrom input\nz = here\n"
                  "concat y z")
    g = model.graph
    assert g["y"].inputs == ["input"]
    assert g["concat_1"].inputs == ["y", "input"]
    assert model.output_shape == (8, 8, 8)
    # the conv_1 branch never reaches the output: pruned, with a warning
    assert "conv_1" not in g
    assert [d.code for d in model.diagnostics] == ["unused"]
    assert model.diagnostics[0].span.line == 3


@pytest.mark.parametrize("stmt,inputs", [
    ("add a", ["current", "a"]),
    ("add a b", ["current", "a", "b"]),
    ("add here a", ["current", "a"]),
    ("add a here", ["a", "current"]),
    ("add b a", ["current", "b", "a"]),
    ("concat a b here", ["a", "b", "current"]),
])
def test_merge_input_order(stmt, inputs):
    head = "input 8x8x4\na = conv 4 3 pad=same\nb = conv 4 3 pad=same\ncurrent = conv 4 1\n"
    model = build(head + stmt)
    assert model.graph[model.graph.output].inputs == inputs


def test_global_pooling_spellings():
    shapes = {text: build(f"input 7x7x5; {text}").output_shape
              for text in ["gap", "pool global avg", "pool global", "gmp", "pool global max",
                           "avgpool 7", "maxpool 7x7"]}
    assert shapes == {"gap": (5,), "pool global avg": (5,), "pool global": (5,), "gmp": (5,),
                      "pool global max": (5,), "avgpool 7": (1, 1, 5), "maxpool 7x7": (1, 1, 5)}
    g = build("input 7x7x5; gmp").graph
    assert g["pool_1"].attrs["mode"] == "max"


@pytest.mark.parametrize("stmt,attrs", [
    ("maxpool max 2", {"kind": "max", "size": (2, 2)}),
    ("avgpool avg 2", {"kind": "avg", "size": (2, 2)}),
    ("gap avg", {"kind": "global", "mode": "avg"}),
    ("gap global", {"kind": "global", "mode": "avg"}),
    ("gmp max", {"kind": "global", "mode": "max"}),
    ("gmp global max", {"kind": "global", "mode": "max"}),
])
def test_a_pool_alias_may_repeat_its_own_kind(stmt, attrs):
    layer = build(f"input 8x8x2; {stmt}").graph["pool_1"]
    assert {k: layer.attrs[k] for k in attrs} == attrs


@pytest.mark.parametrize("stmt,column", [
    ("avgpool max 2", 9), ("maxpool avg 2", 9), ("maxpool global", 9), ("avgpool global", 9),
    ("gap max", 5), ("gmp avg", 5), ("gap global max", 12), ("gmp global avg", 12),
])
def test_a_pool_alias_contradicted_is_not_overridden(stmt, column):
    model = cnnc.compile(f"input 8x8x2\n{stmt}\n")
    assert [(d.code, d.span.line, d.span.column) for d in model.diagnostics] == \
        [("bad-value", 2, column)]
    assert "contradicts it" in model.diagnostics[0].message


@pytest.mark.parametrize("stmt,column,key,says", [
    ("gap stride=2", 5, "stride=2", "`stride=` does not apply to global pooling"),
    ("pool global avg stride=2", 17, "stride=2", "`stride=` does not apply to global pooling"),
    ("gmp pad=1", 5, "pad=1", "`pad=` does not apply to global pooling"),
    ("gap pad=same", 5, "pad=same", "`pad=` does not apply to global pooling"),
    ("pool global max ceil=true", 17, "ceil=true", "`ceil=` does not apply to global pooling"),
    ("gap count_pad=true", 5, "count_pad=true", "`count_pad=` does not apply to global pooling"),
    ("pool max 2 keepdims=true", 12, "keepdims=true", "`keepdims=` applies only to global"),
    ("avgpool 2 keepdims=true", 11, "keepdims=true", "`keepdims=` applies only to global"),
    ("pool max keepdims=true", 10, "keepdims=true", "`keepdims=` applies only to global"),
    ("pool max 2 count_pad=true", 12, "count_pad=true", "applies only to average pooling:"),
    ("maxpool 3 pad=1 count_pad=true", 17, "count_pad=true", "applies only to average pooling:"),
    ("pool avg 2 count_pad=true", 12, "count_pad=true", "average pooling with padding"),
    ("pool avg 3 pad=0 ceil=true count_pad=true", 28, "count_pad=true",
     "average pooling with padding"),
])
def test_a_pool_option_that_does_not_apply_is_an_error(stmt, column, key, says):
    model = cnnc.compile(f"input 8x8x2\n{stmt}\n")
    assert [(d.code, d.span.line, d.span.column) for d in model.diagnostics] == \
        [("unknown-option", 2, column)], model.diagnostics
    d = model.diagnostics[0]
    assert stmt[column - 1:].startswith(key)  # the caret is on the option
    assert says in d.message and d.hint.startswith("remove it")


def test_pool_hints_say_what_to_write_instead():
    def hint(stmt):
        (d,) = cnnc.compile(f"input 8x8x2\n{stmt}\n").diagnostics
        return d.hint
    assert "write `pool avg K stride=2`" in hint("gap stride=2")
    assert "write `pool max K stride=2x1`" in hint("gmp stride=2x1")
    assert "write `pool max K pad=1`" in hint("gmp pad=1")
    assert "write `gmp keepdims=true`" in hint("pool max 2 keepdims=true")
    assert "write `gap keepdims=true`" in hint("pool avg 2 keepdims=true")
    assert "`pool avg K pad=P count_pad=true`" in hint("pool max 2 count_pad=true")
    assert "pad the pool" in hint("pool avg 2 count_pad=true")


@pytest.mark.parametrize("stmt,shape", [
    ("pool avg 3 stride=1 pad=1 count_pad=true", (8, 8, 2)),
    ("pool avg 3 stride=2 pad=1x0x0x1 ceil=true count_pad=true", (4, 4, 2)),
    ("pool avg 2 pad=same count_pad=true", (4, 4, 2)),  # same may pad: allowed
    ("gap keepdims=true", (1, 1, 2)),
    ("pool global max keepdims=true", (1, 1, 2)),
    # writing an option's default asks for nothing, so it is allowed anywhere
    ("pool max 2 keepdims=false count_pad=false", (4, 4, 2)),
    ("pool avg 2 count_pad=false", (4, 4, 2)),
    ("gap ceil=false count_pad=false pad=valid", (2,)),
    ("gmp pad=0 keepdims=false", (2,)),
])
def test_pool_options_where_they_apply(stmt, shape):
    assert build(f"input 8x8x2\n{stmt}\n").output_shape == shape


def test_activation_parameters_by_position_or_by_name():
    g = build("input 4x4x1; leaky_relu 0.2; leaky_relu slope=0.3; leaky_relu negative_slope=0.4;"
              " leaky_relu; elu 0.5; elu alpha=0.6; elu").graph
    assert [g[f"leaky_relu_{i}"].attrs["slope"] for i in (1, 2, 3, 4)] == [0.2, 0.3, 0.4, 0.01]
    assert [g[f"elu_{i}"].attrs["alpha"] for i in (1, 2, 3)] == [0.5, 0.6, 1.0]
    assert g["leaky_relu_2"].attrs == {"slope": 0.3}  # the alias sets the canonical name
    for text in ("leaky_relu 0.1 slope=0.2", "leaky_relu slope=0.1 negative_slope=0.2",
                 "elu 0.5 alpha=0.5"):
        model = cnnc.compile(f"input 4x4x1; {text}")
        assert [d.code for d in model.diagnostics] == ["bad-value"], text
        assert "given twice" in model.diagnostics[0].message


def test_the_same_training_setting_given_two_ways_is_set_twice():
    head = "input 4x4x1; flatten; dense 2\ntrain:\n"
    for body, line in [("    optimizer adam lr=1e-3\n    lr 0.1\n", 4),
                       ("    lr 0.1\n    optimizer adam lr=1e-3\n", 4),
                       ("    optimizer sgd momentum=0.9\n    momentum 0.5\n", 4),
                       ("    weight_decay 0.1\n    optimizer sgd weight_decay=0.2\n", 4),
                       ("    batch 8\n    batch_size 16\n", 4),
                       ("    val 0.1; val_split 0.2\n", 3)]:
        model = cnnc.compile(head + body)
        assert [(d.code, d.span.line) for d in model.diagnostics] == [("train-section", line)], body
        assert model.diagnostics[0].message.endswith("is set twice")
        assert model.diagnostics[0].notes[0].startswith("first set at line")
    model = build(head + "    optimizer sgd lr=0.1 momentum=0.9\n    weight_decay 1e-4\n")
    cfg = model.train_config
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay) == ("sgd", 0.1, 0.9, 1e-4)


def test_a_block_parameter_written_as_a_layer_is_named():
    model = cnnc.compile("block b(act):\n    conv 8 3x3; act\ninput 8x8x1\nb(relu)\n")
    (d,) = model.diagnostics
    assert (d.code, d.span.line, d.span.column) == ("unknown-op", 2, 17)
    assert d.message.startswith("`act` is a parameter of block `b`")
    assert d.hint.endswith("`conv 8 3x3 act`")


def test_pool_defaults_follow_keras():
    g = build("input 9x9x2\npool 2\npool avg 3x3 stride=1 pad=1\npool max 2 ceil=true").graph
    assert g["pool_1"].attrs["kind"] == "max" and g["pool_1"].shape == (4, 4, 2)
    assert g["pool_2"].shape == (4, 4, 2)
    assert g["pool_3"].shape == (2, 2, 2)
    assert build("input 9x9x2\npool 2 ceil=true").output_shape == (5, 5, 2)


def test_input_forms():
    assert build("input 28x28").input_shape == (28, 28, 1)
    assert build("input 28x28x3").input_shape == (28, 28, 3)
    assert build("input 100; dense 10").output_shape == (10,)


def test_unreachable_branches_are_warned_and_pruned():
    model = cnnc.compile("input 8x8x1\nside = conv 2 3\nalso = conv 3 3\nfrom input\nflatten\n"
                         "dense 2")
    assert model.ok
    assert [(d.code, d.severity, d.span.line) for d in model.diagnostics] == \
        [("unused", "warning", 2), ("unused", "warning", 3)]
    assert names_of(model) == ["input", "flatten_1", "dense_1"]
    assert model.summary().total_params == 64 * 2 + 2


def test_nothing_is_pruned_when_there_are_errors():
    model = cnnc.compile("input 8x8x1\nside = conv 2 3\nfrom input\nflaten")
    assert [d.code for d in model.diagnostics] == ["unknown-op"]


# ---------------------------------------------------------------------------------------------
# receptive fields


@pytest.mark.parametrize("chain,fields", [
    ("conv 1 3; conv 1 3", [3, 5]),
    ("conv 1 3; pool 2; conv 1 3", [3, 4, 8]),
    ("conv 1 7 stride=2 pad=3; pool 3 stride=2 pad=1", [7, 11]),
    ("conv 1 3 dilation=2; conv 1 3 dilation=4", [5, 13]),
    ("conv 1 3; relu; bn; conv 1 3", [3, 3, 3, 5]),
])
def test_receptive_fields(chain, fields):
    model = build(f"input 64x64x1; {chain}")
    assert [layer.receptive_field for layer in model.graph.layers()][1:] == fields
    assert [r.receptive_field for r in model.summary().rows][1:] == fields


def test_receptive_field_of_a_merge_is_the_larger_one_and_flat_has_none():
    model = build("input 32x32x1\na = conv 1 1\nfrom input\nconv 1 5 pad=same\nadd a\nflatten")
    g = model.graph
    assert g["add_1"].receptive_field == 5
    assert g["flatten_1"].receptive_field is None


# ---------------------------------------------------------------------------------------------
# the doctests of the modules whose examples are documentation


@pytest.mark.parametrize("module", ["cnnc", "cnnc.ops.shapes", "cnnc.ops._common",
                                    "cnnc.analysis.summary", "cnnc.pipeline"])
def test_doctests(module):
    import importlib

    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module} has no doctests"
    assert result.failed == 0
