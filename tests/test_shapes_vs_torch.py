"""cnnc's shape inference and parameter counts against PyTorch's own layers on real tensors.

Hundreds of random (input size, kernel, stride, padding, dilation, groups, ceil, channels)
combinations, drawn from a seeded generator so a failure names its case and reproduces. For
each, the output shape cnnc infers must be the shape nn.Conv2d / nn.MaxPool2d / nn.AvgPool2d
produce (asymmetric pads through F.pad, symmetric ones through the layer's own `padding`, so
PyTorch's ceil_mode rule is the one tested), and a combination PyTorch refuses must be a cnnc
error. 'same' is checked against TensorFlow's formula, written out here independently.
"""

from __future__ import annotations

import math
import random

import pytest
from optional_torch import torch  # a stand-in that skips when torch is absent

import cnnc

nn = torch.nn
F = torch.nn.functional

N_CONV = 250
N_POOL = 200
N_MODELS = 20


def tf_same(m: int, k: int, s: int, d: int = 1) -> tuple[int, int, int]:
    """TensorFlow's 'same': out = ceil(m / s); the padding's odd pixel goes after."""
    out = math.ceil(m / s)
    total = max((out - 1) * s + d * (k - 1) + 1 - m, 0)
    return out, total // 2, total - total // 2


def torch_shape(layer, x: "torch.Tensor", pads=None):
    """The HxWxC PyTorch produces, or None when PyTorch refuses the combination."""
    try:
        if pads is not None:
            top, bottom, left, right = pads
            x = F.pad(x, (left, right, top, bottom))
        with torch.no_grad():
            y = layer(x)
    except RuntimeError:
        return None
    n, c, h, w = y.shape
    return (h, w, c)


def compile_ok(text: str):
    model = cnnc.compile(text)
    assert all(d.code != "syntax" for d in model.diagnostics), model.diagnostics
    return model


