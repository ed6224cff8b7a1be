"""The NumPy backend's Session: runs the checked graph forward and backward with the kernels.

Forward walks the layers in topological order, keeping each kernel's cache; backward walks them
in reverse, summing the gradients of tensors read by several layers (a residual's skip).
A layer's fused activation (conv 32 3x3 relu) runs here, after the layer's kernel, with the
activation's own kernel; the one the loss absorbs (a final softmax or sigmoid) is left out.
"""

from __future__ import annotations

import numpy as np

from ...ops import find_activation
from .. import kernels, missing_kernel
from ..base import Session, check_weights, images_for, plan_loss
from ..init import initial_weights
from . import losses
from .lowering import Context, standalone_activation
from .optim import make_optimizer

_PASS = object()  # the cache of a layer left out (a final activation the loss applies)


class NumpySession(Session):
    backend = "numpy"

    def __init__(self, model, *, seed: int = 0, loss: str = "auto", dtype=np.float32):
        self.model = model
        self.graph = model.graph
        self.dtype = np.dtype(dtype)
        self.layers = self.graph.layers()
        self.steps = {layer.name: self._step(layer, kernels("numpy")) for layer in self.layers}
        self.plan = plan_loss(model, loss)
        self.weights = initial_weights(self.graph, seed, self.dtype)
        self.param_names = [f"{l.name}.{p}" for l in self.layers for p in l.params]
        self.seed = seed
        self.rng = np.random.default_rng([seed, 1])  # dropout masks
        self.optimizer = None
        # consumers' positions: first-layer conv/dense need no input gradient
        self._first = {l.name for l in self.layers if l.inputs == [self.graph.input]}

    @staticmethod
    def _step(layer, table):
        """(forward, backward, fused activation: (forward, backward, params) or None)."""
        for op in filter(None, (layer.op, layer.fused_activation)):
            if op not in table:
                raise missing_kernel("numpy", op)
        fwd, bwd = (standalone_activation(table[layer.op]) if find_activation(layer.op)
                    else table[layer.op])
        act = layer.fused_activation
        fused = (*table[act], layer.settled["activation_params"]) if act else None
        return fwd, bwd, fused

    # -- weights -------------------------------------------------------------------------------
    def _layer_params(self, layer) -> dict:
        w = self.weights
        return {k: w[f"{layer.name}.{k}"] for k in (*layer.params, *layer.buffers)}

    def get_weights(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=np.float32).copy() for k, v in self.weights.items()}

    def set_weights(self, tensors, source: str = "weights") -> None:
        expected = {k: v.shape for k, v in self.weights.items()}
        check_weights(expected, tensors, source)
        for k in expected:
            self.weights[k][...] = np.asarray(tensors[k], dtype=self.dtype)

    # -- forward and backward ------------------------------------------------------------------
    def forward(self, x: np.ndarray, *, training: bool, fused: bool = False, keep: bool = False,
                trace: dict | None = None):
        """Outputs for a batch (x in the backend layout). With keep, also the caches.
        fused: leave out the output layer's activation, which the loss applies. `trace`, a
        dict, receives every layer's output by name (cnnc verify)."""
        ctx = Context(training=training, rng=self.rng)
        absorbed = self.graph.output if fused else None
        values: dict[str, np.ndarray] = {}
        caches = {}
        for layer in self.layers:
            inputs = [x] if layer.op == "input" else [values[n] for n in layer.inputs]
            fwd, _, act = self.steps[layer.name]
            act_cache = None
            if layer.name == absorbed and act is None:
                y, cache = inputs[0], _PASS  # a standalone final activation: the loss's
            else:
                y, cache = fwd(layer, self._layer_params(layer), inputs, ctx)
                if act is not None and layer.name != absorbed:
                    act_f, _, params = act
                    y, act_cache = act_f(y, **params)
            values[layer.name] = y
            if trace is not None:
                trace[layer.name] = y
            if keep:
                caches[layer.name] = (cache, act_cache)
        out = values[self.graph.output]
        return (out, caches, ctx) if keep else out

    def backward(self, dout: np.ndarray, caches, ctx) -> dict[str, np.ndarray]:
        """Parameter gradients from the gradient of the output; returns {"layer.param": grad}."""
        grads: dict[str, np.ndarray] = {}
        dvals: dict[str, np.ndarray] = {self.graph.output: dout}
        for layer in reversed(self.layers):
            if layer.op == "input":
                self.input_grad = dvals.get(layer.name)
                continue
            dy = dvals.pop(layer.name, None)
            if dy is None:
                continue
            _, bwd, act = self.steps[layer.name]
            cache, act_cache = caches[layer.name]
            if cache is _PASS:
                dins, dparams = [dy], {}
            else:
                if act_cache is not None:
                    _, act_b, params = act
                    dy = act_b(dy, act_cache, **params)
                ctx.need_dx = layer.name not in self._first or self._want_input_grad
                dins, dparams = bwd(layer, self._layer_params(layer), cache, dy, ctx)
            for k, g in dparams.items():
                grads[f"{layer.name}.{k}"] = g
            for src, d in zip(layer.inputs, dins):
                if d is None:
                    continue
                if src in dvals:
                    dvals[src] = dvals[src] + d
                else:
                    dvals[src] = d
        return grads

    _want_input_grad = False

    def loss_and_grad(self, out: np.ndarray, y: np.ndarray, x: np.ndarray | None = None):
        """The loss and its gradient for outputs `out` of inputs `x` with labels `y`."""
        if self.plan.reconstruct:  # an autoencoder: the input is the target
            return losses.mean_squared_error(out, x)
        kind = self.plan.kind
        if kind == "cross_entropy":
            if self.plan.fused:
                return losses.softmax_cross_entropy(out, y)
            return losses.softmax_cross_entropy(out, y)  # raw outputs read as logits, as torch
        if kind == "bce":
            return losses.sigmoid_binary_cross_entropy(out, y.astype(out.dtype).reshape(out.shape))
        # mse: against one-hot targets for several outputs, the label itself for one
        if self.plan.classes > 1:
            target = np.zeros_like(out)
            target[np.arange(len(y)), y] = 1
        else:
            target = y.astype(out.dtype).reshape(out.shape)
        return losses.mean_squared_error(out, target)

    def gradients(self, x: np.ndarray, y: np.ndarray, *, training: bool = True,
                  input_grad: bool = False):
        """(loss, {param: grad}, outputs) for one batch; for gradient checks and training."""
        out, caches, ctx = self.forward(x, training=training, fused=self.plan.fused, keep=True)
        loss, dout = self.loss_and_grad(out, y, x)
        self._want_input_grad = input_grad
        try:
            grads = self.backward(dout, caches, ctx)
        finally:
            self._want_input_grad = False
        return loss, grads, out

    # -- the Session interface -----------------------------------------------------------------
    def put(self, x: np.ndarray, y: np.ndarray):
        x = images_for(self.model, x)
        if x.ndim == 4:
            x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW, once for the whole split
        return np.ascontiguousarray(x, dtype=self.dtype), np.asarray(y, dtype=np.int64)

    def configure_optimizer(self, config) -> None:
        kw = {"weight_decay": config.weight_decay}
        if config.optimizer == "sgd":
            kw.update(momentum=config.momentum, nesterov=config.nesterov)
        self.optimizer = make_optimizer(config.optimizer, config.lr, **kw)

    def set_lr(self, lr: float) -> None:
        self.optimizer.lr = lr

    def begin_epoch(self, epoch: int) -> None:
        self.rng = np.random.default_rng([self.seed % 2**64, 1, int(epoch)])

    def augmented(self, data, idx, augment):
        """The rows `idx` of a split with a training augmentation plan (cnnc/train/augment.py)
        applied: what train_step trains on."""
        from ...train.augment import apply_numpy

        x, y = data
        return apply_numpy(x[idx], augment), y[idx]

    def train_step(self, data, idx, augment=None):
        x, y = data
        xb, yb = (x[idx], y[idx]) if augment is None else self.augmented(data, idx, augment)
        loss, grads, out = self.gradients(xb, yb)
        params = {k: self.weights[k] for k in grads}
        self.optimizer.step(params, grads)
        return loss, self._correct(out, yb)

    def _correct(self, out, y) -> int:
        if not self.plan.has_accuracy:
            return 0
        return int((self.plan.predictions(out) == y).sum())

    def evaluate(self, data, batch_size: int = 256):
        x, y = data
        total, correct = 0.0, 0
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            out = self.forward(xb, training=False, fused=self.plan.fused)
            loss, _ = self.loss_and_grad(out, yb, xb)
            total += loss * len(xb)
            correct += self._correct(out, yb)
        return total / max(len(x), 1), correct

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        xs, _ = self.put(x, np.zeros(len(x), dtype=np.int64))
        outs = [self.forward(xs[i:i + batch_size], training=False)
                for i in range(0, len(xs), batch_size)]
        return np.concatenate(outs).astype(np.float32)

    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        if self.optimizer is None:
            return {}
        return {k: np.asarray(v) for k, v in self.optimizer.state_dict().items()}

    def set_optimizer_state(self, state) -> None:
        self.optimizer.load_state_dict(state)
