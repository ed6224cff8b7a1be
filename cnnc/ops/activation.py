"""Standalone activations: `relu`, `relu6`, `tanh`, `sigmoid`, `softmax`, `leaky_relu [slope]`,
`elu [alpha]`, `gelu`, `silu`. Conv and dense layers also take one as their last argument."""

from __future__ import annotations

from . import ACTIVATIONS, Arg, OpSchema, register

# The parameters an activation takes, with their defaults (the same as PyTorch's).
ACTIVATION_PARAMS = {"leaky_relu": (Arg("slope", "float", 0.01, min=0.0),),
                     "elu": (Arg("alpha", "float", 1.0, min=0.0),)}

_SUMMARIES = {
    "relu": "max(x, 0)", "relu6": "min(max(x, 0), 6)", "tanh": "hyperbolic tangent",
    "sigmoid": "1 / (1 + exp(-x))", "softmax": "exp(x) / sum(exp(x)) over channels",
    "leaky_relu": "x if x > 0 else slope * x", "elu": "x if x > 0 else alpha * (exp(x) - 1)",
    "gelu": "x * Phi(x) (exact, erf form)", "silu": "x * sigmoid(x)",
}


def _describe(name: str):
    def describe(attrs: dict) -> str:
        extra = [f"{a.name}={attrs[a.name]:g}" for a in ACTIVATION_PARAMS.get(name, ())
                 if attrs[a.name] != a.default]
        return " ".join([name, *extra])
    return describe


def _infer(attrs, in_shapes):
    return in_shapes[0]


for _name in ACTIVATIONS:
    register(OpSchema(
        name=_name,
        summary=_SUMMARIES[_name],
        positional=ACTIVATION_PARAMS.get(_name, ()),
        infer=_infer,
        describe=_describe(_name),
    ))
