"""The TensorFlow/Keras portability rules (cnnc check --target tf) shown on Keras 3's own layers.

For every rule whose target is `tf`, a Keras model written the obvious way computes something
else than cnnc's NumPy reference (or Keras refuses it), and the warning's fix-it, applied in
Keras, computes what the reference does. TensorFlow itself is not installed where these tests
run: Keras runs on its torch backend (as in tests/test_convert_keras.py), so what is shown is
Keras's layer logic -- its defaults, its 'same' padding arithmetic, its refusals -- executed by
PyTorch kernels. Where Keras-on-torch is known to differ from TensorFlow (uneven 'same' average
pooling), the test says so and checks what is true here; docs/portability.md cites TensorFlow's
documentation for TensorFlow. The Keras layers run in float64; the reference's prediction comes
back as float32 (ROUNDED, as in tests/test_portability.py).
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

pytest.importorskip("torch")
os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip("these comparisons run Keras on its torch backend", allow_module_level=True)

import cnnc  # noqa: E402
from tests.test_portability import ROUNDED, fired, reference  # noqa: E402

layers = keras.layers
# Keras's torch backend converts NumPy inputs with np.array(x, copy=False), which NumPy 2 warns
# about; not what these tests look at
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
# The Keras layers the fix-its name, in float64; a hint is applied by evaluating its Keras part.
K64 = {name: functools.partial(getattr(layers, name), dtype="float64")
       for name in ("Conv2D", "DepthwiseConv2D", "ZeroPadding2D", "MaxPooling2D",
                    "AveragePooling2D", "BatchNormalization", "LeakyReLU", "Flatten", "Dense",
                    "GlobalAveragePooling2D")}


def keras_layer(code: str):
    """A Keras layer from a fix-it's text, e.g. "ZeroPadding2D(((0, 1), (0, 1)))"."""
    return eval(code, {"__builtins__": {}}, K64)  # noqa: S307 (the test's own warning text)


def hint_part(hint: str) -> str:
    """The Keras call at the start of a fix-it ("X(...) then ...")."""
    return hint.split(" then ")[0].split(": ")[0]


def run(keras_layers, x: np.ndarray, setup=None) -> np.ndarray:
    """Keras's output (NCHW, or flat) for NCHW x; `setup(model)` may set weights first."""
    model = keras.Sequential([keras.Input(shape=x.shape[2:] + x.shape[1:2], dtype="float64"),
                              *keras_layers])
    if setup:
        setup(model)
    y = keras.ops.convert_to_numpy(model(x.transpose(0, 2, 3, 1)))
    return y.transpose(0, 3, 1, 2) if y.ndim == 4 else y


def conv_weights(model, w, index=-1):
    """cnnc's (and PyTorch's) conv weight (F, C, KH, KW) into a Keras Conv2D, (KH, KW, C, F)."""
    model.layers[index].kernel.assign(w.transpose(2, 3, 1, 0))


def differs(a, b) -> bool:
    return a.shape != b.shape or np.abs(a - b).max() > 1e-3


# -- padding ----------------------------------------------------------------------------------


def test_keras_same_with_stride_pads_after_as_cnnc_does():
    # TensorFlow's 'same' puts the odd pixel of an even total after (bottom, right); Keras's
    # torch backend computes the same split (keras/src/backend/torch/nn.py,
    # _compute_padding_length). cnnc resolves pad=same the same way: no tf warning.
    text = "input 8x8x1\nconv 1 3x3 stride=2 pad=same bias=false"
    found = fired(text)
    assert ("uneven-padding", "torch") in found and ("uneven-padding", "tf") not in found
    rng = np.random.default_rng(10)
    x, w = rng.normal(size=(2, 1, 8, 8)), rng.normal(size=(1, 1, 3, 3))
    want = reference(text, x, {"conv_1.weight": w})
    same = run([K64["Conv2D"](1, 3, strides=2, padding="same", use_bias=False)], x,
               lambda m: conv_weights(m, w))
    np.testing.assert_allclose(same, want, **ROUNDED)
    # the extra pixel before instead (what a symmetric-minded port would do) is another result
    before = run([K64["ZeroPadding2D"](((1, 0), (1, 0))), K64["Conv2D"](1, 3, strides=2,
                                                                         use_bias=False)],
                 x, lambda m: conv_weights(m, w))
    assert differs(before, want)


