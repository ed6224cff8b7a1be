"""`cnnc convert`: Keras model code to cnnc, checked against Keras itself.

Each model below is converted by reading its source (nothing is run), then built by Keras 3 on
its torch backend; cnnc's parameters (trainable and total) and output shapes must equal Keras'
`count_params()`, trainable weights and output shapes, layer by layer. The Keras half skips when
keras is not installed (it is in the `test` extra).
"""

from __future__ import annotations

import os
import textwrap
import types
from math import prod

import pytest

from cnnc.convert import convert_keras_source
from cnnc.diagnostics import ERROR, WARNING, render_text

# The two tutorial models cnnc grew from, written as their readers write them: the first with
# Sequential().add and MaxPool2D's defaults, the second as a tf.keras list with tf.nn activations.
TUTORIAL_ADD = """
from tensorflow.keras.models import Sequential
from tensorflow.keras.layers import Conv2D, MaxPool2D, Flatten, Dense

model = Sequential()
model.add(Conv2D(32, (3, 3), activation='relu', input_shape=[28, 28, 1]))
model.add(MaxPool2D())
model.add(Flatten())
model.add(Dense(256, activation='relu'))
model.add(Dense(10, activation='softmax'))
model.compile(optimizer='adam', loss='categorical_crossentropy', metrics=['accuracy'])
"""

TUTORIAL_LIST = """
import tensorflow as tf

model = tf.keras.Sequential([
    tf.keras.layers.Conv2D(32, (3, 3), padding='same', activation=tf.nn.relu,
                           input_shape=(28, 28, 1)),
    tf.keras.layers.MaxPooling2D((2, 2), strides=2),
    tf.keras.layers.Conv2D(64, (3, 3), padding='same', activation=tf.nn.relu),
    tf.keras.layers.MaxPooling2D((2, 2), strides=2),
    tf.keras.layers.Flatten(),
    tf.keras.layers.Dense(128, activation=tf.nn.relu),
    tf.keras.layers.Dense(10, activation=tf.nn.softmax),
])
"""

# Every translated layer and argument, in Sequential form, on odd sizes (where 'same' pads
# unevenly and pools drop a row).
SEQUENTIAL_ALL = """
import keras
from keras import layers

model = keras.Sequential([
    keras.Input(shape=(33, 31, 3)),
    layers.Conv2D(filters=16, kernel_size=5, strides=(2, 2), padding='same', use_bias=False),
    layers.BatchNormalization(),
    layers.ReLU(),
    layers.ZeroPadding2D(((0, 1), (1, 2))),
    layers.DepthwiseConv2D(3, depth_multiplier=2, activation='relu6'),
    layers.SeparableConv2D(24, (3, 1), padding='same', dilation_rate=2, activation='gelu'),
    layers.MaxPooling2D(pool_size=3, strides=2, padding='same'),
    layers.Conv2D(32, 3, groups=4, activation='swish'),
    layers.AveragePooling2D(pool_size=(2, 2), padding='same'),
    layers.Activation('tanh'),
    layers.LeakyReLU(negative_slope=0.1),
    layers.ELU(),
    layers.Conv2D(40, 1, activation='leaky_relu'),
    layers.Dropout(0.25),
    layers.GlobalAveragePooling2D(keepdims=True),
    layers.Flatten(),
    layers.Dense(units=64, activation='elu'),
    layers.BatchNormalization(momentum=0.9, epsilon=1e-5),
    layers.Dense(10, use_bias=False),
    layers.Softmax(),
])
"""

SEQUENTIAL_GLOBAL_MAX = """
from keras.models import Sequential
from keras.layers import Conv2D as C, GlobalMaxPool2D, Dense, AvgPool2D, ReLU

net = Sequential(name="small")
net.add(C(8, 3, input_shape=(20, 20, 1), activation="sigmoid"))
net.add(AvgPool2D(3, 1))
net.add(ReLU(max_value=6))
net.add(C(12, (1, 3), strides=(1, 2), padding="valid"))
net.add(GlobalMaxPool2D())
net.add(Dense(3, activation="softmax"))
"""

FLAT = """
import keras
from keras import layers

mlp = keras.Sequential()
mlp.add(layers.Dense(128, activation='relu', input_dim=784))
mlp.add(layers.Dropout(0.2))
mlp.add(layers.Dense(10, activation='softmax'))
"""

