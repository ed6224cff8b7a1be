"""What Keras users type by habit, and its cnnc spelling: the hints of the diagnostics they get.

`conv 32 (3,3) relu`, `stride=(2,2)`, `pad='same'`, `activation=tf.nn.relu`, `MaxPooling2D 2`,
`kernel_size=3`: each is an error in cnnc, whose hint shows exactly the statement that was
written, spelt the cnnc way (`conv 32 3x3 relu`). Pure text functions: the parser and the
builder call them when they already have an error to report, so correct programs pay nothing.
"""

from __future__ import annotations

import re

# Keras layer class names, lower-cased, to the cnnc layer that does the same.
LAYERS = {
    "conv2d": "conv", "convolution2d": "conv", "depthwiseconv2d": "dwconv",
    "maxpooling2d": "maxpool", "maxpool2d": "maxpool",
    "averagepooling2d": "avgpool", "avgpool2d": "avgpool",
    "globalaveragepooling2d": "gap", "globalavgpool2d": "gap",
    "globalmaxpooling2d": "gmp", "globalmaxpool2d": "gmp",
    "batchnormalization": "batchnorm", "dropout": "dropout", "flatten": "flatten",
    "dense": "dense", "relu": "relu", "leakyrelu": "leaky_relu", "elu": "elu",
    "softmax": "softmax", "add": "add", "concatenate": "concat", "inputlayer": "input",
    "input": "input",
}

# Keras keyword arguments that cnnc spells differently (as options).
OPTIONS = {"strides": "stride", "padding": "pad", "use_bias": "bias",
           "dilation_rate": "dilation", "depth_multiplier": "multiplier", "epsilon": "eps"}

# Keras keyword arguments that are positional in cnnc: Keras name -> cnnc argument name.
POSITIONAL = {"filters": "filters", "kernel_size": "kernel", "units": "units",
              "pool_size": "size", "rate": "rate"}

# Activation functions written as Python attributes: tf.nn.relu, keras.activations.relu, ...
_DOTTED_ACTIVATION = re.compile(
    r"\b(?:tf\.(?:keras\.)?|keras\.)?(?:nn|activations)\.([A-Za-z_][A-Za-z0-9_]*)\b")
_ACTIVATION_NAMES = {"swish": "silu"}
# (3, 3) or [28, 28, 1]: two or more whole numbers
_TUPLE = re.compile(r"[(\[]\s*(\d+(?:\s*,\s*\d+)+)\s*,?\s*[)\]]")
# a quoted plain word: 'same', "softmax"
_QUOTED_WORD = re.compile(r"""(['"])([A-Za-z_][A-Za-z0-9_]*)\1""")
_KEY = re.compile(r"\b(" + "|".join(OPTIONS) + r")\s*=")


def size_text(numbers: list[str]) -> str:
    return "x".join(n.strip() for n in numbers)


def rewrite(text: str) -> str:
    """`text` (statements, without a comment) with every Keras habit respelt for cnnc: tuples
    as sizes, quotes around plain words dropped, tf.nn.relu as relu, Keras option names as
    cnnc's, Keras layer names as cnnc's layers."""
    out = _TUPLE.sub(lambda m: size_text(m.group(1).split(",")), text)
    out = _DOTTED_ACTIVATION.sub(
        lambda m: _ACTIVATION_NAMES.get(m.group(1).lower(), m.group(1).lower()), out)
    out = _QUOTED_WORD.sub(lambda m: m.group(2), out)
    out = _KEY.sub(lambda m: OPTIONS[m.group(1)] + "=", out)
    parts = []
    for statement in out.split(";"):
        parts.append(_respell_head(statement))
    return ";".join(parts)


def _respell_head(statement: str) -> str:
    m = re.match(r"(\s*)(?:([A-Za-z_][A-Za-z0-9_]*)\s*=\s*)?([A-Za-z_][A-Za-z0-9_]*)(.*)$",
                 statement, re.S)
    if not m:
        return statement
    indent, target, head, rest = m.groups()
    new = layer_for(head, rest)
    if new is None:
        return statement
    prefix = f"{target} = " if target else ""
    return f"{indent}{prefix}{new}"


def layer_for(head: str, rest: str) -> str | None:
    """The cnnc statement for a Keras layer name used as a head (`MaxPooling2D 2` ->
    `maxpool 2`, `Activation relu` -> `relu`), or None if `head` is no Keras layer name."""
    key = head.lower()
    if key == "activation":
        words = rest.split()
        return " ".join(words) if words else None
    if key not in LAYERS or LAYERS[key] == head:
        return None
    return (LAYERS[key] + rest).rstrip()


def statement_hint(line: str) -> str | None:
    """`write `...``: the line (one or more statements) respelt, or None when nothing in it is
    a Keras habit."""
    code = line.split("#", 1)[0].rstrip()
    new = rewrite(code)
    if new.strip() == code.strip():
        return None
    return f"write `{new.strip()}`"


def paren_tuple(statement: str, head: str):
    """For `input (28,28,1)` or `maxpool(2, 2)`, an op's arguments written as one Keras tuple:
    (start, end) offsets of the tuple in `statement` and its cnnc size (`28x28x1`); else None."""
    m = re.match(re.escape(head) + r"\s*(\(\s*(\d+(?:\s*,\s*\d+)+)\s*,?\s*\))", statement)
    if not m:
        return None
    return m.start(1), m.end(1), size_text(m.group(2).split(","))
