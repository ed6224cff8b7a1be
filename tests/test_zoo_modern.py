"""The modern half of the zoo -- EfficientNet-B0, MobileNetV3-Large and -Small, ConvNeXt-T -- against
torchvision's published figures and against torchvision's own definitions.

torchvision cannot be imported here, so each model is transcribed below from torchvision's
source (torchvision/models/efficientnet.py, mobilenetv3.py, convnext.py and
torchvision/ops/misc.py), with torchvision's module and parameter names. The transcription is
held to the published parameter count and to the published MACs (conv and linear
multiply-accumulates, counted with forward hooks, fvcore's convention), and the cnnc example to
both; then the transcription's random weights are copied into cnnc's torch module in order and
both run one image: the outputs must agree. (In float64, for exactness, at 32x32, since float64
convolutions are slow on a CPU; the models are fully convolutional up to their global pooling,
so the same text with `input 32x32x3` is the same network. The 224x224 forward is run too, in
float32.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from optional_torch import needs_torch, torch  # a stand-in that skips when torch is absent

import cnnc

nn = torch.nn

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "examples" / "zoo"

# torchvision's model documentation: parameters, and GFLOPS (which are MACs, conv + linear)
PUBLISHED = {
    "efficientnet_b0": (5_288_548, 385_814_752),
    "mobilenet_v3_large": (5_483_032, 216_589_760),
    "convnext_tiny": (28_589_128, 4_455_531_264),
    # torchvision publishes 0.06 GFLOPS; the exact count is the transcription's (hooks)
    "mobilenet_v3_small": (2_542_856, 56_510_400),
}


# -- torchvision's building blocks ---------------------------------------------------------------


def _make_divisible(v, divisor=8, min_value=None):
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class Conv2dNormActivation(nn.Sequential):
    def __init__(self, cin, cout, kernel_size=3, stride=1, padding=None, groups=1,
                 norm_layer=nn.BatchNorm2d, activation_layer=nn.ReLU, bias=None):
        if padding is None:
            padding = (kernel_size - 1) // 2
        if bias is None:
            bias = norm_layer is None
        layers = [nn.Conv2d(cin, cout, kernel_size, stride, padding, groups=groups, bias=bias)]
        if norm_layer is not None:
            layers.append(norm_layer(cout))
        if activation_layer is not None:
            layers.append(activation_layer())
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, input_channels, squeeze_channels, activation=nn.ReLU,
                 scale_activation=nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def forward(self, x):
        scale = self.avgpool(x)
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(scale))))
        return scale * x


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth; these tests run in evaluation, where it is the identity."""

    def __init__(self, p, mode):
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, x):
        assert not self.training
        return x


# -- MobileNetV3-Large ---------------------------------------------------------------------------


