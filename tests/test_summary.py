"""What a model costs: the seeds' models, the published torchvision counts, the summary's JSON
and its table.

The torchvision numbers are `sum(p.numel() for p in model.parameters())` of torchvision's
models, the counts its documentation publishes; MACs are fvcore's convention (conv and dense
multiply-accumulates per image).
"""

from __future__ import annotations

import io

import pytest

import cnnc
from cnnc.analysis.summary import human, human_bytes

SEED_1 = "input 28x28x1; conv 32 3x3 relu; pool 2; flatten; dense 10 softmax"

SEED_2 = """\
input 28x28x1
conv 32 3x3 relu
pool 2
flatten
dense 256 relu
dense 10 softmax
"""

SEED_3 = """\
input 28x28x1
conv 32 3x3 pad=same relu
pool 2
conv 64 3x3 pad=same relu
pool 2
flatten
dense 128 relu
dense 10 softmax
"""

RESNET18 = """\
block basic(c):
    skip = here
    conv c 3x3 pad=1 bias=false; bn; relu
    conv c 3x3 pad=1 bias=false; bn
    add skip
    relu

block down(c):
    x = here
    conv c 1x1 stride=2 bias=false; skip = bn
    from x
    conv c 3x3 stride=2 pad=1 bias=false; bn; relu
    conv c 3x3 pad=1 bias=false; bn
    add skip
    relu

input 224x224x3
conv 64 7x7 stride=2 pad=3 bias=false; bn; relu
pool max 3x3 stride=2 pad=1
basic(64) x2
down(128); basic(128)
down(256); basic(256)
down(512); basic(512)
gap
dense 1000
"""

VGG16 = """\
input 224x224x3
conv 64 3 pad=1 relu x2; pool 2
conv 128 3 pad=1 relu x2; pool 2
conv 256 3 pad=1 relu x3; pool 2
conv 512 3 pad=1 relu x3; pool 2
conv 512 3 pad=1 relu x3; pool 2
flatten
dense 4096 relu; dropout 0.5
dense 4096 relu; dropout 0.5
dense 1000
"""

ALEXNET = """\
input 224x224x3
conv 64 11 stride=4 pad=2 relu; pool 3 stride=2
conv 192 5 pad=2 relu; pool 3 stride=2
conv 384 3 pad=1 relu
conv 256 3 pad=1 relu
conv 256 3 pad=1 relu; pool 3 stride=2
flatten; dropout 0.5
dense 4096 relu; dropout 0.5
dense 4096 relu
dense 1000
"""

MOBILENET_V2 = """\
block ir(hidden, c, s=1):           # inverted residual, without the shortcut
    conv hidden 1 bias=false; bn; relu6
    dwconv 3 stride=s pad=1 bias=false; bn; relu6
    conv c 1 bias=false; bn

block res(hidden, c):               # with it
    skip = here
    ir(hidden, c)
    add skip

input 224x224x3
conv 32 3 stride=2 pad=1 bias=false; bn; relu6
dwconv 3 pad=1 bias=false; bn; relu6; conv 16 1 bias=false; bn
ir(96, 24, s=2); res(144, 24)
ir(144, 32, s=2); res(192, 32) x2
ir(192, 64, s=2); res(384, 64) x3
ir(384, 96); res(576, 96) x2
ir(576, 160, s=2); res(960, 160) x2
ir(960, 320)
conv 1280 1 bias=false; bn; relu6
gap; dropout 0.2
dense 1000
"""


def summary_of(text: str):
    model = cnnc.compile(text)
    assert model.ok, model.diagnostics
    return model.summary()


@pytest.mark.parametrize("text,params", [(SEED_1, 54_410), (SEED_2, 1_387_594),
                                         (SEED_3, 421_642)])
def test_seed_models(text, params):
    s = summary_of(text)
    assert s.total_params == s.trainable_params == params
    assert s.non_trainable_params == 0


def test_seed_model_layer_by_layer():
    s = summary_of(SEED_2)
    assert [(r.name, r.output_shape, r.params) for r in s.rows] == [
        ("input", (28, 28, 1), 0),
        ("conv_1", (26, 26, 32), 320),
        ("pool_1", (13, 13, 32), 0),
        ("flatten_1", (5408,), 0),
        ("dense_1", (256,), 1_384_704),
        ("dense_2", (10,), 2_570),
    ]
    assert s.macs == 26 * 26 * 32 * 9 + 5408 * 256 + 256 * 10


@pytest.mark.parametrize("text,trainable,total,macs", [
    (RESNET18, 11_689_512, 11_689_512 + 9_600, (1.80e9, 1.83e9)),
    (VGG16, 138_357_544, 138_357_544, (15.4e9, 15.6e9)),
    (ALEXNET, 61_100_840, 61_100_840, (0.70e9, 0.73e9)),
    (MOBILENET_V2, 3_504_872, 3_504_872 + 34_112, (0.29e9, 0.31e9)),
])
def test_torchvision_counts(text, trainable, total, macs):
    s = summary_of(text)
    assert s.trainable_params == trainable
    assert s.total_params == total  # Keras's total: running statistics included
    assert macs[0] <= s.macs <= macs[1]


