"""Shape inference of transposed convolution, upsampling, channel split and shuffle against
PyTorch's own layers on real tensors, on random configurations from a seeded generator (a
failure names its case and reproduces), as test_shapes_vs_torch.py does for conv and pool.

For each: the output shape cnnc infers must be the one nn.ConvTranspose2d / nn.Upsample /
torch.split / nn.ChannelShuffle produce, the parameter count the module's, and a combination
PyTorch refuses must be a cnnc error (with the expected code). 'same' for the transposed conv
is Keras's out = in * stride, checked against PyTorch with the pads cnnc settles on.
"""

from __future__ import annotations

import random

import pytest
from optional_torch import torch  # a stand-in that skips when torch is absent

import cnnc

nn = torch.nn
F = torch.nn.functional

N_DECONV = 250
N_UPSAMPLE = 80
N_SPLIT = 60


def compile_ok(text: str):
    model = cnnc.compile(text)
    assert all(d.code != "syntax" for d in model.diagnostics), model.diagnostics
    return model


def hwc(y) -> tuple:
    n, c, h, w = y.shape
    return (h, w, c)


# -- transposed convolution ----------------------------------------------------------------------


def deconv_case(i: int):
    rng = random.Random(5000 + i)
    h, w = rng.randint(1, 12), rng.randint(1, 12)
    cin = rng.choice([1, 2, 3, 4, 6])
    kh = rng.randint(1, 6)
    kw = rng.choice([kh, rng.randint(1, 6)])
    sh, sw = rng.choice([(1, 1), (2, 2), (rng.randint(1, 4), rng.randint(1, 4))])
    dh, dw = rng.choice([(1, 1), (1, 1), (2, 2), (rng.randint(1, 3), rng.randint(1, 3))])
    groups = rng.choice([1, 1, cin] + [g for g in (2, 3) if rng.random() < 0.5])
    filters = groups * rng.randint(1, 3) if rng.random() < 0.9 else rng.randint(1, 7)
    bias = rng.random() < 0.7
    r = rng.random()
    if r < 0.15:
        pad, native = "same", None
    elif r < 0.3:
        pad, native = "valid", (0, 0)
    else:
        ph, pw = rng.randint(0, 4), rng.randint(0, 4)
        pad, native = (str(ph) if ph == pw else f"{ph}x{pw}"), (ph, pw)
    # mostly the output paddings PyTorch allows, sometimes one it refuses
    oph = rng.randint(0, max(sh, dh) - 1 + (rng.random() < 0.15))
    opw = rng.randint(0, max(sw, dw) - 1 + (rng.random() < 0.15))
    op = (oph, opw) if native is not None else (0, 0)
    return dict(h=h, w=w, cin=cin, kh=kh, kw=kw, sh=sh, sw=sw, dh=dh, dw=dw, groups=groups,
                filters=filters, bias=bias, pad=pad, native=native, op=op)


def _deconv_text(c) -> str:
    op = f" output_padding={c['op'][0]}x{c['op'][1]}" if c["op"] != (0, 0) else ""
    return (f"input {c['h']}x{c['w']}x{c['cin']}\n"
            f"conv_transpose {c['filters']} {c['kh']}x{c['kw']} stride={c['sh']}x{c['sw']} "
            f"pad={c['pad']}{op} dilation={c['dh']}x{c['dw']} groups={c['groups']} "
            f"bias={'true' if c['bias'] else 'false'}")


