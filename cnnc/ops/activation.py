"""Standalone activations: `relu`, `relu6`, `tanh`, `sigmoid`, `softmax`, `leaky_relu [slope]`,
`elu [alpha]`, `gelu`, `silu`. Conv and dense layers also take one as their last argument."""

from __future__ import annotations

from . import ACTIVATIONS, Arg, OpSchema, register

# The parameters an activation takes, with their defaults (the same as PyTorch's). Each may be
# written positionally or as key=value: `leaky_relu 0.2`, `leaky_relu slope=0.2`. leaky_relu's
# is `slope`, as in the formula; PyTorch's and Keras 3's name, `negative_slope=`, is accepted too.
ACTIVATION_PARAMS = {"leaky_relu": (Arg("slope", "float", 0.01, min=0.0,
                                        aliases=("negative_slope",),
                                        help="the slope for x < 0"),),
                     "elu": (Arg("alpha", "float", 1.0, min=0.0,
                                 help="the scale of the negative part, which tends to -alpha"),)}

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
        options=ACTIVATION_PARAMS.get(_name, ()),  # the same arguments, by name
        infer=_infer,
        describe=_describe(_name),
    ))


def option_hint(op: str, key: str, value_text: str, fuses_activation: bool) -> str | None:
    """A hint for an option `key=` that `op` does not take but an activation does: `relu
    alpha=2`, `leaky_relu alpha=0.2`, or a fused activation's parameter, `conv 8 3 elu alpha=2`.
    None when `key` is no activation's parameter."""
    owner = next((name for name, params in ACTIVATION_PARAMS.items()
                  for a in params if key == a.name or key in a.aliases), None)
    if owner is None or owner == op:
        return None
    if op in ACTIVATIONS:
        own = ACTIVATION_PARAMS.get(op, ())
        if own:
            return (f"`{key}=` is a parameter of `{owner}`; `{op}` takes {own[0].name}=, like "
                    f"`{op} {own[0].name}={value_text}`")
        return f"`{op}` takes no options; `{key}=` is a parameter of `{owner}`"
    if fuses_activation:
        return (f"`{key}=` is a parameter of `{owner}`, and a fused activation takes its "
                f"defaults: write the activation as a layer of its own after this one, like "
                f"`{owner} {key}={value_text}`")
    return None
