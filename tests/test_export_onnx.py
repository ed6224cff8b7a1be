"""`cnnc export --format onnx`: the exported model, run by onnxruntime, against the NumPy
reference, on every example and zoo model and on the random programs the backend agreement
test generates; the file itself checked by onnx.checker and shape inference.

Tolerance: the truth is the NumPy reference in float64. onnxruntime must be within 1e-5 of it
(relative to the output's largest value, absolute below 1e-2), or within 4x the rounding noise
of the reference's own float32 run where a model amplifies rounding more than that -- measured
per model, as tests/test_backend_agreement.py does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from hypothesis import HealthCheck, assume, given, note, settings  # noqa: E402

import cnnc  # noqa: E402
from cnnc.export.onnx_model import LOWERINGS, OPSET, to_onnx  # noqa: E402
from tests.test_backend_agreement import programs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.cnn"))
ZOO = sorted((ROOT / "examples" / "zoo").glob("*.cnn"))
TARGET = 1e-5
FLOOR = 1e-2


def test_weights(model, seed=0):
    """Random weights of every kind, batch-norm statistics included (so eval-mode batch norm is
    not the identity), drawn cheaply in float32 (VGG-16 has 138 M of them)."""
    rng = np.random.default_rng(seed)
    out = {}
    for layer in model.graph.layers():
        for name, shape in {**layer.params, **layer.buffers}.items():
            key = f"{layer.name}.{name}"
            if name == "running_var":
                v = rng.uniform(0.5, 2.0, shape)
            elif name in ("running_mean", "bias"):
                v = rng.normal(0, 0.3, shape)
            elif layer.op == "batchnorm":
                v = rng.uniform(0.5, 1.5, shape)
            else:
                fan_in = int(np.prod(shape[1:]))
                v = rng.standard_normal(shape, dtype=np.float32) * np.float32(1 / np.sqrt(fan_in))
            out[key] = np.asarray(v, dtype=np.float32)
    return out


test_weights.__test__ = False  # a helper, not a test


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), FLOOR))


def run_onnx(model_proto, x):
    session = ort.InferenceSession(model_proto.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def check_agreement(model, weights, x, *, layout="nhwc"):
    """onnxruntime's output against the NumPy reference (float32 and float64)."""
    proto = to_onnx(model, weights, layout=layout)
    x_in = x.transpose(0, 3, 1, 2).copy() if (layout == "nchw" and x.ndim == 4) else x
    got = run_onnx(proto, x_in)
    loss = "mse" if len(model.output_shape) == 3 else "auto"  # an autoencoder
    ref32 = model.to_backend("numpy", dtype="float32", loss=loss)
    ref32.set_weights(weights)
    ref64 = model.to_backend("numpy", dtype="float64", loss=loss)
    ref64.set_weights(weights)
    r32, r64 = ref32.predict(x), ref64.predict(x.astype(np.float64))
    if r64.ndim == 4 and r64.shape != got.shape:  # an image output, NCHW inside the reference
        r32, r64 = r32.transpose(0, 2, 3, 1), r64.transpose(0, 2, 3, 1)
        if layout == "nchw":
            r32, r64 = r32.transpose(0, 3, 1, 2), r64.transpose(0, 3, 1, 2)
    noise = rel_err(r32, r64)
    allowed = max(TARGET, 4 * noise)
    err = rel_err(got, r64)
    assert err <= allowed, f"onnxruntime differs from the reference by {err:.3g} " \
                           f"(allowed {allowed:.3g}; float32 noise {noise:.3g})"
    assert rel_err(got, r32) <= allowed + noise
    return err, noise


def _compile(path):
    model = cnnc.compile(path)
    assert model.ok, model.diagnostics
    return model


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_agree_with_the_reference(path):
    model = _compile(path)
    x = np.random.default_rng(1).normal(0, 1, (3, *model.input_shape)).astype(np.float32)
    check_agreement(model, test_weights(model), x)


BIG = ("vgg16", "alexnet")  # 138 M and 61 M parameters: a minute each on two cores


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.stem in BIG
                                  else p for p in ZOO], ids=[p.stem for p in ZOO])
def test_zoo_models_agree_with_the_reference(path):
    model = _compile(path)
    x = np.random.default_rng(1).normal(0, 1, (1, *model.input_shape)).astype(np.float32)
    check_agreement(model, test_weights(model), x)


def test_nchw_layout_and_dynamic_batch():
    model = _compile(ROOT / "examples" / "digits_resnet.cnn")
    w = test_weights(model)
    for batch in (1, 5):
        x = np.random.default_rng(batch).normal(0, 1, (batch, *model.input_shape))
        check_agreement(model, w, x.astype(np.float32), layout="nchw")
    proto = to_onnx(model, w, layout="nchw")
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["layout"] == "NCHW" and meta["opset"] == str(OPSET)
    h, wd, c = model.input_shape
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", c, h, wd]
    assert proto.opset_import[0].version == OPSET


