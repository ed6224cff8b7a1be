"""cnnc: a compiler for convolutional networks written in a small text language.

    >>> import cnnc
    >>> model = cnnc.compile("input 28x28x1; conv 32 3x3 relu; pool 2; flatten; dense 10 softmax")
    >>> model.summary().total_params
    54410

Heavy modules (numpy, torch, networkx) are imported only when a stage needs them.
"""

__version__ = "0.1.0"
__all__ = ["compile", "Model", "CnncError", "CompileError", "__version__"]


def __getattr__(name):
    if name in ("compile", "Model"):
        from . import pipeline

        return getattr(pipeline, name)
    if name in ("CnncError", "CompileError", "Diagnostic"):
        from . import diagnostics

        return getattr(diagnostics, name)
    raise AttributeError(f"module 'cnnc' has no attribute {name!r}")
