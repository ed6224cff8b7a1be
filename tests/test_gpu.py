"""The torch backend on a GPU: one training step under bf16 autocast, fp16 with the gradient
scaler, channels_last, data held on the device and torch.compile, each against the same step in
float32 on the CPU. These run where CUDA is present and are skipped elsewhere; the same
comparison runs here on the CPU in bfloat16, which checks the tolerance on every machine.

The tolerance, derived from the precision's rounding
------------------------------------------------------
A format with p significant bits rounds a value x to x(1 + d), |d| <= u = 2**-p (round to
nearest): bfloat16 has p = 8 (7 stored bits and the implicit one), u = 2**-8; float16 p = 11,
u = 2**-11; TF32, which cuDNN uses for float32 convolutions on recent GPUs by default, keeps 10
stored bits too, u = 2**-11; float32 p = 24.

Under autocast a conv or dense layer rounds both operands to the low precision, accumulates in
float32 and stores its output in the low precision: three roundings per product in the forward
pass, three more in each backward product (the incoming gradient, the saved operand, the
result); batch norm adds one rounding of its output in each direction. To first order, relative
errors passing through layers of gain about one add up, so a quantity is off by at most u times
the roundings on its path: the loss by the forward pass's (3 per conv or dense + 1 per batch
norm: 10 here), the gradient by at most the forward's and the backward's (20).

The float32 sums themselves add at most K x 2**-24 for a sum of K terms (the classic bound for
recursive summation, whatever order a kernel uses): the sums on the model's path are listed
below (FORWARD_SUMS, BACKWARD_SUMS; about 17,000 and 27,000 terms, 1e-3 and 2.6e-3). This is all
a float32 step on another layout or device may differ by.

These bounds hold for the loss and for the whole gradient (every parameter's, as one vector:
the direction of the step). One tensor's gradient can be a small difference of large terms
(the first conv's weight gradient sums 8,192 products over a batch of random labels), which
magnifies its relative error beyond the first-order bound (bfloat16 on the CPU: 0.11 for the
first conv's weights, 4e-3 for the last dense layer's): each tensor is checked only against gross
error, below 1/2 (a lost gradient is off by 1, a negated one by 2).

Measured on the CPU in bfloat16: the loss within 2.6e-4 (bound 0.040), the whole gradient within
2.4e-2 (bound 0.081); float32 in the other layout: 6e-7 and 2e-6 (bounds 1.0e-3 and 2.6e-3);
the same on one thread and on two.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import cnnc
from cnnc.train.config import TrainConfig

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")

# Batch norm before the ReLU: after it, the ReLU's zeros would become equal negative values,
# and a max pool picks one of equal values by an order each kernel chooses for itself (a
# gradient that is not unique; float32 kernels on one thread and on two differed by 1% there).
# After a ReLU, tied zeros have no gradient anyway.
MODEL = """input 16x16x3
conv 16 3x3 pad=same bias=false
bn
relu
pool 2
conv 32 3x3 pad=same relu
pool 2
flatten
dense 10 softmax
"""
MATMUL_LAYERS, NORM_LAYERS = 3, 1
FORWARD_ROUNDINGS = 3 * MATMUL_LAYERS + NORM_LAYERS  # 10
GRADIENT_ROUNDINGS = 2 * FORWARD_ROUNDINGS  # 20
UNIT_ROUNDOFF = {"bf16": 2.0 ** -8, "fp16": 2.0 ** -11, "tf32": 2.0 ** -11, "fp32": 0.0}
FLOAT32 = 2.0 ** -24
B, HW = 32, 16 * 16  # the batch, the first conv's positions
# the lengths of the float32 sums on the path: conv_1 (3x3x3), batch norm's mean and variance
# (over B x 16 x 16), conv_2 (3x3x16), dense (4x4x32), softmax and the batch mean of the loss
FORWARD_SUMS = 27 + 2 * B * HW + 144 + 512 + (10 + B)
# dense (weights over B, input over 10), conv_2 (weights over B x 8 x 8, input over 3x3x32),
# batch norm's two reductions, conv_1's weights (over B x 16 x 16; no input gradient)
BACKWARD_SUMS = B + 10 + B * 64 + 288 + 2 * B * HW + B * HW
GROSS = 0.5
BATCH, LR = B, 1.0  # lr 1: a step's update is the gradient itself


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread on the CPU: on a machine shared with other work two threads wait for
    each other at every operation (a small model's step took 15x longer)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _data():
    rng = np.random.default_rng(7)
    x = rng.random((BATCH, 16, 16, 3), dtype=np.float32)
    y = rng.integers(0, 10, BATCH)
    return x, y


def one_step(device: str, precision: str, *, channels_last: bool | None = None,
             compile: bool = False):
    """(loss, {parameter: gradient}, session) of one SGD step from cnnc's initial weights, the
    gradient read back as the change of the weights (lr 1, no momentum)."""
    model = cnnc.compile(MODEL).raise_for_errors()
    session = model.to_backend("torch", seed=3, device=device, precision=precision,
                               channels_last=channels_last, compile=compile)
    session.configure_optimizer(TrainConfig(optimizer="sgd", lr=LR, momentum=0.0,
                                            batch_size=BATCH))
    x, y = _data()
    data = session.put(x, y)
    before = {k: v.copy() for k, v in session.get_weights().items()}  # not views of the live
    names = [n for n, _ in session.module.named_parameters()]
    for _ in range(30):  # fp16: a step whose scaled gradients overflow is skipped, scale halved
        loss, _ = session.train_step(data, np.arange(BATCH))
        after = {k: v.copy() for k, v in session.get_weights().items()}
        if any(not np.array_equal(before[n], after[n]) for n in names):
            break
    else:
        raise AssertionError("no optimizer step was taken")
    grads = {n: (before[n] - after[n]) / LR for n in names}
    return float(loss), grads, session


def relative(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def reference():
    """The float32 step on the CPU."""
    return one_step("cpu", "fp32", channels_last=False)


def bounds(precision: str) -> tuple[float, float]:
    """(loss, whole gradient): the relative errors `precision` may give (see the docstring)."""
    u = UNIT_ROUNDOFF[precision]
    return (FORWARD_ROUNDINGS * u + FORWARD_SUMS * FLOAT32,
            GRADIENT_ROUNDINGS * u + (FORWARD_SUMS + BACKWARD_SUMS) * FLOAT32)


def check_against(reference, result, precision: str):
    ref_loss, ref_grads, _ = reference
    loss, grads, _ = result
    loss_bound, grad_bound = bounds(precision)
    names = sorted(ref_grads)
    whole = relative(np.concatenate([grads[n].ravel() for n in names]),
                     np.concatenate([ref_grads[n].ravel() for n in names]))
    each = {n: relative(grads[n], ref_grads[n]) for n in names}
    assert abs(loss - ref_loss) / abs(ref_loss) <= loss_bound
    assert whole <= grad_bound, (whole, each)
    assert max(each.values()) < GROSS, each
    if precision in ("bf16", "fp16"):  # the low precision really ran: float32 sums alone
        assert whole > bounds("fp32")[1] / 100, whole  # (measured 2e-6) differ far less
    return whole


# -- on every machine: the same comparison on the CPU ---------------------------------------------


def test_float32_layouts_agree_to_float32_noise(reference):
    _, _, session = result = one_step("cpu", "fp32", channels_last=True)
    assert session.layout == "channels_last"
    check_against(reference, result, "fp32")


@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_on_the_cpu_within_the_derived_bound(reference, channels_last):
    result = one_step("cpu", "bf16", channels_last=channels_last)
    assert result[2].precision == "bf16"
    check_against(reference, result, "bf16")


# -- where CUDA is present ------------------------------------------------------------------------


def _on_device(session) -> None:
    data = session.put(*_data())
    assert data.x.device.type == "cuda" and data.y.device.type == "cuda"
    assert all(p.device.type == "cuda" for p in session.module.parameters())


@needs_cuda
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_bf16_step(reference, channels_last):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    result = one_step("cuda", "bf16", channels_last=channels_last)
    session = result[2]
    assert session.amp and session.amp_dtype == torch.bfloat16
    assert session.layout == ("channels_last" if channels_last else "contiguous")
    _on_device(session)
    check_against(reference, result, "bf16")


@needs_cuda
def test_cuda_fp16_step_with_the_gradient_scaler(reference):
    result = one_step("cuda", "fp16", channels_last=True)
    session = result[2]
    assert session.scaler is not None and session.amp_dtype == torch.float16
    _on_device(session)
    check_against(reference, result, "fp16")
    assert all(p.dtype == torch.float32 for p in session.module.parameters())


@needs_cuda
def test_cuda_float32_channels_last(reference):
    result = one_step("cuda", "fp32", channels_last=True)
    assert result[2].layout == "channels_last" and not result[2].amp
    _on_device(result[2])
    check_against(reference, result, "tf32" if _tf32() else "fp32")


def _tf32() -> bool:
    """Whether cuDNN or cuBLAS may compute float32 products in TF32 (cuDNN's default)."""
    return torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32


@needs_cuda
def test_cuda_auto_chooses_a_precision_and_a_layout(reference):
    result = one_step("cuda", "auto")
    session = result[2]
    assert "auto" in session.precision_note
    assert session.layout in ("contiguous", "channels_last")
    precision = session.precision
    check_against(reference, result, "tf32" if precision == "fp32" and _tf32() else precision)


@needs_cuda
@pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                    reason="torch.compile on CUDA needs Triton")
def test_cuda_compiled_bf16_step(reference):
    result = one_step("cuda", "bf16", channels_last=True, compile=True)
    assert result[2].compile
    check_against(reference, result, "bf16")


@needs_cuda
def test_cuda_bench_reports_the_peak_of_its_precision(capsys):
    from cnnc.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["bench", str(ROOT / "examples/zoo/resnet18.cnn"), "--backend", "torch", "--device", "cuda",
              "--batch", "16", "--steps", "3", "--input", "64x64x3", "--json"])
    out = capsys.readouterr().out
    assert stop.value.code == 0, out
    report = json.loads(out)
    assert report["device"].startswith("cuda")
    assert report["matmul_peak_flops_per_second"] == report["matmul_peaks"][report["precision"]]
    assert all(l["forward_ms"] >= 0 and l["backward_ms"] >= 0 for l in report["layers"])