# Hand-picked corners: each one a place where ONNX's operators do not say what the language says
CORNERS = {
    # given output_shape, ONNX would ignore these pads and split its own (random programs found it)
    "conv_transpose, uneven crops": "input 3x3x1; conv_transpose 1 1x1 pad=1x0x0x1; flatten; "
                                    "dense 2",
    "conv_transpose, output padding past the stride": "input 3x3x1; conv_transpose 2 1x1 "
                                                      "output_padding=1x0 dilation=2x1 relu; "
                                                      "flatten; dense 2",
    "conv_transpose, uneven crops and output padding": "input 3x3x2; conv_transpose 2 2 stride=2 "
                                                       "pad=0x1x1x0 output_padding=1; gap; "
                                                       "dense 3",
    "same, stride 2, even size (pads 0/1)": "input 6x6x2; conv 3 3x3 stride=2 pad=same relu",
    "explicit asymmetric pads, dilation": "input 5x7x1; conv 2 3x2 pad=1x0x0x2 dilation=2x1",
    "max pool, asymmetric pad": "input 5x5x2; pool max 2 stride=2 pad=same",
    "max pool, ceil with pads": "input 6x6x1; pool max 2 stride=2 pad=1 ceil=true",
    "avg pool, ceil, count_pad=false": "input 7x7x2; pool avg 3 stride=2 pad=1 ceil=true",
    "avg pool, ceil, count_pad=true": "input 7x7x2; pool avg 3 stride=2 pad=1 ceil=true "
                                      "count_pad=true",
    "avg pool, asymmetric pads, count_pad": "input 6x5x1; pool avg 3 stride=2 pad=1x0x0x1 "
                                            "ceil=true count_pad=true",
    "avg pool, padded, count_pad": "input 6x6x2; pool avg 3 stride=1 pad=1 count_pad=true",
    "avg pool, padded": "input 6x6x2; pool avg 3 stride=1 pad=1",
    "ceil window past the input": "input 2x2x1; pool avg 3 stride=3 ceil=true",
    "depthwise with multiplier": "input 6x6x3; dwconv 3x3 multiplier=2 pad=same bias=false; bn",
    "groups": "input 5x5x4; conv 6 3x3 groups=2 elu",
    "global max, keepdims": "input 4x4x3; relu; pool global max keepdims=true; conv 2 1x1",
    "softmax over channels": "input 4x4x3; conv 3 1x1 softmax",
    "every activation": "input 4x4x3; relu6; tanh; leaky_relu 0.2; elu 0.5; gelu; silu; "
                        "conv 4 1 leaky_relu; conv 4 1 elu; conv 4 1 gelu; conv 4 1 silu; "
                        "conv 4 1 relu6; sigmoid",
    "flatten is channel-major": "input 3x2x4; conv 3 1x1",
    "mlp with batch norm": "input 7; dense 5 relu; bn; dropout 0.3; dense 4 tanh",
    "mlp with layer norm and layer scale": "input 7; dense 5; ln; layerscale 0.5; hardswish",
    "squeeze-and-excitation gate": "input 6x6x4; x = here; gap; dense 4 hardsigmoid; mul x",
    "layer norm over channels, layer scale": "input 5x5x3; conv 4 1; layernorm eps=1e-6; "
                                             "layerscale 0.5; stochastic_depth 0.2; hardswish",
}


@pytest.mark.parametrize("case", list(CORNERS))
def test_corner_cases_agree(case):
    flat = CORNERS[case].startswith("input 7;")
    text = (CORNERS[case].replace("; ", "\n") + ("" if flat else "\nflatten")
            + "\ndense 3 softmax\n")
    model = cnnc.compile(text)
    assert model.ok, model.diagnostics
    x = np.random.default_rng(2).normal(0, 1, (4, *model.input_shape)).astype(np.float32)
    check_agreement(model, test_weights(model), x)


@settings(max_examples=int(os.environ.get("CNNC_AGREEMENT_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.data_too_large])
@given(programs())
def test_random_models_agree(program):
    text, _, _ = program
    note(f"program:\n{text}")
    model = cnnc.compile(text)
    assume(model.ok)
    x = np.random.default_rng(3).normal(0, 1, (3, *model.input_shape)).astype(np.float32)
    check_agreement(model, test_weights(model), x)


def test_every_op_has_an_onnx_lowering():
    from cnnc import ops

    missing = [s.name for s in ops.schemas() if s.name != "input" and s.name not in LOWERINGS]
    assert missing == [], f"ops without an ONNX lowering (cnnc/export/onnx_model.py): {missing}"


def test_the_cli_writes_a_checked_file_with_its_metadata(tmp_path):
    out = tmp_path / "m.onnx"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    r = subprocess.run([sys.executable, "-m", "cnnc", "export", "examples/fashion_cnn.cnn",
                        "-o", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"opset {OPSET}" in r.stdout
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["layout"] == "NHWC" and meta["input_shape"] == "28x28x1"
    # without --weights: the model's initial weights, the same ones `cnnc train` starts from
    model = _compile(ROOT / "examples" / "fashion_cnn.cnn")
    from cnnc.backends.init import initial_weights
    init = initial_weights(model.graph, model.train_config.seed if model.train_config else 0)
    got = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    for k, v in init.items():
        np.testing.assert_array_equal(got[k], v)


def test_a_mismatched_weights_file_is_a_clear_error(tmp_path):
    from cnnc.backends.init import initial_weights
    from cnnc.train.checkpoint import save_safetensors

    model = _compile(ROOT / "examples" / "fashion_cnn.cnn")
    wrong = initial_weights(model.graph, 0)
    want = wrong["dense_1.weight"].shape
    wrong["dense_1.weight"] = np.zeros((3, 3), np.float32)
    save_safetensors(tmp_path / "w.safetensors", wrong)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    r = subprocess.run([sys.executable, "-m", "cnnc", "export", "examples/fashion_cnn.cnn",
                        "--weights", str(tmp_path / "w.safetensors"), "-o",
                        str(tmp_path / "x.onnx")], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "layer dense_1" in r.stderr and "(3, 3)" in r.stderr
    assert "(" + ", ".join(map(str, want)) + ")" in r.stderr
    assert not (tmp_path / "x.onnx").exists()