@pytest.mark.parametrize("i", range(N_DECONV))
def test_conv_transpose_shape_and_params_match_torch(i):
    c = deconv_case(i)
    text = _deconv_text(c)
    model = compile_ok(text)
    if c["cin"] % c["groups"] or c["filters"] % c["groups"]:
        with pytest.raises(ValueError):  # PyTorch refuses it when building the module
            nn.ConvTranspose2d(c["cin"], c["filters"], 1, groups=c["groups"])
        assert {d.code for d in model.errors} == {"groups"}, model.diagnostics
        return
    if c["native"] is None:  # 'same': out = in * stride, through the pads cnnc settles on
        if not model.ok:
            pytest.fail(f"pad=same refused:\n{text}\n{model.diagnostics}")
        layer_attrs = model.graph["conv_transpose_1"].settled
        pads, op = layer_attrs["pads"], layer_attrs["output_pads"]
        assert model.output_shape == (c["h"] * c["sh"], c["w"] * c["sw"], c["filters"])
        if pads[0] != pads[1] or pads[2] != pads[3]:
            # PyTorch has no asymmetric padding: its full output, cropped as cnnc crops
            module = nn.ConvTranspose2d(c["cin"], c["filters"], (c["kh"], c["kw"]),
                                        (c["sh"], c["sw"]), dilation=(c["dh"], c["dw"]),
                                        groups=c["groups"], bias=c["bias"])
            with torch.no_grad():
                full = module(torch.zeros(1, c["cin"], c["h"], c["w"]))
            expected = (full.shape[2] - pads[0] - pads[1] + op[0],
                        full.shape[3] - pads[2] - pads[3] + op[1], c["filters"])
            assert model.output_shape == expected, text
            return
        native = (pads[0], pads[2])
    else:
        native, op = c["native"], c["op"]
    module = nn.ConvTranspose2d(c["cin"], c["filters"], (c["kh"], c["kw"]), (c["sh"], c["sw"]),
                                padding=native, output_padding=op, dilation=(c["dh"], c["dw"]),
                                groups=c["groups"], bias=c["bias"])
    refused = ""
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, c["cin"], c["h"], c["w"]))
        expected = hwc(out) if out.numel() else None  # an empty output: a size below 1
    except RuntimeError as e:
        expected, refused = None, str(e)
    if expected is None:
        assert not model.ok, f"PyTorch refuses this, cnnc accepts it:\n{text}"
        codes = {d.code for d in model.errors}
        if "output padding must be smaller" in refused:
            assert codes == {"bad-value"}, model.diagnostics
        else:
            assert codes == {"shape"}, model.diagnostics
        return
    assert model.ok, f"PyTorch accepts this (giving {expected}), cnnc refuses it:\n{text}\n" \
        f"{model.diagnostics}"
    assert model.output_shape == expected, text
    summary = model.summary()
    assert summary.total_params == sum(p.numel() for p in module.parameters()), text
    # fvcore's count: every input value times every tap of its group's filters
    assert summary.macs == (c["h"] * c["w"] * c["cin"] * (c["filters"] // c["groups"])
                            * c["kh"] * c["kw"])


def test_deconv_cases_cover_the_interesting_corners():
    cases = [deconv_case(i) for i in range(N_DECONV)]
    outcomes = [compile_ok(_deconv_text(c)) for c in cases]
    assert sum(c["pad"] == "same" for c in cases) >= 20
    assert sum(c["op"] != (0, 0) for c in cases) >= 40
    codes = [d.code for m in outcomes for d in m.errors]
    assert codes.count("bad-value") >= 5  # output_padding too large
    assert codes.count("shape") >= 5  # output below 1
    assert codes.count("groups") >= 5


# -- upsampling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("i", range(N_UPSAMPLE))
def test_upsample_shape_matches_torch(i):
    rng = random.Random(7000 + i)
    h, w, c = rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 4)
    sh, sw = rng.randint(1, 4), rng.choice([None, rng.randint(1, 4)])
    sw = sw or sh
    mode = rng.choice(["nearest", "bilinear"])
    corners = rng.random() < 0.3
    scale = str(sh) if sh == sw else f"{sh}x{sw}"
    text = (f"input {h}x{w}x{c}\nupsample {scale} {mode}"
            + (" align_corners=true" if corners else ""))
    model = compile_ok(text)
    try:
        module = nn.Upsample(scale_factor=(float(sh), float(sw)), mode=mode,
                             align_corners=True if corners else None)
        with torch.no_grad():
            expected = hwc(module(torch.zeros(1, c, h, w)))
    except ValueError:  # align_corners with nearest
        assert mode == "nearest" and corners
        assert {d.code for d in model.errors} == {"unknown-option"}, model.diagnostics
        return
    assert model.ok, f"{text}\n{model.diagnostics}"
    assert model.output_shape == expected, text
    assert model.summary().total_params == 0 and model.summary().macs == 0


# -- channel split and shuffle -------------------------------------------------------------------


@pytest.mark.parametrize("i", range(N_SPLIT))
def test_split_and_shuffle_shapes_match_torch(i):
    rng = random.Random(9000 + i)
    h, w, c = rng.randint(1, 5), rng.randint(1, 5), rng.randint(1, 12)
    x = torch.zeros(1, c, h, w)
    if rng.random() < 0.5:
        n = rng.randint(2, 4)
        names = [f"p{k}" for k in range(n)]
        text = f"input {h}x{w}x{c}\n{', '.join(names)} = split {n}\nconcat {' '.join(names)}"
        model = compile_ok(text)
        if c % n:  # torch.chunk would make unequal parts; cnnc asks for the sizes instead
            assert {d.code for d in model.errors} == {"shape"}, model.diagnostics
            return
        expected = [hwc(t) for t in torch.split(x, c // n, dim=1)]
    else:
        sizes = [rng.randint(1, 4) for _ in range(rng.randint(2, 3))]
        names = [f"p{k}" for k in range(len(sizes))]
        text = (f"input {h}x{w}x{c}\n{', '.join(names)} = split {'x'.join(map(str, sizes))}\n"
                f"concat {' '.join(names)}")
        model = compile_ok(text)
        try:
            expected = [hwc(t) for t in torch.split(x, sizes, dim=1)]
        except RuntimeError:
            assert {d.code for d in model.errors} == {"shape"}, model.diagnostics
            return
    assert model.ok, f"{text}\n{model.diagnostics}"
    assert [model.graph[n].shape for n in names] == expected, text
    g = rng.randint(1, 4)
    shuffled = compile_ok(f"input {h}x{w}x{c}\nshuffle {g}")
    try:
        with torch.no_grad():
            expected = hwc(nn.ChannelShuffle(g)(x))
    except RuntimeError:
        assert {d.code for d in shuffled.errors} == {"groups"}, shuffled.diagnostics
        return
    assert shuffled.ok and shuffled.output_shape == expected
