"""Input sizes (cnnc/analysis/sizes.py) against PyTorch running the same layers for real.

For random stacks of convolutions and pools, written independently here as nn modules:
- the smallest height cnnc predicts runs in PyTorch, and one row less fails;
- the rows cnnc says are dropped are exactly the input rows whose gradient is zero (average
  pooling stands in for max pooling: the same windows, and every row in a window gets gradient);
- every layer's formula gives PyTorch's output size at sizes far from the one written.
"""

from __future__ import annotations

import random

import pytest
from optional_torch import torch  # a stand-in that skips when torch is absent

import cnnc
from cnnc.analysis.sizes import Rule, analyse, describe_pattern

nn = torch.nn
F = torch.nn.functional

N_STACKS = 24


def stack_case(i: int):
    """A random conv/pool stack: (cnnc text, torch layers, the written input side)."""
    rng = random.Random(7000 + i)
    side = rng.randint(24, 90)
    lines = [f"input {side}x{side + rng.randint(0, 7)}x2"]
    layers = []
    cin = 2
    for _ in range(rng.randint(1, 5)):
        k = rng.randint(1, 5)
        s = rng.randint(1, 3)
        if rng.random() < 0.6:
            d = rng.choice([1, 1, 2])
            p = rng.randint(0, (d * (k - 1)) // 2 + 1)
            cout = rng.randint(1, 4)
            lines.append(f"conv {cout} {k}x{k} stride={s} pad={p} dilation={d}")
            layers.append(nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d))
            cin = cout
        else:
            p = rng.randint(0, k // 2)
            ceil = rng.random() < 0.3
            lines.append(f"pool avg {k}x{k} stride={s} pad={p} ceil={str(ceil).lower()}")
            layers.append(nn.AvgPool2d(k, stride=s, padding=p, ceil_mode=ceil,
                                       count_include_pad=False))
    return "\n".join(lines), nn.Sequential(*layers).double(), side


def runs(net, h: int, w: int) -> bool:
    try:
        with torch.no_grad():
            y = net(torch.zeros(1, 2, h, w, dtype=torch.float64))
        return min(y.shape) > 0
    except RuntimeError:
        return False


@pytest.mark.parametrize("i", range(N_STACKS))
def test_smallest_size_and_dropped_rows_match_pytorch(i):
    text, net, side = stack_case(i)
    model = cnnc.compile(text)
    if not model.ok:  # cnnc refuses the written size: PyTorch must refuse it too
        w = int(text.split()[1].split("x")[1])
        assert not runs(net, side, w), model.diagnostics
        return
    report = analyse(model.graph)
    h0, w0 = report.declared
    min_h = report.min_input[0]
    assert runs(net, min_h, w0), f"cnnc's smallest height {min_h} fails in PyTorch\n{text}"
    if min_h > 1:
        assert not runs(net, min_h - 1, w0), f"height {min_h - 1} runs too\n{text}"
    torch.manual_seed(i)
    for h in {h0, min_h, h0 + 1, h0 + 5}:
        x = torch.randn(1, 2, h, w0, dtype=torch.float64, requires_grad=True)
        net(x).sum().backward()
        zero = [r for r in range(h) if float(x.grad[0, :, r, :].abs().sum()) == 0.0]
        model_h = cnnc.compile(text.replace(f"input {h0}x", f"input {h}x", 1))
        predicted = analyse(model_h.graph, scan=False).dropped[0]
        assert predicted == zero, f"height {h}: cnnc {predicted}, PyTorch {zero}\n{text}"


@pytest.mark.parametrize("i", range(N_STACKS))
def test_formulas_give_pytorch_sizes_far_away(i):
    text, net, _ = stack_case(i)
    model = cnnc.compile(text)
    if not model.ok:
        return
    report = analyse(model.graph, scan=False)
    rule = report.layers[-1].rules[0]
    assert rule is not None
    for h in (report.min_input[0], 101, 257, 1000):
        x = torch.zeros(1, 2, h, report.declared[1], dtype=torch.float64)
        with torch.no_grad():
            assert net(x).shape[2] == rule(h), (h, report.layers[-1].formulas[0], text)


def test_resnet18_aligned_at_multiples_of_32_and_drops_nothing():
    report = analyse(cnnc.compile("examples/zoo/resnet18.cnn").graph)
    assert report.min_input == (1, 1) and report.only_input is None
    assert describe_pattern(report.aligned[0], "H") == "H is a multiple of 32"
    # Every 3x3 stride-2 conv with pad 1 reads its last row whatever the size: nothing is
    # dropped at any size (the 1x1 stride-2 shortcuts skip rows, but their branch reads them).
    assert describe_pattern(report.no_drop[0], "H") == "always"
    last = [s for s in report.layers if s.formulas[0]][-1]
    assert last.formulas[0] == "floor((H + 31) / 32)"


def test_flatten_then_dense_fixes_the_size():
    report = analyse(cnnc.compile("input 28x28x1; conv 32 3x3 relu; pool 2; flatten; "
                                  "dense 10 softmax").graph)
    assert report.only_input == (28, 28)
    assert report.fixed_by == "dense_1"
    assert report.accepts[0] == (28, 29)  # 29 runs too, dropping its last row in the pool
    assert report.no_drop[0]["sizes"] == [28]


def test_rules_compose_as_floor_divisions():
    inner = Rule(1, 1, 2, 0)  # floor((x + 1) / 2) = ceil(x / 2)
    outer = Rule(1, 1, 2, 0)
    both = inner.then(outer)
    assert all(both(x) == outer(inner(x)) for x in range(1, 500))
    assert both.text("H") == "floor((H + 3) / 4)"
    up = Rule(2, 0, 1, 0)  # nearest upsampling by 2
    assert all(inner.then(up)(x) == up(inner(x)) for x in range(1, 200))


def test_sizes_cli_json_and_text():
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    r = subprocess.run([sys.executable, "-m", "cnnc", "sizes", "examples/zoo/resnet18.cnn",
                        "--json"], cwd=root, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["min_input"] == [1, 1] and out["only_input"] is None
    r = subprocess.run([sys.executable, "-m", "cnnc", "sizes", "examples/keras_seed.cnn"],
                       cwd=root, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "28x28" in r.stdout
