"""The ops modern ImageNet models need -- `mul` (squeeze-and-excitation), hardswish,
hardsigmoid, layernorm, layerscale, stochastic_depth -- in the language: shapes and parameter
counts against PyTorch's own modules and broadcasting, the summary's figures, initial values,
and stochastic depth's behaviour on both backends."""

from __future__ import annotations

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn

import cnnc
from cnnc.backends.torch.lowering import lower


def compile_ok(text: str):
    model = cnnc.compile(text)
    assert model.ok, [str(d) for d in model.diagnostics]
    return model


def errors(text: str) -> list:
    return [d for d in cnnc.compile(text).diagnostics if d.severity == "error"]


# -- mul: cnnc's broadcasting is PyTorch's, on random shapes -------------------------------------


def mul_case(i: int):
    """Two operands of random HxWxC (each axis the full size or 1, sometimes a wrong size),
    or a flat gate C."""
    rng = random.Random(i)
    full = (rng.randint(2, 6), rng.randint(2, 6), rng.randint(2, 6))

    def operand():
        if rng.random() < 0.2:
            return (rng.choice([full[2], full[2] + 1]),)  # a flat gate, sometimes wrong
        return tuple(rng.choice([n, n, 1, n + 1]) if rng.random() < 0.5 else n for n in full)

    return operand(), operand()


def _torch_operand(shape):
    """N x C x H x W, or a flat gate N x C viewed as N x C x 1 x 1 (cnnc's rule for gates)."""
    if len(shape) == 1:
        return torch.zeros(2, shape[0], 1, 1)
    h, w, c = shape
    return torch.zeros(2, c, h, w)


@pytest.mark.parametrize("i", range(60))
def test_mul_broadcasts_exactly_as_torch(i):
    a, b = mul_case(i)

    def text(shape):
        return "x".join(map(str, shape))

    # two inputs from one: an image `a`, and the operand `b` made from it by layers that keep
    # every size apart from the one we want (pooling to 1, or a 1x1 conv for channels)
    src = tuple(max(x, y) for x, y in zip(a if len(a) == 3 else (1, 1, *a),
                                          b if len(b) == 3 else (1, 1, *b)))
    lines = [f"input {text(src)}"]
    names = []
    for n, shape in enumerate((a, b)):
        lines.append("from input")
        if len(shape) == 1:
            lines.append(f"gap; dense {shape[0]}")
        else:
            h, w, c = shape
            if (h, w) != src[:2]:
                lines.append(f"pool avg {src[0] - h + 1}x{src[1] - w + 1} stride=1")
            lines.append(f"conv {c} 1x1")
        lines.append(f"t{n} = here")
        names.append(f"t{n}")
    lines.append("from t0; mul t1")
    model = cnnc.compile("\n".join(lines))
    try:
        expected = torch.broadcast_shapes(_torch_operand(a).shape, _torch_operand(b).shape)
    except RuntimeError:
        expected = None
    if expected is None:
        codes = [d.code for d in model.diagnostics if d.severity == "error"]
        assert codes == ["merge-shape"], (a, b, [str(d) for d in model.diagnostics])
        return
    assert model.ok, (a, b, [str(d) for d in model.diagnostics])
    n, c, h, w = expected
    out = model.graph[model.graph.output].shape
    assert out == ((c,) if len(a) == len(b) == 1 else (h, w, c)), (a, b)
    tensors = [_torch_operand(s) for s in (a, b)]
    if len(a) == len(b) == 1:
        tensors = [t.flatten(1) for t in tensors]
    # and the torch backend's Mul gives that shape
    y = lower(model.graph).layer(model.graph.output)(*tensors)
    assert tuple(y.shape[1:]) == ((c,) if len(out) == 1 else (c, h, w))


def test_mul_cases_cover_gates_and_mismatches():
    cases = [mul_case(i) for i in range(60)]
    ok = 0
    for a, b in cases:
        try:
            torch.broadcast_shapes(_torch_operand(a).shape, _torch_operand(b).shape)
            ok += 1
        except RuntimeError:
            pass
    assert 15 <= ok <= 50
    assert any(len(a) == 1 or len(b) == 1 for a, b in cases)
    assert any(a[:2] == (1, 1) or b[:2] == (1, 1) for a, b in cases)


