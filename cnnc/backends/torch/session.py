"""The PyTorch backend's Session: the lowered module, torch.optim, data on the device.

The training engine drives it as it drives every backend (see ../base.py). What is particular
to PyTorch, and decided here:

- Device: `auto` takes CUDA when it is there. A split is moved to the device once (`put`), and
  each mini-batch is gathered there by index: no DataLoader, no per-step host-to-device copy.
- Numbers: float32 or float64 weights; on CUDA, bfloat16 autocast for float32 (`amp`).
- Memory layout: images as N x C x H x W ("contiguous") or channels_last (N x H x W x C in
  memory). Which is faster depends on the machine and the model, so with `channels_last=None`
  the session times a few steps of both on the real model and batch at the first training step
  and keeps the faster; `session.layout` says which.
- The loss plan (../base.py) as the NumPy backend applies it: a final softmax or sigmoid is
  folded into F.cross_entropy / F.binary_cross_entropy_with_logits on the logits.
- train_step returns device tensors: nothing waits for the device until the engine reads them.
- Several processes (torchrun): torch.distributed (gloo on CPU, NCCL on CUDA) and
  DistributedDataParallel; `rank`, `world_size` and `all_reduce_sum` for the engine.
"""

from __future__ import annotations

import atexit
import copy
import functools
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from ...diagnostics import CnncError
from ..base import Session, check_weights, images_for, plan_loss
from ..init import initial_weights
from .lowering import lower
from .probe import bf16_speedup

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _torch_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in _DTYPES:
        raise CnncError(f"backend 'torch' computes in float32 or float64, not {name}",
                        code="backend")
    return _DTYPES[name]