def test_resnet18_graph_shape():
    model = cnnc.compile(RESNET18)
    s = model.summary()
    assert not s.sequential
    assert model.output_shape == (1000,)
    rows = {r.name: r for r in s.rows}
    assert rows["pool_1"].output_shape == (56, 56, 64)
    assert rows["down_3.add_1"].output_shape == (7, 7, 512)
    assert rows["down_1.add_1"].inputs == ["down_1.batchnorm_2", "down_1.skip"]
    assert rows["down_1.skip"].params == 2 * 128 + 2 * 128  # bn: scale, shift + 2 statistics
    assert rows["down_1.skip"].trainable == 2 * 128


def test_batchnorm_and_dropout_counts():
    s = summary_of("input 8x8x3; conv 4 3 bias=false; bn; flatten; dropout 0.5; dense 2; bn")
    assert s.trainable_params == 3 * 3 * 3 * 4 + 2 * 4 + 144 * 2 + 2 + 2 * 2
    assert s.non_trainable_params == 2 * 4 + 2 * 2


def test_groups_and_depthwise_counts_and_macs():
    s = summary_of("input 8x8x8; conv 16 3 groups=4 bias=false; dwconv 3 multiplier=2")
    conv, dw = s.rows[1], s.rows[2]
    assert conv.params == 16 * (8 // 4) * 9 and conv.output_shape == (6, 6, 16)
    assert conv.macs == 6 * 6 * 16 * 9 * 2
    assert dw.params == 32 * 1 * 9 + 32 and dw.output_shape == (4, 4, 32)
    assert dw.macs == 4 * 4 * 32 * 9


def test_summary_json_schema():
    data = summary_of(SEED_1).to_json()
    for key in ("model", "input", "layers", "total_params", "trainable_params",
                "non_trainable_params", "macs"):
        assert key in data
    assert data["input"] == [28, 28, 1]
    assert data["total_params"] == 54_410
    assert data["macs"] == 26 * 26 * 32 * 9 + 5408 * 10
    for layer in data["layers"]:
        assert {"name", "op", "output_shape", "params", "macs"} <= set(layer)
        assert isinstance(layer["output_shape"], list)
    assert [layer["output_shape"] for layer in data["layers"]] == [[28, 28, 1], [26, 26, 32],
                                                                   [13, 13, 32], [5408], [10]]
    assert [layer["op"] for layer in data["layers"]] == ["input", "conv", "pool", "flatten",
                                                         "dense"]


def test_summary_table_text():
    from cnnc.render import print_summary

    out = io.StringIO()
    print_summary(summary_of(SEED_3), color=False, file=out)
    text = out.getvalue()
    assert "\x1b[" not in text
    assert "Total params: 421,642" in text
    assert "Trainable params: 421,642" in text
    assert "Non-trainable params: 0" in text
    assert "26x26x32" not in text and "28x28x32" in text and "7x7x64" in text and "3136" in text
    assert "conv 32 3x3 pad=same relu" in text


def test_summary_op_text_shows_every_pool_option_that_changes_something():
    s = summary_of("input 7x7x2\npool avg 3 stride=1 pad=1 ceil=true count_pad=true\n"
                   "pool avg 3 stride=2 pad=1\npool max 2\ngap keepdims=true\n")
    assert [r.description for r in s.rows[1:]] == [
        "pool avg 3x3 stride=1x1 pad=1 ceil=true count_pad=true",
        "pool avg 3x3 stride=2x2 pad=1",  # count_pad=false is the default: not shown
        "pool max 2x2",
        "pool global avg keepdims=true"]
    assert s.to_json()["layers"][1]["description"].endswith("count_pad=true")


def test_model_name_comes_from_the_file(tmp_path):
    path = tmp_path / "digits_net.cnn"
    path.write_text(SEED_1)
    assert cnnc.compile(path).summary().model == "digits_net"
    assert cnnc.compile(str(path)).summary().model == "digits_net"
    assert cnnc.compile(SEED_1).summary().model == "model"


def test_summary_of_a_faulty_model_raises_a_compile_error():
    model = cnnc.compile("input 8x8x1; conv 4 9")
    with pytest.raises(cnnc.CompileError) as info:
        model.summary()
    assert "larger than its input" in str(info.value)


def test_human_units():
    assert human(1_814_073_344) == "1.81 G"
    assert human(999) == "999"
    assert human_bytes(1023) == "1023 B"
    assert human_bytes(1 << 30) == "1.00 GiB"
