"""The torch backend's CPU dropout (cnnc/backends/torch/dropout.py): the same distribution as
nn.Dropout (keep probability 1 - p to 1/65536, kept values scaled by its inverse), the right
gradient, the input's memory layout, repeatable under a seed.

Tolerances: a keep fraction over n elements is binomial; it is checked within 6 standard
deviations, sqrt(p (1 - p) / n), which a correct sampler misses with probability 2e-9."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from cnnc.backends.torch.dropout import Dropout  # noqa: E402

N = 1 << 20


def within_binomial(fraction: float, probability: float, n: int) -> bool:
    return abs(fraction - probability) <= 6 * math.sqrt(probability * (1 - probability) / n)


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9])
def test_keep_fraction_and_scale(p):
    torch.manual_seed(0)
    x = torch.rand(N) + 0.5  # no zeros: a zero in the output means dropped
    y = Dropout(p).train()(x)
    kept = y != 0
    threshold = round(p * 65536)
    scale = 65536 / (65536 - threshold)
    assert abs(threshold / 65536 - p) <= 0.5 / 65536
    assert within_binomial(kept.double().mean().item(), 1 - p, N)
    # both halves of each 32-bit word are uniform (elements 0, 2, 4... and 1, 3, 5...)
    assert within_binomial(kept[0::2].double().mean().item(), 1 - p, N // 2)
    assert within_binomial(kept[1::2].double().mean().item(), 1 - p, N // 2)
    assert torch.equal(y[kept], x[kept] * scale)  # the same float32 multiply: exact


def test_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(1)
    x = (torch.rand(64, 32, 7, 7) + 0.5).requires_grad_()
    g = torch.randn(64, 32, 7, 7)
    y = Dropout(0.3).train()(x)
    y.backward(g)
    scale = 65536 / (65536 - round(0.3 * 65536))
    assert torch.equal(x.grad, (g * (y != 0)) * scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_last_in_channels_last_out(dtype):
    torch.manual_seed(2)
    x = (torch.rand(8, 16, 5, 6) + 0.5).to(dtype).to(memory_format=torch.channels_last)
    y = Dropout(0.5).train()(x)
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    kept = y != 0
    assert torch.equal(y[kept], x[kept] * 2.0)
    assert within_binomial(kept.double().mean().item(), 0.5, x.numel())


def test_a_strided_view_is_dropped_as_its_own_values():
    torch.manual_seed(3)
    base = torch.rand(4, 8, 10, 10) + 0.5
    x = base[:, :, ::2, 1::3]  # neither contiguous nor channels_last
    y = Dropout(0.25).train()(x)
    kept = y != 0
    assert y.shape == x.shape
    assert torch.equal(y[kept], x[kept] * (65536 / (65536 - 16384)))


def test_repeatable_under_a_seed_and_different_without():
    x = torch.rand(4096) + 0.5
    d = Dropout(0.5).train()
    torch.manual_seed(7)
    a = d(x)
    torch.manual_seed(7)
    b = d(x)
    c = d(x)
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_evaluation_and_rate_zero_are_the_identity_and_it_prints_as_dropout():
    x = torch.rand(3, 4)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert repr(Dropout(0.25)) == "Dropout(p=0.25, inplace=False)"
    assert isinstance(Dropout(0.25), torch.nn.Dropout) and not Dropout(0.25).state_dict()


def test_the_lowered_model_uses_it():
    import cnnc
    from cnnc.backends.torch.lowering import lower

    model = cnnc.compile("input 8x8x1; conv 4 3x3 relu; dropout 0.25; flatten; dense 3 softmax")
    net = lower(model.graph)
    assert any(type(m) is Dropout for m in net.modules())