# Functional API, every layer named (the comparison pairs layers by name).
FUNCTIONAL_RESIDUAL = """
import keras
from keras import layers

def conv_bn(x, filters, stride, name):
    x = layers.Conv2D(filters, 3, strides=stride, padding='same', use_bias=False,
                      name=name + '_conv')(x)
    x = layers.BatchNormalization(name=name + '_bn')(x)
    return layers.Activation('relu', name=name + '_relu')(x)

inputs = keras.Input(shape=(32, 32, 3))
x = layers.ZeroPadding2D(padding=3, name='stem_pad')(inputs)
x = layers.Conv2D(16, 7, strides=2, name='stem_conv', activation='relu')(x)
x = layers.ZeroPadding2D(padding=1, name='pool_pad')(x)
x = layers.MaxPooling2D(3, strides=2, name='stem_pool')(x)
shortcut = x
for i in range(2):
    y = conv_bn(x, 16, 1, f'block{i}_a')
    y = layers.Conv2D(16, 3, padding='same', name=f'block{i}_b')(y)
    x = layers.Add(name=f'block{i}_add')([x, y])
    x = layers.ReLU(name=f'block{i}_out')(x)
down = conv_bn(x, 32, 2, 'down')
side = layers.Conv2D(32, 1, strides=2, name='side')(x)
x = layers.add([down, side], name='down_add')
a = layers.Conv2D(8, 1, name='branch_a')(x)
b = layers.Conv2D(8, 3, padding='same', name='branch_b')(x)
c = layers.MaxPooling2D(3, strides=1, padding='same', name='branch_c')(x)
x = layers.Concatenate(name='cat')([b, a, c])
x = layers.GlobalAveragePooling2D(name='gap')(x)
outputs = layers.Dense(10, activation='softmax', name='head')(x)
model = keras.Model(inputs=inputs, outputs=outputs, name='resnetish')
model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
              loss='sparse_categorical_crossentropy')
model.fit(x_train, y_train, epochs=3, batch_size=128, validation_split=0.1)
"""

FUNCTIONAL_IN_FUNCTION = """
from tensorflow import keras
from tensorflow.keras import layers

def build_model(num_classes=10, widths=(16, 32)):
    inputs = layers.Input((28, 28, 1))
    x = inputs
    for w in widths:
        x = layers.Conv2D(w, 3, activation='relu', name=f'conv{w}')(x)
        x = layers.MaxPooling2D(name=f'pool{w}')(x)
    skip = layers.Conv2D(32, 1, name='proj')(x)
    x = layers.Conv2D(32, 3, padding='same', name='conv_same')(x) + skip
    x = layers.Flatten(name='flat')(x)
    x = layers.Dropout(0.5, name='drop')(x)
    outputs = layers.Dense(num_classes, name='logits')(x)
    return keras.Model(inputs, outputs)

model = build_model(num_classes=5)
model.compile(optimizer=keras.optimizers.Adam(3e-4),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
(x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
model.fit(x_train / 255.0, y_train, epochs=2)
"""

# Preprocessing inside the model, and a main() that builds it from module-level constants.
RESCALED = """
import keras
from keras import layers

IMAGE = (36, 36, 3)
CLASSES = 4

def make(widths):
    model = keras.Sequential([layers.InputLayer(shape=IMAGE),
                              layers.Rescaling(1.0 / 255),
                              layers.RandomFlip("horizontal")])
    for w in widths:
        model.add(layers.Conv2D(w, 3, padding="valid", activation="relu"))
        model.add(layers.MaxPooling2D())
    model.add(layers.GlobalMaxPooling2D())
    model.add(layers.Dense(CLASSES))
    return model

def main():
    model = make([8, 16])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")

if __name__ == "__main__":
    main()
"""

# keras.io's MNIST convnet layout: constants, load_data, fit with every setting.
CONVNET = """
import numpy as np
import keras
from keras import layers

num_classes = 10
input_shape = (28, 28, 1)
(x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
x_train = np.expand_dims(x_train.astype("float32") / 255, -1)

model = keras.Sequential(
    [
        keras.Input(shape=input_shape),
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(num_classes, activation="softmax"),
    ]
)
batch_size = 128
epochs = 15
model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, validation_split=0.1)
"""

