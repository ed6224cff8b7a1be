"""Keras model code to a cnnc model file, read with the ast module: nothing is imported or run.

    conversion = convert_keras_file("mnist_model.py")
    if conversion.ok:
        Path("mnist_model.cnn").write_text(conversion.text)

What it reads:

* Sequential models, as a list (`Sequential([Conv2D(...), ...])`) or with `model.add(...)`;
* functional models: `Input(...)`, layers called on tensors, `Add()([a, b])`,
  `Concatenate()([a, b])` (and `add`, `concatenate`, `a + b`), `Model(inputs, outputs)`;
* layers spelt `tf.keras.layers.X`, `keras.layers.X`, `layers.X` or imported (`from ... import X
  as Y`), with positional and keyword arguments and Keras' defaults;
* `model.compile(...)` and `model.fit(...)`, which become the `train:` section where cnnc has
  the setting, and `keras.datasets.mnist.load_data()` / `fashion_mnist`, which become its data.

The source is interpreted only as far as a model builder needs: assignments of constants,
functions called with constant arguments, `for` loops over constant sequences, `if` on constant
conditions. Anything else that touches the model is a located diagnostic in the .py file (line
and column of the call) naming the construct; nothing is guessed. Settings that change only how
a model trains and that cnnc cannot express (initialisers, regularisers, an optimizer cnnc lacks)
are warnings: the model is written without them.

The result is checked by cnnc's own compiler; a problem it finds (a Dense on an image, shapes
that do not add) is reported at the Keras layer that produced the statement.
"""

from __future__ import annotations

import ast
import itertools
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from cnnc.diagnostics import ERROR, WARNING, Diagnostic, Span, did_you_mean

# ---------------------------------------------------------------------------------------------
# Keras' signatures (Keras 3, which keeps Keras 2's order): positional names, then defaults.
# tests/test_convert_keras.py checks these against the installed Keras.

_CONV_TRAINING = ("kernel_initializer", "bias_initializer", "kernel_regularizer",
                  "bias_regularizer", "activity_regularizer", "kernel_constraint",
                  "bias_constraint")

SIGNATURES: dict[str, tuple[tuple[str, ...], dict]] = {
    "Conv2D": (("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate",
                "groups", "activation", "use_bias", *_CONV_TRAINING),
               {"strides": (1, 1), "padding": "valid", "data_format": None,
                "dilation_rate": (1, 1), "groups": 1, "activation": None, "use_bias": True,
                "kernel_initializer": "glorot_uniform", "bias_initializer": "zeros"}),
    "DepthwiseConv2D": (("kernel_size", "strides", "padding", "depth_multiplier", "data_format",
                         "dilation_rate", "activation", "use_bias", "depthwise_initializer",
                         "bias_initializer", "depthwise_regularizer", "bias_regularizer",
                         "activity_regularizer", "depthwise_constraint", "bias_constraint"),
                        {"strides": (1, 1), "padding": "valid", "depth_multiplier": 1,
                         "data_format": None, "dilation_rate": (1, 1), "activation": None,
                         "use_bias": True, "depthwise_initializer": "glorot_uniform",
                         "bias_initializer": "zeros"}),
    "SeparableConv2D": (("filters", "kernel_size", "strides", "padding", "data_format",
                         "dilation_rate", "depth_multiplier", "activation", "use_bias",
                         "depthwise_initializer", "pointwise_initializer", "bias_initializer",
                         "depthwise_regularizer", "pointwise_regularizer", "bias_regularizer",
                         "activity_regularizer", "depthwise_constraint", "pointwise_constraint",
                         "bias_constraint"),
                        {"strides": (1, 1), "padding": "valid", "data_format": None,
                         "dilation_rate": (1, 1), "depth_multiplier": 1, "activation": None,
                         "use_bias": True, "depthwise_initializer": "glorot_uniform",
                         "pointwise_initializer": "glorot_uniform",
                         "bias_initializer": "zeros"}),
    # Keras 3 requires AveragePooling2D's pool_size; tf.keras 2 defaulted it to (2, 2) as
    # MaxPooling2D still does, and code written for it omits it.
    "MaxPooling2D": (("pool_size", "strides", "padding", "data_format"),
                     {"pool_size": (2, 2), "strides": None, "padding": "valid",
                      "data_format": None}),
    "AveragePooling2D": (("pool_size", "strides", "padding", "data_format"),
                         {"pool_size": (2, 2), "strides": None, "padding": "valid",
                          "data_format": None}),
    "GlobalAveragePooling2D": (("data_format", "keepdims"),
                               {"data_format": None, "keepdims": False}),
    "GlobalMaxPooling2D": (("data_format", "keepdims"), {"data_format": None, "keepdims": False}),
    "BatchNormalization": (("axis", "momentum", "epsilon", "center", "scale", "beta_initializer",
                            "gamma_initializer", "moving_mean_initializer",
                            "moving_variance_initializer", "beta_regularizer",
                            "gamma_regularizer", "beta_constraint", "gamma_constraint",
                            "renorm", "renorm_clipping", "renorm_momentum", "synchronized"),
                           {"axis": -1, "momentum": 0.99, "epsilon": 0.001, "center": True,
                            "scale": True, "beta_initializer": "zeros",
                            "gamma_initializer": "ones", "moving_mean_initializer": "zeros",
                            "moving_variance_initializer": "ones", "renorm": False,
                            "renorm_clipping": None, "renorm_momentum": 0.99,
                            "synchronized": False}),
    "Dropout": (("rate", "noise_shape", "seed"), {"noise_shape": None, "seed": None}),
    "Flatten": (("data_format",), {"data_format": None}),
    "Dense": (("units", "activation", "use_bias", *_CONV_TRAINING),
              {"activation": None, "use_bias": True, "kernel_initializer": "glorot_uniform",
               "bias_initializer": "zeros"}),
    "Activation": (("activation",), {}),
    "ReLU": (("max_value", "negative_slope", "threshold"),
             {"max_value": None, "negative_slope": 0.0, "threshold": 0.0}),
    "LeakyReLU": (("negative_slope",), {"negative_slope": 0.3}),
    "ELU": (("alpha",), {"alpha": 1.0}),
    "Softmax": (("axis",), {"axis": -1}),
    "ZeroPadding2D": (("padding", "data_format"), {"padding": (1, 1), "data_format": None}),
    "Add": ((), {}),
    "Multiply": ((), {}),
    "LayerNormalization": (("axis", "epsilon", "center", "scale", "beta_initializer",
                            "gamma_initializer", "beta_regularizer", "gamma_regularizer",
                            "beta_constraint", "gamma_constraint"),
                           {"axis": -1, "epsilon": 0.001, "center": True, "scale": True,
                            "beta_initializer": "zeros", "gamma_initializer": "ones"}),
    "Concatenate": (("axis",), {"axis": -1}),
    "InputLayer": (("shape", "batch_size", "dtype", "sparse", "ragged", "batch_shape",
                    "input_tensor"),
                   {"shape": None, "batch_size": None, "dtype": None, "sparse": None,
                    "ragged": None, "batch_shape": None, "input_tensor": None}),
    # Not translated into a statement (see _Emitter.elide): Rescaling(1/255), which cnnc's data
    # pipeline does already, and the augmentation layers, which do nothing at inference.
    "Rescaling": (("scale", "offset"), {"offset": 0.0}),
    "_Augmentation": ((), {}),
}

# Augmentation layers: identity at inference, no parameters; their arguments are not checked.
_AUGMENTATION = {"RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation",
                 "RandomContrast", "RandomBrightness"}

ALIASES = {"MaxPool2D": "MaxPooling2D", "AvgPool2D": "AveragePooling2D",
           "GlobalAvgPool2D": "GlobalAveragePooling2D", "GlobalMaxPool2D": "GlobalMaxPooling2D",
           "Convolution2D": "Conv2D", "SeparableConvolution2D": "SeparableConv2D"}

# Keyword arguments every Keras layer takes (its base class's).
_BASE_KWARGS = {"name": None, "input_shape": None, "batch_input_shape": None, "batch_size": None,
                "input_dim": None, "dtype": None, "trainable": True, "autocast": True}

# Arguments that change how a layer is initialised, regularised or constrained while training,
# never its shape or parameter count. cnnc initialises in its own way (docs/keras.md) and has no
# per-layer regularisers: a value other than Keras' default is a warning, not an error.
_TRAINING_ONLY = re.compile(r".*_(initializer|regularizer|constraint)$")

# Keras layers cnnc has no equivalent for, named so the diagnostic can say so rather than
# "unknown". Any other capitalised name ending like a layer is reported too.
_KNOWN_UNSUPPORTED = {
    "Conv1D", "Conv3D", "Conv2DTranspose", "Conv1DTranspose", "Conv3DTranspose",
    "MaxPooling1D", "MaxPooling3D", "AveragePooling1D", "AveragePooling3D", "UpSampling2D",
    "Reshape", "Permute", "RepeatVector", "Lambda", "GroupNormalization",
    "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "Cropping2D",
    "LSTM", "GRU", "SimpleRNN", "Bidirectional", "Embedding", "Subtract",
    "Average", "Maximum", "Minimum", "Dot", "Attention", "MultiHeadAttention", "Rescaling",
    "Normalization", "Resizing", "RandomFlip", "RandomRotation", "RandomZoom", "RandomCrop",
    "TimeDistributed", "PReLU", "ThresholdedReLU", "LocallyConnected2D", "GlobalAveragePooling1D",
    "GlobalMaxPooling1D", "ZeroPadding1D", "ZeroPadding3D", "UnitNormalization",
    "ActivityRegularization", "Masking", "CenterCrop",
}

# Keras activation names (strings, or the last part of tf.nn.X / keras.activations.X) to cnnc:
# (cnnc text, whether conv/dense may fuse it). Keras' leaky_relu slope is 0.2 where cnnc's
# default is 0.01, so it is written as a layer of its own with the slope.
_ACTIVATIONS = {
    "relu": ("relu", True), "relu6": ("relu6", True), "tanh": ("tanh", True),
    "sigmoid": ("sigmoid", True), "softmax": ("softmax", True), "elu": ("elu", True),
    "gelu": ("gelu", True), "silu": ("silu", True), "swish": ("silu", True),
    "leaky_relu": ("leaky_relu 0.2", False),
    # Keras 3's hard_swish is x * relu6(x + 3) / 6, as cnnc's (tf.keras 2's hard_sigmoid was
    # another function, so `hard_sigmoid` is not translated)
    "hard_swish": ("hardswish", True), "hard_silu": ("hardswish", True),
}
_LINEAR = {"linear", None}