def test_keras_explicit_uneven_pads_need_zero_padding_and_the_fix_matches():
    text = "input 7x9x2\nconv 3 3x3 pad=2x0x1x3 bias=false"
    found = fired(text)
    hint = found[("uneven-padding", "tf")][0][1].hint
    assert hint == "ZeroPadding2D(((2, 0), (1, 3))) then padding='valid'"
    rng = np.random.default_rng(11)
    x, w = rng.normal(size=(2, 2, 7, 9)), rng.normal(size=(3, 2, 3, 3))
    want = reference(text, x, {"conv_1.weight": w})
    fixed = run([keras_layer(hint_part(hint)), K64["Conv2D"](3, 3, use_bias=False)], x,
                lambda m: conv_weights(m, w))
    np.testing.assert_allclose(fixed, want, **ROUNDED)
    # Keras's own 'same' here pads 1x1x1x1: another result
    same = run([K64["Conv2D"](3, 3, padding="same", use_bias=False)], x,
               lambda m: conv_weights(m, w))
    assert differs(same, want)


def test_keras_max_pooling_pads_with_zeros_and_the_fixes_match():
    x = -np.random.default_rng(12).random((2, 2, 6, 6)) - 0.5  # all negative
    text = "input 6x6x2\npool max 3 stride=1 pad=1"
    found = fired(text)
    hint = found[("max-pool-zero-padding", "tf")][0][1].hint
    assert hint.startswith("padding='same'")
    want = reference(text, x)
    zero_padded = run([K64["ZeroPadding2D"](1), K64["MaxPooling2D"](3, strides=1)], x)
    assert (zero_padded - want).max() > 0.4  # a padded zero wins over every negative value
    np.testing.assert_allclose(run([K64["MaxPooling2D"](3, strides=1, padding="same")], x),
                               want, **ROUNDED)
    # pads 'same' does not give: the fix is a non-negative input, where the zeros lose
    text = "input 6x6x2\nrelu\npool max 3 stride=1 pad=0x1x1x0"
    hint = fired(text)[("max-pool-zero-padding", "tf")][0][1].hint
    assert "not negative" in hint
    want = reference(text, x)
    got = run([layers.ReLU(dtype="float64"), K64["ZeroPadding2D"](((0, 1), (1, 0))),
               K64["MaxPooling2D"](3, strides=1)], x)
    np.testing.assert_allclose(got, want, **ROUNDED)


def test_keras_average_pooling_leaves_same_padding_out_and_zero_padding_in():
    rng = np.random.default_rng(13)
    x = rng.normal(size=(2, 2, 6, 6))
    # pad=same (1x1x1x1 here): Keras leaves the padding out, as cnnc's default does
    text = "input 6x6x2\npool avg 3 stride=1 pad=same"
    assert ("count-pad", "tf") not in fired(text)
    want = reference(text, x)
    np.testing.assert_allclose(run([K64["AveragePooling2D"](3, strides=1, padding="same")], x),
                               want, **ROUNDED)
    # the same pads written out: the Keras spelling is ZeroPadding2D, whose zeros count
    text = "input 6x6x2\npool avg 3 stride=1 pad=1"
    hint = fired(text)[("count-pad", "tf")][0][1].hint
    assert hint.startswith("padding='same'")
    assert differs(run([K64["ZeroPadding2D"](1), K64["AveragePooling2D"](3, strides=1)], x),
                   want)
    # count_pad=true: Keras's 'same' leaves them out; the fix-it counts them
    text = "input 6x6x2\npool avg 3 stride=1 pad=1 count_pad=true"
    hint = fired(text)[("count-pad", "tf")][0][1].hint
    want = reference(text, x)
    assert differs(run([K64["AveragePooling2D"](3, strides=1, padding="same")], x), want)
    fixed = run([keras_layer(hint_part(hint)), K64["AveragePooling2D"](3, strides=1)], x)
    np.testing.assert_allclose(fixed, want, **ROUNDED)