def resolve_device(device: str | None, local_rank: int | None = None) -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N` as a torch.device; CUDA that is not there is an error."""
    device = (device or "auto").lower()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            why = ("this PyTorch was built without CUDA" if torch.version.cuda is None
                   else "no CUDA device is visible")
            raise CnncError(f"--device {device} was asked for, but {why}", code="device",
                            hint="use --device cpu (or auto, which takes CUDA when available)")
        if device == "cuda":  # an explicit index: set_device and DDP need one
            device = f"cuda:{local_rank if local_rank is not None else torch.cuda.current_device()}"
        dev = torch.device(device)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CnncError(f"--device {device}: there are only {torch.cuda.device_count()} "
                            "CUDA devices", code="device")
        return dev
    if device != "cpu":
        raise CnncError(f"unknown device `{device}`", code="device",
                        hint="the devices are auto, cpu, cuda and cuda:N")
    return torch.device("cpu")


def _distributed_env() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when started by torchrun with several processes."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return None
    if world <= 1 or "RANK" not in os.environ:
        return None
    rank = int(os.environ["RANK"])
    return rank, world, int(os.environ.get("LOCAL_RANK", rank))


class TorchData(tuple):
    """A split held on the device: (x, y). x is N x C x H x W (or N x F), y int64."""

    def __new__(cls, x, y):
        return super().__new__(cls, (x, y))

    @property
    def x(self):
        return self[0]

    @property
    def y(self):
        return self[1]


class TorchSession(Session):
    backend = "torch"

    def __init__(self, model, *, seed: int = 0, loss: str = "auto", dtype="float32",
                 device: str = "auto", channels_last: bool | None = None,
                 compile: bool = False, amp: bool | None = None,
                 precision: str | None = None):
        self.model = model
        self.graph = model.graph
        self.plan = plan_loss(model, loss)
        self.dtype = _torch_dtype(dtype)
        self.seed = seed

        # -- processes and device
        dist_env = _distributed_env()
        self.rank, self.world_size = (dist_env[0], dist_env[1]) if dist_env else (0, 1)
        self.device = resolve_device(device, dist_env[2] if dist_env else None)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest
        if dist_env:
            self._init_distributed()
        self.precision, self.precision_note = _resolve_precision(
            precision, amp, self.device, self.dtype)
        self.amp = self.precision in ("bf16", "fp16")
        self.amp_dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        # fp16 needs its gradients scaled (their small values underflow); bf16 does not
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" \
            else None

        # -- the module, with cnnc's initial weights (identical on every rank and backend)
        torch.manual_seed(seed)  # dropout masks
        self.module = lower(self.graph, model.name, device=self.device).to(dtype=self.dtype)
        self._param_names = {id(p): n for n, p in self.module.named_parameters()}
        self._expected = {k: tuple(v.shape) for k, v in self.module.state_dict().items()}
        self.set_weights(initial_weights(self.graph, seed), "cnnc's initial weights")

        self.optimizer = None
        self._has_images = len(model.input_shape) == 3
        self._has_conv = any(l.op in ("conv", "dwconv") for l in self.graph.layers())
        self.layout = None  # "contiguous" | "channels_last", fixed at the first training step
        if channels_last is not None or not (self._has_images and self._has_conv):
            self._set_layout("channels_last" if channels_last else "contiguous")
        self.layout_timings: dict[str, float] = {}  # seconds per step, when measured
        self.compile = bool(compile)
        self.config = None
        self._step_count = 0
        self._train_net = None  # module, DDP-wrapped and/or compiled: made at the first step
        self._eval_net = self.module
        self.input_grad = None

    # -- distributed ----------------------------------------------------------------------------
    def _init_distributed(self) -> None:
        import torch.distributed as dist

        if not dist.is_available():
            raise CnncError("this PyTorch has no torch.distributed", code="device")
        if not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            kw = {"device_id": self.device} if self.device.type == "cuda" else {}
            dist.init_process_group(backend=backend, **kw)
            atexit.register(_destroy_process_group)

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Every rank's values summed, element by element (the values themselves alone)."""
        if self.world_size == 1:
            return [float(v) for v in values]
        import torch.distributed as dist

        dev = self.device if self.device.type == "cuda" else torch.device("cpu")
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=dev)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def _broadcast_choice(self, index: int) -> int:
        """Rank 0's choice, for every rank (all must run one layout)."""
        if self.world_size == 1:
            return index
        import torch.distributed as dist

        dev = self.device if self.device.type == "cuda" else torch.device("cpu")
        t = torch.tensor([index], dtype=torch.int64, device=dev)
        dist.broadcast(t, src=0)
        return int(t.item())

    # -- weights --------------------------------------------------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        state = self.module.state_dict()
        return {k: np.ascontiguousarray(state[k].detach().to("cpu", torch.float32).numpy())
                for k in self._expected}

    def set_weights(self, tensors, source: str = "weights") -> None:
        check_weights(self._expected, tensors, source)
        state = self.module.state_dict()
        with torch.no_grad():
            for k in self._expected:
                value = torch.as_tensor(np.asarray(tensors[k]))
                state[k].copy_(value.to(state[k].dtype))  # keeps the memory format

    # -- data -----------------------------------------------------------------------------------
    def put(self, x: np.ndarray, y: np.ndarray) -> TorchData:
        x = images_for(self.model, np.asarray(x))
        xt = torch.from_numpy(np.ascontiguousarray(x))
        if xt.dim() == 4:
            xt = xt.permute(0, 3, 1, 2)  # NHWC -> NCHW, once for the whole split
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        dev = self.device
        if dev.type == "cuda":
            free, _ = torch.cuda.mem_get_info(dev)
            if xt.numel() * self.dtype.itemsize > free // 3:  # too big: keep it in host memory
                dev = torch.device("cpu")
        xt = xt.to(dev, self.dtype).contiguous()
        return TorchData(xt, yt.to(dev))

    def _batch(self, data: TorchData, idx, augment=None) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = data
        if isinstance(idx, slice):
            xb, yb = x[idx], y[idx]
        else:
            i = torch.as_tensor(np.asarray(idx), dtype=torch.long)
            if x.device.type == "cuda":
                i = i.to(x.device, non_blocking=True)
            xb, yb = x.index_select(0, i), y.index_select(0, i)
        if xb.device != self.device:
            xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
        if augment is not None and augment.flip_only:  # cnnc/train/augment.py: mirror only
            flip = torch.from_numpy(augment.flip).to(self.device, non_blocking=True)
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
        elif augment is not None:  # the engine's plan (cnnc/train/augment.py): gather, blank
            n, c = xb.shape[:2]
            index = torch.from_numpy(augment.index).to(self.device, non_blocking=True)
            keep = torch.from_numpy(augment.keep).to(self.device, non_blocking=True)
            moved = xb.reshape(n, c, -1).gather(2, index[:, None, :].expand(n, c, -1))
            xb = torch.where(keep[:, None, :], moved, moved.new_zeros(())).reshape(xb.shape)
        if xb.dim() == 4 and self.layout == "channels_last":
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb, yb

    # -- loss -----------------------------------------------------------------------------------
    def _loss(self, out, y, reduction: str = "mean", x=None):
        out = out.to(self.dtype)  # bfloat16 under autocast -> the loss in full precision
        if self.plan.reconstruct:  # an autoencoder: the input is the target
            loss = F.mse_loss(out, x.detach().to(out.dtype), reduction=reduction)
            return loss / out[0].numel() if reduction == "sum" else loss
        kind = self.plan.kind
        if kind == "cross_entropy":  # raw outputs read as logits when not fused, as torch does
            return F.cross_entropy(out, y, reduction=reduction)
        if kind == "bce":
            return F.binary_cross_entropy_with_logits(out, y.to(out.dtype).reshape(out.shape),
                                                      reduction=reduction)
        if self.plan.classes > 1:  # mse against one-hot targets, or the label itself
            target = F.one_hot(y, self.plan.classes).to(out.dtype)
        else:
            target = y.to(out.dtype).reshape(out.shape)
        loss = F.mse_loss(out, target, reduction=reduction)
        return loss / out[0].numel() if reduction == "sum" else loss  # per image, like the mean

    def _correct(self, out, y):
        """How many predictions are right (a device scalar); 0 without classes to predict."""
        if not self.plan.has_accuracy:
            return torch.zeros((), dtype=torch.int64, device=out.device)
        return (self._predictions(out) == y).sum()

    def _predictions(self, out):
        if self.plan.classes == 1:
            threshold = 0.0 if (self.plan.fused or self.plan.kind == "bce") else 0.5
            return (out.reshape(-1) > threshold).long()
        return out.argmax(dim=1)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    # -- optimizer ------------------------------------------------------------------------------
    def configure_optimizer(self, config) -> None:
        self.config = config
        params = list(self.module.parameters())
        if not params:
            raise CnncError("the model has no trainable parameters: there is nothing to train",
                            code="backend", hint="add a layer with weights (conv, dense, bn)")
        if config.optimizer == "sgd":
            make = functools.partial(torch.optim.SGD, params, lr=config.lr,
                                     momentum=config.momentum, nesterov=config.nesterov,
                                     weight_decay=config.weight_decay)
        elif config.optimizer == "adam":
            make = functools.partial(torch.optim.Adam, params, lr=config.lr,
                                     weight_decay=config.weight_decay)
        else:
            raise CnncError(f"unknown optimizer `{config.optimizer}`", code="backend",
                            hint="the optimizers are sgd and adam")
        # The fused kernel (one pass over each parameter's state) where this PyTorch has it for
        # the device: CUDA, and the CPU since torch 2.4. On a CPU it steps examples/
        # fashion_fast.cnn's Adam in 0.31 ms against foreach's 0.79 (torch 2.13, 2 threads).
        # Older versions refuse it at construction; they get foreach, one kernel per operation
        # over all parameters, which is what a hand-written loop uses.
        try:
            self.optimizer = make(fused=True)
        except RuntimeError:
            self.optimizer = make(foreach=True)
        self._step_count = 0

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    # The optimizer state crosses the boundary in the NumPy backend's scheme (optim.py):
    # "step", "hparam/<name>", "<buffer>/<param>" -- so a checkpoint resumes on either backend.
    _HPARAMS = {"sgd": ("lr", "momentum", "dampening", "weight_decay"),
                "adam": ("lr", "beta1", "beta2", "eps", "weight_decay")}

    def _kind(self) -> str:
        return "adam" if isinstance(self.optimizer, torch.optim.Adam) else "sgd"

    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        if self.optimizer is None:
            return {}
        kind = self._kind()
        group = self.optimizer.param_groups[0]
        step = self._step_count
        out: dict[str, np.ndarray] = {}
        for p in group["params"]:
            state = self.optimizer.state.get(p)
            if not state:
                continue
            name = self._param_names[id(p)]
            for key, value in state.items():
                if key == "step":
                    step = int(float(value))
                elif torch.is_tensor(value) and value.shape == p.shape:
                    out[f"{key}/{name}"] = np.ascontiguousarray(
                        value.detach().to("cpu", torch.float32).numpy())
        hp = {"lr": group["lr"], "momentum": group.get("momentum", 0.0),
              "dampening": group.get("dampening", 0.0), "weight_decay": group["weight_decay"],
              "eps": group.get("eps", 0.0)}
        if kind == "adam":
            hp["beta1"], hp["beta2"] = group["betas"]
        head = {"step": np.asarray(step, dtype=np.int64)}
        head.update({f"hparam/{h}": np.asarray(float(hp[h])) for h in self._HPARAMS[kind]})
        return {**head, **out}

    def set_optimizer_state(self, state) -> None:
        if self.optimizer is None:
            raise CnncError("configure the optimizer before loading its state", code="backend")
        kind = self._kind()
        step = int(np.asarray(state.get("step", 0)))
        self._step_count = step
        group = self.optimizer.param_groups[0]
        hp = {k.split("/", 1)[1]: float(np.asarray(v)) for k, v in state.items()
              if k.startswith("hparam/")}
        for h in self._HPARAMS[kind]:
            if h in hp and h not in ("beta1", "beta2"):
                group[h] = hp[h]
        if kind == "adam" and "beta1" in hp and "beta2" in hp:
            group["betas"] = (hp["beta1"], hp["beta2"])
        by_name = dict(self.module.named_parameters())
        buffers = {"sgd": ("momentum_buffer",),
                   "adam": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")}[kind]
        self.optimizer.state.clear()
        on_device = group.get("fused") or group.get("capturable")
        for name, p in by_name.items():
            entry = {}
            for buf in buffers:
                value = state.get(f"{buf}/{name}")
                if value is not None:
                    t = torch.empty_like(p)  # the parameter's dtype, device and memory format
                    t.copy_(torch.as_tensor(np.asarray(value)).to(p.dtype))
                    entry[buf] = t
            if not entry:
                continue
            if kind == "adam":
                if "exp_avg" not in entry or "exp_avg_sq" not in entry:
                    continue
                if group.get("amsgrad") and "max_exp_avg_sq" not in entry:
                    entry["max_exp_avg_sq"] = torch.zeros_like(p)
                entry["step"] = torch.tensor(float(step), dtype=torch.float32,
                                             device=p.device if on_device else "cpu")
            self.optimizer.state[p] = entry

    # -- layout, wrapping, compiling: at the first training step ---------------------------------
    def _set_layout(self, layout: str) -> None:
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        self.module.to(memory_format=fmt)
        if self.optimizer is not None:  # state loaded before: follow the parameters' format
            for p, st in self.optimizer.state.items():
                for k, v in st.items():
                    if torch.is_tensor(v) and v.shape == p.shape and v.dim() == 4:
                        st[k] = v.contiguous(memory_format=fmt)
        self.layout = layout

    def _time_layouts(self, xb, yb) -> str:
        """Time forward + backward of both layouts on copies of the model; the faster wins."""
        layouts = ("contiguous", "channels_last")
        nets = {}
        for layout in layouts:
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            nets[layout] = (copy.deepcopy(self.module).to(memory_format=fmt).train(),
                            xb.contiguous(memory_format=fmt))

        def step(layout) -> float:
            net, x = nets[layout]
            self._sync()
            t0 = time.perf_counter()
            with self._autocast():
                out = net(x, logits=self.plan.fused)
            self._loss(out, yb, x=x).backward()
            self._sync()
            for p in net.parameters():
                p.grad = None
            return time.perf_counter() - t0

        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # dropout here must not shift training's
            # warm-up: kernels chosen, caches and allocators filled, for both layouts
            first = min(step(layout) for layout in layouts)
            if first < 1.0:
                first = min(step(layout) for layout in layouts)
            # then alternate for about half a second (2 to 10 rounds); keep each layout's best
            # time: other processes on the machine only ever make a step slower
            rounds = int(min(10, max(2 if first > 1.0 else 3, round(0.5 / max(first, 1e-6)))))
            times = {layout: [] for layout in layouts}
            for _ in range(rounds):
                for layout in layouts:
                    times[layout].append(step(layout))
        self.layout_timings = {k: float(min(v)) for k, v in times.items()}
        # channels_last only for a clear win: a near tie keeps the default, stably
        fast = self.layout_timings["channels_last"] < 0.95 * self.layout_timings["contiguous"]
        return "channels_last" if fast else "contiguous"

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _prepare_training(self, data, idx) -> None:
        if self.optimizer is None:
            raise CnncError("configure the optimizer before training", code="backend")
        if self.layout is None:
            saved, self.layout = self.layout, "contiguous"
            xb, yb = self._batch(data, idx)
            self.layout = saved
            choice = self._time_layouts(xb, yb)
            index = self._broadcast_choice(("contiguous", "channels_last").index(choice))
            self._set_layout(("contiguous", "channels_last")[index])
        net = self.module
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            net = DDP(net, device_ids=ids)
        if self.compile:
            net = _compile(net)
            self._eval_net = _compile(self.module)
        self._train_net = net

    # -- the Session interface ------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        """Dropout's generator reseeded from (seed, epoch, rank): a resumed run repeats the
        masks of an uninterrupted one, and ranks draw different masks for their images."""
        mixed = np.random.SeedSequence([int(self.seed) % 2**64, 1, int(epoch), self.rank])
        torch.manual_seed(int(mixed.generate_state(1, np.uint64)[0] >> 1))

    def augmented(self, data, idx, augment):
        """The rows `idx` of a split with a training augmentation plan applied, as NumPy
        N x C x H x W: what train_step trains on (for checks against the NumPy backend)."""
        xb, yb = self._batch(data, idx, augment)
        return xb.float().cpu().numpy(), yb.cpu().numpy()

    def train_step(self, data, idx, augment=None):
        if self._train_net is None:
            self._prepare_training(data, idx)
        xb, yb = self._batch(data, idx, augment)
        self.module.train()
        with self._autocast():
            out = self._guarded(self._train_net, xb)
        loss = self._loss(out, yb, x=xb)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self._step_count += 1
        with torch.no_grad():
            correct = self._correct(out.detach(), yb)
        return loss.detach(), correct

    def _guarded(self, net, x, logits=None):
        """net(x); with torch.compile, a failure to compile becomes a CnncError."""
        logits = self.plan.fused if logits is None else logits
        if not self.compile:
            return net(x, logits=logits)
        try:
            return net(x, logits=logits)
        except Exception as e:  # inductor needs a C++ compiler, Triton, a supported Python...
            raise CnncError(f"torch.compile failed: {type(e).__name__}: "
                            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}",
                            code="backend", hint="train without --compile") from e

    @torch.no_grad()
    def evaluate(self, data, batch_size: int = 256):
        self.module.eval()
        n = len(data[0])
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for start in range(0, n, batch_size):
            xb, yb = self._batch(data, slice(start, start + batch_size))
            with self._autocast():
                out = self._guarded(self._eval_net, xb)
            total += self._loss(out, yb, reduction="sum", x=xb).double()
            correct += self._correct(out, yb)
        return float(total) / max(n, 1), int(correct)

    @torch.no_grad()
    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        data = self.put(x, np.zeros(len(x), dtype=np.int64))
        self.module.eval()
        outs = []
        for start in range(0, len(x), batch_size):
            xb, _ = self._batch(data, slice(start, start + batch_size))
            with self._autocast():
                outs.append(self._guarded(self._eval_net, xb, logits=False).float().cpu())
        if not outs:
            return np.zeros((0, *self.model.output_shape), dtype=np.float32)
        return torch.cat(outs).numpy()

    # -- for tests and tools --------------------------------------------------------------------
    def gradients(self, x: np.ndarray, y: np.ndarray, *, training: bool = True,
                  input_grad: bool = False):
        """(loss, {param: grad}, outputs) for one batch given in the backend layout (NCHW), as
        NumpySession.gradients; with input_grad, also self.input_grad. No autocast."""
        net = self.module.train(training)
        xt = torch.as_tensor(np.asarray(x)).to(self.device, self.dtype)
        if xt.dim() == 4 and self.layout == "channels_last":
            xt = xt.contiguous(memory_format=torch.channels_last)
        xt.requires_grad_(input_grad)
        yt = torch.as_tensor(np.asarray(y, dtype=np.int64)).to(self.device)
        for p in net.parameters():
            p.grad = None
        out = net(xt, logits=self.plan.fused)
        loss = self._loss(out, yt, x=xt)
        loss.backward()
        grads = {name: p.grad.detach().cpu().numpy() for name, p in net.named_parameters()
                 if p.grad is not None}
        for p in net.parameters():
            p.grad = None
        self.input_grad = xt.grad.detach().cpu().numpy() if input_grad else None
        return float(loss.detach()), grads, out.detach().cpu().numpy()

    def __repr__(self) -> str:
        return (f"<TorchSession {self.model.name!r} on {self.device}, {str(self.dtype)[6:]}, "
                f"layout={self.layout or 'auto'}{', ' + self.precision if self.amp else ''}"
                f"{f', rank {self.rank}/{self.world_size}' if self.world_size > 1 else ''}>")


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _resolve_precision(precision, amp, device, dtype) -> tuple[str, str]:
    """(fp32 | bf16 | fp16, a phrase for the training header). `auto`: bfloat16 autocast where
    the device runs it at least 1.5x faster than float32 (measured), float16 with a gradient
    scaler on a GPU without bfloat16, float32 elsewhere. Weights stay float32 throughout."""
    if precision is None:  # the Python API's default: as before, bf16 autocast on a GPU
        precision = ("bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported()
                     else "fp32") if amp is None else ("bf16" if amp else "fp32")
    if precision not in PRECISIONS:
        raise CnncError(f"unknown precision `{precision}`", code="usage",
                        hint="the precisions are " + ", ".join(PRECISIONS))
    if dtype != torch.float32 and precision != "fp32":
        if precision == "auto":
            return "fp32", f"{str(dtype)[6:]} (no autocast)"
        raise CnncError(f"--precision {precision} runs a float32 model under autocast; this "
                        f"session is {str(dtype)[6:]}", code="usage")
    cuda = device.type == "cuda"
    if precision == "fp16" and not cuda:
        raise CnncError("float16 autocast is for GPUs", code="device",
                        hint="on the CPU use --precision bf16 (or auto)")
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise CnncError("this GPU has no bfloat16", code="device",
                        hint="use --precision fp16 (with a gradient scaler) or fp32")
    if precision != "auto":
        return precision, {"fp32": "fp32", "bf16": "bf16 autocast, fp32 weights",
                           "fp16": "fp16 autocast with a gradient scaler, fp32 weights"}[precision]
    if cuda and not torch.cuda.is_bf16_supported():
        return "fp16", "fp16 autocast with a gradient scaler (auto: this GPU has no bfloat16)"
    speedup = bf16_speedup(device)
    if speedup >= 1.5:
        return "bf16", (f"bf16 autocast, fp32 weights (auto: a bf16 matmul runs {speedup:.1f}x "
                        "fp32 here)")
    return "fp32", f"fp32 (auto: a bf16 matmul runs only {speedup:.1f}x fp32 here)"


def _compile(net):
    try:
        return torch.compile(net)
    except Exception as e:
        raise CnncError(f"torch.compile is not available here: {e}", code="backend",
                        hint="train without --compile") from e


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            # Every rank waits here for the others (rank 0 writes files after the last
            # collective), then all leave together: a rank that tears its group down while
            # another still talks to it aborts.
            dist.barrier()
            dist.destroy_process_group()
        except Exception:  # pragma: no cover - best effort at exit
            pass
