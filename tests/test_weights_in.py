"""Weights from outside a run: a PyTorch state_dict with torchvision's ResNet-18 names loads into
examples/zoo/resnet18.cnn and gives the same logits; cnnc and PyTorch files, partial matches for
`train --init`, and clear errors for everything else.

torchvision cannot be imported here, so its ResNet-18 is written out below with torchvision's
module names (conv1, bn1, layer1.0.conv1, ..., layer2.0.downsample.0, fc).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import cnnc  # noqa: E402
from cnnc.diagnostics import CnncError  # noqa: E402
from cnnc.weights import load_weights, read_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision.models.resnet18, module for module."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def trained_looking(net, seed=0):
    """Random batch-norm statistics and affine parameters, so eval-mode batch norm matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.2, generator=g)
                m.num_batches_tracked.fill_(100)
    return net.eval()


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-2))


def test_torchvision_resnet18_state_dict_gives_the_same_logits(tmp_path):
    torch.manual_seed(0)
    ref = trained_looking(ResNet18())
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    model = cnnc.compile(ROOT / "examples" / "zoo" / "resnet18.cnn")
    assert model.ok
    weights, report, _ = load_weights(model, path, partial=True)  # what `train --init` does
    assert report.left == [] and report.unused == []
    assert report.loaded == 102 and report.by_name == []  # every name differs: all by order
    pairs = dict(report.by_order)
    assert pairs["down_1.conv_1.weight"] == "layer2.0.downsample.0.weight"
    assert pairs["down_1.batchnorm_1.running_var"] == "layer2.0.downsample.1.running_var"
    assert pairs["down_1.y.conv_1.weight"] == "layer2.0.conv1.weight"
    assert pairs["dense_1.weight"] == "fc.weight"
    full, _, _ = load_weights(model, path, partial=False)  # what --weights does: all matched
    for k in weights:
        np.testing.assert_array_equal(weights[k], full[k])

    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    logits = {}
    for dtype in (torch.float32, torch.float64):
        session = model.to_backend("torch", device="cpu", channels_last=False,
                                   dtype=str(dtype).replace("torch.", ""))
        session.set_weights(weights)
        session.module.eval()
        with torch.no_grad():
            logits[("cnnc", dtype)] = session.module(x.to(dtype), logits=True).numpy()
            logits[("ref", dtype)] = ref.to(dtype)(x.to(dtype)).numpy()
    # float64: the same arithmetic, so agreement to float64 rounding
    truth = logits[("ref", torch.float64)]
    assert rel_err(logits[("cnnc", torch.float64)], truth) < 1e-12
    # float32: within 4x the rounding noise measured on the reference's own float32 run
    noise = rel_err(logits[("ref", torch.float32)], truth)
    assert rel_err(logits[("cnnc", torch.float32)], truth) <= max(4 * noise, 1e-6)
    assert (logits[("cnnc", torch.float32)].argmax(1) == truth.argmax(1)).all()


def test_a_checkpoint_dict_and_dataparallel_prefix(tmp_path):
    model = cnnc.compile("input 8x8x1; conv 4 3x3; bn; relu; flatten; dense 3")
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(144, 3))
    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": sd}, tmp_path / "ckpt.pt")
    weights, report, _ = load_weights(model, tmp_path / "ckpt.pt")
    assert report.left == [] and len(report.by_order) == 8
    np.testing.assert_array_equal(weights["dense_1.weight"], net[4].weight.detach().numpy())


def test_mismatches_name_the_layer_and_both_shapes(tmp_path):
    model = cnnc.compile("input 8x8x1; conv 4 3x3; flatten; dense 3")
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 5))
    torch.save(net.state_dict(), tmp_path / "w.pth")
    with pytest.raises(CnncError) as e:
        load_weights(model, tmp_path / "w.pth", partial=False)
    text = e.value.message + "\n".join(e.value.notes)
    assert "layer dense_1" in text and "(3, 144)" in text and "(5, 144)" in text
    # partial: what fits loads, the rest is listed
    weights, report, _ = load_weights(model, tmp_path / "w.pth", partial=True)
    assert [k for k, _ in report.left] == ["dense_1.weight", "dense_1.bias"]
    assert {k for k, _ in report.unused} == {"2.weight", "2.bias"}
    np.testing.assert_array_equal(weights["conv_1.weight"], net[0].weight.detach().numpy())


def test_files_that_are_not_weights(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"\x80\x04not a pickle at all")
    with pytest.raises(CnncError, match="neither a safetensors file nor"):
        read_weights(tmp_path / "x.pt")
    torch.save({"a": 1}, tmp_path / "nothing.pt")
    with pytest.raises(CnncError, match="holds no state dict"):
        read_weights(tmp_path / "nothing.pt")

    class Evil:  # an object that would run code when unpickled: refused, never called
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    import pickle

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"w": Evil()}))
    with pytest.raises(CnncError, match="weights_only=True"):
        read_weights(tmp_path / "evil.pt")
    with pytest.raises(CnncError, match="is a directory"):
        read_weights(tmp_path)


def test_train_init_through_the_cli(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}

    def cnnc_cli(*args):
        return subprocess.run([sys.executable, "-m", "cnnc", *map(str, args)], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=300)

    base = cnnc_cli("train", "examples/quickstart.cnn", "--epochs", "1", "--out", tmp_path / "a")
    assert base.returncode == 0, base.stderr
    # the same body with a new 4-class head, trained on 4-class synthetic shapes
    (tmp_path / "head.cnn").write_text("input 8x8x1\nconv 32 3x3 pad=same relu\npool 2\n"
                                       "flatten\ndense 4 softmax\n")
    r = cnnc_cli("train", tmp_path / "head.cnn", "--data", "shapes:8x8x1:4:400", "--epochs", "1",
                 "--init", tmp_path / "a" / "best.safetensors", "--out", tmp_path / "b")
    assert r.returncode == 0, r.stderr
    assert "2 of 4 tensors loaded (2 by name)" in r.stdout
    assert "left at their initial values: dense_1.weight (4, 512), dense_1.bias (4,)" in r.stderr
    r = cnnc_cli("train", "examples/quickstart.cnn", "--init", tmp_path / "a" / "best.safetensors",
                 "--out", tmp_path / "a", "--resume")
    assert r.returncode == 1 and "pass one" in r.stderr
    # eval accepts a PyTorch file too (full match): the same weights, the same accuracy
    from safetensors.numpy import load_file

    sd = {k: torch.from_numpy(v) for k, v in load_file(tmp_path / "a" / "best.safetensors").items()}
    torch.save(sd, tmp_path / "same.pth")
    a = cnnc_cli("eval", "examples/quickstart.cnn", "--weights", tmp_path / "a" /
                 "best.safetensors", "--json")
    b = cnnc_cli("eval", "examples/quickstart.cnn", "--weights", tmp_path / "same.pth", "--json")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert json.loads(a.stdout) == json.loads(b.stdout)
