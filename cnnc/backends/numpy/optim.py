"""SGD and Adam with exactly torch.optim's update equations, for numpy parameter dicts.

    opt = make_optimizer("adam", lr=1e-3)
    opt.step(params, grads)         # dict name -> ndarray; params are updated IN PLACE

The state (momentum buffers, Adam moments, step count) is exposed as a flat dict of arrays and
numbers -- ``"exp_avg/conv_1.weight"``, ``"step"``, ``"hparam/lr"`` ... -- so that it can be saved
in a safetensors file next to the weights, with no pickle involved.

Weight decay is L2 regularisation added to the gradient (``grad + weight_decay * param``), as in
torch.optim.SGD and torch.optim.Adam (not AdamW's decoupled decay).
"""

from __future__ import annotations

import math

import numpy as np


class Optimizer:
    """Common bookkeeping: hyper-parameters, per-parameter buffers, (de)serialisation."""

    #: names of the per-parameter buffers this optimizer keeps, e.g. ("exp_avg", "exp_avg_sq")
    buffer_names: tuple[str, ...] = ()
    #: names of the float hyper-parameters, saved as "hparam/<name>"
    hparam_names: tuple[str, ...] = ()

    def __init__(self):
        self.state: dict[str, dict[str, np.ndarray]] = {name: {} for name in self.buffer_names}
        self.step_count = 0

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Update every parameter that has a gradient, in place."""
        self.step_count += 1
        for name, g in grads.items():
            if g is not None:
                self._update(name, params[name], g)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray | float | int]:
        d: dict[str, np.ndarray | float | int] = {"step": self.step_count}
        for h in self.hparam_names:
            d[f"hparam/{h}"] = float(getattr(self, h))
        for buf, per_param in self.state.items():
            for name, arr in per_param.items():
                d[f"{buf}/{name}"] = arr
        return d

    def load_state_dict(self, d: dict) -> None:
        self.step_count = int(np.asarray(d.get("step", 0)))
        self.state = {name: {} for name in self.buffer_names}
        for key, value in d.items():
            prefix, _, rest = key.partition("/")
            if prefix == "hparam" and rest in self.hparam_names:
                setattr(self, rest, float(np.asarray(value)))  # torch also restores hyper-params
            elif prefix in self.state:
                self.state[prefix][rest] = np.array(value, copy=True)


class SGD(Optimizer):
    """torch.optim.SGD:

        g   = grad + weight_decay * p
        buf = g                                  (first step)
        buf = momentum * buf + (1 - dampening) * g   (later steps)
        g   = g + momentum * buf   if nesterov   else   buf
        p  -= lr * g
    """

    buffer_names = ("momentum_buffer",)
    hparam_names = ("lr", "momentum", "dampening", "weight_decay")

    def __init__(self, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__()
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.nesterov, self.weight_decay = nesterov, weight_decay

    def _update(self, name, p, g):
        if self.weight_decay != 0:
            g = g + self.weight_decay * p
        if self.momentum != 0:
            bufs = self.state["momentum_buffer"]
            buf = bufs.get(name)
            if buf is None:
                buf = bufs[name] = g.copy()
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= self.lr * g


class Adam(Optimizer):
    """torch.optim.Adam (t = step number, starting at 1):

        g   = grad + weight_decay * p
        m   = m + (1 - beta1) * (g - m)           (torch's lerp form of beta1 m + (1-beta1) g)
        v   = beta2 * v + (1 - beta2) * g * g
        vmax = max(vmax, v)  and use vmax below   (amsgrad only)
        p  -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
    """

    buffer_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    hparam_names = ("lr", "beta1", "beta2", "eps", "weight_decay")

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        super().__init__()
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.weight_decay, self.amsgrad = weight_decay, amsgrad

    def _update(self, name, p, g):
        if self.weight_decay != 0:
            g = g + self.weight_decay * p
        m = self.state["exp_avg"].setdefault(name, np.zeros_like(p))
        v = self.state["exp_avg_sq"].setdefault(name, np.zeros_like(p))
        tmp = np.empty_like(p)  # one temporary, reused: every line below is a single pass
        np.subtract(g, m, out=tmp)
        tmp *= 1 - self.beta1
        m += tmp  # m + (1 - beta1) * (g - m)
        v *= self.beta2
        np.multiply(g, g, out=tmp)
        tmp *= 1 - self.beta2
        v += tmp  # beta2 * v + (1 - beta2) * g * g
        if self.amsgrad:
            vmax = self.state["max_exp_avg_sq"].setdefault(name, np.zeros_like(p))
            np.maximum(vmax, v, out=vmax)
            v = vmax
        t = self.step_count
        step_size = self.lr / (1 - self.beta1**t)
        np.sqrt(v, out=tmp)
        tmp /= math.sqrt(1 - self.beta2**t)
        tmp += self.eps  # denominator
        np.divide(m, tmp, out=tmp)
        tmp *= step_size
        p -= tmp


def make_optimizer(name: str, lr: float, **kw) -> Optimizer:
    """make_optimizer("sgd" | "adam", lr, **options of that optimizer)."""
    key = name.lower()
    if key == "sgd":
        return SGD(lr, **kw)
    if key == "adam":
        return Adam(lr, **kw)
    raise ValueError(f"unknown optimizer {name!r}; expected 'sgd' or 'adam'")
