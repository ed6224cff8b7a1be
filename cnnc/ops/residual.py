"""What a residual branch passes through before its `add`: `layerscale [INIT]` (a learned factor
per channel) and `stochastic_depth P` (`droppath`: the whole branch dropped per example while
training).

    block cn(c, p):                   # ConvNeXt's block
        x = here
        dwconv 7x7 pad=3; layernorm eps=1e-6; conv 4c... ; layerscale 1e-6
        stochastic_depth p
        add x
"""

from __future__ import annotations

from . import Arg, OpSchema, Param, register


def _channels(shape: tuple) -> int:
    return shape[-1]  # C of an H x W x C image, or the features of a flat vector


register(OpSchema(
    name="layerscale",
    summary="multiply each channel by a learned factor (CaiT's and ConvNeXt's layer scale)",
    positional=(Arg("init", "float", 1e-6,
                    help="the factors' initial value (torchvision's ConvNeXt: 1e-6)"),),
    options=(Arg("init", "float", 1e-6, help="the factors' initial value"),),
    infer=lambda attrs, ins: ins[0],
    params=lambda attrs, ins: {"scale": Param((_channels(ins[0]),), attrs["init"])},
    describe=lambda a: f"layerscale {a['init']:g}",
))

register(OpSchema(
    name="stochastic_depth",
    summary="while training, zero each example's whole tensor with probability P and scale "
            "the rest by 1/(1-P) (identity in evaluation); put it on a residual branch",
    positional=(Arg("rate", "float", min=0.0, max_exclusive=1.0,
                    help="the probability of dropping, in [0, 1)"),),
    options=(Arg("mode", "enum", "row", choices=("row", "batch"),
                 help="row: one draw per example (torchvision's default); batch: one draw for "
                      "the whole batch"),),
    aliases=("droppath",),
    infer=lambda attrs, ins: ins[0],
    describe=lambda a: f"stochastic_depth {a['rate']:g}"
                       + (f" mode={a['mode']}" if a["mode"] != "row" else ""),
))