_PREFIXES = ("tf.keras.layers.", "keras.layers.", "layers.")
_OPTIMIZERS = {"adam": "adam", "sgd": "sgd"}
_OPTIMIZER_DEFAULT_LR = {"adam": 0.001, "sgd": 0.01}
_LOSSES = {
    "categorical_crossentropy": "cross_entropy", "sparse_categorical_crossentropy":
    "cross_entropy", "CategoricalCrossentropy": "cross_entropy",
    "SparseCategoricalCrossentropy": "cross_entropy", "binary_crossentropy": "bce",
    "BinaryCrossentropy": "bce", "mse": "mse", "mean_squared_error": "mse",
    "MeanSquaredError": "mse",
}
_DATASETS = {"mnist": "mnist", "fashion_mnist": "fashion-mnist"}

# Words a cnnc tensor name must not be (keywords, op names); a name like `x2` reads as a repeat.
_RESERVED = {"input", "from", "here", "add", "concat", "block", "train", "true", "false",
             "yes", "no", "on", "off", "same", "valid", "max", "avg", "global"}

_MAX_STEPS = 100_000  # interpreter steps (loop iterations, calls): past this, not a model builder


class _Unsupported(Exception):
    """A construct that cannot be translated; becomes an error at `node`. With no message it is
    a consequence of an error already reported (a layer applied to a tensor that failed)."""

    def __init__(self, node: ast.AST, message: str, hint: str | None = None,
                 notes: tuple = ()):
        super().__init__(message)
        self.node = node
        self.message = message
        self.hint = hint
        self.notes = list(notes)


# ---------------------------------------------------------------------------------------------
# Values the interpreter computes


@dataclass(frozen=True)
class Ref:
    """A name or attribute path the interpreter does not bind (`tf.nn.relu`, `x_train`)."""

    dotted: str
    node: ast.AST = field(compare=False, repr=False)


class _Failed(Ref):
    """The value of a statement that failed (its error already reported)."""


@dataclass
class KLayer:
    """A Keras layer object: its class (canonical name), the call that made it, its arguments."""

    cls: str
    written: str  # the class name as written (MaxPool2D)
    call: ast.Call
    args: dict  # argument name -> value
    nodes: dict  # argument name -> the ast node that gave it
    applied: ast.AST | None = None  # the call that applied it to a tensor, once it is

    def get(self, name: str):
        if name in self.args:
            return self.args[name]
        defaults = SIGNATURES[self.cls][1]
        return defaults.get(name, _BASE_KWARGS.get(name))

    def at(self, name: str) -> ast.AST:
        """Where the argument was written (`key=value` whole for a keyword), else the call."""
        node = self.nodes.get(name, self.call)
        return getattr(node, "parent_keyword", node)

    @property
    def name(self) -> str | None:
        value = self.args.get("name")
        return value if isinstance(value, str) else None


@dataclass
class Node:
    """A tensor in the model graph: the input, or the output of a layer applied to tensors."""

    index: int
    layer: KLayer | None  # None for the input
    inputs: list[Node]
    site: ast.AST  # the ast node to report at and to quote in the comment
    shape: tuple | None = None  # for the input
    var: str | None = None  # the Python variable it was first assigned to
    pad: tuple | None = None  # a folded ZeroPadding2D's (top, bottom, left, right)
    # layers that became no statement of their own, read before this one: (KLayer, why)
    folded: list = field(default_factory=list)


_NODE_IDS = itertools.count()


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)

    def add(self, layer, inputs, site, shape=None) -> Node:
        node = Node(next(_NODE_IDS), layer, inputs, site, shape)
        self.nodes.append(node)
        return node


@dataclass
class KModel:
    """A Sequential or functional model found in the source."""

    kind: str  # "Sequential" or "Model"
    call: ast.Call
    graph: Graph
    input: Node | None = None
    output: Node | None = None
    var: str | None = None
    layers: list = field(default_factory=list)  # Sequential: (KLayer, site) in order
    input_site: ast.AST | None = None  # Sequential: where its input shape came from
    compile_call: ast.Call | None = None
    compile_args: dict = field(default_factory=dict)
    fit_call: ast.Call | None = None
    fit_args: dict = field(default_factory=dict)


@dataclass
class Optimizer:
    name: str  # as written (Adam, RMSprop, adam)
    args: dict
    call: ast.AST


@dataclass
class Loss:
    name: str
    args: dict
    call: ast.AST


@dataclass
class Function:
    node: ast.FunctionDef
    called: bool = False


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class LayerMap:
    """One Keras layer and the cnnc statements it became (their lines in the output)."""

    keras_class: str
    keras_name: str | None
    line: int  # in the .py file
    column: int
    cnnc_lines: list[int]  # empty for a ZeroPadding2D folded into the next convolution


@dataclass
class Conversion:
    """What `convert_keras_source` made: the cnnc text (None when there were errors), every
    diagnostic (located in the .py file), and which cnnc lines each Keras layer became."""

    file: str
    source: str
    text: str | None
    diagnostics: list[Diagnostic]
    layers: list[LayerMap] = field(default_factory=list)
    model: object = None  # the compiled cnnc Model of `text`

    @property
    def ok(self) -> bool:
        return self.text is not None and not any(d.severity == ERROR for d in self.diagnostics)


# ---------------------------------------------------------------------------------------------


def convert_keras_file(path: str, *, model: str | None = None) -> Conversion:
    """Read a .py file and convert the Keras model it builds (see convert_keras_source)."""
    from cnnc.pipeline import read_source

    text, problems = read_source(path)
    if problems:
        return Conversion(str(path), "", None, problems)
    return convert_keras_source(text, str(path), model=model)


def convert_keras_source(source: str, file: str = "<input>", *,
                         model: str | None = None) -> Conversion:
    """Convert the Keras model that `source` builds to cnnc. `model` picks one by its variable
    name when the source builds several."""
    reader = _Reader(source, file)
    return reader.run(model)