def pad_case(rng: random.Random, kh: int, kw: int, *, pool: bool):
    """(pad as written, pads (t, b, l, r) or 'same' or None, native padding or None)."""
    r = rng.random()
    if r < 0.2:
        return "valid", (0, 0, 0, 0), (0, 0)
    if r < 0.4:
        return "same", "same", None
    limit_h, limit_w = (kh // 2 + 1, kw // 2 + 1) if pool else (4, 4)
    if r < 0.6:
        p = rng.randint(0, max(limit_h, limit_w))
        return str(p), (p, p, p, p), (p, p)
    if r < 0.75:
        ph, pw = rng.randint(0, limit_h), rng.randint(0, limit_w)
        return f"{ph}x{pw}", (ph, ph, pw, pw), (ph, pw)
    t, b = rng.randint(0, limit_h), rng.randint(0, limit_h)
    left, right = rng.randint(0, limit_w), rng.randint(0, limit_w)
    return f"{t}x{b}x{left}x{right}", (t, b, left, right), None


# ---------------------------------------------------------------------------------------------
# conv


def conv_case(i: int):
    rng = random.Random(1000 + i)
    h, w = rng.randint(1, 20), rng.randint(1, 20)
    cin = rng.choice([1, 2, 3, 4, 6, 8])
    kh, kw = rng.randint(1, 7), rng.choice([None, rng.randint(1, 7)])
    kw = kw or kh
    sh, sw = rng.choice([(1, 1), (2, 2), (rng.randint(1, 4), rng.randint(1, 4))])
    dh, dw = rng.choice([(1, 1), (1, 1), (2, 2), (rng.randint(1, 3), rng.randint(1, 3))])
    groups = rng.choice([1, 1, cin] + [g for g in (2, 3, 4) if rng.random() < 0.5])
    filters = groups * rng.randint(1, 4) if rng.random() < 0.9 else rng.randint(1, 9)
    bias = rng.random() < 0.7
    pad_text, pads, native = pad_case(rng, kh, kw, pool=False)
    return dict(h=h, w=w, cin=cin, kh=kh, kw=kw, sh=sh, sw=sw, dh=dh, dw=dw, groups=groups,
                filters=filters, bias=bias, pad_text=pad_text, pads=pads, native=native)


@pytest.mark.parametrize("i", range(N_CONV))
def test_conv_shape_and_params_match_torch(i):
    c = conv_case(i)
    text = (f"input {c['h']}x{c['w']}x{c['cin']}\n"
            f"conv {c['filters']} {c['kh']}x{c['kw']} stride={c['sh']}x{c['sw']} "
            f"pad={c['pad_text']} dilation={c['dh']}x{c['dw']} groups={c['groups']} "
            f"bias={'true' if c['bias'] else 'false'}")
    model = compile_ok(text)

    pads = c["pads"]
    if pads == "same":
        oh, t, b = tf_same(c["h"], c["kh"], c["sh"], c["dh"])
        ow, left, right = tf_same(c["w"], c["kw"], c["sw"], c["dw"])
        pads = (t, b, left, right)
    try:
        layer = nn.Conv2d(c["cin"], c["filters"], (c["kh"], c["kw"]), (c["sh"], c["sw"]),
                          padding=c["native"] or 0, dilation=(c["dh"], c["dw"]),
                          groups=c["groups"], bias=c["bias"])
    except ValueError:  # PyTorch refuses groups that do not divide the channels
        assert not model.ok, text
        assert {d.code for d in model.errors} == {"groups"}, model.diagnostics
        return
    x = torch.zeros(1, c["cin"], c["h"], c["w"])
    expected = torch_shape(layer, x, None if c["native"] else pads)
    if expected is None:
        assert not model.ok, f"PyTorch refuses this, cnnc accepts it:\n{text}"
        assert {d.code for d in model.errors} == {"kernel-too-large"}, model.diagnostics
        return
    assert model.ok, f"PyTorch accepts this (giving {expected}), cnnc refuses it:\n{text}\n" \
        f"{model.diagnostics}"
    assert model.output_shape == expected, text
    if c["pads"] == "same":
        assert expected[:2] == (math.ceil(c["h"] / c["sh"]), math.ceil(c["w"] / c["sw"]))
        assert model.graph["conv_1"].settled["pads"] == pads, "'same' must split as TensorFlow"
    summary = model.summary()
    assert summary.total_params == sum(p.numel() for p in layer.parameters()), text
    assert summary.non_trainable_params == 0
    # MACs: every output value is a dot product over the kernel window of its group
    macs = expected[0] * expected[1] * expected[2] * c["kh"] * c["kw"] * (c["cin"] // c["groups"])
    assert summary.macs == macs


def test_conv_cases_cover_the_interesting_corners():
    """The random cases exercise every kind of padding, rejection, and groups."""
    cases = [conv_case(i) for i in range(N_CONV)]
    assert sum(c["pads"] == "same" and (c["sh"], c["sw"]) != (1, 1) for c in cases) >= 20
    assert sum(c["native"] is None and c["pads"] != "same" for c in cases) >= 30  # asymmetric
    assert sum(c["groups"] > 1 for c in cases) >= 30
    assert sum(c["filters"] % c["groups"] != 0 or c["cin"] % c["groups"] != 0
               for c in cases) >= 10
    rejected = 0
    for c in cases:
        eff_h = c["dh"] * (c["kh"] - 1) + 1
        if c["pads"] != "same" and eff_h > c["h"] + c["pads"][0] + c["pads"][1]:
            rejected += 1
    assert rejected >= 20


@pytest.mark.parametrize("m,k,s,d", [(224, 7, 2, 1), (5, 2, 2, 1), (28, 3, 1, 1), (7, 3, 2, 2),
                                     (1, 5, 3, 1), (10, 4, 3, 1), (13, 1, 4, 1), (6, 6, 6, 1)])
def test_same_padding_is_tensorflows(m, k, s, d):
    out, before, after = tf_same(m, k, s, d)
    model = compile_ok(f"input {m}x{m}x1; conv 1 {k} stride={s} dilation={d} pad=same")
    assert model.ok
    assert model.output_shape == (out, out, 1)
    assert model.graph["conv_1"].settled["pads"] == (before, after, before, after)
    assert after - before in (0, 1)


# ---------------------------------------------------------------------------------------------
# pooling


def pool_case(i: int):
    rng = random.Random(5000 + i)
    h, w = rng.randint(1, 20), rng.randint(1, 20)
    c = rng.randint(1, 4)
    kind = rng.choice(["max", "avg"])
    kh = rng.randint(1, 5)
    kw = rng.choice([kh, rng.randint(1, 5)])
    stride = rng.choice([None, None, (rng.randint(1, 4), rng.randint(1, 4)), (1, 1)])
    pad_text, pads, native = pad_case(rng, kh, kw, pool=True)
    ceil = rng.random() < 0.4 and native is not None  # ceil only where PyTorch can say
    return dict(h=h, w=w, c=c, kind=kind, kh=kh, kw=kw, stride=stride, pad_text=pad_text,
                pads=pads, native=native, ceil=ceil)


@pytest.mark.parametrize("i", range(N_POOL))
def test_pool_shape_matches_torch(i):
    p = pool_case(i)
    stride = p["stride"] or (p["kh"], p["kw"])  # Keras: the stride defaults to the size
    text = (f"input {p['h']}x{p['w']}x{p['c']}\npool {p['kind']} {p['kh']}x{p['kw']}"
            + (f" stride={stride[0]}x{stride[1]}" if p["stride"] else "")
            + f" pad={p['pad_text']}" + (" ceil=true" if p["ceil"] else ""))
    model = compile_ok(text)

    pads = p["pads"]
    if pads == "same":
        _, t, b = tf_same(p["h"], p["kh"], stride[0])
        _, left, right = tf_same(p["w"], p["kw"], stride[1])
        pads = (t, b, left, right)
    cls = nn.MaxPool2d if p["kind"] == "max" else nn.AvgPool2d
    layer = cls((p["kh"], p["kw"]), stride, padding=p["native"] or 0, ceil_mode=p["ceil"])
    x = torch.zeros(1, p["c"], p["h"], p["w"])
    expected = torch_shape(layer, x, None if p["native"] else pads)
    if p["native"] is None and (2 * max(pads[:2]) > p["kh"] or 2 * max(pads[2:]) > p["kw"]):
        expected = None  # F.pad lets this through, but PyTorch's own padding would refuse it
    if expected is None:
        assert not model.ok, f"PyTorch refuses this, cnnc accepts it:\n{text}"
        assert {d.code for d in model.errors} <= {"kernel-too-large", "bad-value"}
        return
    assert model.ok, f"PyTorch accepts this (giving {expected}), cnnc refuses it:\n{text}\n" \
        f"{model.diagnostics}"
    assert model.output_shape == expected, text
    assert model.summary().total_params == 0


def test_pool_cases_cover_the_interesting_corners():
    cases = [pool_case(i) for i in range(N_POOL)]
    assert sum(c["ceil"] for c in cases) >= 30
    assert sum(c["ceil"] and c["pads"] != (0, 0, 0, 0) for c in cases) >= 10
    assert sum(c["native"] is None and c["pads"] != "same" for c in cases) >= 30
    assert sum(c["pads"] == "same" for c in cases) >= 30
    too_much_pad = [c for c in cases if c["native"] is not None
                    and (2 * c["native"][0] > c["kh"] or 2 * c["native"][1] > c["kw"])]
    assert len(too_much_pad) >= 10


@pytest.mark.parametrize("h,k,s,p", [(112, 3, 2, 0), (6, 2, 2, 1), (7, 3, 2, 1), (5, 2, 3, 1),
                                     (13, 3, 2, 0), (55, 3, 2, 0), (2, 2, 2, 1), (3, 2, 2, 1)])
def test_ceil_mode_drops_a_window_that_starts_in_the_padding(h, k, s, p):
    """PyTorch's rule: with ceil_mode the last window must start inside the input or its
    leading padding. The cases include those where plain ceil would be one too many."""
    layer = nn.MaxPool2d(k, s, padding=p, ceil_mode=True)
    expected = torch_shape(layer, torch.zeros(1, 1, h, h))
    model = compile_ok(f"input {h}x{h}x1; pool {k} stride={s} pad={p} ceil=true")
    assert model.ok and model.output_shape == expected


def test_pool_pad_more_than_half_the_window_is_refused_like_torch():
    with pytest.raises(RuntimeError):
        nn.MaxPool2d(2, 2, padding=2)(torch.zeros(1, 1, 8, 8))
    model = cnnc.compile("input 8x8x1; pool 2 pad=2")
    assert [d.code for d in model.errors] == ["bad-value"]
    assert "half" in model.errors[0].message


def test_global_pooling_matches_adaptive_pooling():
    x = torch.zeros(1, 7, 9, 5)
    y = torch.flatten(nn.AdaptiveAvgPool2d(1)(x), 1)
    assert cnnc.compile("input 9x5x7; gap").output_shape == tuple(y.shape[1:])
    assert cnnc.compile("input 9x5x7; pool global max").output_shape == (7,)
    assert cnnc.compile("input 9x5x7; pool global avg keepdims=true").output_shape == (1, 1, 7)


# ---------------------------------------------------------------------------------------------
# dense, batchnorm, and whole models


@pytest.mark.parametrize("n_in,n_out,bias", [(1, 1, True), (5408, 10, True), (784, 256, False),
                                             (3, 1000, True)])
def test_dense_params_match_torch(n_in, n_out, bias):
    layer = nn.Linear(n_in, n_out, bias=bias)
    model = compile_ok(f"input {n_in}; dense {n_out} bias={str(bias).lower()}")
    s = model.summary()
    assert s.total_params == sum(p.numel() for p in layer.parameters())
    assert s.macs == n_in * n_out


@pytest.mark.parametrize("shape", ["8x8x3", "1x1x64", "5x7x16", "100"])
def test_batchnorm_counts_match_torch(shape):
    dims = [int(d) for d in shape.split("x")]
    channels = dims[-1]
    layer = nn.BatchNorm2d(channels) if len(dims) == 3 else nn.BatchNorm1d(channels)
    s = compile_ok(f"input {shape}; bn").summary()
    assert s.trainable_params == sum(p.numel() for p in layer.parameters()) == 2 * channels
    assert s.non_trainable_params == layer.running_mean.numel() + layer.running_var.numel()
    assert s.total_params == 4 * channels


def random_model(i: int):
    """A random sequential model as cnnc text and as a torch.nn.Sequential."""
    rng = random.Random(9000 + i)
    h = w = rng.randint(8, 24)
    c = rng.randint(1, 4)
    lines = [f"input {h}x{w}x{c}"]
    mods = []
    for _ in range(rng.randint(1, 4)):
        r = rng.random()
        if r < 0.5:
            f, k = rng.randint(1, 12), rng.choice([1, 3, 5])
            same = rng.random() < 0.5 and k % 2 == 1
            if not same and k > min(h, w):
                continue
            bias = rng.random() < 0.7
            lines.append(f"conv {f} {k} {'pad=same ' if same else ''}bias={str(bias).lower()} relu")
            mods += [nn.Conv2d(c, f, k, padding=k // 2 if same else 0, bias=bias), nn.ReLU()]
            c = f
            if not same:
                h, w = h - k + 1, w - k + 1
        elif r < 0.75:
            lines.append("bn")
            mods.append(nn.BatchNorm2d(c))
        elif min(h, w) >= 2:
            lines.append("pool 2")
            mods.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
    units = rng.randint(1, 20)
    lines += ["flatten", f"dense {units}"]
    mods += [nn.Flatten(), nn.Linear(h * w * c, units)]
    return "\n".join(lines), nn.Sequential(*mods), (h, w, c)


@pytest.mark.parametrize("i", range(N_MODELS))
def test_random_model_counts_match_torch(i):
    text, module, _ = random_model(i)
    model = compile_ok(text)
    assert model.ok, (text, model.diagnostics)
    s = model.summary()
    h, w, c = model.input_shape
    x = torch.zeros(1, c, h, w)
    with torch.no_grad():
        y = module.eval()(x)
    assert model.output_shape == tuple(y.shape[1:]), text
    assert s.trainable_params == sum(p.numel() for p in module.parameters()), text
    buffers = sum(b.numel() for name, b in module.named_buffers()
                  if name.endswith(("running_mean", "running_var")))
    assert s.non_trainable_params == buffers, text
    # every intermediate shape matches too
    shapes = [layer.shape for layer in model.graph.layers()]
    flat_index = next(j for j, sh in enumerate(shapes) if len(sh) == 1)
    assert shapes[flat_index - 1] == (*_nhwc(module, x, "Flatten"),)


def _nhwc(module, x, before: str) -> tuple:
    """The H x W x C reaching the first submodule of type `before`."""
    with torch.no_grad():
        for m in module:
            if type(m).__name__ == before:
                break
            x = m(x)
    return (x.shape[2], x.shape[3], x.shape[1])
