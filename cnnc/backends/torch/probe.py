"""How fast this device multiplies matrices, per precision: measured once per device.

Two users: `--precision auto` (bfloat16 where its matmul runs at least 1.5x float32) and
`cnnc bench` (achieved FLOP/s as a fraction of the matmul rate of the precision in use).

On the CPU the products are 1024 x 1024 (a few milliseconds each: cheap enough to measure before
every training that asks for `auto`); on a GPU, 8192 x 8192 products repeated, since a small one
measures the kernel launch rather than the arithmetic. Each rate is the best of five timings:
other processes only ever slow a run down.
"""

from __future__ import annotations

import time

import torch

_RATES: dict = {}  # str(device) -> {"fp32": FLOP/s, "bf16": FLOP/s[, "fp16": FLOP/s]}

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(a: torch.Tensor, b: torch.Tensor, reps: int) -> float:
    """FLOP/s of a @ b: the best of five timings of `reps` products, after one untimed."""
    device = a.device
    torch.mm(a, b)
    best = float("inf")
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        _sync(device)
        best = min(best, (time.perf_counter() - t0) / reps)
    n, k = a.shape
    return 2.0 * n * k * b.shape[1] / max(best, 1e-12)


def matmul_rates(device) -> dict[str, float]:
    """{"fp32": FLOP/s, "bf16": FLOP/s} of a square matmul on `device` (and "fp16" on a GPU;
    a dtype the device cannot multiply is left out). float32 matmuls are measured as PyTorch
    runs them here (TF32 only when the user allowed it)."""
    device = torch.device(device)
    key = str(device)
    if key not in _RATES:
        cuda = device.type == "cuda"
        n, reps = (8192, 10) if cuda else (1024, 1)
        gen = torch.Generator(device="cpu").manual_seed(0)
        a = torch.randn(n, n, generator=gen).to(device)
        b = torch.randn(n, n, generator=gen).to(device)
        rates = {}
        for name in ("fp32", "bf16", "fp16") if cuda else ("fp32", "bf16"):
            if cuda and name == "bf16" and not torch.cuda.is_bf16_supported():
                continue
            try:
                rates[name] = _rate(a.to(DTYPES[name]), b.to(DTYPES[name]), reps)
            except RuntimeError:  # no kernel for this dtype on this device
                continue
        _RATES[key] = rates
    return dict(_RATES[key])


def bf16_speedup(device) -> float:
    """How much faster a matmul runs in bfloat16 than in float32 on `device` (0 without
    bfloat16)."""
    rates = matmul_rates(device)
    return rates.get("bf16", 0.0) / max(rates["fp32"], 1e-9)
