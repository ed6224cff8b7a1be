"""The NumPy backend's table from op name to kernel.

Each entry is a pair of functions over one layer:

    forward(layer, params, inputs, ctx)   -> (y, cache)      inputs: list of arrays
    backward(layer, params, cache, dy, ctx) -> (dinputs, dparams)

`params` maps the layer's parameter names ("weight", "bias", "running_mean", ...) to arrays.
`ctx` carries the mode (training or not), the dropout generator and whether the layer's input
gradient is needed. Shapes and resolved padding come from the checked graph (layer.attrs), so a
kernel never recomputes what the checker decided.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import kernels as K


@dataclass
class Context:
    training: bool
    rng: np.random.Generator
    need_dx: bool = True
    # The output layer whose final softmax/sigmoid the loss absorbs (None when predicting).
    fused_output: str | None = None

    def skip_final_activation_for(self, layer) -> bool:
        return layer.name == self.fused_output


def _act_params(layer, kind: str) -> dict:
    """Activation parameters: standalone layers carry them; fused ones use PyTorch's defaults."""
    if layer.op == kind:
        return {k: layer.attrs[k] for k in ("slope", "alpha") if k in layer.attrs}
    return {}


def with_activation(forward, backward):
    """Wrap a kernel so the layer's fused activation (conv 32 3x3 relu) runs after it."""

    def fwd(layer, params, inputs, ctx):
        y, cache = forward(layer, params, inputs, ctx)
        act = layer.attrs.get("activation")
        if act and not ctx.skip_final_activation_for(layer):
            y, act_cache = K.activation_forward(y, act, **_act_params(layer, act))
            return y, (cache, act_cache)
        return y, (cache, None)

    def bwd(layer, params, cache, dy, ctx):
        inner, act_cache = cache
        if act_cache is not None:
            dy = K.activation_backward(dy, act_cache)
        return backward(layer, params, inner, dy, ctx)

    return fwd, bwd


# -- conv ---------------------------------------------------------------------------------------
def _conv_f(layer, p, inputs, ctx):
    a = layer.attrs
    (x,) = inputs
    groups = x.shape[1] if a.get("depthwise") else a["groups"]
    return K.conv2d_forward(x, p["weight"], p.get("bias"), stride=a["stride"], pads=a["pads"],
                            dilation=a["dilation"], groups=groups)


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
    a = layer.attrs
    (x,) = inputs
    if a["kind"] == "global":
        y, cache = K.global_pool_forward(x, mode=a["mode"] or "avg")
        if a["keepdims"]:
            y = y[:, :, None, None]
        return y, cache
    stride = a["stride"] or a["size"]
    out_hw = layer.shape[:2]
    if a["kind"] == "max":
        return K.maxpool2d_forward(x, kernel=a["size"], stride=stride, pads=a["pads"],
                                   out_hw=out_hw)
    return K.avgpool2d_forward(x, kernel=a["size"], stride=stride, pads=a["pads"], out_hw=out_hw,
                               count_pad=a["count_pad"])


def _pool_b(layer, p, cache, dy, ctx):
    a = layer.attrs
    if a["kind"] == "global":
        if a["keepdims"]:
            dy = dy[:, :, 0, 0]
        return [K.global_pool_backward(dy, cache)], {}
    if a["kind"] == "max":
        return [K.maxpool2d_backward(dy, cache)], {}
    return [K.avgpool2d_backward(dy, cache)], {}


# -- normalisation and regularisation -----------------------------------------------------------
def _bn_f(layer, p, inputs, ctx):
    a = layer.attrs
    return K.batchnorm_forward(inputs[0], p["weight"], p["bias"], p["running_mean"],
                               p["running_var"], training=ctx.training, momentum=a["momentum"],
                               eps=a["eps"])


def _bn_b(layer, p, cache, dy, ctx):
    dx, dgamma, dbeta = K.batchnorm_backward(dy, cache)
    return [dx], {"weight": dgamma, "bias": dbeta}


def _dropout_f(layer, p, inputs, ctx):
    return K.dropout_forward(inputs[0], layer.attrs["rate"], ctx.rng, ctx.training)


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


def _input_f(layer, p, inputs, ctx):
    return inputs[0], None


def _input_b(layer, p, cache, dy, ctx):
    return [dy], {}


# -- activations --------------------------------------------------------------------------------
def _activation(kind: str):
    def fwd(layer, p, inputs, ctx):
        if ctx.skip_final_activation_for(layer):
            return inputs[0], None
        return K.activation_forward(inputs[0], kind, **_act_params(layer, kind))

    def bwd(layer, p, cache, dy, ctx):
        if cache is None:
            return [dy], {}
        return [K.activation_backward(dy, cache)], {}

    return fwd, bwd


KERNELS = {
    "input": (_input_f, _input_b),
    "conv": with_activation(_conv_f, _conv_b),
    "dwconv": with_activation(_conv_f, _conv_b),
    "dense": with_activation(_dense_f, _dense_b),
    "pool": (_pool_f, _pool_b),
    "batchnorm": (_bn_f, _bn_b),
    "dropout": (_dropout_f, _dropout_b),
    "flatten": (_flatten_f, _flatten_b),
    "add": (_add_f, _add_b),
    "concat": (_concat_f, _concat_b),
}
for _kind in K.ACTIVATION_KINDS:
    KERNELS[_kind] = _activation(_kind)