def test_keras_on_torch_uneven_same_average_pooling():
    """TensorFlow leaves 'same' padding out of every average (tf.nn.avg_pool; cnnc's meaning).
    Keras 3.15's torch backend pads an uneven 'same' by repeating the edge row and column and
    counts the copies (keras-team/keras#18452; a fix was merged as keras-team/keras#23233).
    Either is accepted here, but nothing else: the two differ on this input."""
    text = "input 6x6x1\npool avg 3 stride=2 pad=same"  # pads 0x1x0x1
    x = np.random.default_rng(14).normal(size=(2, 1, 6, 6))
    want = reference(text, x)
    got = run([K64["AveragePooling2D"](3, strides=2, padding="same")], x)
    edge = np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 1)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(edge, (3, 3), axis=(2, 3))
    replicated = windows[:, :, ::2, ::2].mean(axis=(-1, -2))
    assert differs(replicated, want)
    tf_like = np.allclose(got, want, **ROUNDED)
    assert tf_like or np.allclose(got, replicated, rtol=ROUNDED["rtol"], atol=0)


# -- rounding ---------------------------------------------------------------------------------


def test_keras_pooling_rounds_down_and_the_ceil_fixes_match():
    x = np.random.default_rng(15).normal(size=(2, 1, 8, 8))
    # ceil=true where Keras's 'same' gives the same windows (8, 3, stride 2: 4 windows from 0)
    text = "input 8x8x1\npool max 3 stride=2 ceil=true"
    found = fired(text)
    finding = found[("ceil-rounding", "tf")][0][1]
    assert "4x4" in finding.message and "3x3" in finding.message
    assert finding.hint == "padding='same' gives the same windows here"
    want = reference(text, x)
    assert run([K64["MaxPooling2D"](3, strides=2)], x).shape[2:] == (3, 3)  # Keras rounds down
    np.testing.assert_allclose(run([K64["MaxPooling2D"](3, strides=2, padding="same")], x),
                               want, **ROUNDED)
    # with explicit pads 'same' does not fit; padding at the end does, on non-negative input
    text = "input 8x8x1\nrelu\npool max 3 stride=2 pad=1 ceil=true"
    hint = fired(text)[("ceil-rounding", "tf")][0][1].hint
    assert hint.startswith("ZeroPadding2D(((1, 2), (1, 2)))")
    want = reference(text, x)
    got = run([layers.ReLU(dtype="float64"), keras_layer(hint_part(hint)),
               K64["MaxPooling2D"](3, strides=2)], x)
    np.testing.assert_allclose(got, want, **ROUNDED)


# -- flatten order ----------------------------------------------------------------------------


def _flat_reference(text: str, x: np.ndarray, weights: dict) -> np.ndarray:
    session = cnnc.compile(text).to_backend("numpy", dtype="float64", loss="mse")
    session.set_weights({**session.get_weights(), **weights})
    return session.predict(x.transpose(0, 2, 3, 1))


def dense_noise(x: np.ndarray, w: np.ndarray, want: np.ndarray) -> np.ndarray:
    """How far Keras's Dense may be from the float64 truth: on its torch backend Keras computes
    a float64 matmul in float32 (keras/src/backend/common/dtypes.py maps float64 results to
    float32 off TensorFlow), so inputs and weights are rounded and the n-term sums accumulate
    at most n * eps * sum(|products|) (plus the reference's own float32 rounding)."""
    eps = float(np.finfo(np.float32).eps)
    flat = np.abs(x.reshape(len(x), -1))
    n = flat.shape[1]
    return (n + 2) * eps * (flat @ np.abs(w).T) + eps * np.abs(want)