class _Reader:
    def __init__(self, source: str, file: str):
        self.source = source
        self.file = file
        self.lines = source.splitlines()
        self.diagnostics: list[Diagnostic] = []
        self.graph = Graph()  # every tensor of every functional model
        self.models: list[KModel] = []
        self.aliases: dict[str, str] = {}  # imported name -> the name it imports
        self.functions: dict[str, Function] = {}
        self.subclasses: list[ast.ClassDef] = []
        self.dataset: tuple[str, ast.AST] | None = None
        self.seed: tuple[int, ast.AST] | None = None
        self.steps = 0
        self.depth = 0

    # -- diagnostics ---------------------------------------------------------------------------

    def span(self, node: ast.AST) -> Span:
        line = getattr(node, "lineno", 1)
        end_line = getattr(node, "end_lineno", line) or line
        col = self._char_col(line, getattr(node, "col_offset", 0))
        end_col = self._char_col(end_line, getattr(node, "end_col_offset", 0) or 0)
        if end_line == line and end_col <= col:
            end_col = col + 1
        return Span(self.file, line, col + 1, end_line, end_col + 1)

    def _char_col(self, line: int, byte_col: int) -> int:
        # ast's columns count UTF-8 bytes; a person counts characters.
        if 1 <= line <= len(self.lines):
            return len(self.lines[line - 1].encode("utf-8")[:byte_col].decode("utf-8", "replace"))
        return byte_col

    def error(self, node, message, hint=None, notes=(), code="convert") -> None:
        self.diagnostics.append(Diagnostic(ERROR, code, message, self.span(node), list(notes),
                                           hint))

    def warn(self, node, message, hint=None, notes=(), code="convert") -> None:
        self.diagnostics.append(Diagnostic(WARNING, code, message, self.span(node), list(notes),
                                           hint))

    def segment(self, node: ast.AST, limit: int = 72) -> str:
        text = ast.get_source_segment(self.source, node) or ""
        text = " ".join(text.split())
        return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."

    # -- the run ----------------------------------------------------------------------------------

    def run(self, wanted: str | None) -> Conversion:
        try:
            tree = ast.parse(self.source, self.file)
        except SyntaxError as e:
            line, col = e.lineno or 1, (e.offset or 1)
            self.diagnostics.append(Diagnostic(
                ERROR, "syntax", f"this is not valid Python: {e.msg}",
                Span(self.file, line, col, line, col + 1), [],
                "cnnc convert reads the Python file that builds a Keras model"))
            return self._result(None)
        self.module_env: dict = {}
        self.exec_block(tree.body, self.module_env)
        # A file that only defines build_model() and never calls it: run the functions that
        # nobody called and that need no arguments (all have defaults).
        if not self.models:
            for fn in list(self.functions.values()):
                spec = fn.node.args
                needs = len(spec.posonlyargs) + len(spec.args) - len(spec.defaults) \
                    + sum(d is None for d in spec.kw_defaults)
                if not fn.called and not needs:
                    self.call_function(fn, [], {}, fn.node)
        chosen = self.choose(wanted, tree)
        if chosen is None:
            return self._result(None)
        return self.translate(chosen)

    def _result(self, text, layers=(), model=None) -> Conversion:
        # code run several times (a function called in a loop) says each thing once
        seen, unique = set(), []
        for d in self.diagnostics:
            key = (d.severity, d.code, d.message, d.span)
            if key not in seen:
                seen.add(key)
                unique.append(d)
        self.diagnostics = sorted(unique, key=lambda d: (d.span.line, d.span.column))
        return Conversion(self.file, self.source, text, self.diagnostics, list(layers), model)

    def choose(self, wanted: str | None, tree: ast.Module) -> KModel | None:
        models = [m for m in self.models if m.var != "<unused>"]
        if wanted is not None:
            picked = [m for m in models if m.var == wanted]
            if not picked:
                names = sorted({m.var for m in models if m.var})
                self.diagnostics.append(Diagnostic(
                    ERROR, "convert", f"no model is assigned to `{wanted}`",
                    Span(self.file, 1, 1, 1, 1),
                    [f"models found: {', '.join(names)}"] if names else [],
                    did_you_mean(wanted, names) or None))
                return None
            return picked[-1]
        if not models:
            if any(d.severity == ERROR for d in self.diagnostics):
                return None  # the model's construction failed, and said why
            where = self.subclasses[0] if self.subclasses else tree
            if self.subclasses:
                self.error(where, f"`{self.subclasses[0].name}` is a subclassed Keras model; its "
                           "computation is Python code, which cnnc convert does not run",
                           hint="build the model with keras.Sequential or the functional API "
                                "(keras.Input, layers called on tensors, keras.Model)")
            else:
                self.diagnostics.append(Diagnostic(
                    ERROR, "convert", "no Keras model is built in this file",
                    Span(self.file, 1, 1, 1, 1), [],
                    "cnnc convert reads code that builds keras.Sequential([...]) or "
                    "keras.Model(inputs, outputs)"))
            return None
        # A model built once and assigned to several names (or returned) is one model.
        distinct = []
        for m in models:
            if not any(m is d for d in distinct):
                distinct.append(m)
        if len(distinct) > 1:
            names = [f"`{m.var}` (line {m.call.lineno})" if m.var else f"line {m.call.lineno}"
                     for m in distinct]
            self.error(distinct[1].call, f"this file builds {len(distinct)} models: "
                       + ", ".join(names),
                       hint="pick one with `--model NAME` (the variable it is assigned to)")
            return None
        return distinct[0]

    # -- statements -------------------------------------------------------------------------------

    def tick(self, node):
        self.steps += 1
        if self.steps > _MAX_STEPS:
            raise _Unsupported(node, "this code runs too long to be read as a model builder")

    def exec_block(self, body: list, env: dict):
        """Run statements; returns ("return", value) when a `return` ends them."""
        for stmt in body:
            try:
                result = self.exec_stmt(stmt, env)
            except _Unsupported as u:
                if u.message:
                    self.error(u.node, u.message, u.hint, u.notes)
                # names the statement would have bound now stand for a failed value, so that
                # what uses them fails quietly instead of repeating the error
                for target in getattr(stmt, "targets", [getattr(stmt, "target", None)]):
                    if target is not None:
                        self.assign(target, _Failed("<failed>", target), env)
                result = None
            if result is not None:
                return result
        return None

    def exec_stmt(self, stmt: ast.stmt, env: dict):
        self.tick(stmt)
        if isinstance(stmt, ast.ImportFrom):
            for alias in stmt.names:
                self.aliases[alias.asname or alias.name] = alias.name
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.asname:
                    self.aliases[alias.asname] = alias.name
        elif isinstance(stmt, ast.Assign):
            value = self.eval(stmt.value, env)
            for target in stmt.targets:
                self.assign(target, value, env)
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            self.assign(stmt.target, self.eval(stmt.value, env), env)
        elif isinstance(stmt, ast.AugAssign):
            if isinstance(stmt.target, ast.Name):
                env[stmt.target.id] = self.eval(ast.BinOp(stmt.target, stmt.op, stmt.value),
                                                env)
        elif isinstance(stmt, ast.Expr):
            self.eval(stmt.value, env)
        elif isinstance(stmt, ast.FunctionDef):
            self.functions[stmt.name] = Function(stmt)
            env[stmt.name] = self.functions[stmt.name]
        elif isinstance(stmt, ast.ClassDef):
            bases = {self.dotted(b) or "" for b in stmt.bases}
            if any(b.split(".")[-1] in ("Model", "Layer") for b in bases):
                self.subclasses.append(stmt)
        elif isinstance(stmt, ast.Return):
            return ("return", self.eval(stmt.value, env) if stmt.value else None)
        elif isinstance(stmt, ast.If):
            test = self.constant(stmt.test, env)
            if test is _UNKNOWN:
                self.skip_if_building(stmt, "an `if` whose condition is known only when the "
                                      "code runs")
            else:
                return self.exec_block(stmt.body if test else stmt.orelse, env)
        elif isinstance(stmt, ast.For):
            items = self.constant(stmt.iter, env)
            if items is _UNKNOWN or not isinstance(items, (list, tuple, range)):
                self.skip_if_building(stmt, "a `for` loop over values known only when the code "
                                      "runs")
                return None
            for item in items:
                self.tick(stmt)
                self.assign(stmt.target, item, env)
                result = self.exec_block(stmt.body, env)
                if result is not None:
                    return result
            return self.exec_block(stmt.orelse, env)
        elif isinstance(stmt, (ast.With, ast.Try)):
            result = self.exec_block(stmt.body, env)
            if result is None and isinstance(stmt, ast.Try):
                result = self.exec_block(stmt.orelse + stmt.finalbody, env)
            return result
        return None

    def skip_if_building(self, stmt: ast.stmt, what: str) -> None:
        """Code that runs only sometimes is skipped, unless it builds a model: then it is an
        error, since which layers the model has would be a guess."""
        for sub in ast.walk(stmt):
            if isinstance(sub, ast.Call):
                name = (self.dotted(sub.func) or "").split(".")[-1]
                name = self.aliases.get(name, name)
                if (name in SIGNATURES or name in ALIASES or name in self.functions
                        or isinstance(sub.func, ast.Call)
                        or name in ("add", "Sequential", "Model", "Input", "compile", "fit")):
                    raise _Unsupported(stmt, f"the model is built in {what}",
                                       hint="write the layers out (cnnc convert reads "
                                            "straight-line code, constant loops and "
                                            "constant conditions)")

    def assign(self, target: ast.expr, value, env: dict) -> None:
        if isinstance(target, ast.Name):
            env[target.id] = value
            if isinstance(value, Node) and value.var is None:
                value.var = target.id
            if isinstance(value, KModel) and value.var is None:
                value.var = target.id
        elif isinstance(target, (ast.Tuple, ast.List)):
            if isinstance(value, (tuple, list)) and len(value) == len(target.elts):
                for t, v in zip(target.elts, value):
                    self.assign(t, v, env)
            else:
                for t in target.elts:
                    self.assign(t, Ref("<unpacked>", t), env)
        # attributes and subscripts (self.x = ..., d[k] = ...) hold nothing a model needs

    # -- expressions ------------------------------------------------------------------------------

    def dotted(self, node: ast.AST) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            parts.append(node.id)
            return ".".join(reversed(parts))
        return None

    def constant(self, node: ast.AST, env: dict):
        """The value of a constant expression, or _UNKNOWN (never an error)."""
        try:
            value = self.eval(node, env, quiet=True)
        except _Unsupported:
            return _UNKNOWN
        return _UNKNOWN if _has_unknown(value) else value

    def eval(self, node: ast.AST, env: dict, quiet: bool = False):
        self.tick(node)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            if node.id == "__name__":
                return "__main__"
            return Ref(node.id, node)
        if isinstance(node, ast.Attribute):
            base = self.eval(node.value, env, quiet) if not isinstance(node.value, ast.Name) \
                else env.get(node.value.id)
            if isinstance(base, KModel) and node.attr in ("output", "outputs") and base.output:
                return base.output
            if isinstance(base, KModel) and node.attr in ("input", "inputs") and base.input:
                return base.input
            return Ref(self.dotted(node) or node.attr, node)
        if isinstance(node, (ast.Tuple, ast.List)):
            values = [self.eval(e, env, quiet) for e in node.elts]
            return tuple(values) if isinstance(node, ast.Tuple) else values
        if isinstance(node, ast.UnaryOp):
            v = self.eval(node.operand, env, quiet)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if isinstance(node.op, ast.USub):
                    return -v
                if isinstance(node.op, ast.UAdd):
                    return v
            if isinstance(node.op, ast.Not) and not _has_unknown(v):
                return not v
            return Ref("<expression>", node)
        if isinstance(node, ast.BinOp):
            left, right = self.eval(node.left, env, quiet), self.eval(node.right, env, quiet)
            if isinstance(left, Node) and isinstance(right, Node) and isinstance(node.op, ast.Add):
                return self.merge("Add", "+", node, [left, right])
            if isinstance(left, Node) and isinstance(right, Node) \
                    and isinstance(node.op, ast.Mult):
                return self.merge("Multiply", "*", node, [left, right])
            return _arith(node, left, right)
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            left, right = self.eval(node.left, env, quiet), self.eval(node.comparators[0], env,
                                                                        quiet)
            if _has_unknown(left) or _has_unknown(right):
                return Ref("<comparison>", node)
            op = node.ops[0]
            try:
                return {ast.Eq: lambda: left == right, ast.NotEq: lambda: left != right,
                        ast.Lt: lambda: left < right, ast.LtE: lambda: left <= right,
                        ast.Gt: lambda: left > right, ast.GtE: lambda: left >= right,
                        }[type(op)]()
            except (KeyError, TypeError):
                return Ref("<comparison>", node)
        if isinstance(node, ast.Call):
            return self.call(node, env)
        if isinstance(node, ast.JoinedStr):  # f'block{i}_conv', with constant parts
            parts = []
            for v in node.values:
                if isinstance(v, ast.Constant):
                    parts.append(str(v.value))
                    continue
                value = self.eval(v.value, env, quiet)
                if _has_unknown(value) or v.format_spec is not None:
                    return Ref("<f-string>", node)
                parts.append({115: str, 114: repr, 97: ascii}.get(v.conversion, format)(value))
            return "".join(parts)
        if isinstance(node, ast.Subscript):
            base = self.eval(node.value, env, quiet)
            index = self.eval(node.slice, env, quiet)
            if isinstance(base, (list, tuple)) and isinstance(index, int) \
                    and -len(base) <= index < len(base):
                return base[index]
            return Ref("<subscript>", node)
        return Ref("<expression>", node)

    def call(self, node: ast.Call, env: dict):
        func = node.func
        # A layer object called on tensors: conv(x), layers.Conv2D(32, 3)(x)
        if isinstance(func, ast.Call) or (isinstance(func, ast.Name)
                                          and isinstance(env.get(func.id), (KLayer, KModel))):
            callee = self.eval(func, env)
            if isinstance(callee, KLayer):
                return self.apply(callee, node, env)
            if isinstance(callee, KModel):
                raise _Unsupported(node, "a model used as a layer of another model",
                                   hint="write its layers out in the outer model")
        if isinstance(func, ast.Name) and isinstance(env.get(func.id), Function):
            args = [self.eval(a, env) for a in node.args]
            kwargs = {k.arg: self.eval(k.value, env) for k in node.keywords if k.arg}
            return self.call_function(env[func.id], args, kwargs, node)
        # A method of a model: model.add(...), model.compile(...), model.fit(...)
        if isinstance(func, ast.Attribute):
            base = env.get(func.value.id) if isinstance(func.value, ast.Name) else None
            if isinstance(base, KModel):
                return self.model_method(base, func.attr, node, env)
        dotted = self.dotted(func) or ""
        last = dotted.split(".")[-1]
        name = self.aliases.get(last, last) if "." not in dotted else last
        cls = ALIASES.get(name, name)
        if name in _AUGMENTATION:
            for a in node.args:
                self.eval(a, env)
            values, nodes = {}, {}
            if name == "RandomFlip":  # its mode: the one argument that may be translated
                given = node.args[0] if node.args else next(
                    (k.value for k in node.keywords if k.arg == "mode"), None)
                values["mode"] = self.eval(given, env) if given is not None \
                    else "horizontal_and_vertical"
            for k in node.keywords:
                if k.arg in _BASE_KWARGS:
                    values[k.arg], nodes[k.arg] = self.eval(k.value, env), k.value
            return KLayer("_Augmentation", name, node, values, nodes)
        if ".applications." in f".{dotted}." and name[:1].isupper():
            raise _Unsupported(node, f"`{dotted}` builds its model in Keras' own code, which "
                               "cnnc convert does not read",
                               hint="cnnc's model zoo has AlexNet, VGG-16, ResNet-18 and "
                                    "MobileNetV2 written out (examples/zoo)")
        if cls in SIGNATURES and not cls.startswith("_"):
            return self.make_layer(cls, name, node, env)
        if name == "Sequential":
            return self.make_sequential(node, env)
        if name == "Input" or (name == "InputLayer"):
            return self.make_input(node, env, name)
        if name in ("Model", "Functional"):
            return self.make_functional(node, env)
        if name in ("add", "concatenate", "multiply") and (
                dotted in (name,) or ".layers." in f".{dotted}" or dotted.startswith("layers.")):
            args, kwargs = self.bind_simple(node, env, ("inputs", "axis"))
            inputs = args.get("inputs")
            if not isinstance(inputs, (list, tuple)) or not all(isinstance(t, Node)
                                                                for t in inputs):
                raise _Unsupported(node, f"`{dotted}` needs a list of Keras tensors")
            layer = KLayer({"add": "Add", "concatenate": "Concatenate",
                            "multiply": "Multiply"}[name], dotted, node,
                           {k: v for k, v in args.items() if k in ("axis", "name")},
                           {k: v for k, v in kwargs.items() if k in ("axis", "name")})
            return self.merge_layer(layer, node, list(inputs))
        if name == "load_data":
            module = dotted.split(".")[-2] if dotted.count(".") >= 1 else ""
            if module in _DATASETS:
                self.dataset = (_DATASETS[module], node)
            elif module:
                self.dataset = (None, node)
            return (( Ref("x_train", node), Ref("y_train", node)),
                    (Ref("x_test", node), Ref("y_test", node)))
        if name in ("set_random_seed", "set_seed") and node.args:
            seed = self.constant(node.args[0], env)
            if isinstance(seed, int) and not isinstance(seed, bool):
                self.seed = (seed, node)
            return None
        if dotted.split(".")[-2:-1] in (["optimizers"],) or name in ("Adam", "SGD", "RMSprop",
                                                                     "AdamW", "Adagrad",
                                                                     "Adadelta", "Nadam",
                                                                     "Adamax", "Ftrl", "Lion"):
            args = {k.arg: self.eval(k.value, env) for k in node.keywords if k.arg}
            if node.args:
                args.setdefault("learning_rate", self.eval(node.args[0], env))
            return Optimizer(name, args, node)
        if name in _LOSSES and name[0].isupper():
            args = {k.arg: self.eval(k.value, env) for k in node.keywords if k.arg}
            return Loss(name, args, node)
        if name in _KNOWN_UNSUPPORTED or (dotted.startswith(_PREFIXES) and name[:1].isupper()):
            raise _Unsupported(node, f"the Keras layer `{name}` has no cnnc equivalent",
                               hint=did_you_mean(name, [*SIGNATURES, *ALIASES])
                               if name not in _KNOWN_UNSUPPORTED else
                               "see docs/keras.md for the layers cnnc convert translates")
        if name == "range":
            values = [self.constant(a, env) for a in node.args]
            if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                return range(*values)
        if name in ("enumerate", "zip", "reversed", "list", "tuple") and node.args \
                and not node.keywords:
            values = [self.constant(a, env) for a in node.args]
            if all(isinstance(v, (list, tuple, range)) for v in values):
                if name == "enumerate" and len(values) == 1:
                    return list(enumerate(values[0]))
                if name == "zip":
                    return list(zip(*values))
                if len(values) == 1:
                    return list(reversed(values[0])) if name == "reversed" else \
                        (list if name == "list" else tuple)(values[0])
        if name in ("len",) and node.args:
            v = self.constant(node.args[0], env)
            if isinstance(v, (list, tuple, str)):
                return len(v)
        if name in ("int", "float") and len(node.args) == 1:
            v = self.constant(node.args[0], env)
            if isinstance(v, (int, float)):
                return int(v) if name == "int" else float(v)
        # Anything else (print, numpy, data loading): evaluate its arguments, so that a layer or
        # model built inside them is still seen, and give an opaque value.
        for a in node.args:
            self.eval(a, env)
        for k in node.keywords:
            self.eval(k.value, env)
        return Ref(dotted or "<call>", node)

    def call_function(self, fn: Function, args: list, kwargs: dict, node: ast.AST):
        fn.called = True
        if self.depth > 32:
            raise _Unsupported(node, "functions call each other too deep to be a model builder")
        spec = fn.node.args
        env: dict = {}
        positional = [*spec.posonlyargs, *spec.args]
        defaults = spec.defaults
        for i, a in enumerate(positional):
            j = i - (len(positional) - len(defaults))
            if i < len(args):
                env[a.arg] = args[i]
            elif a.arg in kwargs:
                env[a.arg] = kwargs[a.arg]
            elif j >= 0:
                env[a.arg] = self.eval(defaults[j], {})
            else:
                env[a.arg] = Ref(a.arg, a)
        for a, d in zip(spec.kwonlyargs, spec.kw_defaults):
            env[a.arg] = kwargs.get(a.arg, self.eval(d, {}) if d is not None else Ref(a.arg, a))
        # module-level names the function reads (layers, constants, other functions)
        env = {**self.module_env, **self.functions, **env}
        self.depth += 1
        try:
            result = self.exec_block(fn.node.body, env)
        finally:
            self.depth -= 1
        return result[1] if result else None

    # -- layers -----------------------------------------------------------------------------------

    def bind_simple(self, node: ast.Call, env: dict, names: tuple) -> tuple[dict, dict]:
        values, nodes = {}, {}
        for name, arg in zip(names, node.args):
            values[name], nodes[name] = self.eval(arg, env), arg
        for k in node.keywords:
            if k.arg:
                values[k.arg], nodes[k.arg] = self.eval(k.value, env), k.value
        return values, nodes

    def make_layer(self, cls: str, written: str, node: ast.Call, env: dict) -> KLayer:
        names, defaults = SIGNATURES[cls]
        values, nodes = {}, {}
        if any(isinstance(a, ast.Starred) for a in node.args) or any(
                k.arg is None for k in node.keywords):
            raise _Unsupported(node, f"`{written}` is called with *args or **kwargs, whose "
                               "contents are known only when the code runs")
        if len(node.args) > len(names):
            raise _Unsupported(node.args[len(names)], f"`{written}` takes at most {len(names)} "
                               f"positional arguments, but {len(node.args)} are given")
        for name, arg in zip(names, node.args):
            values[name], nodes[name] = self.eval(arg, env), arg
        known = set(names) | set(_BASE_KWARGS) | ({"alpha"} if cls == "LeakyReLU" else set())
        for k in node.keywords:
            if k.arg not in known:
                raise _Unsupported(k.value, f"`{written}` has no argument `{k.arg}`",
                                   hint=did_you_mean(k.arg, known))
            if k.arg in values:
                raise _Unsupported(k.value, f"`{written}` is given `{k.arg}` twice")
            name = "negative_slope" if (cls, k.arg) == ("LeakyReLU", "alpha") else k.arg
            values[name], nodes[name] = self.eval(k.value, env), k.value
            k.value.parent_keyword = k  # to quote `input_shape=(28, 28, 1)` whole
        for name in ("rate", "filters", "kernel_size", "units", "activation"):
            if name in names and name not in defaults and name not in values:
                raise _Unsupported(node, f"`{written}` needs its `{name}` argument")
        return KLayer(cls, written, node, values, nodes)

    def make_input(self, node: ast.Call, env: dict, name: str) -> Node:
        values, nodes = self.bind_simple(node, env, ("shape", "batch_size", "dtype"))
        if name == "InputLayer" and "input_shape" in values:
            values["shape"], nodes["shape"] = values.pop("input_shape"), nodes["input_shape"]
        shape = values.get("shape")
        where = nodes.get("shape", node)
        if shape is None and values.get("batch_shape") is not None:
            batch_shape = values["batch_shape"]
            where = nodes["batch_shape"]
            shape = tuple(batch_shape)[1:] if isinstance(batch_shape, (list, tuple)) else \
                batch_shape
        shape = self.input_shape(shape, where, f"`{name}`")
        return self.graph.add(None, [], node, shape)

    def input_shape(self, shape, where: ast.AST, what: str) -> tuple:
        if isinstance(shape, int) and not isinstance(shape, bool):
            shape = (shape,)
        if not isinstance(shape, (list, tuple)) or _has_unknown(shape):
            raise _Unsupported(where, f"the input shape of {what} is not a constant tuple",
                               hint="write it out, like shape=(28, 28, 1)")
        if any(d is None for d in shape):
            raise _Unsupported(where, f"the input shape {_py(shape)} of {what} has a size "
                               "left open (None); cnnc checks and counts a model for one "
                               "input size", hint="give every size, like shape=(28, 28, 1)")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
            raise _Unsupported(where, f"the input shape {_py(shape)} of {what} is not a tuple "
                               "of positive whole numbers")
        if not 1 <= len(shape) <= 3:
            raise _Unsupported(where, f"the input shape {_py(shape)} of {what} has "
                               f"{len(shape)} dimensions; cnnc's inputs are images (H, W, C) "
                               "or flat vectors (N,)")
        return tuple(shape)

    def make_sequential(self, node: ast.Call, env: dict) -> KModel:
        model = KModel("Sequential", node, Graph())
        self.models.append(model)
        values, nodes = self.bind_simple(node, env, ("layers", "trainable", "name"))
        layers = values.get("layers")
        if layers is not None:
            if not isinstance(layers, (list, tuple)):
                raise _Unsupported(nodes["layers"], "the layers of `Sequential` are not a list "
                                   "written in the code")
            elts = nodes["layers"].elts if isinstance(nodes["layers"], (ast.List, ast.Tuple)) \
                else [nodes["layers"]] * len(layers)
            for item, site in zip(layers, elts):
                self.seq_add(model, item, site)
        return model

    def seq_add(self, model: KModel, item, site: ast.AST) -> None:
        if isinstance(item, Node) and item.layer is None:  # keras.Input(...) in the list
            if model.input is not None or model.layers:
                raise _Unsupported(site, "an `Input` after the first layer of a Sequential "
                                   "model")
            model.input, model.input_site = item, site
            return
        if isinstance(item, KLayer) and item.cls == "InputLayer":
            if model.input is not None or model.layers:
                raise _Unsupported(site, "an `InputLayer` after the first layer")
            shape, where = None, item.call
            for key in ("shape", "input_shape", "batch_shape", "batch_input_shape"):
                if item.args.get(key) is not None:
                    shape, where = item.args[key], item.at(key)
                    if "batch" in key and isinstance(shape, (list, tuple)):
                        shape = tuple(shape)[1:]
                    break
            model.input = self.graph.add(None, [], item.call,
                                         self.input_shape(shape, where, "`InputLayer`"))
            model.input_site = site
            return
        if _failed(item):
            raise _Unsupported(site, "")
        if isinstance(item, KModel):
            raise _Unsupported(site, "a model used as a layer of another model",
                               hint="write its layers out in the outer model")
        if not isinstance(item, KLayer):
            raise _Unsupported(site, f"`{self.segment(site, 40)}` is not a Keras layer that "
                               "cnnc convert knows")
        # quote the layer's construction, also when the list or add() names a variable
        model.layers.append((item, site if isinstance(site, ast.Call) else item.call))

    def model_method(self, model: KModel, method: str, node: ast.Call, env: dict):
        if method == "add":
            if model.kind != "Sequential":
                raise _Unsupported(node, "`add` on a functional model")
            if len(node.args) != 1:
                raise _Unsupported(node, "`add` takes one layer")
            self.seq_add(model, self.eval(node.args[0], env), node.args[0])
            return None
        if method == "build":
            values, nodes = self.bind_simple(node, env, ("input_shape",))
            shape = values.get("input_shape")
            if isinstance(shape, (list, tuple)) and shape and shape[0] is None:
                shape = tuple(shape)[1:]
            if model.input is None:
                model.input = self.graph.add(None, [], node,
                                             self.input_shape(shape, nodes.get("input_shape",
                                                                               node),
                                                              "`build`"))
                model.input_site = node
            return None
        if method == "compile":
            model.compile_call = node
            values, nodes = self.bind_simple(node, env, ("optimizer", "loss", "loss_weights",
                                                         "metrics"))
            model.compile_args = {k: (values[k], nodes[k]) for k in values}
            return None
        if method == "fit":
            model.fit_call = node
            values, nodes = self.bind_simple(node, env, ("x", "y", "batch_size", "epochs"))
            model.fit_args = {k: (values[k], nodes[k]) for k in values}
            return Ref("<history>", node)
        if method in ("pop", "insert"):
            raise _Unsupported(node, f"`model.{method}()` changes the model's layers in a way "
                               "cnnc convert does not follow")
        for a in node.args:
            self.eval(a, env)
        return Ref(f"{model.var}.{method}", node)

    def make_functional(self, node: ast.Call, env: dict) -> KModel:
        values, nodes = self.bind_simple(node, env, ("inputs", "outputs", "name"))
        ins, outs = values.get("inputs"), values.get("outputs")

        def one(value, what):
            if _failed(value):
                raise _Unsupported(node, "")
            if isinstance(value, (list, tuple)) and len(value) == 1:
                value = value[0]
            if isinstance(value, dict) and len(value) == 1:
                value = next(iter(value.values()))
            if isinstance(value, (list, tuple, dict)):
                raise _Unsupported(nodes.get(what, node), f"a model with {len(value)} {what}; "
                                   f"a cnnc model has one input and one output")
            if not isinstance(value, Node):
                raise _Unsupported(nodes.get(what, node), f"the {what} of `Model` are not Keras "
                                   "tensors built in this file")
            return value

        model = KModel("Model", node, self.graph, one(ins, "inputs"), one(outs, "outputs"))
        if model.input.layer is not None:
            raise _Unsupported(nodes.get("inputs", node), "the model's input is not a "
                               "keras.Input")
        self.models.append(model)
        return model

    def apply(self, layer: KLayer, node: ast.Call, env: dict) -> Node:
        if len(node.args) != 1 or node.keywords and any(k.arg not in ("training", "mask")
                                                        for k in node.keywords):
            raise _Unsupported(node, f"`{layer.written}` is called with other than one input")
        value = self.eval(node.args[0], env)
        if layer.cls in ("Add", "Concatenate", "Multiply"):
            if _failed(value):
                raise _Unsupported(node, "")
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, Node)
                                                               for v in value):
                raise _Unsupported(node.args[0], f"`{layer.written}` needs a list of Keras "
                                   "tensors")
            return self.merge_layer(layer, node, list(value))
        if isinstance(value, _Failed):
            raise _Unsupported(node, "")
        if not isinstance(value, Node):
            raise _Unsupported(node.args[0], f"`{layer.written}` is applied to "
                               f"`{self.segment(node.args[0], 40)}`, which is not a Keras tensor "
                               "built in this file")
        self.claim(layer, node)
        if layer.cls == "InputLayer":
            raise _Unsupported(node, "an `InputLayer` called on a tensor")
        return self.graph.add(layer, [value], node)

    def claim(self, layer: KLayer, node: ast.AST) -> None:
        if layer.applied is not None:
            raise _Unsupported(node, f"the `{layer.written}` layer is applied a second time (it "
                               f"was first applied at line {layer.applied.lineno}): the two "
                               "calls share weights, which cnnc cannot express",
                               hint="create a separate layer for each call")
        layer.applied = node

    def merge(self, cls: str, written: str, node: ast.AST, inputs: list) -> Node:
        layer = KLayer(cls, written, node, {}, {})
        return self.merge_layer(layer, node, inputs)

    def merge_layer(self, layer: KLayer, node: ast.AST, inputs: list) -> Node:
        self.claim(layer, node)
        if len(inputs) < 2:
            raise _Unsupported(node, f"`{layer.written}` needs at least two tensors")
        if len({id(t) for t in inputs}) != len(inputs):
            raise _Unsupported(node, f"`{layer.written}` is given the same tensor twice; cnnc's "
                               "`add`/`concat` take each tensor once")
        return self.graph.add(layer, inputs, node)

    # -- translation ------------------------------------------------------------------------------

    def translate(self, model: KModel) -> Conversion:
        if any(d.severity == ERROR for d in self.diagnostics):
            return self._result(None)
        try:
            graph_nodes, output = self.model_nodes(model)
        except _Unsupported as u:
            self.error(u.node, u.message, u.hint, u.notes)
            return self._result(None)
        emitter = _Emitter(self)
        try:
            emitter.emit_graph(graph_nodes, output)
        except _Unsupported as u:
            self.error(u.node, u.message, u.hint, u.notes)
        emitter.emit_train(model)
        if any(d.severity == ERROR for d in self.diagnostics):
            return self._result(None)
        text = emitter.text()
        compiled = self.check(text, emitter)
        if any(d.severity == ERROR for d in self.diagnostics):
            return self._result(None, emitter.layer_maps, compiled)
        return self._result(text, emitter.layer_maps, compiled)

    def model_nodes(self, model: KModel) -> tuple[list[Node], Node]:
        if model.kind == "Sequential":
            graph = model.graph
            if model.input is None:
                first = model.layers[0][0] if model.layers else None
                shape, where = None, None
                if first is not None:
                    for key in ("input_shape", "batch_input_shape", "input_dim"):
                        if key in first.args:
                            shape, where = first.args[key], first.at(key)
                            if key == "batch_input_shape" and isinstance(shape, (list, tuple)):
                                shape = tuple(shape)[1:]
                            break
                if where is None:
                    raise _Unsupported(model.call, "the Sequential model has no input shape "
                                       "(Keras learns it from the first data it sees; cnnc "
                                       "needs it written)",
                                       hint="give the first layer input_shape=(H, W, C), or "
                                            "start the list with keras.Input(shape=(H, W, C))")
                model.input = graph.add(None, [], where.parent_keyword if hasattr(
                    where, "parent_keyword") else where,
                    self.input_shape(shape, where, "the first layer"))
            else:
                graph.nodes.append(model.input) if model.input not in graph.nodes else None
            previous = model.input
            for layer, site in model.layers:
                if layer.cls == "InputLayer":
                    raise _Unsupported(site, "an `InputLayer` after the first layer")
                if layer.cls in ("Add", "Concatenate", "Multiply"):
                    raise _Unsupported(site, f"`{layer.written}` in a Sequential model: it "
                                       "merges several tensors, which needs the functional API")
                self.claim(layer, site)
                previous = graph.add(layer, [previous], site)
            return [n for n in graph.nodes], previous
        # functional: the nodes the output depends on, in the order they were made
        needed: set[int] = set()
        stack = [model.output]
        while stack:
            n = stack.pop()
            if n.index in needed:
                continue
            needed.add(n.index)
            stack.extend(n.inputs)
        inputs = [n for n in self.graph.nodes if n.index in needed and n.layer is None]
        if inputs != [model.input]:
            other = next(n for n in inputs if n is not model.input)
            raise _Unsupported(other.site, "the model's output depends on an input that is not "
                               "the model's `inputs`")
        return [n for n in self.graph.nodes if n.index in needed], model.output

    def check(self, text: str, emitter: _Emitter):
        """Compile the cnnc text; report its diagnostics at the Keras code that made them."""
        from cnnc.pipeline import compile_text

        compiled = compile_text(text, "<converted>")
        for d in compiled.diagnostics:
            origin = emitter.origin.get(d.span.line)
            site = origin if origin is not None else None
            line_text = text.splitlines()[d.span.line - 1] if d.span.line >= 1 else ""
            statement = line_text.split("#")[0].strip()
            notes = [f"in the cnnc model it converts to, line {d.span.line}: `{statement}`",
                     *d.notes]
            span = self.span(site) if site is not None else Span(self.file, 1, 1, 1, 1)
            self.diagnostics.append(Diagnostic(d.severity, d.code, d.message, span, notes,
                                               d.hint))
        return compiled