# A VGG-like functional model from a block function called in an enumerate() loop.
FUNCTIONAL_BLOCKS = """
import tensorflow as tf
from tensorflow.keras import layers, Model, Input

def conv_block(x, filters, name):
    for j in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv{j}")(x)
        x = layers.BatchNormalization(name=f"{name}_bn{j}")(x)
        x = layers.Activation("relu", name=f"{name}_act{j}")(x)
    return layers.MaxPooling2D(name=f"{name}_pool")(x)

def build(input_shape=(32, 32, 3), n=10):
    inp = Input(shape=input_shape, name="image")
    x = inp
    for i, f in enumerate([32, 64, 128]):
        x = conv_block(x, f, f"block{i + 1}")
    x = layers.GlobalAveragePooling2D(name="pooled")(x)
    x = layers.Dropout(0.3, name="drop")(x)
    out = layers.Dense(n, activation="softmax", name="out")(x)
    return Model(inp, out, name="vggish")

model = build()
"""

# Squeeze-and-excitation (Multiply with a 1x1xC gate), layer norm, hard swish, `a * b`.
FUNCTIONAL_GATES = """
import keras
from keras import layers

inputs = keras.Input((20, 20, 8))
x = layers.Conv2D(16, 3, padding="same", activation="hard_swish", name="c1")(inputs)
x = layers.LayerNormalization(name="ln")(x)
s = layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
s = layers.Conv2D(4, 1, activation="relu", name="reduce")(s)
s = layers.Conv2D(16, 1, activation="sigmoid", name="expand")(s)
x = layers.Multiply(name="excite")([x, s])
y = layers.Conv2D(16, 1, activation="sigmoid", name="gate")(x)
x = x * y
x = layers.multiply([x, y], name="again")
x = layers.Flatten(name="flat")(x)
x = layers.LayerNormalization(epsilon=1e-6, name="ln_flat")(x)
outputs = layers.Dense(3, name="head")(x)
model = keras.Model(inputs, outputs)
"""

KERAS_MODELS = {
    "tutorial_add": (TUTORIAL_ADD, 1_387_594),
    "tutorial_list": (TUTORIAL_LIST, 421_642),
    "sequential_all": (SEQUENTIAL_ALL, None),
    "sequential_global_max": (SEQUENTIAL_GLOBAL_MAX, None),
    "flat": (FLAT, None),
    "functional_residual": (FUNCTIONAL_RESIDUAL, None),
    "functional_in_function": (FUNCTIONAL_IN_FUNCTION, None),
    "rescaled": (RESCALED, None),
    "convnet": (CONVNET, 34_826),  # keras.io's figure for this model
    "functional_blocks": (FUNCTIONAL_BLOCKS, None),
    "functional_gates": (FUNCTIONAL_GATES, None),
}


def convert(source: str, **kw):
    return convert_keras_source(textwrap.dedent(source), "model.py", **kw)


def rendered(conversion) -> str:
    return render_text(conversion.diagnostics, {conversion.file: conversion.source})


# ---------------------------------------------------------------------------------------------
# Without Keras: what the converter writes


def test_tutorial_models_convert_to_their_published_counts():
    for key in ("tutorial_add", "tutorial_list"):
        source, expected = KERAS_MODELS[key]
        c = convert(source)
        assert c.ok, rendered(c)
        assert c.model.summary().total_params == expected


def test_output_is_one_statement_per_layer_with_its_source_line():
    c = convert(TUTORIAL_ADD)
    body = [line for line in c.text.splitlines() if line and not line.startswith("#")]
    assert body[:6] == [
        "input 28x28x1     # line 6: input_shape=[28, 28, 1]",
        ("conv 32 3x3 relu  # line 6: Conv2D(32, (3, 3), activation='relu', "
        "input_shape=[28, 28, 1])"),
        "pool 2            # line 7: MaxPool2D()",
        "flatten           # line 8: Flatten()",
        "dense 256 relu    # line 9: Dense(256, activation='relu')",
        "dense 10 softmax  # line 10: Dense(10, activation='softmax')",
    ]
    # compile() becomes the train: section, with Keras' defaults for what fit() would use
    assert "train:" in c.text
    assert "optimizer adam lr=0.001" in c.text and "loss cross_entropy" in c.text


def test_train_section_from_compile_fit_and_load_data():
    c = convert(FUNCTIONAL_IN_FUNCTION)
    assert c.ok, rendered(c)
    train = c.text.split("train:")[1]
    settings = [line.split("#")[0].strip() for line in train.splitlines() if line.strip()]
    assert settings == ["data fashion-mnist", "loss cross_entropy", "optimizer adam lr=0.0003",
                        "epochs 2", "batch 32", "val 0"]
    c = convert(FUNCTIONAL_RESIDUAL)
    assert "optimizer sgd lr=0.05 momentum=0.9" in c.text
    assert "epochs 3" in c.text and "batch 128" in c.text and "val 0.1" in c.text
    assert c.model.train_config.batch_size == 128