def test_keras_flattens_hwc_so_ported_dense_weights_need_permuting():
    text = "input 4x4x3\nflatten\ndense 5"
    assert ("flatten-order", "tf") in fired(text)
    rng = np.random.default_rng(16)
    x, w, b = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(5, 48)), rng.normal(size=5)
    want = _flat_reference(text, x, {"dense_1.weight": w, "dense_1.bias": b})

    def dense(kernel):
        return lambda m: m.layers[-1].set_weights([kernel, b])

    ported = run([K64["Flatten"](), K64["Dense"](5)], x, dense(w.T))
    assert differs(ported, want)
    # the fix: the weight's columns from (C, H, W) to (H, W, C) order
    permuted = w.reshape(5, 3, 4, 4).transpose(0, 2, 3, 1).reshape(5, 48)
    got = run([K64["Flatten"](), K64["Dense"](5)], x, dense(permuted.T))
    assert np.all(np.abs(got - want) <= dense_noise(x, w, want))
    # pooling globally instead: no order to get wrong
    text = "input 4x4x3\ngap\ndense 5"
    assert not fired(text, ("tf",))
    w = w[:, :3]
    want = _flat_reference(text, x, {"dense_1.weight": w, "dense_1.bias": b})
    got = run([K64["GlobalAveragePooling2D"](), K64["Dense"](5)], x, dense(w.T))
    pooled = x.mean(axis=(2, 3))
    assert np.all(np.abs(got - want) <= dense_noise(pooled, w, want))


# -- batch norm -------------------------------------------------------------------------------


def test_keras_batchnorm_defaults_differ_and_the_fix_matches():
    text = "input 4x4x2\nbn"
    hint = fired(text)[("batchnorm-conventions", "tf")][0][1].hint
    assert hint.startswith("BatchNormalization(epsilon=1e-05, momentum=0.9)")
    x = np.random.default_rng(17).normal(0, 0.01, size=(4, 2, 4, 4))  # variance 1e-4
    session = cnnc.compile(text).to_backend("numpy", dtype="float64", loss="mse")
    ours = session.forward(x, training=True)  # the NumPy backend's layout is NCHW
    state = session.get_weights()  # running statistics after this one batch (as float32)

    def keras_train(bn):
        model = keras.Sequential([keras.Input(shape=(4, 4, 2), dtype="float64"), bn])
        y = keras.ops.convert_to_numpy(model(x.transpose(0, 2, 3, 1), training=True))
        return (y.transpose(0, 3, 1, 2), keras.ops.convert_to_numpy(bn.moving_mean),
                keras.ops.convert_to_numpy(bn.moving_variance))

    # Keras computes the batch moments in float32 (see dense_noise): sums of n = 64 values a
    # channel, so at most n * eps * mean(|x|) off the mean and, in units of the normalised
    # output z, n * eps * (|z| + 1) off it (measured: 1.2 * eps * (|z| + 1) at most, 5 seeds)
    n, eps = 64, float(np.finfo(np.float32).eps)
    mean, batch_var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    mean_noise = (n + 2) * eps * np.abs(x).mean(axis=(0, 2, 3))

    y, moving_mean, moving_var = keras_train(K64["BatchNormalization"]())
    assert np.abs(y - ours).max() > 0.1  # epsilon 1e-3 against 1e-5 on a variance of 1e-4
    # momentum 0.99 keeps 99% of the old average: 0.01 of the batch's mean, where cnnc keeps 0.1
    assert np.all(np.abs(moving_mean - 0.01 * mean) <= 0.01 * mean_noise)
    assert np.all(np.abs(state["batchnorm_1.running_mean"] - 0.1 * mean)
                  <= 0.1 * mean_noise + eps * np.abs(0.1 * mean))
    assert np.all(np.abs(moving_mean - state["batchnorm_1.running_mean"]) > 0.05 * np.abs(mean))

    y, moving_mean, moving_var = keras_train(keras_layer(hint_part(hint)))
    assert np.all(np.abs(y - ours) <= (n + 4) * eps * (np.abs(ours) + 1))
    assert np.all(np.abs(moving_mean - state["batchnorm_1.running_mean"])
                  <= 0.1 * mean_noise + eps * np.abs(0.1 * mean))
    # what the fix-it leaves: Keras averages the biased batch variance, cnnc (like PyTorch) the
    # unbiased one, n/(n-1) times larger. Shown on a batch of variance ~9, where the difference
    # (0.1 * var / 63) is far above float32's rounding of the running variance (~10 eps).
    x = np.random.default_rng(18).normal(0, 3.0, size=(4, 2, 4, 4))
    session = cnnc.compile(text).to_backend("numpy", dtype="float64", loss="mse")
    session.forward(x, training=True)
    ours = session.get_weights()["batchnorm_1.running_var"]
    _, _, moving_var = keras_train(keras_layer(hint_part(hint)))
    batch_var = x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(ours, 0.9 + 0.1 * batch_var * n / (n - 1), **ROUNDED)
    # Keras: float32 moments again (relative n * eps of the variance), then two roundings
    var_noise = (n + 2) * eps * 0.1 * batch_var + 2 * eps * np.abs(moving_var)
    assert np.all(np.abs(moving_var - (0.9 + 0.1 * batch_var)) <= var_noise)
    assert np.all(ours - moving_var > 0.1 * batch_var / (n - 1) - var_noise - eps * ours)


