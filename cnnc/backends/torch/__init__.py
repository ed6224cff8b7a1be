"""The PyTorch backend: the checked graph lowered to an ordinary torch.nn.Module, trained on CPU
or GPU with torch.optim, one process or several (torchrun + DistributedDataParallel).

    session = cnnc.compile("model.cnn").to_backend("torch", device="auto")
    print(session.module)            # nn.Conv2d, nn.BatchNorm2d... named after cnnc's layers

This is the only package of cnnc that imports torch.
"""

from __future__ import annotations


class TorchBackend:
    name = "torch"

    def build(self, model, *, seed: int = 0, loss: str = "auto", dtype="float32",
              device: str = "auto", channels_last: bool | None = None, compile: bool = False,
              amp: bool | None = None, precision: str | None = None, **ignored):
        """A TorchSession for a checked model.

        device: auto (CUDA when available), cpu, cuda or cuda:N. channels_last: the memory layout
        of images (None: time both on the real model at the first training step, keep the
        faster). compile: torch.compile the model. precision: auto, fp32, bf16 or fp16 (autocast
        with float32 weights; auto measures whether bf16 pays here). amp: the older switch for
        bfloat16 autocast (None with no precision: on for CUDA).
        Options meant for other backends are ignored.
        """
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            from ...diagnostics import CnncError

            raise CnncError("the torch backend needs PyTorch, which is not installed",
                            code="backend", hint="pip install torch, or use --backend numpy"
                            ) from exc
        from .session import TorchSession

        return TorchSession(model, seed=seed, loss=loss, dtype=dtype, device=device,
                            channels_last=channels_last, compile=compile, amp=amp,
                            precision=precision)
