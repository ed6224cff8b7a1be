"""`cnnc bench`: the training step timed layer by layer, on every example and zoo model.

The sweep over every model calls the command line's `main` in this process (argument parsing,
the command, its JSON on standard output: the code a user's `cnnc bench` runs), so that torch is
imported once; a few cases run `python -m cnnc bench` in a subprocess as a user would. Times are
not checked against figures (the machine is shared): only that the report is complete, holds
every layer, and that the profiler gives a layer the time it spent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cnnc
from cnnc.cli import main

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.cnn"))
ZOO = sorted((ROOT / "examples" / "zoo").glob("*.cnn"))

# Inputs that keep a zoo model's step small; a model that takes only its own size runs at it.
ZOO_INPUT = {"alexnet": "64x64x3", "vgg16": None}
KEYS = {"model", "backend", "device", "layout", "precision", "batch", "steps",
        "train_images_per_second", "step_ms", "train_flops_per_second",
        "matmul_peak_flops_per_second", "matmul_peaks", "peak_fraction", "profile", "layers"}
LAYER_KEYS = {"name", "op", "macs", "forward_ms", "backward_ms", "share", "flops_per_second",
              "forward_flops_per_second", "backward_flops_per_second"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: on a machine shared with other work, two threads wait for each other
    at every operation (a step of a small model took 15x longer), and the sweep is about
    whether the report is complete, not about speed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cnnc_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    env.pop("CNNC_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "cnnc", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def bench_json(capsys, *args) -> dict:
    with pytest.raises(SystemExit) as stop:
        main(["bench", *map(str, args), "--json"])
    out = capsys.readouterr().out
    assert stop.value.code == 0, out
    return json.loads(out)


def check_report(report: dict, path: Path, input_shape: str | None = None) -> None:
    assert KEYS <= set(report)
    assert report["train_images_per_second"] > 0 and report["step_ms"] > 0
    params = []
    model = cnnc.compile(str(path), input_shape=_dims(input_shape) if input_shape else None)
    names = [l.name for l in model.graph.layers() if l.op != "input"]
    assert [l["name"] for l in report["layers"]] == names  # every layer, in graph order
    for layer in report["layers"]:
        assert LAYER_KEYS <= set(layer)
        assert layer["forward_ms"] >= 0 and layer["backward_ms"] >= 0, layer
        assert 0 <= layer["share"] <= 1, layer
        params.append(layer["macs"])
    profile = report["profile"]
    assert profile["layers_ms"] <= profile["step_ms"] + 1e-6
    assert profile["optimizer_ms"] >= 0
    assert report["matmul_peak_flops_per_second"] == report["matmul_peaks"][report["precision"]]
    assert sum(params) == model.summary().macs


def _dims(text):
    return tuple(int(v) for v in text.split("x"))


@pytest.mark.parametrize("path", EXAMPLES + ZOO, ids=lambda p: p.stem)
def test_every_model_on_the_torch_backend(path, capsys):
    if path.stem == "vgg16":
        pytest.skip("runs at 224x224 only: test_vgg16_at_its_size")
    args = [path, "--backend", "torch", "--device", "cpu", "--batch", "2", "--steps", "1",
            "--warmup", "1", "--optimizer", "sgd"]
    size = ZOO_INPUT.get(path.stem, "32x32x3") if path in ZOO else None
    if size:
        args += ["--input", size]
    report = bench_json(capsys, *args)
    assert report["backend"] == "torch" and report["device"] == "cpu"
    assert report["layout"] in ("contiguous", "channels_last")
    check_report(report, path, size)


@pytest.mark.slow
def test_vgg16_at_its_size(capsys):
    path = ROOT / "examples/zoo/vgg16.cnn"
    report = bench_json(capsys, path, "--backend", "torch", "--device", "cpu", "--batch", "1",
                        "--steps", "1", "--warmup", "1", "--optimizer", "sgd",
                        "--no-channels-last", "--precision", "bf16")
    check_report(report, path)


SMALL = [p for p in EXAMPLES if p.stem in ("quickstart", "digits_bn", "digits_resnet",
                                           "digits_modern", "autoencoder", "lenet5")]


@pytest.mark.parametrize("path", SMALL, ids=lambda p: p.stem)
def test_small_examples_on_the_numpy_backend(path, capsys):
    report = bench_json(capsys, path, "--batch", "2", "--steps", "1", "--warmup", "1")
    assert report["backend"] == "numpy" and report["precision"] == "fp32"
    assert set(report["matmul_peaks"]) == {"fp32"}
    check_report(report, path)


def test_the_command_in_a_subprocess_table_and_json():
    r = cnnc_cli("bench", "examples/quickstart.cnn", "--backend", "torch", "--batch", "4",
                 "--steps", "2", "--precision", "fp32", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["precision"] == "fp32" and report["batch"] == 4 and report["steps"] == 2
    check_report(report, ROOT / "examples/quickstart.cnn")
    # quickstart's `conv 32 3x3 relu; pool 2`: the ReLU runs after the pool, and the note says so
    assert any("conv_1's relu after pool_1" in note for note in report["notes"]), report["notes"]
    r = cnnc_cli("bench", "examples/quickstart.cnn", "--batch", "4", "--steps", "1")
    assert r.returncode == 0, r.stderr
    for phrase in ("conv_1", "Forward ms", "optimizer step", "unattributed", "train images/s",
                   "of the measured fp32 matmul rate"):
        assert phrase in r.stdout


def test_auto_precision_is_the_one_train_chooses(capsys):
    from cnnc.backends.torch.probe import bf16_speedup

    report = bench_json(capsys, ROOT / "examples/quickstart.cnn", "--backend", "torch",
                        "--device", "cpu", "--batch", "2", "--steps", "1")
    expected = "bf16" if bf16_speedup(torch.device("cpu")) >= 1.5 else "fp32"
    assert report["precision"] == expected
    assert "auto" in report["precision_note"]


@pytest.mark.parametrize("args, code, phrase", [
    (["missing.cnn"], 1, "missing.cnn"),
    (["examples/quickstart.cnn", "--precision", "bf16"], 1, "float32 reference"),
    (["examples/quickstart.cnn", "--steps", "0"], 2, "--steps"),
    (["examples/quickstart.cnn", "--warmup", "-1"], 1, "--warmup"),
])
def test_errors_as_every_command_reports_them(args, code, phrase):
    r = cnnc_cli("bench", *args)
    assert r.returncode == code and phrase in r.stderr and "Traceback" not in r.stderr
    if code == 1 and args[0] == "missing.cnn":
        r = cnnc_cli("bench", *args, "--json")
        assert r.returncode == 1
        report = json.loads(r.stdout)
        assert report["ok"] is False and phrase in json.dumps(report)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_a_gpu_is_an_error():
    r = cnnc_cli("bench", "examples/quickstart.cnn", "--backend", "torch", "--device", "cuda")
    assert r.returncode == 1 and "--device cuda" in r.stderr and "Traceback" not in r.stderr


# -- the profiler gives each layer its own time ---------------------------------------------------


class _Slow(torch.autograd.Function):
    """The identity, sleeping in its backward."""

    @staticmethod
    def forward(ctx, x, seconds):
        ctx.seconds = seconds
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        time.sleep(ctx.seconds)
        return grad, None


@pytest.mark.parametrize("path", ["examples/digits_resnet.cnn", "examples/inception_block.cnn"])
def test_a_slow_layer_is_the_one_charged(path):
    """A layer made to take 0.25 s in its backward (and 0.25 s in its forward) gets that time,
    and no other layer does: in a graph with branches (a residual block, inception's four
    branches) the marks bracket exactly one layer's backward."""
    from cnnc.train.bench import bench
    from cnnc.train.config import TrainConfig

    model = cnnc.compile(str(ROOT / path))
    session = model.to_backend("torch", device="cpu", precision="fp32", channels_last=False)
    layers = [l for l in model.graph.layers() if l.params and l.inputs != [model.graph.input]]
    target = layers[len(layers) // 2].name  # a layer in the middle, inside a branch
    module = session.module.layer(target)
    original = module.forward
    delay = 0.25

    def slow_forward(*xs):
        time.sleep(delay)
        return _Slow.apply(original(*xs), delay)

    module.forward = slow_forward
    result = bench(model, session, TrainConfig(optimizer="sgd", batch_size=2), steps=1,
                   warmup=1)
    times = {l.name: l for l in result.layers}
    assert times[target].forward_s >= delay and times[target].backward_s >= delay
    others = [l for l in result.layers if l.name != target]
    assert all(l.forward_s < delay and l.backward_s < delay for l in others), \
        [(l.name, l.forward_s, l.backward_s) for l in others]
    assert result.layers_s <= result.profiled_step_s
