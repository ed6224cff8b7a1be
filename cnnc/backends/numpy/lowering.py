"""The NumPy backend's kernels, registered with cnnc.backends.register_kernel("numpy", ...).

Each op's kernel is a pair of functions over one layer:

    forward(layer, params, inputs, ctx)   -> (y, cache)      inputs: list of arrays
    backward(layer, params, cache, dy, ctx) -> (dinputs, dparams)

`params` maps the layer's parameter names ("weight", "bias", "running_mean", ...) to arrays.
`ctx` carries the mode (training or not), the dropout generator and whether the layer's input
gradient is needed. Everything a kernel needs to know of the layer is in its settled attributes
(layer.settled: resolved stride, explicit pads, groups, the average pool's divisor...) and its
shapes: a kernel never recomputes what the checker decided.

An activation's kernel is the pair (forward(x, **params) -> (y, saved), backward(dy, saved,
**params) -> dx) of kernels/activation.py. The session's graph runner applies a layer's fused
activation (conv 32 3x3 relu) after its kernel, and leaves out the one the loss absorbs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import register_builtin_kernels
from . import kernels as K
from .kernels.activation import ACTIVATION_KERNELS


@dataclass
class Context:
    training: bool
    rng: np.random.Generator
    need_dx: bool = True


def standalone_activation(pair):
    """An activation's kernel as an op's: the kernel of a standalone activation layer (relu)."""
    act_f, act_b = pair

    def fwd(layer, p, inputs, ctx):
        return act_f(inputs[0], **layer.settled["activation_params"])

    def bwd(layer, p, saved, dy, ctx):
        return [act_b(dy, saved, **layer.settled["activation_params"])], {}

    return fwd, bwd


# -- conv ---------------------------------------------------------------------------------------
def _conv_f(layer, p, inputs, ctx):
    a = layer.settled
    return K.conv2d_forward(inputs[0], p["weight"], p.get("bias"), stride=a["stride"],
                            pads=a["pads"], dilation=a["dilation"], groups=a["groups"])


def _conv_b(layer, p, cache, dy, ctx):
    dx, dw, db = K.conv2d_backward(dy, cache, need_dx=ctx.need_dx)
    grads = {"weight": dw}
    if db is not None:
        grads["bias"] = db
    return [dx], grads


# -- dense --------------------------------------------------------------------------------------
def _dense_f(layer, p, inputs, ctx):
    return K.dense_forward(inputs[0], p["weight"], p.get("bias"))


def _dense_b(layer, p, cache, dy, ctx):
    dx, dw, db = K.dense_backward(dy, cache, need_dx=ctx.need_dx)
    grads = {"weight": dw}
    if db is not None:
        grads["bias"] = db
    return [dx], grads


# -- pool ---------------------------------------------------------------------------------------
def _pool_f(layer, p, inputs, ctx):
    a = layer.settled
    (x,) = inputs
    if a["kind"] == "global":
        y, cache = K.global_pool_forward(x, mode=a["mode"])
        if a["keepdims"]:
            y = y[:, :, None, None]
        return y, cache
    out_hw = layer.shape[:2]
    if a["kind"] == "max":
        return K.maxpool2d_forward(x, kernel=a["size"], stride=a["stride"], pads=a["pads"],
                                   out_hw=out_hw)
    return K.avgpool2d_forward(x, kernel=a["size"], stride=a["stride"], pads=a["pads"],
                               out_hw=out_hw, divisor=a["divisor"])


def _pool_b(layer, p, cache, dy, ctx):
    a = layer.settled
    if a["kind"] == "global":
        if a["keepdims"]:
            dy = dy[:, :, 0, 0]
        return [K.global_pool_backward(dy, cache)], {}
    if a["kind"] == "max":
        return [K.maxpool2d_backward(dy, cache)], {}
    return [K.avgpool2d_backward(dy, cache)], {}


# -- normalisation and regularisation -----------------------------------------------------------
def _bn_f(layer, p, inputs, ctx):
    a = layer.settled
    return K.batchnorm_forward(inputs[0], p["weight"], p["bias"], p["running_mean"],
                               p["running_var"], training=ctx.training, momentum=a["momentum"],
                               eps=a["eps"])


def _bn_b(layer, p, cache, dy, ctx):
    dx, dgamma, dbeta = K.batchnorm_backward(dy, cache)
    return [dx], {"weight": dgamma, "bias": dbeta}


def _layernorm_f(layer, p, inputs, ctx):
    return K.layernorm_forward(inputs[0], p["weight"], p["bias"], eps=layer.settled["eps"])


def _layernorm_b(layer, p, cache, dy, ctx):
    dx, dgamma, dbeta = K.layernorm_backward(dy, cache)
    return [dx], {"weight": dgamma, "bias": dbeta}


def _layerscale_f(layer, p, inputs, ctx):
    return K.layerscale_forward(inputs[0], p["scale"])


def _layerscale_b(layer, p, cache, dy, ctx):
    dx, dscale = K.layerscale_backward(dy, cache)
    return [dx], {"scale": dscale}


def _stochastic_depth_f(layer, p, inputs, ctx):
    a = layer.settled
    return K.stochastic_depth_forward(inputs[0], a["rate"], ctx.rng, ctx.training, a["mode"])


def _stochastic_depth_b(layer, p, cache, dy, ctx):
    return [K.stochastic_depth_backward(dy, cache)], {}


def _dropout_f(layer, p, inputs, ctx):
    return K.dropout_forward(inputs[0], layer.settled["rate"], ctx.rng, ctx.training)


def _dropout_b(layer, p, cache, dy, ctx):
    return [K.dropout_backward(dy, cache)], {}


# -- shape and merges ---------------------------------------------------------------------------
def _flatten_f(layer, p, inputs, ctx):
    return K.flatten_forward(inputs[0])


def _flatten_b(layer, p, cache, dy, ctx):
    return [K.flatten_backward(dy, cache)], {}


def _add_f(layer, p, inputs, ctx):
    return K.add_forward(*inputs)


def _add_b(layer, p, cache, dy, ctx):
    return K.add_backward(dy, cache), {}


def _concat_f(layer, p, inputs, ctx):
    return K.concat_forward(*inputs)


def _concat_b(layer, p, cache, dy, ctx):
    return K.concat_backward(dy, cache), {}


def _mul_f(layer, p, inputs, ctx):
    return K.mul_forward(*inputs)


def _mul_b(layer, p, cache, dy, ctx):
    return K.mul_backward(dy, cache), {}


def _split_f(layer, p, inputs, ctx):
    (x,) = inputs
    return K.channel_slice_forward(x, *layer.settled["channels"])


def _split_b(layer, p, cache, dy, ctx):
    return [K.channel_slice_backward(dy, cache)], {}


def _shuffle_f(layer, p, inputs, ctx):
    return K.channel_shuffle_forward(inputs[0], layer.settled["groups"])


def _shuffle_b(layer, p, cache, dy, ctx):
    return [K.channel_shuffle_backward(dy, cache)], {}


# -- resampling ---------------------------------------------------------------------------------
def _upsample_f(layer, p, inputs, ctx):
    a = layer.settled
    if a["mode"] == "nearest":
        y, cache = K.upsample_nearest_forward(inputs[0], a["scale"])
    else:
        y, cache = K.upsample_bilinear_forward(inputs[0], a["scale"], a["align_corners"])
    return y, (a["mode"], cache)


def _upsample_b(layer, p, cache, dy, ctx):
    mode, inner = cache
    if mode == "nearest":
        return [K.upsample_nearest_backward(dy, inner)], {}
    return [K.upsample_bilinear_backward(dy, inner)], {}


def _conv_transpose_f(layer, p, inputs, ctx):
    a = layer.settled
    return K.conv_transpose2d_forward(inputs[0], p["weight"], p.get("bias"), stride=a["stride"],
                                      pads=a["pads"], output_padding=a["output_pads"],
                                      dilation=a["dilation"], groups=a["groups"])


def _conv_transpose_b(layer, p, cache, dy, ctx):
    dx, dw, db = K.conv_transpose2d_backward(dy, cache, need_dx=ctx.need_dx)
    grads = {"weight": dw}
    if db is not None:
        grads["bias"] = db
    return [dx], grads


def _input_f(layer, p, inputs, ctx):
    return inputs[0], None


def _input_b(layer, p, cache, dy, ctx):
    return [dy], {}


# -- the table ----------------------------------------------------------------------------------
register_builtin_kernels("numpy", {
    "input": (_input_f, _input_b),
    "conv": (_conv_f, _conv_b),
    "dwconv": (_conv_f, _conv_b),
    "dense": (_dense_f, _dense_b),
    "pool": (_pool_f, _pool_b),
    "batchnorm": (_bn_f, _bn_b),
    "layernorm": (_layernorm_f, _layernorm_b),
    "layerscale": (_layerscale_f, _layerscale_b),
    "stochastic_depth": (_stochastic_depth_f, _stochastic_depth_b),
    "dropout": (_dropout_f, _dropout_b),
    "flatten": (_flatten_f, _flatten_b),
    "add": (_add_f, _add_b),
    "concat": (_concat_f, _concat_b),
    "mul": (_mul_f, _mul_b),
    "split": (_split_f, _split_b),
    "shuffle": (_shuffle_f, _shuffle_b),
    "upsample": (_upsample_f, _upsample_b),
    "conv_transpose": (_conv_transpose_f, _conv_transpose_b),
    **ACTIVATION_KERNELS,
})
