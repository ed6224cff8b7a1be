"""Normalisation and regularisation: `batchnorm` (`bn`), `layernorm` (`ln`), `dropout P`."""

from __future__ import annotations

from . import Arg, OpSchema, Param, register


def _channels(shape: tuple) -> int:
    return shape[-1]  # C of an H x W x C image, or the features of a flat vector


register(OpSchema(
    name="batchnorm",
    summary="batch normalisation over each channel (each feature when flat)",
    options=(Arg("eps", "float", 1e-5, min=0.0),
             Arg("momentum", "float", 0.1, min=0.0, max=1.0,
                 help="the weight of each batch in the running statistics, in [0, 1]")),
    aliases=("bn",),
    infer=lambda attrs, ins: ins[0],
    # scale 1, shift 0, running mean 0, running variance 1, as everyone starts them
    params=lambda attrs, ins: {"weight": Param((_channels(ins[0]),), "ones"),
                               "bias": Param((_channels(ins[0]),), "zeros")},
    buffers=lambda attrs, ins: {"running_mean": Param((_channels(ins[0]),), "zeros"),
                                "running_var": Param((_channels(ins[0]),), "ones")},
    describe=lambda a: "batchnorm",
))

register(OpSchema(
    name="layernorm",
    summary="layer normalisation over the channels at each position (the features when flat)",
    # PyTorch's nn.LayerNorm default; torchvision's ConvNeXt writes eps=1e-6
    options=(Arg("eps", "float", 1e-5, min=0.0, help="added to the variance"),),
    aliases=("ln",),
    infer=lambda attrs, ins: ins[0],
    params=lambda attrs, ins: {"weight": Param((_channels(ins[0]),), "ones"),
                               "bias": Param((_channels(ins[0]),), "zeros")},
    describe=lambda a: "layernorm" + (f" eps={a['eps']:g}" if a["eps"] != 1e-5 else ""),
))

register(OpSchema(
    name="dropout",
    summary="zero each value with probability P while training (inverted dropout)",
    positional=(Arg("rate", "float", min=0.0, max_exclusive=1.0,
                    help="the probability of dropping, in [0, 1)"),),
    infer=lambda attrs, ins: ins[0],
    describe=lambda a: f"dropout {a['rate']:g}",
))
