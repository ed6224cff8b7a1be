"""The NumPy reference backend: every op's forward and backward, readable and vectorised."""

from __future__ import annotations


class NumpyBackend:
    name = "numpy"

    def build(self, model, *, seed: int = 0, loss: str = "auto", dtype="float32", **options):
        from .session import NumpySession

        # Options meant for other backends (device, channels_last...) do not apply here.
        return NumpySession(model, seed=seed, loss=loss, dtype=dtype)