class MV3InvertedResidual(nn.Module):
    def __init__(self, cin, kernel, expanded, cout, use_se, use_hs, stride, norm_layer):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        act = nn.Hardswish if use_hs else nn.ReLU
        layers = []
        if expanded != cin:
            layers.append(Conv2dNormActivation(cin, expanded, 1, norm_layer=norm_layer,
                                               activation_layer=act))
        layers.append(Conv2dNormActivation(expanded, expanded, kernel, stride, groups=expanded,
                                           norm_layer=norm_layer, activation_layer=act))
        if use_se:
            layers.append(SqueezeExcitation(expanded, _make_divisible(expanded // 4, 8),
                                            scale_activation=nn.Hardsigmoid))
        layers.append(Conv2dNormActivation(expanded, cout, 1, norm_layer=norm_layer,
                                           activation_layer=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        y = self.block(x)
        return y + x if self.use_res_connect else y


def _mobilenet_v3(setting, last_channel):
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
    last_in = setting[-1][3]
    layers = [Conv2dNormActivation(3, 16, 3, 2, norm_layer=norm,
                                   activation_layer=nn.Hardswish)]
    layers += [MV3InvertedResidual(*cfg, norm_layer=norm) for cfg in setting]
    layers.append(Conv2dNormActivation(last_in, 6 * last_in, 1, norm_layer=norm,
                                       activation_layer=nn.Hardswish))
    model = nn.Module()
    model.features = nn.Sequential(*layers)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Sequential(nn.Linear(6 * last_in, last_channel), nn.Hardswish(),
                                     nn.Dropout(0.2), nn.Linear(last_channel, 1000))
    return model


def mobilenet_v3_small():
    return _mobilenet_v3([  # input, kernel, expanded, out, SE, hardswish, stride
        (16, 3, 16, 16, True, False, 2), (16, 3, 72, 24, False, False, 2),
        (24, 3, 88, 24, False, False, 1), (24, 5, 96, 40, True, True, 2),
        (40, 5, 240, 40, True, True, 1), (40, 5, 240, 40, True, True, 1),
        (40, 5, 120, 48, True, True, 1), (48, 5, 144, 48, True, True, 1),
        (48, 5, 288, 96, True, True, 2), (96, 5, 576, 96, True, True, 1),
        (96, 5, 576, 96, True, True, 1),
    ], 1024)


def mobilenet_v3_large():
    setting = [  # input, kernel, expanded, out, SE, hardswish, stride
        (16, 3, 16, 16, False, False, 1), (16, 3, 64, 24, False, False, 2),
        (24, 3, 72, 24, False, False, 1), (24, 5, 72, 40, True, False, 2),
        (40, 5, 120, 40, True, False, 1), (40, 5, 120, 40, True, False, 1),
        (40, 3, 240, 80, False, True, 2), (80, 3, 200, 80, False, True, 1),
        (80, 3, 184, 80, False, True, 1), (80, 3, 184, 80, False, True, 1),
        (80, 3, 480, 112, True, True, 1), (112, 3, 672, 112, True, True, 1),
        (112, 5, 672, 160, True, True, 2), (160, 5, 960, 160, True, True, 1),
        (160, 5, 960, 160, True, True, 1),
    ]
    return _mobilenet_v3(setting, 1280)


# -- EfficientNet-B0 -----------------------------------------------------------------------------


class MBConv(nn.Module):
    def __init__(self, expand_ratio, kernel, stride, cin, cout, sd_prob):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        expanded = _make_divisible(cin * expand_ratio, 8)
        layers = []
        if expanded != cin:
            layers.append(Conv2dNormActivation(cin, expanded, 1, activation_layer=nn.SiLU))
        layers.append(Conv2dNormActivation(expanded, expanded, kernel, stride, groups=expanded,
                                           activation_layer=nn.SiLU))
        layers.append(SqueezeExcitation(expanded, max(1, cin // 4), activation=nn.SiLU))
        layers.append(Conv2dNormActivation(expanded, cout, 1, activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(sd_prob, "row")

    def forward(self, x):
        y = self.block(x)
        return self.stochastic_depth(y) + x if self.use_res_connect else y


def efficientnet_b0():
    setting = [  # expand ratio, kernel, stride, input, out, layers
        (1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
        (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1),
    ]
    total = sum(cfg[-1] for cfg in setting)
    layers = [Conv2dNormActivation(3, 32, 3, 2, activation_layer=nn.SiLU)]
    block_id = 0
    for ratio, kernel, stride, cin, cout, n in setting:
        stage = []
        for i in range(n):
            stage.append(MBConv(ratio, kernel, stride if i == 0 else 1, cin if i == 0 else cout,
                                cout, 0.2 * block_id / total))
            block_id += 1
        layers.append(nn.Sequential(*stage))
    layers.append(Conv2dNormActivation(320, 1280, 1, activation_layer=nn.SiLU))
    model = nn.Module()
    model.features = nn.Sequential(*layers)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))
    return model


# -- ConvNeXt-T ----------------------------------------------------------------------------------


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


class CNBlock(nn.Module):
    def __init__(self, dim, layer_scale, sd_prob):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim, bias=True),
            nn.GELU(),
            nn.Linear(4 * dim, dim, bias=True),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth = StochasticDepth(sd_prob, "row")

    def forward(self, x):
        return self.stochastic_depth(self.layer_scale * self.block(x)) + x


def convnext_tiny():
    setting = [(96, 192, 3), (192, 384, 3), (384, 768, 9), (768, None, 3)]
    norm = partial(LayerNorm2d, eps=1e-6)
    layers = [Conv2dNormActivation(3, 96, 4, 4, padding=0, norm_layer=norm,
                                   activation_layer=None, bias=True)]
    total = sum(n for _, _, n in setting)
    block_id = 0
    for cin, cout, n in setting:
        stage = []
        for _ in range(n):
            stage.append(CNBlock(cin, 1e-6, 0.1 * block_id / (total - 1.0)))
            block_id += 1
        layers.append(nn.Sequential(*stage))
        if cout is not None:
            layers.append(nn.Sequential(norm(cin), nn.Conv2d(cin, cout, 2, 2)))
    model = nn.Module()
    model.features = nn.Sequential(*layers)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Sequential(norm(768), nn.Flatten(1), nn.Linear(768, 1000))
    return model


REFERENCES = {"efficientnet_b0": efficientnet_b0, "mobilenet_v3_large": mobilenet_v3_large,
              "convnext_tiny": convnext_tiny, "mobilenet_v3_small": mobilenet_v3_small}


def reference_forward(model, x):
    y = model.avgpool(model.features(x))
    return model.classifier(y if isinstance(model.classifier[0], LayerNorm2d) else y.flatten(1))


def count_macs(model, x) -> int:
    """Conv and linear multiply-accumulates per image, with forward hooks (fvcore's rule).
    On the meta device, shapes only: no time spent computing."""
    total = 0

    def conv_hook(m, inputs, out):
        nonlocal total
        total += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, inputs, out):
        nonlocal total
        total += out[0].numel() * m.in_features  # per position for channels-last linears

    hooks = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        reference_forward(model, x)
    for h in hooks:
        h.remove()
    return total


# -- the tests -----------------------------------------------------------------------------------


def _summary_json(name: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "cnnc", "summary", str(ZOO / f"{name}.cnn"),
                          "--json"], check=False, capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_summary_matches_torchvision_exactly(name):
    params, macs = PUBLISHED[name]
    summary = _summary_json(name)
    assert summary["input"] == [224, 224, 3]
    assert summary["trainable_params"] == params
    assert summary["macs"] == macs
    assert summary["layers"][-1]["output_shape"] == [1000]


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_torchvision_transcription_has_the_published_figures(name):
    """The reference below is right: torchvision's published parameters and MACs."""
    params, macs = PUBLISHED[name]
    with torch.device("meta"):
        ref = REFERENCES[name]().eval()
        assert sum(p.numel() for p in ref.parameters()) == params
        assert count_macs(ref, torch.empty(1, 3, 224, 224)) == macs


def _children_first(module: nn.Module, prefix: str = ""):
    """The state dict in cnnc's order: a module's own parameters (ConvNeXt's layer_scale) after
    its children's, as cnnc writes `layerscale` after the layers it scales."""
    for name, child in module.named_children():
        yield from _children_first(child, f"{prefix}{name}.")
    for name, t in [*module._parameters.items(), *module._buffers.items()]:
        if t is not None and name != "num_batches_tracked":
            yield f"{prefix}{name}", t


@pytest.mark.slow  # float64 depthwise convolutions are slow on CPUs: some 5 s per model
@pytest.mark.parametrize("name", list(PUBLISHED))
def test_same_outputs_as_torchvisions_definition(name):
    torch.manual_seed(0)
    ref = REFERENCES[name]().double().eval()
    image = torch.from_numpy(np.random.default_rng(0).normal(0, 1, (1, 3, 32, 32)))

    # random weights everywhere, batch norm statistics too, so no layer is near the identity
    rng = np.random.default_rng(1)
    state = {}
    for k, v in _children_first(ref):
        if k.endswith("running_var"):
            state[k] = rng.uniform(0.5, 2.0, v.shape)
        elif k.endswith(("running_mean", "bias")):
            state[k] = rng.normal(0, 0.1, v.shape)
        elif v.ndim == 1 or k.endswith("layer_scale"):  # norm scales, layer scales
            state[k] = rng.uniform(0.5, 1.5, v.shape)
        else:
            fan_in = int(np.prod(v.shape[1:]))
            state[k] = rng.uniform(-1, 1, v.shape) * np.sqrt(3.0 / fan_in)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)

    text = (ZOO / f"{name}.cnn").read_text()
    assert "input 224x224x3" in text
    model = cnnc.compile(text.replace("input 224x224x3", "input 32x32x3"))
    assert model.ok, model.diagnostics
    session = model.to_backend("torch", dtype="float64", device="cpu")
    ours = session.get_weights()
    # In order, one to one: torchvision's Linear (out, in) is cnnc's 1x1 conv (out, in, 1, 1),
    # its layer_scale (C, 1, 1) is cnnc's (C,).
    assert len(ours) == len(state)
    mapped = {}
    for (key, value), (ref_key, ref_value) in zip(ours.items(), state.items()):
        assert value.size == ref_value.size, (key, ref_key)
        assert (key.rsplit(".", 1)[-1], ref_key.rsplit(".", 1)[-1]) in (
            ("scale", "layer_scale"), *((n, n) for n in ("weight", "bias", "running_mean",
                                                          "running_var"))), (key, ref_key)
        mapped[key] = ref_value.reshape(value.shape)
    session.set_weights(mapped)
    net = session.module.eval()
    with torch.no_grad():
        expected = reference_forward(ref, image).numpy()
        got = net(image, logits=True).numpy()
    assert got.shape == (1, 1000)
    # float64 on both sides: what is left is rounding noise, ~1e-15 of the outputs' size; the
    # agreement test allows 1e-9 between backends in float64, and so does this
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() <= 1e-9 * scale


@needs_torch
@pytest.mark.parametrize("name", list(PUBLISHED))
def test_torch_module_runs_one_224_image(name):
    session = cnnc.compile(ZOO / f"{name}.cnn").to_backend("torch", device="cpu")
    image = np.random.default_rng(0).normal(0, 1, (1, 224, 224, 3)).astype(np.float32)
    probabilities = session.predict(image)
    assert probabilities.shape == (1, 1000)
    assert np.isfinite(probabilities).all()
    assert abs(float(probabilities.sum()) - 1) < 1e-4  # the file's final softmax
