"""What every backend provides, and what they share: the loss plan and weight validation.

A backend is an object with `name` and `build(model, **options) -> Session`. The training engine
(cnnc/train/engine.py) drives any Session the same way:

    session = backend.build(model, seed=0)
    session.configure_optimizer(config)
    data = session.put(train_x, train_y)        # once: NHWC float32 -> the backend's layout/device
    loss, correct = session.train_step(data, idx)  # one mini-batch: forward, backward, step
    loss, correct = session.evaluate(data, batch_size)
    session.get_weights() / set_weights(...)    # NumPy arrays keyed "layer.param"

Backends lay activations out as they like inside (both built-in ones use N x C x H x W), but
weights cross the boundary in PyTorch's layouts, so a checkpoint from one loads into the other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from ..diagnostics import CnncError
from ..ops import find_activation


@dataclass(frozen=True)
class LossPlan:
    """How the model's output meets the labels.

    kind: cross_entropy | bce | mse. fused: the model's final softmax (for cross_entropy) or
    sigmoid (for bce) is folded into the loss, which then reads the pre-activation logits: the
    numerically stable way, and what PyTorch's CrossEntropyLoss/BCEWithLogitsLoss expect.
    """

    kind: str
    fused: bool
    classes: int  # the model's output units
    # mse against the input itself (an autoencoder): the output has the input's shape, the
    # labels are not used, and there is no accuracy
    reconstruct: bool = False

    @property
    def has_accuracy(self) -> bool:
        return not self.reconstruct

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        """Class indices from outputs (logits when fused)."""
        if self.classes == 1:
            threshold = 0.0 if (self.fused or self.kind == "bce") else 0.5
            return (outputs.reshape(-1) > threshold).astype(np.int64)
        return outputs.argmax(axis=1)


def plan_loss(model, name: str = "auto") -> LossPlan:
    out_shape = tuple(model.output_shape)
    if len(out_shape) != 1:
        shape, inp = "x".join(map(str, out_shape)), "x".join(map(str, model.input_shape))
        if name == "mse" and out_shape == tuple(model.input_shape):
            return LossPlan("mse", False, 0, reconstruct=True)
        if name == "mse":
            raise CnncError(f"the model's output is an image ({shape}) but not of the input's "
                            f"shape ({inp}): mse on an image output reconstructs the input",
                            code="backend", hint=f"end the model with an output of {inp}")
        hint = "end the model with `flatten` or `pool global avg` and `dense K`"
        if out_shape == tuple(model.input_shape):
            hint = ("to train it to reconstruct its input (an autoencoder), use `--loss mse` "
                    "(or `loss mse` in the train: section); to classify, " + hint[0].lower()
                    + hint[1:])
        raise CnncError(f"the model's output is an image ({shape}); training needs one output "
                        f"per class, or --loss mse to reconstruct the input", code="backend",
                        hint=hint)
    classes = out_shape[0]
    layer = model.graph[model.graph.output]
    last = layer.activation
    if name == "auto":
        name = "bce" if classes == 1 else "cross_entropy"
    if name == "cross_entropy" and classes == 1:
        raise CnncError("cross-entropy needs at least two outputs, but the model has one",
                        code="backend", hint="use `loss bce` for a single sigmoid output")
    if name == "bce" and classes != 1:
        raise CnncError(f"binary cross-entropy (bce) scores one output, a yes/no, but the model "
                        f"has {classes:,} outputs, one per class", code="backend",
                        span=layer.span, hint="use `loss cross_entropy` (or `--loss auto`) for "
                                              "several classes, or end with `dense 1 sigmoid`")
    if name == "bce" and last == "softmax":
        raise CnncError("the model ends in softmax on its one output, which is always 1: "
                        "nothing can be learnt", code="backend",
                        span=layer.span, hint="end the model with `dense 1 sigmoid` (or no "
                                              "activation)")
    act = find_activation(last)
    fused = act is not None and act.absorbed_by == name
    return LossPlan(name, fused, classes)


def loss_warnings(model, name: str = "auto") -> list:
    """Warnings for a loss that runs but does not suit the model's last activation: cross-entropy
    reads logits (or a softmax's probabilities), and a sigmoid or tanh squashes them first."""
    from ..diagnostics import WARNING, Diagnostic

    if len(model.output_shape) != 1 or model.output_shape[0] < 2:
        return []
    layer = model.graph[model.graph.output]
    if (name in ("auto", "cross_entropy")) and layer.activation in ("sigmoid", "tanh"):
        classes = model.output_shape[0]
        return [Diagnostic(WARNING, "backend", f"the model ends in {layer.activation} over "
                           f"{classes:,} outputs, but cross-entropy reads the outputs as logits "
                           "(or a softmax's probabilities): training will be slow or stall",
                           layer.span, [], f"end the model with `dense {classes} softmax` (or "
                                           "no activation), or use `--loss mse`")]
    return []


def check_weights(expected: dict[str, tuple], given: dict[str, np.ndarray], source: str) -> None:
    """Refuse weights that do not fit the model, saying exactly which and how."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = [(k, tuple(given[k].shape), tuple(expected[k])) for k in expected
             if k in given and tuple(given[k].shape) != tuple(expected[k])]
    # Weights are real numbers: integer or boolean tensors are some other file's, and would
    # load as nonsense without a word.
    kinds = [(k, np.asarray(given[k]).dtype) for k in expected if k in given
             and np.asarray(given[k]).dtype.kind not in "f"]
    nonfinite = [] if (wrong or kinds) else [
        k for k in expected if k in given and not np.isfinite(given[k]).all()]
    if not (missing or unexpected or wrong or kinds or nonfinite):
        return
    notes = []
    if missing:
        notes.append("missing: " + ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else ""))
    if unexpected:
        notes.append("not in the model: " + ", ".join(unexpected[:8])
                     + (" ..." if len(unexpected) > 8 else ""))
    for k, got, want in wrong[:8]:
        notes.append(f"{k}: the file has shape {got}, the model needs {want}")
    for k, dtype in kinds[:8]:
        notes.append(f"{k}: the file has {dtype} values; weights are floating-point numbers")
    for k in nonfinite[:8]:
        notes.append(f"{k}: the file holds NaN or infinite values (weights of a diverged run?)")
    raise CnncError(f"the weights in {source} do not fit this model", notes=notes,
                    code="weights", hint="were they trained from another model file?")


class Session(ABC):
    """A model lowered to one backend, with its weights, optimizer state and data layout."""

    backend: str = "?"

    @abstractmethod
    def put(self, x: np.ndarray, y: np.ndarray):
        """Hold a data split (x NHWC float32 or (N, F), y int64) where this backend computes."""

    @abstractmethod
    def configure_optimizer(self, config) -> None:
        """Make the optimizer named by a TrainConfig (optimizer, lr, momentum, ...)."""

    @abstractmethod
    def train_step(self, data, idx: np.ndarray):
        """One mini-batch of the rows `idx`: forward, loss, backward, step. Returns (mean loss,
        correct count), as anything float() and int() accept (a device scalar is fine)."""

    @abstractmethod
    def evaluate(self, data, batch_size: int = 256) -> tuple[float, int]:
        """(mean loss, correct count) over a whole split, in eval mode."""

    @abstractmethod
    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The model's outputs (after its final activation: probabilities after a softmax) for
        images, as a float32 NumPy array of shape (N, *model.output_shape).

        `x` is (N, H, W, C) float32 (height x width x channels, as Keras), or (N, F) for a flat
        input, with pixels scaled as cnnc's data sets scale them: 0..255 bytes divided by 255,
        into [0, 1] (`images.astype(np.float32) / 255`). Runs in inference mode: dropout off,
        batch norm on its running statistics; `batch_size` images at a time."""

    @abstractmethod
    def get_weights(self) -> dict[str, np.ndarray]:
        """Parameters and buffers as float32 NumPy arrays keyed "layer.param" (`conv_1.weight`,
        `batchnorm_1.running_mean`), in PyTorch's layouts (conv (out, in, kh, kw), dense
        (out, in)): the keys and shapes of the .safetensors files `cnnc train` writes."""

    @abstractmethod
    def set_weights(self, tensors: dict[str, np.ndarray], source: str = "weights") -> None:
        """Load weights keyed and shaped as `get_weights` gives them (for example
        `safetensors.numpy.load_file("best.safetensors")`). Every key must be there with its
        shape: missing, unexpected or misshapen arrays are refused with a CnncError
        (code "weights") that lists them, naming `source`, and nothing is loaded."""

    @abstractmethod
    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        """The optimizer's state as flat arrays (for resumable checkpoints)."""

    @abstractmethod
    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None: ...

    def set_lr(self, lr: float) -> None:  # pragma: no cover - optional
        raise NotImplementedError

    # -- optional hooks the training engine uses when a backend has them ---------------------
    # rank: int = 0, world_size: int = 1     this process's place in a distributed run
    # all_reduce_sum(values: list[float]) -> list[float]   sums across ranks (default: identity)

    def begin_epoch(self, epoch: int) -> None:
        """Called before each epoch (1-based). A backend whose training draws random numbers
        (dropout) reseeds them here from (seed, epoch), so a resumed run repeats them exactly."""
        return None


def images_for(model, x: np.ndarray) -> np.ndarray:
    """Data as the model's input wants it: NHWC images, or flattened (H*W*C) for a flat input."""
    if len(model.input_shape) == 1 and x.ndim > 2:
        return x.reshape(len(x), -1)
    return x
