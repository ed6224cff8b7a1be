"""`cnnc export --format torch`: the generated PyTorch file is standalone (no cnnc import), its
state_dict takes cnnc's weights unchanged, and it computes exactly what the torch backend
computes -- bit for bit, since it runs the same operations in the same order -- on every
example and zoo model and on random generated programs."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hypothesis import HealthCheck, assume, given, note, settings  # noqa: E402

import cnnc  # noqa: E402
from cnnc.export.torch_source import SOURCE_LOWERINGS, class_name, to_torch_source  # noqa: E402
from tests.test_backend_agreement import programs  # noqa: E402
from tests.test_export_onnx import test_weights as random_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.cnn"))
ZOO = sorted((ROOT / "examples" / "zoo").glob("*.cnn"))


def load_generated(model):
    source = to_torch_source(model)
    imported = {n.names[0].name if isinstance(n, ast.Import) else n.module
                for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.Import, ast.ImportFrom))}
    assert not any(m.split(".")[0] == "cnnc" for m in imported), imported
    namespace = {}
    exec(compile(source, f"<{model.name}.py>", "exec"), namespace)
    return namespace[class_name(model.name)]()


def check_same(model, weights, x):
    net = load_generated(model)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    net.eval()
    loss = "mse" if len(model.output_shape) == 3 else "auto"  # an autoencoder
    session = model.to_backend("torch", device="cpu", channels_last=False, loss=loss)
    session.set_weights(weights)
    session.module.eval()
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy() if x.ndim == 4 else x)
    with torch.no_grad():
        got, want = net(xt), session.module(xt)
    assert torch.equal(got, want), float((got - want).abs().max())
    return net


BIG = ("vgg16", "alexnet")  # 138 M and 61 M parameters


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.stem in BIG
                                  else p for p in EXAMPLES + ZOO],
                         ids=[p.stem for p in EXAMPLES + ZOO])
def test_models_give_the_torch_backend_outputs_exactly(path):
    model = cnnc.compile(path)
    assert model.ok
    n = 1 if path.parent.name == "zoo" else 3
    x = np.random.default_rng(0).normal(0, 1, (n, *model.input_shape)).astype(np.float32)
    check_same(model, random_weights(model), x)


CORNERS = [
    "input 6x6x2; conv 3 3x3 stride=2 pad=same relu",
    "input 5x7x1; conv 2 3x2 pad=1x0x0x2 dilation=2x1",
    "input 3x3x2; conv 1 1x1 stride=1x2 pad=2x1x1x0 bias=false",
    "input 5x5x2; pool max 2 stride=2 pad=same",
    "input 7x7x2; pool avg 3 stride=2 pad=1 ceil=true",
    "input 6x5x1; pool avg 3 stride=2 pad=1x0x0x1 ceil=true count_pad=true",
    "input 6x6x2; pool avg 3 stride=1 pad=1",
    "input 6x6x3; dwconv 3x3 multiplier=2 pad=same bias=false; bn",
    "input 4x4x3; relu; pool global max keepdims=true; conv 2 1x1",
    "input 4x4x3; relu6; tanh; leaky_relu 0.2; elu 0.5; gelu; silu; conv 4 1 leaky_relu; "
    "conv 4 1 elu; conv 4 1 gelu",
    "input 6x6x4; x = here; gap; dense 4 hardsigmoid; mul x",
    "input 5x5x3; conv 4 1; layernorm eps=1e-6; layerscale 0.5; stochastic_depth 0.2; hardswish",
]


@pytest.mark.parametrize("text", CORNERS)
def test_corner_cases_are_exact(text):
    model = cnnc.compile(text.replace("; ", "\n") + "\nflatten\ndense 3 softmax\n")
    assert model.ok, model.diagnostics
    x = np.random.default_rng(1).normal(0, 1, (4, *model.input_shape)).astype(np.float32)
    check_same(model, random_weights(model), x)


@settings(max_examples=int(os.environ.get("CNNC_AGREEMENT_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.data_too_large])
@given(programs())
def test_random_models_are_exact(program):
    text, _, _ = program
    note(f"program:\n{text}")
    model = cnnc.compile(text)
    assume(model.ok)
    x = np.random.default_rng(3).normal(0, 1, (3, *model.input_shape)).astype(np.float32)
    check_same(model, random_weights(model), x)


def test_every_op_has_a_source_lowering():
    from cnnc import ops

    missing = [s.name for s in ops.schemas()
               if s.name != "input" and s.name not in SOURCE_LOWERINGS]
    assert missing == [], f"ops without a PyTorch-source lowering: {missing}"


def test_the_cli_writes_a_file_that_runs_alone(tmp_path):
    """Exported, trained weights saved by cnnc, and the file run by a plain Python process that
    cannot import cnnc."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "cnnc", "train", "examples/quickstart.cnn",
                        "--epochs", "1", "--limit", "300", "--out", str(run)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "quickstart.py"
    r = subprocess.run([sys.executable, "-m", "cnnc", "export", "examples/quickstart.cnn",
                        "--weights", str(run / "best.safetensors"), "-o", str(out)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    script = f"""
import sys
sys.modules["cnnc"] = None  # the file must not need it
sys.path.insert(0, {str(tmp_path)!r})
import torch
from safetensors.torch import load_file
from quickstart import Quickstart
net = Quickstart()
net.load_state_dict(load_file({str(run / "best.safetensors")!r}))
net.eval()
x = torch.zeros(2, 1, 8, 8)
y = net(x)
print(tuple(y.shape), float(y.sum()))
"""
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=clean_env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    shape, total = r.stdout.split(")")
    # softmax rows sum to 1 within float32 rounding: measured at most 1.8 eps a row on such
    # models (test_torch_backend); 16 eps a row
    assert shape == "(2, 10" and abs(float(total) - 2.0) < 2 * 16 * np.finfo(np.float32).eps