def test_preprocessing_layers():
    c = convert(RESCALED)
    assert c.ok and not c.diagnostics, rendered(c)
    assert "# line 10: layers.Rescaling(1.0 / 255) (cnnc's data are already scaled" in c.text
    assert c.model.train_config.flip  # RandomFlip("horizontal") is the train: section's flip
    c = convert(RESCALED.replace('RandomFlip("horizontal")', 'RandomFlip()'))
    assert c.ok and "flip" not in c.text.split("train:")[1]
    assert [d.severity for d in c.diagnostics] == [WARNING]  # flips both ways: not translated
    c = convert(RESCALED.replace("1.0 / 255", "1.0 / 127.5, offset=-1"))
    assert not c.ok and "Rescaling(1.0 / 127.5, offset=-1)" in c.diagnostics[0].message


def test_batchnorm_takes_keras_epsilon_and_momentum_in_cnnc_convention():
    c = convert(SEQUENTIAL_ALL)
    assert c.ok, rendered(c)
    assert "batchnorm eps=0.001 momentum=0.01 " in c.text  # Keras' defaults: 1e-3, 0.99
    assert "batchnorm eps=1e-05 momentum=0.1 " in c.text  # momentum=0.9 -> 0.1


def test_separable_conv_and_folded_padding():
    c = convert(SEQUENTIAL_ALL)
    lines = [line.split("#")[0].strip() for line in c.text.splitlines()]
    assert "dwconv 3x3 pad=0x1x1x2 multiplier=2 relu6" in lines  # ZeroPadding2D folded in
    i = lines.index("dwconv 3x1 pad=same dilation=2 bias=false")
    assert lines[i + 1] == "conv 24 1x1 gelu"
    zero = [m for m in c.layers if m.keras_class == "ZeroPadding2D"]
    assert zero and zero[0].cnnc_lines == []


def test_functional_names_and_merges():
    c = convert(FUNCTIONAL_RESIDUAL)
    assert c.ok, rendered(c)
    text = c.text
    assert "block0_add = add " in text and "cat = concat branch_b branch_a branch_c" in text
    assert "stem_conv = conv 16 7x7 stride=2 pad=3 relu" in text
    assert "stem_pool = pool 3 stride=2 pad=1" in text  # zeros pad as -inf after a ReLU


CASES_REFUSED = [
    # (source, message fragment, line, column)
    ("import keras\nm = keras.Sequential([keras.layers.Conv3D(8, 3, input_shape=(8, 8, 8, 1))])",
     "`Conv3D` has no cnnc equivalent", 2, 23),
    (("from keras import layers, Sequential\nm = Sequential([\n"
     "    layers.Conv2D(8, 3, data_format='channels_first', input_shape=(1, 28, 28))])"),
     "data_format='channels_first'", 3, 25),
    (("import keras\ni = keras.Input((None, None, 3))\n"
     "m = keras.Model(i, keras.layers.Conv2D(4, 3)(i))"), "left open (None)", 2, 17),
    (("import keras\ni = keras.Input((8, 8, 3))\nc = keras.layers.Conv2D(3, 3, padding='same')\n"
     "x = c(c(i))\nm = keras.Model(i, x)"), "applied a second time", 4, 5),
    ("import keras\nclass Net(keras.Model):\n    def call(self, x):\n        return x\n",
     "subclassed Keras model", 2, 1),
    ("import keras\nm = keras.Sequential([keras.layers.Conv2D(8, 3)])\n",
     "has no input shape", 2, 5),
    (("import keras\nm = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),\n"
     "    keras.layers.Dense(4, activation='selu')])"),
     "activation='selu': the activation has no cnnc equivalent", 3, 27),
    (("import keras, random\nm = keras.Sequential([keras.Input((8, 8, 1))])\n"
     "if random.random() > 0.5:\n    m.add(keras.layers.Flatten())\n"),
     "only when the code runs", 3, 1),
    (("import keras\nm = keras.Sequential([keras.Input((8, 8, 1)),\n"
     "    keras.layers.ZeroPadding2D(1), keras.layers.Flatten()])"), "ZeroPadding2D", 3, 5),
    (("import keras\nm = keras.Sequential([keras.Input((8, 8, 1)),\n"
     "    keras.layers.Conv2D(8, 3, foo=1)])"), "no argument `foo`", 3, 35),
    ("import keras\nm = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, k)])",
     "not a positive whole number", 2, 70),
    ("def f(:\n", "not valid Python", 1, 7),
]


