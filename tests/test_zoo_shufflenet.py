"""examples/zoo/shufflenet_v2_x1_0.cnn against torchvision's ShuffleNetV2, written out below with
torchvision's module and parameter names (torchvision cannot be imported here).

- the summary's trainable parameters and MACs are torchvision's published figures;
- the reference module has the same parameters, in the same order and shapes, and its conv and
  linear multiply-accumulates, counted with forward hooks, equal cnnc's MACs;
- with the reference's weights copied across, cnnc's torch module gives the same logits on a
  224x224 image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from optional_torch import torch  # a stand-in that skips when torch is absent

import cnnc

nn = torch.nn

ROOT = Path(__file__).resolve().parents[1]
FILE = ROOT / "examples" / "zoo" / "shufflenet_v2_x1_0.cnn"
PARAMS, MACS = 2_278_604, 144_907_992  # torchvision's documentation


# -- torchvision's ShuffleNetV2, as torchvision/models/shufflenetv2.py writes it ----------------


def channel_shuffle(x, groups: int):
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(n, c, h, w)


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int):
        super().__init__()
        self.stride = stride
        branch_features = oup // 2
        if self.stride > 1:
            self.branch1 = nn.Sequential(
                self.depthwise_conv(inp, inp, kernel_size=3, stride=self.stride, padding=1),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, branch_features, kernel_size=1, stride=1, padding=0, bias=False),
                nn.BatchNorm2d(branch_features),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if (self.stride > 1) else branch_features, branch_features,
                      kernel_size=1, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
            self.depthwise_conv(branch_features, branch_features, kernel_size=3,
                                stride=self.stride, padding=1),
            nn.BatchNorm2d(branch_features),
            nn.Conv2d(branch_features, branch_features, kernel_size=1, stride=1, padding=0,
                      bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
        )

    @staticmethod
    def depthwise_conv(i, o, kernel_size, stride=1, padding=0, bias=False):
        return nn.Conv2d(i, o, kernel_size, stride, padding, bias=bias, groups=i)

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, stages_repeats=(4, 8, 4), stages_out_channels=(24, 116, 232, 464, 1024),
                 num_classes=1000):
        super().__init__()
        input_channels = 3
        output_channels = stages_out_channels[0]
        self.conv1 = nn.Sequential(
            nn.Conv2d(input_channels, output_channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(output_channels),
            nn.ReLU(inplace=True),
        )
        input_channels = output_channels
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for name, repeats, output_channels in zip(["stage2", "stage3", "stage4"],
                                                  stages_repeats, stages_out_channels[1:]):
            seq = [InvertedResidual(input_channels, output_channels, 2)]
            for _ in range(repeats - 1):
                seq.append(InvertedResidual(output_channels, output_channels, 1))
            setattr(self, name, nn.Sequential(*seq))
            input_channels = output_channels
        output_channels = stages_out_channels[-1]
        self.conv5 = nn.Sequential(
            nn.Conv2d(input_channels, output_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(output_channels),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(output_channels, num_classes)

    def forward(self, x):
        x = self.conv1(x)
        x = self.maxpool(x)
        x = self.stage2(x)
        x = self.stage3(x)
        x = self.stage4(x)
        x = self.conv5(x)
        x = x.mean([2, 3])  # globalpool
        return self.fc(x)


# -- the checks ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    m = cnnc.compile(FILE)
    assert m.ok, m.diagnostics
    return m


def test_summary_is_torchvisions(model):
    s = model.summary()
    assert s.trainable_params == PARAMS
    assert s.macs == MACS
    assert model.input_shape == (224, 224, 3) and model.output_shape == (1000,)


def test_reference_has_the_same_parameters_and_macs(model):
    ref = ShuffleNetV2()
    assert sum(p.numel() for p in ref.parameters()) == PARAMS
    macs = []

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            macs.append(output.numel() * k * module.in_channels // module.groups)
        elif isinstance(module, nn.Linear):
            macs.append(module.in_features * module.out_features)

    for m in ref.modules():
        m.register_forward_hook(count)
    with torch.no_grad():
        ref.eval()(torch.zeros(1, 3, 224, 224))
    assert sum(macs) == MACS == model.summary().macs


def _copy_weights(ref, session, rng):
    """torchvision's state dict, in order, onto cnnc's keys (same order, same shapes), with
    random batch-norm statistics so eval mode is not the identity."""
    theirs = [(k, v) for k, v in ref.state_dict().items() if "num_batches_tracked" not in k]
    ours = list(session.get_weights())
    assert len(theirs) == len(ours)
    weights = {}
    for key, (their_key, value) in zip(ours, theirs):
        assert key.rsplit(".", 1)[1] == their_key.rsplit(".", 1)[1], (key, their_key)
        if their_key.endswith("running_var"):
            value = torch.as_tensor(rng.uniform(0.5, 1.5, tuple(value.shape)))
        elif their_key.endswith("running_mean"):
            value = torch.as_tensor(rng.normal(0, 0.1, tuple(value.shape)))
        weights[key] = value.detach().double().numpy()
        with torch.no_grad():
            ref.state_dict()[their_key].copy_(torch.as_tensor(weights[key]))
    session.set_weights(weights)


def test_torch_forward_on_one_image_matches_torchvision(model):
    torch.manual_seed(0)
    ref = ShuffleNetV2().double().eval()
    session = model.to_backend("torch", device="cpu", dtype="float64")
    rng = np.random.default_rng(0)
    _copy_weights(ref, session, rng)
    x = rng.normal(0, 1, (1, 224, 224, 3))
    with torch.no_grad():
        expected = ref(torch.as_tensor(x.transpose(0, 3, 1, 2).copy())).numpy()
        got = session.module.eval()(torch.as_tensor(x.transpose(0, 3, 1, 2).copy()),
                                    logits=True).numpy()
    assert got.shape == (1, 1000)
    # float64, the same PyTorch operations in the same order: measured difference exactly 0
    # (logits of order 0.1); 1e-12 leaves room for another BLAS's summation order
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    probabilities = session.predict(x.astype(np.float32))
    np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-6)
