"""PyTorch for the tests that use it as a reference, and a stand-in where it is not installed.

The NumPy backend's own tests (finite-difference gradient checks, optimizer state) must run on a
machine without torch. A test module imports `torch` and `TF` (torch.nn.functional) from here:
with torch absent, any use of them skips that test, and the module's other tests run.
"""

from __future__ import annotations

import pytest


class _Absent:
    """Attribute access gives the stand-in again; calling it skips the test. A reference module
    written in a test (`class Net(nn.Module)`) can still be defined: it skips when built."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> "_Absent":
        if attr.startswith("__"):
            raise AttributeError(attr)
        return self

    def __call__(self, *args, **kwargs):
        # allowed at module level too: a module that needs torch while it is imported is skipped
        # whole, as pytest.importorskip would
        pytest.skip(f"{self._name} is not installed: this test compares against PyTorch",
                    allow_module_level=True)

    def __mro_entries__(self, bases):
        absent = self

        class AbsentBase:
            def __init__(self, *args, **kwargs):
                absent()

        return (AbsentBase,)


try:
    import torch
    import torch.nn.functional as TF
except ImportError:
    torch = TF = _Absent("torch")

# for a test that runs the torch backend through cnnc without touching torch itself
needs_torch = pytest.mark.skipif(isinstance(torch, _Absent),
                                 reason="torch is not installed: this test runs the torch backend")

__all__ = ["torch", "TF", "needs_torch"]
