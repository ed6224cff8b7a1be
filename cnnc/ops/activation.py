"""The built-in activations: `relu`, `relu6`, `tanh`, `sigmoid`, `softmax`, `leaky_relu [slope]`,
`elu [alpha]`, `gelu`, `silu`, `hardswish`, `hardsigmoid`. Conv and dense layers also take one
as their last argument.

Each is one entry of the activation table (cnnc.ops.Activation); `register_activation` makes the
entry and its op (the standalone layer). Adding an activation is one entry here (or in a plugin)
plus one kernel per backend.
"""

from __future__ import annotations

from . import ACTIVATIONS, Activation, Arg, OpSchema, find_activation, register_activation

BUILTIN = (
    Activation("relu", "max(x, 0)"),
    Activation("relu6", "min(max(x, 0), 6)"),
    Activation("tanh", "hyperbolic tangent"),
    Activation("sigmoid", "1 / (1 + exp(-x))", absorbed_by="bce"),
    Activation("softmax", "exp(x) / sum(exp(x)) over channels", absorbed_by="cross_entropy"),
    # leaky_relu's parameter is `slope`, as in the formula; PyTorch's and Keras 3's name,
    # `negative_slope=`, is accepted too. Defaults are PyTorch's.
    Activation("leaky_relu", "x if x > 0 else slope * x",
               (Arg("slope", "float", 0.01, min=0.0, aliases=("negative_slope",),
                    help="the slope for x < 0"),)),
    Activation("elu", "x if x > 0 else alpha * (exp(x) - 1)",
               (Arg("alpha", "float", 1.0, min=0.0,
                    help="the scale of the negative part, which tends to -alpha"),)),
    Activation("gelu", "x * Phi(x) (exact, erf form)"),
    Activation("silu", "x * sigmoid(x)"),
    # PyTorch's definitions (MobileNetV3's piecewise-linear stand-ins for silu and sigmoid)
    Activation("hardswish", "x * relu6(x + 3) / 6"),
    Activation("hardsigmoid", "relu6(x + 3) / 6"),
)


def activation_schema(act: Activation) -> OpSchema:
    """The op of an activation: the standalone layer, its parameters positional or by name."""

    def describe(attrs: dict) -> str:
        extra = [f"{a.name}={attrs[a.name]:g}" for a in act.params if attrs[a.name] != a.default]
        return " ".join([act.name, *extra])

    return OpSchema(name=act.name, summary=act.summary, positional=act.params,
                    options=act.params,  # the same arguments, by name
                    infer=lambda attrs, in_shapes: in_shapes[0], describe=describe)


for _act in BUILTIN:
    register_activation(_act)


def option_hint(op: str, key: str, value_text: str, fuses_activation: bool) -> str | None:
    """A hint for an option `key=` that `op` does not take but an activation does: `relu
    alpha=2`, `leaky_relu alpha=0.2`, or a fused activation's parameter, `conv 8 3 elu alpha=2`.
    None when `key` is no activation's parameter."""
    owner = next((act.name for act in map(find_activation, ACTIVATIONS)
                  for a in act.params if key == a.name or key in a.aliases), None)
    if owner is None or owner == op:
        return None
    own_act = find_activation(op)
    if own_act is not None:
        own = own_act.params
        if own:
            return (f"`{key}=` is a parameter of `{owner}`; `{op}` takes {own[0].name}=, like "
                    f"`{op} {own[0].name}={value_text}`")
        return f"`{op}` takes no options; `{key}=` is a parameter of `{owner}`"
    if fuses_activation:
        return (f"`{key}=` is a parameter of `{owner}`, and a fused activation takes its "
                f"defaults: write the activation as a layer of its own after this one, like "
                f"`{owner} {key}={value_text}`")
    return None