@pytest.mark.parametrize("source,fragment,line,column", CASES_REFUSED)
def test_untranslatable_constructs_are_located_errors(source, fragment, line, column):
    c = convert(source)
    assert not c.ok and c.text is None
    errors = [d for d in c.diagnostics if d.severity == ERROR]
    assert errors, rendered(c)
    first = errors[0]
    assert fragment in first.message, rendered(c)
    assert (first.span.line, first.span.column) == (line, column), rendered(c)


def test_problem_found_by_cnnc_is_reported_at_the_keras_layer():
    # Keras applies Dense to the last axis of an image; cnnc's dense needs a flat input.
    c = convert("import keras\nm = keras.Sequential([keras.Input((8, 8, 1)),\n"
                "    keras.layers.Dense(4)])")
    assert not c.ok
    (d,) = [d for d in c.diagnostics if d.severity == ERROR]
    assert d.code == "needs-flatten" and (d.span.line, d.span.column) == (3, 5)
    assert any("dense 4" in n for n in d.notes)


def test_training_only_settings_are_warnings_and_the_model_is_written():
    c = convert("import keras\nm = keras.Sequential([keras.Input((8, 8, 1)),\n"
                "    keras.layers.Conv2D(4, 3, kernel_regularizer='l2',\n"
                "                        kernel_initializer='he_normal')])\n"
                "m.compile(optimizer='rmsprop', loss='mse')\n")
    assert c.ok, rendered(c)
    warnings = [d for d in c.diagnostics if d.severity == WARNING]
    assert [(d.span.line, d.span.column) for d in warnings] == [(3, 31), (4, 25), (5, 21)]
    assert "optimizer" not in c.text and "loss mse" in c.text


def test_several_models_need_a_choice():
    source = ("import keras\na = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])\n"
              "b = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])\n")
    c = convert(source)
    assert not c.ok and "--model" in (c.diagnostics[0].hint or "")
    c = convert(source, model="b")
    assert c.ok and c.model.summary().total_params == 21


# ---------------------------------------------------------------------------------------------
# Against Keras


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("these comparisons run Keras on its torch backend")
    return keras


def build_with_keras(source: str, keras):
    """Run the model code with Keras 3 (tf.keras spelt as keras, tf.nn as keras.activations),
    stopping before fit(), which needs data."""
    source = textwrap.dedent(source)
    source = (source.replace("from tensorflow.keras", "from keras")
              .replace("from tensorflow import keras", "import keras")
              .replace("import tensorflow as tf", ""))
    kept = []
    for line in source.splitlines():
        if line.strip().startswith(("model.fit(", "(x_train, y_train)", "x_train = ")):
            continue
        kept.append(line)
    tf = types.SimpleNamespace(keras=keras, nn=keras.activations)
    env = {"tf": tf, "__name__": "__main__"}
    exec(compile("\n".join(kept), "model.py", "exec"), env)  # noqa: S102 (the test's own model code)
    models = [v for v in env.values() if isinstance(v, keras.Model)]
    if not models and "make" in env:  # RESCALED builds its model inside main()
        models = [env["make"]([8, 16])]
    assert len(models) == 1
    return models[0]


def keras_rows(model, keras):
    """(name, output shape without the batch, trainable, total) per layer, InputLayer left out."""
    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        shape = tuple(layer.output.shape)[1:]
        trainable = sum(prod(w.shape) for w in layer.trainable_weights)
        rows.append((layer.name, shape, trainable, layer.count_params()))
    return rows


def cnnc_rows(conversion):
    """The same per Keras layer, from the cnnc summary (a Keras layer may be two statements)."""
    by_line = {}
    for row in conversion.model.summary().rows:
        by_line.setdefault(row.line, []).append(row)
    out = []
    for m in conversion.layers:
        rows = [r for line in m.cnnc_lines for r in by_line.get(line, [])]
        if not rows:  # a ZeroPadding2D folded into the next layer
            out.append((m, None, 0, 0))
            continue
        out.append((m, tuple(rows[-1].output_shape), sum(r.trainable for r in rows),
                    sum(r.params for r in rows)))
    return out