def test_squeeze_and_excitation_in_a_few_lines():
    model = compile_ok("""\
input 14x14x32
block se(c, squeeze):
    s = here
    gap keepdims=true; conv squeeze 1x1 relu; conv c 1x1 hardsigmoid
    mul s
se(32, 8)
""")
    s = model.summary()
    rows = {r.name: r for r in s.rows}
    assert rows["se_1.mul_1"].output_shape == (14, 14, 32)
    assert rows["se_1.mul_1"].params == rows["se_1.mul_1"].macs == 0
    # torchvision's SqueezeExcitation(32, 8): fc1 and fc2 are 1x1 convolutions with bias
    ref = nn.Sequential(nn.Conv2d(32, 8, 1), nn.Conv2d(8, 32, 1))
    assert s.trainable_params == sum(p.numel() for p in ref.parameters())
    assert s.macs == 32 * 8 + 8 * 32  # the two 1x1 convs on a 1x1 map; the multiply is free
    assert [d.code for d in model.diagnostics] == []  # no "sigmoid is usually last" for gates


def test_mul_names_its_operands_in_errors():
    (e,) = errors("input 8x8x16\ns = here\ngap keepdims=true\nconv 8 1x1 sigmoid\nmul s\n")
    assert e.code == "merge-shape"
    assert "1x1x8 and 8x8x16" in e.message and "channels differ (8 and 16)" in e.message
    assert any("`s` is 8x8x16" in n for n in e.notes)
    assert "16 outputs" in e.hint


def test_mul_is_a_keyword():
    (e,) = errors("input 4x4x2\nmul = here\n")
    assert e.code == "duplicate-name"


# -- hardswish and hardsigmoid -------------------------------------------------------------------


@pytest.mark.parametrize("act,module", [("hardswish", nn.Hardswish),
                                        ("hardsigmoid", nn.Hardsigmoid)])
def test_hard_activations_standalone_and_fused(act, module):
    """Fused and standalone, the torch backend computes what PyTorch's own module does."""
    model = compile_ok(f"input 6x6x3\nconv 4 3x3 {act}\n{act}\nflatten\ndense 5 {act}\n")
    net = model.to_backend("torch", device="cpu").module
    assert "activation=" + act in repr(net.layer("conv_1").cnnc_activation and net)
    x = torch.randn(2, 3, 6, 6)
    f = module()
    conv, dense = net.layer("conv_1"), net.layer("dense_1")
    expected = f(dense(f(f(conv(x))).flatten(1)))
    torch.testing.assert_close(net(x), expected, rtol=0, atol=0)
    assert model.summary().rows[1].description == f"conv 4 3x3 {act}"
    assert model.summary().rows[2].params == sum(p.numel() for p in f.parameters()) == 0


# -- layernorm -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7, 5, 12), (9,)])
def test_layernorm_counts_and_shape_match_torch(shape):
    text = "input " + "x".join(map(str, shape)) + "\nlayernorm eps=1e-6\n"
    model = compile_ok(text)
    (row,) = [r for r in model.summary().rows if r.op.startswith("layernorm")]
    ref = nn.LayerNorm(shape[-1], eps=1e-6)
    assert row.params == sum(p.numel() for p in ref.parameters())
    assert row.output_shape == shape and row.macs == 0
    net = lower(model.graph)
    module = net.layer("layernorm_1")
    assert isinstance(module, nn.LayerNorm) and module.eps == 1e-6
    assert module.normalized_shape == (shape[-1],)
    assert [k.split(".")[-1] for k in net.state_dict()] == ["weight", "bias"]  # torch's names


def test_layernorm_default_eps_and_alias():
    model = compile_ok("input 4x4x3\nln\nlayernorm eps=1e-6\n")
    first, second = model.graph["layernorm_1"], model.graph["layernorm_2"]
    assert first.attrs["eps"] == 1e-5  # nn.LayerNorm's default
    assert second.attrs["eps"] == 1e-6
    assert [r.description for r in model.summary().rows[1:]] == ["layernorm", "layernorm eps=1e-06"]


# -- layerscale ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_layerscale_starts_at_its_stated_value(backend):
    model = compile_ok("input 4x4x6\nlayerscale 1e-6\nlayerscale\nlayerscale init=0.5\n"
                       "gap\nlayerscale 2\n")
    rows = model.summary().rows
    assert [r.params for r in rows[1:]] == [6, 6, 6, 0, 6]  # torchvision's (C, 1, 1): C each
    assert sum(r.macs for r in rows) == 0
    kw = {"device": "cpu"} if backend == "torch" else {}
    w = model.to_backend(backend, **kw).get_weights()
    assert list(w) == [f"layerscale_{i}.scale" for i in range(1, 5)]
    for key, value in zip(w, (1e-6, 1e-6, 0.5, 2.0)):
        np.testing.assert_array_equal(w[key], np.full(6, value, np.float32))


# -- stochastic depth ----------------------------------------------------------------------------

