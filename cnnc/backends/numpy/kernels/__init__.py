"""NumPy reference kernels: every layer as a forward/backward pair.

    y, cache = xxx_forward(x, params..., options...)
    grads    = xxx_backward(dy, cache)

``cache`` holds what the backward pass needs (inputs, masks, im2col matrices). Backward
functions never modify ``dy`` or the cache, so a cache can be replayed.

Conventions: activations are NCHW ``(N, C, H, W)`` or ``(N, F)`` once flat; weights use the
PyTorch layouts (conv ``(F, C//groups, KH, KW)``, dense ``(out, in)``); padding is always explicit
``pads = (top, bottom, left, right)``. All arithmetic stays in the input dtype: float32 for
training, float64 for gradient checks.

Modules, one per op family: conv, pool, dense, activation, norm (batchnorm, dropout, stochastic
depth), layernorm, scale (mul, layerscale), shape (flatten, add, concat), channels (split parts,
shuffle), upsample (nearest, bilinear), conv_transpose.
"""

from .activation import ACTIVATION_KINDS, activation_backward, activation_forward, erf, erfc
from .channels import (
    channel_shuffle_backward,
    channel_shuffle_forward,
    channel_slice_backward,
    channel_slice_forward,
)
from .conv import conv2d_backward, conv2d_forward, conv_output_size, release_scratch
from .conv_transpose import (
    conv_transpose2d_backward,
    conv_transpose2d_forward,
    conv_transpose_output_size,
)
from .dense import dense_backward, dense_forward
from .layernorm import layernorm_backward, layernorm_forward
from .norm import (
    batchnorm_backward,
    batchnorm_forward,
    dropout_backward,
    dropout_forward,
    stochastic_depth_backward,
    stochastic_depth_forward,
)
from .pool import (
    avgpool2d_backward,
    avgpool2d_forward,
    global_pool_backward,
    global_pool_forward,
    maxpool2d_backward,
    maxpool2d_forward,
)
from .scale import layerscale_backward, layerscale_forward, mul_backward, mul_forward
from .shape import add_backward, add_forward, concat_backward, concat_forward, flatten_backward, flatten_forward
from .upsample import (
    upsample_bilinear_backward,
    upsample_bilinear_forward,
    upsample_nearest_backward,
    upsample_nearest_forward,
)

__all__ = [
    "ACTIVATION_KINDS",
    "activation_backward",
    "activation_forward",
    "add_backward",
    "add_forward",
    "avgpool2d_backward",
    "avgpool2d_forward",
    "channel_shuffle_backward",
    "channel_shuffle_forward",
    "channel_slice_backward",
    "channel_slice_forward",
    "batchnorm_backward",
    "batchnorm_forward",
    "concat_backward",
    "concat_forward",
    "conv2d_backward",
    "conv2d_forward",
    "conv_output_size",
    "conv_transpose2d_backward",
    "conv_transpose2d_forward",
    "conv_transpose_output_size",
    "dense_backward",
    "dense_forward",
    "dropout_backward",
    "dropout_forward",
    "erf",
    "erfc",
    "flatten_backward",
    "flatten_forward",
    "global_pool_backward",
    "global_pool_forward",
    "layernorm_backward",
    "layernorm_forward",
    "layerscale_backward",
    "layerscale_forward",
    "maxpool2d_backward",
    "maxpool2d_forward",
    "mul_backward",
    "mul_forward",
    "release_scratch",
    "stochastic_depth_backward",
    "stochastic_depth_forward",
    "upsample_bilinear_backward",
    "upsample_bilinear_forward",
    "upsample_nearest_backward",
    "upsample_nearest_forward",
]