@pytest.mark.parametrize("key", sorted(KERAS_MODELS))
def test_counts_and_shapes_equal_keras_layer_by_layer(key):
    keras = _keras()
    source, published = KERAS_MODELS[key]
    c = convert(source)
    assert c.ok, rendered(c)
    model = build_with_keras(source, keras)
    summary = c.model.summary()
    assert summary.total_params == model.count_params()
    assert summary.trainable_params == sum(prod(w.shape) for w in model.trainable_weights)
    if published is not None:
        assert summary.total_params == published
    assert tuple(summary.output_shape) == tuple(model.layers[-1].output.shape)[1:]
    theirs = keras_rows(model, keras)
    # `a + b` on Keras tensors is an operation, not a layer: Keras does not list it
    ours = [row for row in cnnc_rows(c) if row[0].keras_class not in ("+", "*")]
    assert len(ours) == len(theirs)
    named = all(m.keras_name for m, *_ in ours)
    if named:  # functional models: pair by name (Keras orders their layers its own way)
        theirs_by_name = {name: rest for name, *rest in theirs}
        pairs = [((m, *rest), (m.keras_name, *theirs_by_name[m.keras_name]))
                 for m, *rest in ours]
    else:  # Sequential: in order
        pairs = list(zip(ours, theirs))
    for (m, shape, trainable, total), (name, k_shape, k_trainable, k_total) in pairs:
        where = f"{m.keras_class} at line {m.line} (Keras: {name})"
        if shape is None:  # a layer that became no statement (folded, or nothing at inference)
            assert m.keras_class in ("ZeroPadding2D", "Rescaling", "RandomFlip"), where
            assert k_total == 0, where
            continue
        assert shape == k_shape, where
        assert (trainable, total) == (k_trainable, k_total), where


def test_keras_signatures_match_the_tables():
    """The converter's positional order and defaults are Keras' own."""
    import inspect

    from cnnc.convert.keras import ALIASES, SIGNATURES

    keras = _keras()
    for cls, (names, defaults) in SIGNATURES.items():
        if cls.startswith("_"):
            continue
        params = [p for p in inspect.signature(getattr(keras.layers, cls).__init__)
                  .parameters.values() if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]
        theirs = [p.name for p in params if p.name not in ("name",)]
        assert list(names) == theirs[:len(names)], cls
        for p in params:
            if p.name in defaults and p.default is not inspect.Parameter.empty:
                assert defaults[p.name] == p.default, (cls, p.name)
    for alias, target in ALIASES.items():
        if hasattr(keras.layers, alias):
            assert getattr(keras.layers, alias) is getattr(keras.layers, target)


def _mutants(source: str):
    """The source with one constant at a time replaced by something the converter cannot use:
    an unknown name, None, a string, a negative number, a float."""
    import ast

    def constants(tree):  # those an expression could stand for (not the text of an f-string)
        inside = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
        return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in inside]

    replacements = (lambda: ast.Name("unknown_value", ast.Load()), lambda: ast.Constant(None),
                    lambda: ast.Constant("x"), lambda: ast.Constant(-3),
                    lambda: ast.Constant(2.5))
    for i in range(len(constants(ast.parse(textwrap.dedent(source))))):
        for replacement in (replacements[i % 5](),):
            mutated = ast.parse(textwrap.dedent(source))
            target = constants(mutated)[i]
            for parent in ast.walk(mutated):
                for field, value in ast.iter_fields(parent):
                    if value is target:
                        setattr(parent, field, replacement)
                    elif isinstance(value, list) and any(v is target for v in value):
                        value[[id(v) for v in value].index(id(target))] = replacement
            yield ast.unparse(ast.fix_missing_locations(mutated))


@pytest.mark.slow
def test_damaged_model_code_never_crashes_the_converter():
    """Every constant of every test model replaced in turn: the converter either converts or
    reports located diagnostics; it never raises."""
    count = 0
    for source in (SEQUENTIAL_ALL, FUNCTIONAL_RESIDUAL, FUNCTIONAL_IN_FUNCTION):
        for mutant in _mutants(source):
            c = convert_keras_source(mutant, "model.py")
            assert c.ok or any(d.severity == ERROR for d in c.diagnostics)
            for d in c.diagnostics:
                assert d.span.file == "model.py" and d.span.line >= 1 and d.span.column >= 1
            count += 1
    assert count > 100