RESIDUAL = """\
input 4x4x3
x = here
conv 3 3x3 pad=1
stochastic_depth 0.5
add x
flatten
"""


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_stochastic_depth_is_the_identity_in_evaluation(backend):
    model = compile_ok(RESIDUAL)
    kw = {"device": "cpu"} if backend == "torch" else {}
    session = model.to_backend(backend, **kw)
    plain = compile_ok(RESIDUAL.replace("stochastic_depth 0.5\n", ""))
    other = plain.to_backend(backend, **kw)
    other.set_weights(session.get_weights())
    x = np.random.default_rng(0).normal(0, 1, (5, 4, 4, 3)).astype(np.float32)
    np.testing.assert_array_equal(session.predict(x), other.predict(x))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_stochastic_depth_drops_each_example_s_branch_in_training(backend):
    """torchvision's "row" mode: per example, the branch is all dropped or all kept (scaled
    by 1/(1-p)), so output - input is 0 or 2 x the branch for every example."""
    model = compile_ok(RESIDUAL)
    kw = {"device": "cpu"} if backend == "torch" else {}
    session = model.to_backend(backend, **kw)
    branch_only = compile_ok(RESIDUAL.replace("stochastic_depth 0.5\nadd x\n", ""))
    branch = branch_only.to_backend(backend, **kw)
    branch.set_weights(session.get_weights())
    n = 400
    x = np.random.default_rng(0).normal(0, 1, (n, 4, 4, 3)).astype(np.float32)
    b = branch.predict(x)
    if backend == "torch":
        torch.manual_seed(0)
        net = session.module.train()
        with torch.no_grad():
            y = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    else:
        y = session.forward(x.transpose(0, 3, 1, 2).copy(), training=True)
    xs = x.transpose(0, 3, 1, 2).reshape(n, -1)
    delta = y - xs
    # A dropped example is x + 0, x exactly. A kept one is x + 2b rounded once, then x taken
    # away: measured at most 0.86 eps of |x| + |2b| (9.5e-7) over 5 seeds on both backends.
    dropped = (delta == 0).all(axis=1)
    scale = (np.abs(xs) + np.abs(2 * b)).max(axis=1)
    kept = np.abs(delta - 2 * b).max(axis=1) <= 8 * np.finfo(np.float32).eps * scale
    assert (dropped ^ kept).all()
    assert 0.4 < dropped.mean() < 0.6


def test_stochastic_depth_options():
    model = compile_ok("input 8\ndroppath 0.2 mode=batch\nstochastic_depth 0.1\n")
    rows = model.summary().rows
    assert [r.description for r in rows[1:]] == ["stochastic_depth 0.2 mode=batch",
                                             "stochastic_depth 0.1"]
    assert all(r.params == 0 for r in rows)
    net = model.to_backend("torch", device="cpu").module
    assert (net.layer("stochastic_depth_1").p, net.layer("stochastic_depth_1").mode) == \
        (0.2, "batch")


# -- end to end: the command line, both backends -------------------------------------------------

TINY_MODERN = """\
input 8x8x1
conv 16 3x3 pad=1 hardswish
s = here
gap keepdims=true; conv 4 1x1 relu; conv 16 1x1 hardsigmoid
mul s
x = here
dwconv 3x3 pad=1; layernorm eps=1e-6; conv 32 1x1 gelu; conv 16 1x1; layerscale 0.1
stochastic_depth 0.1
add x
gap; ln
dense 10 softmax

train:
    data digits
    optimizer adam lr=0.01
    epochs 3
    batch 32
    seed 0
"""


@pytest.mark.slow  # some 10 s of CPU: a training run and two evaluations
def test_every_new_op_trains_on_digits_and_its_weights_cross_backends(tmp_path):
    """`cnnc train` (numpy backend) on the embedded digits, then `cnnc eval` of those weights on
    both backends: the model learns, and the torch backend reads the layer norm, layer scale and
    SE weights as the NumPy one wrote them."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    model = tmp_path / "tiny_modern.cnn"
    model.write_text(TINY_MODERN)
    env = {**os.environ, "PYTHONPATH": str(root), "NO_COLOR": "1"}

    def cnnc_cli(*args):
        proc = subprocess.run([sys.executable, "-m", "cnnc", *map(str, args)], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    cnnc_cli("train", model, "--backend", "numpy", "--out", tmp_path / "run")
    weights = tmp_path / "run" / "last.safetensors"
    results = {b: json.loads(cnnc_cli("eval", model, "--weights", weights, "--backend", b,
                                      "--json")) for b in ("numpy", "torch")}
    # 3 epochs from scratch reach 0.65 (measured); chance is 0.1
    assert results["numpy"]["accuracy"] > 0.4
    images = results["numpy"]["images"]
    assert abs(results["torch"]["accuracy"] - results["numpy"]["accuracy"]) * images <= 1  # a tie
    # the two backends' float32 test losses differed by 2e-8 relative when measured
    assert results["torch"]["loss"] == pytest.approx(results["numpy"]["loss"], rel=1e-5)