_UNKNOWN = object()


def _failed(value) -> bool:
    if isinstance(value, _Failed):
        return True
    if isinstance(value, (list, tuple)):
        return any(_failed(v) for v in value)
    return False


def _has_unknown(value) -> bool:
    if isinstance(value, (Ref, Node, KLayer, KModel, Function, Optimizer, Loss)) \
            or value is _UNKNOWN:
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_unknown(v) for v in value)
    return False


def _arith(node: ast.BinOp, left, right):
    numbers = (int, float)
    if isinstance(left, numbers) and isinstance(right, numbers) \
            and not isinstance(left, bool) and not isinstance(right, bool):
        ops = {ast.Add: lambda: left + right, ast.Sub: lambda: left - right,
               ast.Mult: lambda: left * right, ast.Div: lambda: left / right,
               ast.FloorDiv: lambda: left // right, ast.Pow: lambda: left ** right,
               ast.Mod: lambda: left % right}
        try:
            return ops[type(node.op)]()
        except (KeyError, ZeroDivisionError, OverflowError):
            pass
    if isinstance(left, str) and isinstance(right, str) and isinstance(node.op, ast.Add):
        return left + right
    if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)) \
            and isinstance(node.op, ast.Add):
        return left + right if type(left) is type(right) else tuple(left) + tuple(right)
    return Ref("<expression>", node)


