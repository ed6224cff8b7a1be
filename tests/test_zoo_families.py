"""Model families from one file: examples/zoo/*.cnn with parameters, checked member by member
against reference PyTorch modules written here as torchvision writes them (torchvision cannot be
imported in this environment), and against torchvision's published figures.

Counted as cnnc counts: trainable parameters, and multiply-accumulates of convolutions and
dense layers for one 224x224x3 image (or the member's own size).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from optional_torch import torch  # a stand-in that skips when torch is absent

import cnnc

nn = torch.nn

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "examples" / "zoo"


def _make_divisible(v, divisor, min_value=None):
    """torchvision.models._utils._make_divisible."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def conv_bn(inp, oup, k, s, groups=1, act=True):
    layers = [nn.Conv2d(inp, oup, k, s, (k - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(oup)]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """torchvision.models.mobilenetv2.InvertedResidual."""

    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers.append(conv_bn(inp, hidden_dim, 1, 1))
        layers += [conv_bn(hidden_dim, hidden_dim, 3, stride, groups=hidden_dim),
                   conv_bn(hidden_dim, oup, 1, 1, act=False)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision.models.mobilenetv2.MobileNetV2(width_mult=...)."""

    def __init__(self, width_mult=1.0, num_classes=1000, round_nearest=8):
        super().__init__()
        input_channel, last_channel = 32, 1280
        setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1],
                   [6, 160, 3, 2], [6, 320, 1, 1]]
        input_channel = _make_divisible(input_channel * width_mult, round_nearest)
        self.last_channel = _make_divisible(last_channel * max(1.0, width_mult), round_nearest)
        features = [conv_bn(3, input_channel, 3, 2)]
        for t, c, n, s in setting:
            output_channel = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel,
                                                 s if i == 0 else 1, t))
                input_channel = output_channel
        features.append(conv_bn(input_channel, self.last_channel, 1, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel, num_classes))

    def forward(self, x):
        x = self.features(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def params_and_macs(module: nn.Module, size: int) -> tuple[int, int]:
    """Trainable parameters, and conv + linear multiply-accumulates for one image."""
    macs = 0

    def hook(m, inputs, out):
        nonlocal macs
        if isinstance(m, nn.Conv2d):
            macs += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * \
                m.kernel_size[1]
        else:
            macs += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    module.eval()
    with torch.no_grad():
        module(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return sum(p.numel() for p in module.parameters() if p.requires_grad), macs


def cnnc_figures(path: Path, **params) -> tuple[int, int]:
    model = cnnc.compile(path, params={k: str(v) for k, v in params.items()})
    assert model.ok, [d.message for d in model.diagnostics]
    s = model.summary()
    return s.trainable_params, s.macs


def test_mobilenet_v2_default_is_torchvisions_published_model():
    assert cnnc_figures(ZOO / "mobilenet_v2.cnn") == (3_504_872, 300_774_272)


@pytest.mark.parametrize("width", [0.35, 0.75, 1.4])
def test_mobilenet_v2_widths_match_torchvisions_rounding(width):
    ref = params_and_macs(MobileNetV2(width_mult=width), 224)
    assert cnnc_figures(ZOO / "mobilenet_v2.cnn", width=width) == ref


@pytest.mark.parametrize("layers,params,gmacs", [
    ((2, 2, 2, 2), 11_689_512, 1.81),   # resnet18 (the file's defaults)
    ((3, 4, 6, 3), 21_797_672, 3.66),   # resnet34
])
def test_resnet_basic_block_family_is_torchvisions(layers, params, gmacs):
    """torchvision's published parameter counts and GFLOPS (multiply-accumulates) columns."""
    settings = {f"layer{i + 1}": n for i, n in enumerate(layers)}
    trainable, macs = cnnc_figures(ZOO / "resnet18.cnn", **settings)
    assert trainable == params and round(macs / 1e9, 2) == gmacs


@pytest.mark.parametrize("settings,params,macs", [
    ({}, 5_288_548, 385_814_752),                                              # b0
    ({"width": 1.0, "depth": 1.1, "size": 240}, 7_794_184, 686_802_832),       # b1
    ({"width": 1.1, "depth": 1.2, "size": 260}, 9_109_994, 993_561_872),       # b2
    ({"width": 1.2, "depth": 1.4, "size": 300}, 12_233_232, 1_827_141_392),    # b3
])
def test_efficientnet_family_is_torchvisions(settings, params, macs):
    """torchvision's efficientnet_b0..b3: trainable parameters, and conv + linear
    multiply-accumulates at each member's own resolution."""
    assert cnnc_figures(ZOO / "efficientnet.cnn", **settings) == (params, macs)


@pytest.mark.parametrize("settings,params,gflops", [
    ({"width": 1.4, "depth": 1.8, "size": 380}, 19_341_616, 4.39),     # b4
    ({"width": 1.6, "depth": 2.2, "size": 456}, 30_389_784, 10.27),    # b5
    ({"width": 1.8, "depth": 2.6, "size": 528}, 43_040_704, 19.07),    # b6
    ({"width": 2.0, "depth": 3.1, "size": 600}, 66_347_960, 37.75),    # b7
])
def test_larger_efficientnets_are_torchvisions(settings, params, gflops):
    """torchvision's published parameter counts and GFLOPS columns for b4-b7."""
    trainable, macs = cnnc_figures(ZOO / "efficientnet.cnn", **settings)
    assert trainable == params and round(macs / 1e9, 2) == gflops