# -- activations and refusals -----------------------------------------------------------------


def test_keras_leaky_relu_default_slope_differs_and_the_fix_matches():
    text = "input 4x4x2\nleaky_relu"
    hint = fired(text)[("leaky-relu-slope", "tf")][0][1].hint
    x = np.random.default_rng(18).normal(size=(2, 2, 4, 4))
    want = reference(text, x)
    default = run([K64["LeakyReLU"]()], x)
    # Keras's default slope is 0.3, cnnc's 0.01 (one float64 product each: one rounding)
    np.testing.assert_allclose(default, np.where(x < 0, 0.3 * x, x), rtol=np.finfo(float).eps)
    assert differs(default, want)
    np.testing.assert_allclose(run([keras_layer(hint)], x), want, **ROUNDED)


def test_keras_conv2d_refuses_dilation_with_stride_and_the_fix_matches():
    text = "input 15x16x2\nconv 3 3 stride=2 dilation=2 pad=same bias=false"
    finding = fired(text)[("dilation-with-stride", "tf")][0][1]
    with pytest.raises(ValueError, match="dilation_rate"):
        layers.Conv2D(3, 3, strides=2, dilation_rate=2, padding="same")
    assert finding.hint.startswith("ZeroPadding2D(((2, 2), (1, 2))), ")
    rng = np.random.default_rng(19)
    x, w = rng.normal(size=(2, 2, 15, 16)), rng.normal(size=(3, 2, 3, 3))
    want = reference(text, x, {"conv_1.weight": w})
    fixed = [keras_layer(finding.hint.split(", the ")[0]),
             K64["Conv2D"](3, 3, dilation_rate=2, strides=1, padding="valid", use_bias=False),
             K64["MaxPooling2D"](pool_size=1, strides=(2, 2))]
    np.testing.assert_allclose(run(fixed, x, lambda m: conv_weights(m, w, 1)), want, **ROUNDED)


def test_keras_depthwise_dilation_with_stride_runs_on_torch_only():
    """TensorFlow's depthwise convolution requires strides of 1 when dilated
    (tf.nn.depthwise_conv2d); Keras's DepthwiseConv2D does not check, so on its torch backend
    it runs -- and agrees with cnnc. The fix-it, which TensorFlow takes, agrees too."""
    text = "input 12x12x2\ndwconv 3 stride=2 dilation=2 bias=false"
    finding = fired(text)[("dilation-with-stride", "tf")][0][1]
    assert "depthwise" in finding.message and not finding.hint.startswith("ZeroPadding2D")
    rng = np.random.default_rng(20)
    x, w = rng.normal(size=(2, 2, 12, 12)), rng.normal(size=(2, 1, 3, 3))
    want = reference(text, x, {"dwconv_1.weight": w})

    def depthwise(index):  # cnnc (C*M, 1, KH, KW) -> Keras (KH, KW, C, M)
        return lambda m: m.layers[index].kernel.assign(w.transpose(2, 3, 0, 1))

    direct = run([K64["DepthwiseConv2D"](3, strides=2, dilation_rate=2, use_bias=False)], x,
                 depthwise(-1))
    np.testing.assert_allclose(direct, want, **ROUNDED)
    fixed = [K64["DepthwiseConv2D"](3, dilation_rate=2, use_bias=False),
             K64["MaxPooling2D"](pool_size=1, strides=2)]
    np.testing.assert_allclose(run(fixed, x, depthwise(0)), want, **ROUNDED)