def _py(value) -> str:
    return repr(tuple(value)) if isinstance(value, list) else repr(value)


# ---------------------------------------------------------------------------------------------
# Writing cnnc


def _num(value) -> str:
    """A number as cnnc reads it: whole numbers bare, decimals as Python's shortest repr."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = repr(float(value))
    return text.removesuffix(".0")


def _one_minus(value: float) -> str:
    """1 - value, exactly as written in decimal (Keras' momentum 0.99 is cnnc's 0.01)."""
    result = Decimal(1) - Decimal(repr(float(value)))
    return format(result.normalize(), "f")


class _Emitter:
    """Turns graph nodes into cnnc statements, each with a comment quoting its Keras line."""

    def __init__(self, reader: _Reader):
        self.r = reader
        self.body: list[tuple[str, str]] = []  # (statement, comment)
        self.origin: dict[int, ast.AST] = {}  # output line -> the Keras code it came from
        self.sites: list[ast.AST | None] = []  # per body line
        self.layer_maps: list[LayerMap] = []
        self.names: set[str] = set()
        self.train: list[tuple[str, str, ast.AST | None]] = []
        self.flip: ast.AST | None = None  # a RandomFlip("horizontal"), for `flip`

    # -- names --

    def fresh(self, wanted: str | None) -> str:
        base = re.sub(r"\W", "_", wanted or "t").strip("_") or "t"
        if base[0].isdigit():
            base = "t_" + base
        from cnnc import ops

        taken = _RESERVED | set(ops.names(plugins=False))
        name, i = base, 1
        while name in taken or name in self.names or re.fullmatch(r"x\d+", name):
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def line(self, statement: str, site: ast.AST | None, comment: str | None = None) -> int:
        """Add a statement made from the Keras code at `site`; the comment quotes that code
        unless another is given."""
        self.body.append((statement, comment if comment is not None else
                          (f"line {site.lineno}: {self.r.segment(site)}" if site else "")))
        self.sites.append(site)
        return len(self.body)  # body line number, before the header is added

    # -- the graph --

    def emit_graph(self, nodes: list[Node], output: Node) -> None:
        self.elide(nodes, output)
        self.fold_padding(nodes, output)
        nodes = [n for n in nodes if not (n.layer and n.layer.cls in ("ZeroPadding2D",
                                                                       "Rescaling",
                                                                       "_Augmentation"))]
        # which tensors are read by anything other than the statement right after them
        needs_name: set[int] = set()
        for pos, n in enumerate(nodes):
            if n.layer is None:
                continue
            prev = nodes[pos - 1]
            if n.layer.cls in ("Add", "Concatenate", "Multiply"):
                needs_name.update(i.index for i in n.inputs)
            elif n.inputs[0] is not prev:
                needs_name.add(n.inputs[0].index)
        names: dict[int, str] = {}
        for n in nodes:
            if n.layer is None:
                names[n.index] = "input"
            elif n.layer.name or n.index in needs_name:
                names[n.index] = self.fresh(n.layer.name or n.var)
        current = None
        for n in nodes:
            if n.layer is None:
                self.line(f"input {'x'.join(str(d) for d in n.shape)}", n.site,
                          f"line {n.site.lineno}: {self.r.segment(n.site)}")
                current = n
                continue
            if n.layer.cls in ("Add", "Concatenate", "Multiply"):
                if current not in n.inputs:
                    self.line(f"from {names[n.inputs[0].index]}", n.site, "")
                    current = n.inputs[0]
                head = {"Add": "add", "Concatenate": "concat", "Multiply": "mul"}[n.layer.cls]
                texts = [f"{head} " + " ".join(names[i.index] for i in n.inputs)]
                if n.layer.cls == "Concatenate":
                    self.check_axis(n.layer)
            else:
                if n.inputs[0] is not current:
                    self.line(f"from {names[n.inputs[0].index]}", n.site, "")
                texts = self.layer_texts(n)
            for z, why in n.folded:
                self.line("", None, f"line {z.call.lineno}: {self.r.segment(z.call, 60)} "
                          f"({why})")
            first_line = len(self.body) + 1
            lines = []
            for i, text in enumerate(texts):
                if i == len(texts) - 1 and n.index in names:
                    text = f"{names[n.index]} = {text}"
                lines.append(self.line(text, n.site,
                                       None if i == 0 else "(the same Keras layer)"))
            for z, _ in n.folded:
                self.layer_maps.append(LayerMap(z.cls if z.cls != "_Augmentation" else
                                                z.written, z.name, z.call.lineno,
                                                z.call.col_offset + 1, []))
            self.layer_maps.append(LayerMap(n.layer.written if n.layer.written in ("+", "*") else
                                            n.layer.cls, n.layer.name, n.site.lineno,
                                            n.site.col_offset + 1,
                                            list(range(first_line, first_line + len(lines)))))
            current = n

    def elide(self, nodes: list[Node], output: Node) -> None:
        """Layers that become no statement: Rescaling(1/255) (cnnc's data sets are already
        scaled to [0, 1]) and augmentation (which does nothing at inference; a warning, since it
        changes training). Their readers read their input instead."""
        for e in [n for n in nodes if n.layer and n.layer.cls in ("Rescaling",
                                                                    "_Augmentation")]:
            layer = e.layer
            if layer.cls == "Rescaling":
                scale, offset = layer.get("scale"), layer.get("offset")
                if not (isinstance(scale, (int, float)) and abs(scale - 1 / 255) < 1e-9
                        and offset == 0):
                    raise _Unsupported(layer.call, f"`{self.r.segment(layer.call, 50)}` has no "
                                       "cnnc equivalent: cnnc feeds every model pixels scaled "
                                       "to [0, 1], as Rescaling(1/255) does")
                why = "cnnc's data are already scaled to [0, 1]"
            elif layer.written == "RandomFlip" and layer.args.get("mode") == "horizontal":
                # the same augmentation as the train: section's `flip`
                self.flip = layer.call
                why = "the train: section's `flip`"
            else:
                self.r.warn(layer.call, f"`{layer.written}` is not translated: it augments the "
                            "training images and does nothing at inference",
                            hint="the train: section has `flip` (RandomFlip('horizontal')), "
                                 "`shift` and `erase` (docs/training.md)")
                why = "augmentation, not translated"
            users = [n for n in nodes if e in n.inputs]
            if e is output or not users:
                raise _Unsupported(layer.call, f"`{layer.written}` as the model's output")
            for user in users:
                user.inputs = [e.inputs[0] if i is e else i for i in user.inputs]
                user.folded.extend([*e.folded, (layer, why)])

    def fold_padding(self, nodes: list[Node], output: Node) -> None:
        """cnnc has no padding layer: a ZeroPadding2D becomes the `pad=` of the one
        convolution it feeds (exact), or of a max pool whose input is never negative (then
        zeros pad as -infinity does)."""
        for z in [n for n in nodes if n.layer and n.layer.cls == "ZeroPadding2D"]:
            layer = z.layer
            self.check_common(layer)
            pads = self.zero_padding(layer)
            users = [n for n in nodes if z in n.inputs]
            user = users[0] if len(users) == 1 else None
            ok = user is not None and z is not output and user.pad is None
            if ok and user.layer.cls in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D",
                                         "MaxPooling2D"):
                ok = str(user.layer.get("padding")).lower() == "valid"
                if user.layer.cls == "MaxPooling2D":
                    ok = ok and self.non_negative(z.inputs[0])
            elif ok:
                ok = False
            if not ok:
                raise _Unsupported(layer.call, "this `ZeroPadding2D` cannot be translated: cnnc "
                                   "has no padding layer, and pads inside the layer that reads "
                                   "the padded tensor",
                                   notes=[("a ZeroPadding2D becomes the `pad=` of the layer it "
                                          "feeds when that is the only one, and is a Conv2D, "
                                          "DepthwiseConv2D or SeparableConv2D with "
                                          "padding='valid', or a MaxPooling2D with "
                                          "padding='valid' whose input is never negative "
                                          "(after a ReLU)")])
            user.pad = pads
            user.folded.extend([*z.folded, (layer, "becomes the pad= below")])
            user.inputs = [z.inputs[0] if i is z else i for i in user.inputs]

    def non_negative(self, node: Node) -> bool:
        layer = node.layer
        if layer is None:
            return False
        if layer.cls == "ReLU":
            return layer.get("negative_slope") == 0 and layer.get("threshold") == 0
        act = layer.get("activation") if layer.cls in ("Activation", "Conv2D", "Dense",
                                                       "DepthwiseConv2D", "SeparableConv2D") \
            else None
        return self.activation_name(act, layer) in ("relu", "relu6", "sigmoid", "softmax")

    def zero_padding(self, layer: KLayer) -> tuple:
        p = layer.get("padding")
        where = layer.at("padding")
        if isinstance(p, int) and not isinstance(p, bool):
            return (p, p, p, p)
        if isinstance(p, (list, tuple)) and len(p) == 2:
            if all(isinstance(v, int) for v in p):
                return (p[0], p[0], p[1], p[1])
            if all(isinstance(v, (list, tuple)) and len(v) == 2 for v in p):
                return (p[0][0], p[0][1], p[1][0], p[1][1])
        raise _Unsupported(where, f"ZeroPadding2D's padding {_py(p)} is not an int, a pair of "
                           "ints or a pair of pairs")

    # -- one layer --

    def check_common(self, layer: KLayer) -> None:
        """Arguments every layer may have: data_format, dtype, trainable, initialisers..."""
        if "data_format" in SIGNATURES[layer.cls][0]:
            df = layer.get("data_format")
            if df not in (None, "channels_last"):
                raise _Unsupported(layer.at("data_format"), f"data_format={df!r}: cnnc's images "
                                   "are channels last (H, W, C), Keras' default",
                                   hint="drop data_format and give the input as (H, W, C)")
        for key, value in layer.args.items():
            default = SIGNATURES[layer.cls][1].get(key, _BASE_KWARGS.get(key))
            if _TRAINING_ONLY.match(key) and value != default:
                self.r.warn(layer.at(key), f"{self.arg(layer, key)} is not "
                            "translated: cnnc initialises and regularises in its own way",
                            hint="see docs/keras.md, 'initialisation'")
        if layer.get("trainable") is False:
            self.r.warn(layer.at("trainable"), "trainable=False is not translated: cnnc trains "
                        "every layer")
        dtype = layer.get("dtype")
        if dtype not in (None, "float32"):
            self.r.warn(layer.at("dtype"), f"dtype={dtype!r} is not translated: cnnc's models "
                        "are float32")

    def size(self, layer: KLayer, key: str) -> tuple[int, int]:
        v = layer.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            v = (v, v)
        if isinstance(v, list):
            v = tuple(v)
        if not (isinstance(v, tuple) and len(v) == 2 and all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in v)):
            raise _Unsupported(layer.at(key), f"{self.arg(layer, key)} of "
                               f"`{layer.written}` is not a positive whole number or a pair of "
                               "them")
        return v

    @staticmethod
    def size_text(hw: tuple[int, int], always_pair: bool = False) -> str:
        if hw[0] == hw[1] and not always_pair:
            return str(hw[0])
        return f"{hw[0]}x{hw[1]}"

    def padding(self, layer: KLayer, pad: tuple | None) -> str | None:
        p = layer.get("padding")
        if not isinstance(p, str) or p.lower() not in ("valid", "same"):
            raise _Unsupported(layer.at("padding"), f"padding={p!r}: cnnc pads 'valid' or "
                               "'same' (and explicit pads, from a ZeroPadding2D)")
        if pad is not None:
            t, b, left, right = pad
            if t == b == left == right:
                return f"pad={t}" if t else None
            if t == b and left == right:
                return f"pad={t}x{left}"
            return f"pad={t}x{b}x{left}x{right}"
        return "pad=same" if p.lower() == "same" else None

    def activation_name(self, act, layer: KLayer) -> str | None:
        if isinstance(act, Ref):
            act = act.dotted.split(".")[-1]
            act = self.r.aliases.get(act, act)
        if act in _LINEAR:
            return None
        if isinstance(act, str):
            return act.lower() if act.lower() in _ACTIVATIONS else act
        return "<expression>"

    def activation(self, layer: KLayer, key: str = "activation") -> tuple[str | None, bool]:
        """(cnnc activation text, fusable) for a layer's activation argument."""
        name = self.activation_name(layer.get(key), layer)
        if name is None:
            return None, True
        if name not in _ACTIVATIONS:
            what = (self.arg(layer, key) if layer.cls != "Activation"
                    else self.r.segment(layer.call, 50))
            raise _Unsupported(layer.at(key), f"{what}: the activation has no cnnc equivalent",
                               hint=did_you_mean(str(name), _ACTIVATIONS) or
                               "cnnc's activations: relu, relu6, tanh, sigmoid, softmax, "
                               "leaky_relu, elu, gelu, silu (swish)")
        return _ACTIVATIONS[name]

    def with_activation(self, head: str, layer: KLayer) -> list[str]:
        act, fusable = self.activation(layer)
        if act is None:
            return [head]
        if fusable:
            return [f"{head} {act}"]
        return [head, act]

    def layer_texts(self, n: Node) -> list[str]:
        layer, cls = n.layer, n.layer.cls
        self.check_common(layer)
        if cls == "Conv2D":
            filters = self.positive_int(layer, "filters")
            parts = [f"conv {filters} {self.size_text(self.size(layer, 'kernel_size'), True)}"]
            parts += self.window_options(layer, n.pad)
            groups = layer.get("groups")
            if groups != 1:
                parts.append(f"groups={self.positive_int(layer, 'groups')}")
            if not self.flag(layer, "use_bias"):
                parts.append("bias=false")
            return self.with_activation(" ".join(parts), layer)
        if cls == "DepthwiseConv2D":
            parts = [f"dwconv {self.size_text(self.size(layer, 'kernel_size'), True)}"]
            parts += self.window_options(layer, n.pad)
            m = self.positive_int(layer, "depth_multiplier")
            if m != 1:
                parts.append(f"multiplier={m}")
            if not self.flag(layer, "use_bias"):
                parts.append("bias=false")
            return self.with_activation(" ".join(parts), layer)
        if cls == "SeparableConv2D":
            # Keras' separable convolution: a depthwise step without bias, then a 1x1 conv
            filters = self.positive_int(layer, "filters")
            dw = [f"dwconv {self.size_text(self.size(layer, 'kernel_size'), True)}"]
            dw += self.window_options(layer, n.pad)
            m = self.positive_int(layer, "depth_multiplier")
            if m != 1:
                dw.append(f"multiplier={m}")
            dw.append("bias=false")
            pw = [f"conv {filters} 1x1"]
            if not self.flag(layer, "use_bias"):
                pw.append("bias=false")
            return [" ".join(dw), *self.with_activation(" ".join(pw), layer)]
        if cls in ("MaxPooling2D", "AveragePooling2D"):
            size = self.size(layer, "pool_size")
            head = "pool " + ("" if cls == "MaxPooling2D" else "avg ") + self.size_text(size)
            parts = [head]
            if layer.get("strides") is not None:
                stride = self.size(layer, "strides")
                if stride != size:
                    parts.append(f"stride={self.size_text(stride)}")
            pad = self.padding(layer, n.pad)
            if pad:
                parts.append(pad)
            return [" ".join(parts)]
        if cls in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
            head = "gap" if cls == "GlobalAveragePooling2D" else "gmp"
            return [head + (" keepdims=true" if self.flag(layer, "keepdims") else "")]
        if cls == "BatchNormalization":
            self.check_axis(layer)
            for key in ("center", "scale"):
                if not self.flag(layer, key):
                    raise _Unsupported(layer.at(key), f"{key}=False: cnnc's batchnorm always "
                                       "learns a scale and a shift")
            for key in ("renorm", "synchronized"):
                if self.flag(layer, key):
                    raise _Unsupported(layer.at(key), f"{key}=True has no cnnc equivalent")
            momentum, eps = layer.get("momentum"), layer.get("epsilon")
            for key, v in (("momentum", momentum), ("epsilon", eps)):
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 1:
                    raise _Unsupported(layer.at(key), f"{key}={v!r} is not a number in [0, 1]")
            # Keras keeps `momentum` of the running statistics; cnnc (as PyTorch) takes that
            # much of the new batch: cnnc momentum = 1 - Keras momentum.
            return [f"batchnorm eps={_num(eps)} momentum={_one_minus(momentum)}"]
        if cls == "LayerNormalization":
            self.check_axis(layer)
            for key in ("center", "scale"):
                if not self.flag(layer, key):
                    raise _Unsupported(layer.at(key), f"{key}=False: cnnc's layernorm always "
                                       "learns a scale and a shift")
            eps = layer.get("epsilon")
            if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 <= eps <= 1:
                raise _Unsupported(layer.at("epsilon"), f"epsilon={eps!r} is not a number in "
                                   "[0, 1]")
            return [f"layernorm eps={_num(eps)}"]  # Keras' default 1e-3; cnnc's 1e-5
        if cls == "Dropout":
            rate = layer.get("rate")
            if not isinstance(rate, (int, float)) or isinstance(rate, bool) \
                    or not 0 <= rate < 1:
                raise _Unsupported(layer.at("rate"), f"the dropout rate {rate!r} is not a "
                                   "number in [0, 1)")
            if layer.get("noise_shape") is not None:
                raise _Unsupported(layer.at("noise_shape"), "noise_shape= (dropout shared "
                                   "across positions) has no cnnc equivalent")
            return [f"dropout {_num(rate)}"]
        if cls == "Flatten":
            return ["flatten"]
        if cls == "Dense":
            units = self.positive_int(layer, "units")
            return self.with_activation(f"dense {units}" + (
                "" if self.flag(layer, "use_bias") else " bias=false"), layer)
        if cls == "Activation":
            act, _ = self.activation(layer)
            if act is None:
                raise _Unsupported(layer.call, "a linear `Activation` does nothing; cnnc has no "
                                   "identity layer", hint="leave it out")
            return [act]
        if cls == "ReLU":
            max_value, slope, threshold = (layer.get(k) for k in ("max_value",
                                                                  "negative_slope",
                                                                  "threshold"))
            if threshold != 0:
                raise _Unsupported(layer.at("threshold"), "ReLU(threshold=...) has no cnnc "
                                   "equivalent")
            if max_value is None and slope == 0:
                return ["relu"]
            if max_value == 6 and slope == 0:
                return ["relu6"]
            if max_value is None and isinstance(slope, (int, float)) and slope > 0:
                return [f"leaky_relu {_num(slope)}"]
            raise _Unsupported(layer.call, f"`{self.r.segment(layer.call, 40)}` has no cnnc "
                               "equivalent (cnnc has relu, relu6 and leaky_relu)")
        if cls == "LeakyReLU":
            slope = layer.get("negative_slope")
            if not isinstance(slope, (int, float)) or slope < 0:
                raise _Unsupported(layer.at("negative_slope"), "the slope is not a number >= 0")
            return [f"leaky_relu {_num(slope)}"]
        if cls == "ELU":
            alpha = layer.get("alpha")
            if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha < 0:
                raise _Unsupported(layer.at("alpha"), "ELU's alpha is not a number >= 0 "
                                   "written in the code")
            return ["elu" if alpha == 1 else f"elu {_num(alpha)}"]
        if cls == "Softmax":
            if layer.get("axis") not in (-1,):
                raise _Unsupported(layer.at("axis"), "softmax over an axis other than the last "
                                   "(the channels) has no cnnc equivalent")
            return ["softmax"]
        raise _Unsupported(layer.call, f"`{layer.written}` cannot be translated here")

    def window_options(self, layer: KLayer, pad: tuple | None) -> list[str]:
        parts = []
        stride = self.size(layer, "strides")
        if stride != (1, 1):
            parts.append(f"stride={self.size_text(stride)}")
        p = self.padding(layer, pad)
        if p:
            parts.append(p)
        dilation = self.size(layer, "dilation_rate")
        if dilation != (1, 1):
            parts.append(f"dilation={self.size_text(dilation)}")
        return parts

    def arg(self, layer: KLayer, key: str) -> str:
        """An argument as `key=value`, however it was written."""
        node = layer.at(key)
        text = self.r.segment(node, 50)
        return text if isinstance(node, ast.keyword) else f"{key}={text}"

    def positive_int(self, layer: KLayer, key: str) -> int:
        v = layer.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise _Unsupported(layer.at(key), f"{self.arg(layer, key)} of "
                               f"`{layer.written}` is not a positive whole number written in "
                               "the code")
        return v

    def flag(self, layer: KLayer, key: str) -> bool:
        v = layer.get(key)
        if not isinstance(v, bool):
            raise _Unsupported(layer.at(key), f"{key}= of `{layer.written}` is not True or "
                               "False")
        return v

    def check_axis(self, layer: KLayer) -> None:
        axis = layer.get("axis")
        if axis not in (-1, 3):
            raise _Unsupported(layer.at("axis"), f"axis={axis!r}: cnnc's `"
                               + {"BatchNormalization": "batchnorm",
                                  "LayerNormalization": "layernorm"}.get(layer.cls, "concat")
                               + "` works on the channels (the last axis, -1)")

    # -- train: --

    def emit_train(self, model: KModel) -> None:
        r = self.r
        out = self.train
        if r.dataset is not None:
            name, node = r.dataset
            if name:
                out.append((f"data {name}", f"line {node.lineno}: {r.segment(node, 50)}", node))
            else:
                r.warn(node, f"`{r.segment(node, 50)}` is not a data set cnnc has; the "
                       "`train:` section names none", hint="cnnc's data sets: mnist, "
                       "fashion-mnist, digits, npz:PATH (see docs/training.md)")
        if model.compile_call is not None:
            args = model.compile_args
            if "loss" in args:
                self.loss(*args["loss"])
            opt, where = args.get("optimizer", ("rmsprop", model.compile_call))
            self.optimizer(opt, where)
        if model.fit_call is not None:
            fit = model.fit_call
            args = model.fit_args
            for key, setting, default in (("epochs", "epochs", 1), ("batch_size", "batch", 32),
                                          ("validation_split", "val", 0.0)):
                value, node = args.get(key, (default, None))
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    r.warn(node, f"{key}={r.segment(node, 30)} is known only when the code "
                           f"runs: the `train:` section leaves `{setting}` at cnnc's default")
                    continue
                why = f"line {node.lineno}: {key}={r.segment(node, 40)}" if node is not None \
                    else f"line {fit.lineno}: Keras' default for fit(), {key}={default!r}"
                out.append((f"{setting} {_num(value)}", why, node or fit))
            for key in ("validation_data", "class_weight", "sample_weight", "callbacks",
                        "initial_epoch", "steps_per_epoch"):
                if key in args and args[key][0] is not None:
                    r.warn(args[key][1], f"fit's {key}= is not translated: the `train:` "
                           "section has no such setting")
        if self.flip is not None:
            out.append(("flip", f"line {self.flip.lineno}: {r.segment(self.flip, 50)}",
                        self.flip))
        if r.seed is not None:
            seed, node = r.seed
            out.append((f"seed {seed}", f"line {node.lineno}: {r.segment(node, 50)}", node))

    def loss(self, loss, node) -> None:
        r = self.r
        name = loss.name if isinstance(loss, Loss) else (
            loss.dotted.split(".")[-1] if isinstance(loss, Ref) else loss)
        if not isinstance(name, str) or name not in _LOSSES:
            r.warn(node, f"the loss {r.segment(node, 40)} is not translated: cnnc's losses are "
                   "cross-entropy, binary cross-entropy and mean squared error")
            return
        self.train.append((f"loss {_LOSSES[name]}", (f"line {node.lineno}: loss="
                           f"{r.segment(node, 40)}"), node))

    def optimizer(self, opt, node) -> None:
        r = self.r
        if isinstance(opt, Optimizer):
            key, args = opt.name.lower(), opt.args
        elif isinstance(opt, str):
            key, args = opt.lower(), {}
        else:
            r.warn(node, f"the optimizer {r.segment(node, 40)} is not translated")
            return
        if key not in _OPTIMIZERS:
            r.warn(node, f"the optimizer {r.segment(node, 40)} is not translated: cnnc's "
                   "optimizers are sgd and adam" + (" (Keras' compile() defaults to rmsprop)"
                                                     if node is not None and key == "rmsprop"
                                                     and isinstance(opt, str) else ""))
            return
        lr = args.get("learning_rate", args.get("lr", _OPTIMIZER_DEFAULT_LR[key]))
        if not isinstance(lr, (int, float)) or isinstance(lr, bool):
            r.warn(node, "the learning rate is not a number written in the code (a schedule?): "
                   "not translated")
            lr = None
        parts = [f"optimizer {_OPTIMIZERS[key]}"]
        if lr is not None:
            parts.append(f"lr={_num(lr)}")
        if key == "sgd":
            momentum = args.get("momentum", 0.0)
            if not isinstance(momentum, (int, float)) or isinstance(momentum, bool):
                r.warn(node, "the momentum is not a number written in the code: not translated")
                momentum = 0.0
            elif momentum:
                parts.append(f"momentum={_num(momentum)}")
            if args.get("nesterov") is True:
                parts.append("nesterov=true")
            wd = args.get("weight_decay")
            if wd is not None and not isinstance(wd, (int, float)):
                r.warn(node, "the weight decay is not a number written in the code: not "
                       "translated")
            elif wd and not momentum:
                parts.append(f"weight_decay={_num(wd)}")
            elif wd:
                r.warn(node, "SGD's weight_decay with momentum is not translated: Keras decays "
                       "weights apart from the gradient, cnnc adds an L2 term to it")
        elif args.get("weight_decay"):
            r.warn(node, "Adam's weight_decay is not translated: Keras decays weights apart "
                   "from the gradient (AdamW), cnnc adds an L2 term to it")
        for extra in ("beta_1", "beta_2", "epsilon", "amsgrad", "clipnorm", "clipvalue",
                      "global_clipnorm", "use_ema"):
            if extra in args:
                r.warn(node, f"the optimizer's {extra}= is not translated: cnnc uses "
                       "PyTorch's defaults")
        self.train.append((" ".join(parts), (f"line {node.lineno}: optimizer="
                           f"{r.segment(node, 50)}"), node))

    # -- the text --

    def text(self) -> str:
        header = [(f"# Converted from {Path(self.r.file).name} by `cnnc convert`: one statement "
                  "per Keras layer,"), "# each with the line of Python it comes from."]
        width = max((len(s) for s, _ in self.body), default=0)
        width = min(max(width, 16), 40)
        lines = list(header)
        for (statement, comment), site in zip(self.body, self.sites):
            if not statement:
                lines.append(f"# {comment}")
            else:
                lines.append(f"{statement:<{width}}  # {comment}".rstrip() if comment
                             else statement)
            if site is not None:
                self.origin[len(lines)] = site
        if self.train:
            lines.append("")
            lines.append("train:")
            width = min(max(len(s) for s, _, _ in self.train), 36)
            for statement, comment, site in self.train:
                lines.append(f"    {statement:<{width}}  # {comment}")
                if site is not None:
                    self.origin[len(lines)] = site
        # body line numbers (1-based, before the header) become output line numbers
        offset = len(header)
        for m in self.layer_maps:
            m.cnnc_lines = [i + offset for i in m.cnnc_lines]
        return "\n".join(lines) + "\n"
