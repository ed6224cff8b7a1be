"""The Caffe portability rules (cnnc check --target caffe) checked against Caffe's own source.

Caffe cannot be installed where the tests run (no Debian 12 package, no wheel), so the reference
is what BVLC Caffe's source says, recorded here, never written by us:
- tests/data/caffe_layer_types.txt: every layer type Caffe registers (REGISTER_LAYER_CLASS and
  REGISTER_LAYER_CREATOR in src/caffe/layer_factory.cpp and src/caffe/layers/*.cpp), with the
  repository and commit in its header. The missing-op rule must flag exactly the cnnc ops whose
  Caffe form needs a type that is not there.
- Formulas cited from the source at that commit (transcribed below, not imported from cnnc):
  PoolingLayer::Reshape (output size, src/caffe/layers/pooling_layer.cpp), the average pooling
  divisor (Forward_cpu, same file), DeconvolutionLayer::compute_output_shape
  (src/caffe/layers/deconv_layer.cpp) and BatchNormLayer's running averages
  (src/caffe/layers/batch_norm_layer.cpp, Forward_cpu).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import cnnc
import cnnc.ops
from cnnc.analysis.portability import _MISSING, caffe_pool_out
from tests.test_portability import ROUNDED, fired

TYPES_FILE = Path(__file__).parent / "data" / "caffe_layer_types.txt"


def caffe_types() -> set[str]:
    lines = TYPES_FILE.read_text().splitlines()
    return {line.split("\t")[0] for line in lines if line and not line.startswith("#")}


# How each cnnc op (and activation) is written in Caffe: the layer types it takes.
CAFFE_FORM = {
    "input": ("Input",),
    "conv": ("Convolution",),
    "dwconv": ("Convolution",),  # group: C
    "conv_transpose": ("Deconvolution", "Crop"),  # Crop for uneven crops (rule uneven-padding)
    "dense": ("InnerProduct",),
    "pool": ("Pooling",),  # MAX or AVE; gap, gmp: global_pooling
    "batchnorm": ("BatchNorm", "Scale"),  # Scale (bias_term: true) for weight and bias
    "dropout": ("Dropout",),  # Caffe scales the kept values while training, as cnnc does
    "flatten": ("Flatten",),
    "add": ("Eltwise",),  # SUM
    "concat": ("Concat",),  # axis 1
    "split": ("Slice",),  # axis 1, slice_point
    "mul": ("Eltwise", "Scale", "Tile"),  # PROD of equal shapes; a C gate: Scale with two
    #                                       bottoms (the gate flattened); other broadcasts: Tile
    "layerscale": ("Scale",),  # one learned factor a channel
    "relu": ("ReLU",),
    "leaky_relu": ("ReLU",),  # negative_slope
    "relu6": ("Clip",),  # min: 0, max: 6
    "elu": ("ELU",),
    "sigmoid": ("Sigmoid",),
    "tanh": ("TanH",),
    "softmax": ("Softmax",),
    "silu": ("Swish",),  # beta: 1, the default
}
# The ops Caffe has no layer for (portability flags them), with the type names Caffe forks and
# later frameworks give such a layer, none of which BVLC Caffe registers.
ABSENT = {
    "gelu": ("GELU",),
    "hardswish": ("HardSwish", "HSwish"),
    "hardsigmoid": ("HardSigmoid", "HSigmoid"),
    "layernorm": ("LayerNorm", "LayerNormalization"),  # MVN is not it: see portability.py
    "stochastic_depth": ("StochasticDepth", "DropPath"),
    "shuffle": ("ShuffleChannel", "ChannelShuffle", "Permute"),
    "upsample": ("Upsample", "Interp", "Resize", "Upsampling"),
}
# A program using each op, to see the rule fire (or not) through cnnc check's own path.
PROGRAMS = {
    "gelu": "input 8x8x2\nconv 4 3 gelu",
    "hardswish": "input 8x8x2\nhardswish",
    "hardsigmoid": "input 8x8x2\nconv 4 1 hardsigmoid",
    "layernorm": "input 8x8x2\nlayernorm",
    "stochastic_depth": "input 8x8x2\nx = here\nconv 2 3 pad=1\nstochastic_depth 0.1\nadd x",
    "shuffle": "input 8x8x4\nshuffle 2",
    "upsample": "input 8x8x2\nupsample 2",
    "silu": "input 8x8x2\nconv 4 3 silu",
    "relu6": "input 8x8x2\nrelu6",
    "layerscale": "input 8x8x2\nlayerscale",
    "mul": "input 8x8x4\ns = here\ngap keepdims=true\nconv 4 1 sigmoid\nmul s",
    "conv_transpose": "input 8x8x2\nconv_transpose 2 4 stride=2 pad=1",
}


def test_the_type_list_names_its_source():
    header = TYPES_FILE.read_text().splitlines()[:4]
    assert "github.com/BVLC/caffe" in header[1] and "9b891540183ddc834a02b2bd81b31afae71b2153" \
        in header[2]
    types = caffe_types()
    assert len(types) == 61 and {"Convolution", "Pooling", "Swish", "Clip"} <= types


def test_every_cnnc_op_is_mapped_to_caffe_types_or_flagged():
    ops = {s.name for s in cnnc.ops.schemas()}  # every built-in op and activation
    assert ops == CAFFE_FORM.keys() | ABSENT.keys(), "a new op needs its Caffe form here"
    assert set(ABSENT) == _MISSING["caffe"]
    types = caffe_types()
    lowered = {t.lower() for t in types}
    for op, needs in CAFFE_FORM.items():
        assert set(needs) <= types, (op, set(needs) - types)
    for op, names in ABSENT.items():
        assert not {n.lower() for n in names} & lowered, op


@pytest.mark.parametrize("op", sorted(PROGRAMS))
def test_missing_op_fires_exactly_for_the_flagged_ops(op):
    found = fired(PROGRAMS[op], ("caffe",))
    assert (("missing-op", "caffe") in found) == (op in ABSENT)
    if op in ABSENT:
        assert f"`{op}`" in found[("missing-op", "caffe")][0][1].message


# -- pooling: size and divisor ----------------------------------------------------------------


def caffe_pooled(size, kernel, stride, pad, ceil=True):
    """PoolingLayer::Reshape: ceil (round_mode CEIL, the default) or floor of
    (size + 2 pad - kernel) / stride, plus one; with padding, one less if the last window would
    start at or past size + pad."""
    rounded = math.ceil if ceil else math.floor
    out = int(rounded((size + 2 * pad - kernel) / stride)) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool_grid(ceil_flags=(False, True)):
    for n in range(1, 13):
        for k in range(1, 5):
            for s in range(1, 5):
                for p in range(0, k):  # Caffe: CHECK_LT(pad, kernel)
                    for ceil in ceil_flags:
                        yield n, k, s, p, ceil


def _compile(text):
    model = cnnc.compile(text)
    return model if model.ok else None


def test_ceil_rounding_fires_exactly_where_caffe_s_size_differs():
    seen = {"fired": 0, "quiet": 0, "no FLOOR": 0}
    for n, k, s, p, ceil in pool_grid():
        text = f"input {n}x{n}x1\npool max {k} stride={s} pad={p}" + (" ceil=true" * ceil)
        model = _compile(text)
        if model is None:
            continue
        ours = model.graph.layers()[-1].shape[0]
        caffe = caffe_pooled(n, k, s, p)
        assert caffe_pool_out(n, k, s, p) == caffe
        found = fired(text, ("caffe",)).get(("ceil-rounding", "caffe"))
        assert bool(found) == (caffe != ours), (text, caffe, ours)
        if found:
            message, hint = found[0][1].message, found[0][1].hint
            assert f"give {caffe}x{caffe} here, not {ours}x{ours}" in message
            floor = caffe_pooled(n, k, s, p, ceil=False)
            assert (hint is not None and "round_mode: FLOOR" in hint) == (floor == ours)
            seen["no FLOOR" if hint is None else "fired"] += 1
        else:
            seen["quiet"] += 1
    assert seen["fired"] > 50 and seen["quiet"] > 50
    # Caffe's CEIL without padding keeps a last window that starts past the input (kernel <
    # stride): 6 wide, 2x2 windows 3 apart give 3 columns there, where cnnc's ceil gives 2
    found = fired("input 6x6x1\npool max 2 stride=3 ceil=true", ("caffe",))
    assert "give 3x3 here, not 2x2" in found[("ceil-rounding", "caffe")][0][1].message


def caffe_divisors(size, kernel, stride, pad, out):
    """Forward_cpu, AVE: each window's pool_size along an axis is taken from its extent clipped
    to the padded input (hend = min(hstart + kernel, size + pad)), before clipping to the
    input."""
    divisors = []
    for i in range(out):
        start = i * stride - pad
        end = min(start + kernel, size + pad)
        divisors.append(end - start)
    return tuple(divisors)


def test_count_pad_against_caffe_s_average_divisor():
    checked = 0
    for n, k, s, p, _ in pool_grid(ceil_flags=(True,)):
        texts = {cp: f"input {n}x{n}x1\npool avg {k} stride={s} pad={p} ceil=true "
                     f"count_pad={'true' if cp else 'false'}" for cp in (False, True)}
        models = {cp: _compile(t) for cp, t in texts.items()}
        if models[True] is None:
            continue
        layer = models[True].graph.layers()[-1]
        if layer.shape[0] != caffe_pooled(n, k, s, p):
            continue  # a different size: the ceil-rounding rule's case
        caffe = caffe_divisors(n, k, s, p, layer.shape[0])
        assert layer.settled["divisor"][0] == caffe, texts[True]  # count_pad=true is Caffe's
        ours = models[False].graph.layers()[-1].settled["divisor"][0]
        found = ("count-pad", "caffe") in fired(texts[False], ("caffe",))
        assert found == (ours != caffe) == (p > 0), texts[False]
        assert ("count-pad", "caffe") not in fired(texts[True], ("caffe",))
        checked += 1
    assert checked > 100


# -- deconvolution ----------------------------------------------------------------------------


def caffe_deconv_out(size, kernel, stride, pad, dilation=1):
    """DeconvolutionLayer::compute_output_shape: stride * (size - 1) + kernel extent - 2 pad."""
    return stride * (size - 1) + dilation * (kernel - 1) + 1 - 2 * pad


def test_conv_transpose_against_caffe_s_deconvolution():
    for pad in ("valid", "1", "2", "0x1x0x1", "1x0x1x0", "1 output_padding=1", "same"):
        for k, s in ((3, 2), (4, 2), (3, 1), (5, 3)):
            text = f"input 7x7x2\nconv_transpose 2 {k} stride={s} pad={pad}"
            model = _compile(text)
            if model is None:
                continue
            layer = model.graph.layers()[-1]
            t, b, left, right = layer.settled["pads"]
            found = fired(text, ("caffe",)).get(("uneven-padding", "caffe"))
            if not found:  # symmetric crops, no output padding: Caffe's pad gives the size
                assert t == b and layer.shape[0] == caffe_deconv_out(7, k, s, t), text
            else:
                assert t != b or layer.settled["output_pads"] != (0, 0), text
                hint = found[0][1].hint
                if hint:  # Deconvolution with pad 0, then a crop that fits in it
                    assert f"offset {t}, {left}" in hint
                    assert t + layer.shape[0] <= caffe_deconv_out(7, k, s, 0), text


def test_the_deconvolution_crop_fix_reproduces_cnnc():
    torch = pytest.importorskip("torch")
    from tests.test_portability import reference

    text = "input 5x6x2\nconv_transpose 3 3 stride=2 pad=1 output_padding=1 bias=false"
    hint = fired(text, ("caffe",))[("uneven-padding", "caffe")][0][1].hint
    assert hint == "Deconvolution with pad: 0, then a Crop layer (offset 1, 1) to 10x12"
    rng = np.random.default_rng(30)
    x, w = rng.normal(size=(2, 2, 5, 6)), rng.normal(size=(2, 3, 3, 3))
    want = reference(text, x, {"conv_transpose_1.weight": w})
    full = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w),
                                                stride=2).numpy()  # Caffe's pad: 0
    assert full.shape[2:] == (caffe_deconv_out(5, 3, 2, 0), caffe_deconv_out(6, 3, 2, 0))
    np.testing.assert_allclose(full[:, :, 1:11, 1:13], want, **ROUNDED)


# -- batch norm -------------------------------------------------------------------------------


def test_caffe_batchnorm_running_mean_is_normalised_by_its_weights():
    """BatchNormLayer::Forward_cpu keeps sums: blobs[0] = maf * blobs[0] + batch mean and a
    scale factor blobs[2] = maf * blobs[2] + 1 (all three blobs start at 0); the running mean
    it normalises with is blobs[0] / blobs[2]. cnnc (PyTorch) averages from 0 instead."""
    text = "input 4x4x2\nbn"
    finding = fired(text, ("caffe",))[("batchnorm-conventions", "caffe")][0][1]
    assert "moving_average_fraction: 0.9" in finding.hint and "Scale" in finding.hint
    session = cnnc.compile(text).to_backend("numpy", dtype="float64", loss="mse")
    rng = np.random.default_rng(31)
    maf, blob0, blob2 = 0.9, np.zeros(2), 0.0
    for _ in range(3):
        x = rng.normal(2.0, 1.0, size=(8, 2, 4, 4))
        session.forward(x, training=True)
        blob0, blob2 = maf * blob0 + x.mean(axis=(0, 2, 3)), maf * blob2 + 1
    caffe, ours = blob0 / blob2, session.get_weights()["batchnorm_1.running_mean"]
    # the same decayed sum (momentum = 1 - moving_average_fraction), normalised differently:
    # cnnc multiplies it by 1 - maf, Caffe divides it by the sum of the weights, 1 + maf + maf^2
    np.testing.assert_allclose(ours, (1 - maf) * blob0, **ROUNDED)
    assert np.all(np.abs(caffe - 2.0) < 0.5) and np.all(caffe - ours > 1.0)
