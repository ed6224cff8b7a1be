"""The training loop every backend shares: batches, metrics, checkpoints, resume, Ctrl-C.

    result = train(model, session, dataset, config, out_dir="runs/a")

What it guarantees:

* Batches are a pure function of (seed, epoch): the validation split is drawn once from the
  seed, and epoch e shuffles the remaining images with a generator seeded by (seed, e). So a run
  resumed after epoch k sees exactly the batches an uninterrupted run would have seen.
* With `out_dir`, after every completed epoch: `state.safetensors` (weights, optimizer arrays,
  the epoch records and the metadata resuming needs), then `last.safetensors` (weights),
  `best.safetensors` (when the epoch is the best so far: lowest validation loss, or training loss
  when there is no validation split) and `metrics.jsonl` (every epoch so far, then one test
  record at the end). Each file is written atomically (a temporary file renamed over the old).
  The rename of `state.safetensors` is the epoch's one commit point: it holds everything a
  resume needs, so a kill at any instant leaves a folder that resumes from the previous epoch
  (before the rename) or from the new one (after it); the other files are copies that resume
  rewrites from the state when a kill left them an epoch behind.
* The folder is locked (DIR/.lock) while a training uses it; a folder that holds a run is
  replaced only with `overwrite=True`; a damaged metrics.jsonl stops a resume instead of being
  rewritten without the records it lost.
* metrics.jsonl holds one record per epoch with exactly the keys of EPOCH_KEYS (`seconds`: the
  epoch's wall time, validation included; `images_per_second`: training images over training
  time; val_loss and val_accuracy null without a validation split), then, once training ends,
  {"test_loss", "test_accuracy", "test_images", "weights": "last", "epochs"}: the test split
  scored with the last weights (best.safetensors is there to evaluate separately). With
  `test_each_epoch`, every epoch record also holds "test_loss", "test_accuracy" and
  "test_seconds" (the scoring's wall time, which `seconds` leaves out): learning curves on the
  test split and time-to-accuracy measurements, not for choosing settings by.
* Ctrl-C (and SIGTERM, SIGHUP) during an epoch abandons that epoch: the files keep the last
  completed one, which is what makes resuming exact. `train` then returns with `interrupted`
  set. The signals are held back while an epoch's files are written.
* Divergence: a training batch whose loss is NaN or infinite, or above DIVERGE_FACTOR times the
  loss of the run's first batch (the loss at the initial weights, counted as at least 1), or a
  validation loss that is NaN or infinite, stops the run with CnncError(code="diverged")
  naming the epoch and batch. It is raised before the epoch is saved, so the files keep the last
  good epoch and a good checkpoint is never overwritten by diverged weights.
* Distributed runs (a Session with `rank`, `world_size` and `all_reduce_sum`): every rank trains
  on `perm[rank::world_size]` of each epoch's permutation, sums are reduced across ranks, and
  only rank 0 reports and writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..diagnostics import CnncError
from .augment import Augmentation, check_applicable, plan_batch
from .checkpoint import atomic_write_text, load_safetensors, save_safetensors
from .config import TrainConfig
from .progress import BatchStats, Reporter

METRICS = "metrics.jsonl"
LAST = "last.safetensors"
BEST = "best.safetensors"
STATE = "state.safetensors"

EPOCH_KEYS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds",
              "images_per_second")

DIVERGE_FACTOR = 1000.0  # a loss this many times the initial one is not training any more
FLUSH_SECONDS = 0.25  # how often running figures are read back from the backend (a device sync)
_SPLIT_STREAM, _EPOCH_STREAM = 0x5B1, 0xE90C  # keep the generators' streams apart


# ---------------------------------------------------------------------------------------------
# Deterministic splits and batches


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) % 2**64, *stream])


def split_indices(n: int, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) of n training images, both sorted; depends only on the
    arguments. val_split 0 gives no validation rows; otherwise at least one, and at least one
    image is always left to train on."""
    if not 0 <= val_split < 1:
        raise CnncError(f"the validation split must be at least 0 and below 1, not {val_split}",
                        code="usage")
    n_val = 0
    if val_split > 0 and n > 1:
        n_val = min(max(1, int(round(n * val_split))), n - 1)
    perm = _rng(seed, _SPLIT_STREAM).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the n training rows in epoch `epoch` (1-based): a function of (seed, epoch)."""
    return _rng(seed, _EPOCH_STREAM, int(epoch)).permutation(n)


def rank_rows(perm: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's share of an epoch's permutation. With several ranks the tail that does not
    divide evenly is dropped, so every rank runs the same number of equally sized batches (a
    rank waiting for a batch another never runs would hang)."""
    if world_size <= 1:
        return perm
    usable = len(perm) - len(perm) % world_size
    return perm[:usable][rank::world_size]


def scheduled_lr(config: TrainConfig, epoch: int, batch: int, batches: int) -> float:
    """The learning rate of step `batch` (0-based) of `epoch` (1-based).

    cosine: lr x (1 + cos(pi x t / T)) / 2 over the run's T steps, as PyTorch's
    CosineAnnealingLR with T_max = T and eta_min = 0, stepped every batch. A function of the
    step alone, so a resumed run follows the uninterrupted run's rates exactly.
    """
    if config.schedule == "constant":
        return config.lr
    t = (epoch - 1) * batches + batch
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * t / (config.epochs * batches)))


def model_hash(model) -> str:
    """The model's identity: its text, and the values of its parameters (`--set`) when it
    declares any, so that a run of another width or depth never resumes from this one."""
    text = model.source
    params = getattr(model, "params", None)
    if params:
        text += "\n\0params " + json.dumps(params, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # epoch records, earlier runs' included
    test: dict | None = None  # the final record: test_loss, test_accuracy, test_images, weights
    first_epoch: int = 1  # the first epoch this call trained (> 1 when resumed)
    completed_epoch: int = 0  # the last epoch completed (and saved, with out_dir)
    best_epoch: int | None = None
    best_metric: float | None = None
    best_key: str = "val_loss"
    interrupted: bool = False
    interrupted_epoch: int | None = None  # the epoch that Ctrl-C abandoned
    out_dir: str | None = None


class Diverged(CnncError):
    code = "diverged"


# ---------------------------------------------------------------------------------------------
# Ctrl-C held back while files are written


# The signals that stop a training as Ctrl-C does: the terminal closing, `kill`, a job manager.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def _stop_signals_interrupt():
    """SIGTERM and SIGHUP raise KeyboardInterrupt in the block, as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}
    for sig in STOP_SIGNALS:
        if sig == signal.SIGINT:
            continue
        with contextlib.suppress(ValueError, OSError):
            old[sig] = signal.signal(sig, _raise_interrupt)
    try:
        yield
    finally:
        for sig, handler in old.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, handler)


@contextlib.contextmanager
def _hold_sigint():
    """Defer SIGINT, SIGTERM and SIGHUP until the block ends, then deliver the first as the
    old handler would."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    old = {}
    for sig in STOP_SIGNALS:
        with contextlib.suppress(ValueError, OSError):
            old[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if received:
            handler = old.get(received[0])
            if callable(handler):
                handler(received[0], None)
            elif handler == signal.SIG_DFL:
                if received[0] == signal.SIGINT:
                    raise KeyboardInterrupt
                os.kill(os.getpid(), received[0])


# ---------------------------------------------------------------------------------------------
# The loop


class _Trainer:
    def __init__(self, model, session, dataset, config: TrainConfig, *, out_dir, reporter,
                 model_file, eval_batch_size, meta):
        self.model, self.session, self.dataset, self.config = model, session, dataset, config
        self.rank = int(getattr(session, "rank", 0) or 0)
        self.world = max(int(getattr(session, "world_size", 1) or 1), 1)
        reduce = getattr(session, "all_reduce_sum", None)
        self.reduce = reduce if (callable(reduce) and self.world > 1) else (lambda v: list(v))
        self.main = self.rank == 0
        self.out = Path(out_dir) if (out_dir is not None) else None
        self.reporter = reporter if (reporter is not None and self.main) else Reporter()
        self.model_file = model_file or os.path.basename(model.file)
        self.eval_batch_size = eval_batch_size
        self.meta = dict(meta or {})
        classes = getattr(dataset, "class_names", None)
        if classes:  # so that whoever loads the weights can name the predicted classes
            self.meta.setdefault("classes", json.dumps(list(classes)))
        self.hash = model_hash(model)
        self.backend = str(getattr(session, "backend", "?"))
        self.best_key = "val_loss" if config.val_split > 0 else "train_loss"
        self.augment = Augmentation.of(config)
        self.image_size = tuple(dataset.train_x.shape[1:3])
        if not self.augment.off:
            check_applicable(self.augment, tuple(dataset.train_x.shape[1:]))
            if "augment" not in inspect.signature(session.train_step).parameters:
                raise CnncError(f"the {self.backend} backend cannot augment training batches",
                                code="backend", hint="train without flip, shift and erase")
        self.header = {"header": {"model_file": self.model_file, "model_sha256": self.hash,
                                  "backend": self.backend, "data": dataset.name,
                                  "settings": asdict(config),
                                  "augment": self.augment.to_json(),
                                  **({"classes": list(classes)} if classes else {})}}
        self.reference_loss: float | None = None  # the run's first batch loss (divergence rule)
        # an autoencoder (mse against the input) has a loss but no accuracy: recorded as null
        self.has_accuracy = getattr(getattr(session, "plan", None), "has_accuracy", True)

    # -- sums across ranks -------------------------------------------------------------------
    def _reduced(self, values: list[float]) -> list[float]:
        return [float(v) for v in self.reduce([float(v) for v in values])]

    def prepare(self, x, y):
        """This rank's share of an evaluation split, put where the backend computes:
        (data or None, images)."""
        if self.world > 1:
            x, y = x[self.rank::self.world], y[self.rank::self.world]
        return (self.session.put(x, y) if len(x) else None), len(x)

    def evaluate(self, prepared) -> tuple[float, float, int]:
        """(loss, accuracy, images) over a prepared split, summed over the ranks."""
        data, n = prepared
        if data is not None:
            loss, correct = self.session.evaluate(data, self.eval_batch_size)
            sums = [float(loss) * n, float(int(correct)), float(n)]
        else:
            sums = [0.0, 0.0, 0.0]
        loss_sum, correct, n = self._reduced(sums)
        if n == 0:
            return float("nan"), float("nan"), 0
        return loss_sum / n, (correct / n if self.has_accuracy else None), int(n)

    # -- one epoch ---------------------------------------------------------------------------
    def run_epoch(self, epoch: int, train_data, n_train: int, val, test=None) -> dict:
        config, session = self.config, self.session
        begin = getattr(session, "begin_epoch", None)
        if callable(begin):
            begin(epoch)
        rows = rank_rows(epoch_permutation(n_train, config.seed, epoch), self.rank, self.world)
        bs = config.batch_size
        batches = max(math.ceil(len(rows) / bs), 1)
        started = time.perf_counter()
        loss_sum, correct_sum, seen = 0.0, 0, 0
        pending: list[tuple] = []
        last_flush = started
        first_bad: int | None = None

        def flush():
            nonlocal loss_sum, correct_sum, seen, first_bad
            for b, loss, correct, n in pending:
                value = float(loss)
                if self.reference_loss is None and math.isfinite(value):
                    self.reference_loss = value
                if self._bad(value) and first_bad is None:
                    first_bad = b
                    if self.world == 1:  # distributed runs decide together at the epoch's end
                        self._diverged(epoch, b, batches, value)
                loss_sum += value * n
                correct_sum += int(correct)
                seen += n
            pending.clear()

        for b in range(batches):
            idx = rows[b * bs:(b + 1) * bs]
            if len(idx) == 0:
                break
            if config.schedule != "constant":
                session.set_lr(scheduled_lr(config, epoch, b, batches))
            if self.augment.off:
                loss, correct = session.train_step(train_data, idx)
            else:
                plan = plan_batch(self.augment, len(idx), *self.image_size, seed=config.seed,
                                  epoch=epoch, batch=b, rank=self.rank)
                loss, correct = session.train_step(train_data, idx, augment=plan)
            pending.append((b + 1, loss, correct, len(idx)))
            now = time.perf_counter()
            stats = None
            if now - last_flush >= FLUSH_SECONDS or b + 1 == batches:
                flush()
                last_flush = now
                if seen:
                    stats = BatchStats(loss_sum / seen,
                                       correct_sum / seen if self.has_accuracy else None,
                                       seen / max(now - started, 1e-9))
            self.reporter.batch(epoch, b + 1, batches, stats)
        flush()
        train_seconds = time.perf_counter() - started
        loss_sum, correct_sum, seen = self._reduced([loss_sum, correct_sum, seen])
        if self._bad(loss_sum / max(seen, 1)):
            self._diverged(epoch, first_bad, batches, loss_sum / max(seen, 1))
        record = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1),
                  "train_accuracy": correct_sum / max(seen, 1) if self.has_accuracy else None,
                  "val_loss": None, "val_accuracy": None}
        if val is not None:
            vloss, vacc, _ = self.evaluate(val)
            if not math.isfinite(vloss):
                self._diverged(epoch, None, batches, vloss, what="validation loss")
            record["val_loss"], record["val_accuracy"] = _finite(vloss), vacc
        seconds = time.perf_counter() - started
        record["seconds"] = round(seconds, 4)
        record["images_per_second"] = round(seen / max(train_seconds, 1e-9), 2)
        if test is not None:  # after `seconds`: the figure means the same with or without it
            tloss, tacc, _ = self.evaluate(test)
            record["test_loss"], record["test_accuracy"] = _finite(tloss), tacc
            record["test_seconds"] = round(time.perf_counter() - started - seconds, 4)
        return record

    def _limit(self) -> float:
        return DIVERGE_FACTOR * max(self.reference_loss or 0.0, 1.0)

    def _bad(self, value: float) -> bool:
        """The divergence rule for a training loss (see the module's docstring)."""
        return not math.isfinite(value) or value > self._limit()

    def _diverged(self, epoch, batch, batches, value, what="training loss"):
        if math.isfinite(value):
            became = (f"{value:.4g}, over {DIVERGE_FACTOR:g} times the first batch's "
                      f"{self.reference_loss:.4g}")
        else:
            became = "NaN" if math.isnan(value) else "infinite"
        where = f"epoch {epoch}, batch {batch} of {batches}" if batch else f"epoch {epoch}"
        lr = self.config.lr
        notes = [f"optimizer {self.config.optimizer}, learning rate {lr:g}, batch size "
                 f"{self.config.batch_size}",
                 f"the rule: a loss that is NaN or infinite, or a training loss over "
                 f"{DIVERGE_FACTOR:g} times the run's first batch loss, stops the run"]
        if self.out is not None and (self.out / STATE).exists():
            notes.append(f"the last good epoch is kept in {self.out}; nothing of this epoch "
                         "was saved")
        raise Diverged(f"the {what} became {became} in {where}: training diverged",
                       notes=notes, code="diverged",
                       hint=f"lower the learning rate (try --lr {lr / 10:g})")

    # -- files -------------------------------------------------------------------------------
    def _weights_meta(self, epoch: int) -> dict[str, str]:
        from .. import __version__

        params = getattr(self.model, "params", None) or {}
        return {"format": "cnnc-weights", "cnnc_version": __version__,
                "model_file": self.model_file, "model_sha256": self.hash,
                "params": json.dumps(params, sort_keys=True),  # the values --set gave, or defaults
                "epoch": str(epoch), "backend": self.backend, **self.meta}

    def save_epoch(self, epoch: int, history: list[dict], is_best: bool, best: dict) -> None:
        out = self.out
        weights = {k: np.asarray(v, dtype=np.float32)
                   for k, v in self.session.get_weights().items()}
        optimizer = {f"optimizer.{k}": np.asarray(v)
                     for k, v in self.session.get_optimizer_state().items()}
        meta = self._weights_meta(epoch)
        state_meta = {**meta, "format": "cnnc-train-state", "next_epoch": str(epoch + 1),
                      "best_epoch": str(best["epoch"] or ""),
                      "best_metric": repr(best["metric"]) if best["metric"] is not None else "",
                      "best_key": self.best_key,
                      "config": json.dumps(asdict(self.config), sort_keys=True),
                      "world_size": str(self.world),
                      "history": json.dumps(history),
                      "reference_loss": repr(self.reference_loss)
                      if self.reference_loss is not None else ""}
        state = {**optimizer, **{WEIGHTS_PREFIX + k: v for k, v in weights.items()}}
        with _hold_sigint():
            save_safetensors(out / STATE, state, state_meta)  # the commit point
            save_safetensors(out / LAST, weights, meta)
            if is_best:
                save_safetensors(out / BEST, weights, meta)
            write_metrics(out / METRICS, history, self.header)

    def fresh_out_dir(self, overwrite: bool) -> None:
        """A new run: refuse a folder that holds one unless told to overwrite it, then remove
        what would mislead a resume."""
        from .rundir import holds_run

        if not overwrite and holds_run(self.out):
            raise CnncError(f"{self.out} already holds a training run", code="usage",
                            notes=["training again would replace its checkpoints and metrics"],
                            hint="pass --resume to continue it, --overwrite to replace it, or "
                                 "choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        for name in (STATE, LAST, BEST):
            with contextlib.suppress(FileNotFoundError):
                (self.out / name).unlink()
        atomic_write_text(self.out / METRICS, json.dumps(self.header) + "\n")

    def load_resume(self, log) -> tuple[int, list[dict], dict]:
        """Restore weights and optimizer from out_dir; (next epoch, history, best)."""
        out = self.out
        state_path, last_path = out / STATE, out / LAST
        require_resume_files(out, self.model.file)
        optimizer, smeta = load_safetensors(state_path)
        if smeta.get("format") != "cnnc-train-state":
            raise CnncError(f"cannot resume: {state_path} is not a cnnc training state",
                            code="weights", hint="train again without --resume")
        saved_params = _meta_json(smeta, "params", state_path, dict) if smeta.get("params") \
            else {}
        params = getattr(self.model, "params", None) or {}
        if saved_params != json.loads(json.dumps(params)):
            shown = " ".join(f"{k}={v}" for k, v in saved_params.items()) or "(none)"
            raise CnncError(
                f"cannot resume: {out} was trained with other parameter values",
                notes=[f"the run used {shown}; this one has "
                       + (" ".join(f"{k}={v}" for k, v in params.items()) or "(none)")],
                hint=f"resume with --set {shown}" if saved_params else
                     "train from scratch without --resume", code="weights")
        if smeta.get("model_sha256") != self.hash:
            raise CnncError(
                f"cannot resume: {self.model.file} has changed since {out} was written",
                notes=[f"the checkpoint was trained from {smeta.get('model_file', '?')} with "
                       f"source hash {smeta.get('model_sha256', '?')[:12]}, this file's is "
                       f"{self.hash[:12]}"],
                hint="restore the model file, or train from scratch without --resume; flags "
                     "such as --epochs override the file's settings without changing it",
                code="weights")
        done = _meta_int(smeta, "next_epoch", state_path, low=2) - 1
        weights = {k[len(WEIGHTS_PREFIX):]: v for k, v in optimizer.items()
                   if k.startswith(WEIGHTS_PREFIX)}
        if not weights:  # a state written before it held the weights: last.safetensors has them
            weights, wmeta = load_safetensors(last_path)
            if wmeta.get("epoch") != str(done):
                raise CnncError(
                    f"cannot resume: {last_path} holds epoch {wmeta.get('epoch', '?')} but "
                    f"{state_path} was written after epoch {done}",
                    notes=["the run was stopped while it wrote its files"],
                    hint="train again without --resume", code="weights")
        saved = _meta_json(smeta, "config", state_path, dict)
        if saved.get("optimizer", self.config.optimizer) != self.config.optimizer:
            raise CnncError(
                f"cannot resume: the run used the {saved['optimizer']} optimizer, not "
                f"{self.config.optimizer}", code="usage",
                hint=f"resume with --optimizer {saved['optimizer']}, or train from scratch")
        changed = [f"{k} {saved[k]} -> {v}" for k, v in asdict(self.config).items()
                   if k in saved and saved[k] != v
                   and (k != "epochs" or self.config.schedule != "constant")]
        if changed:
            log("warning: resuming with different settings (" + ", ".join(changed)
                + "); the result will differ from an uninterrupted run")
        if str(self.world) != smeta.get("world_size", "1"):
            log(f"warning: the run used {smeta.get('world_size')} processes, this one "
                f"{self.world}; batches will differ from an uninterrupted run")
        self.session.set_weights(weights, source=str(state_path))
        prefix = "optimizer."
        opt_state = {k[len(prefix):]: v for k, v in optimizer.items() if k.startswith(prefix)}
        if not opt_state and self.session.get_optimizer_state():
            raise CnncError(f"cannot resume: {state_path} holds no optimizer state",
                            notes=["resuming would restart the optimizer (Adam's moments, SGD's "
                                   "momentum) and differ from an uninterrupted run"],
                            hint="train again without --resume (with --overwrite)",
                            code="weights")
        _check_optimizer_state(opt_state, {k: np.shape(v) for k, v in weights.items()},
                               state_path)
        self.session.set_optimizer_state(opt_state)
        with contextlib.suppress(NotImplementedError, AttributeError):
            self.session.set_lr(self.config.lr)
        # metrics.jsonl is checked even when the state has the records: a damaged file is an
        # error, never silently rewritten without the lines it lost.
        on_disk = read_metrics(out / METRICS, strict=True)
        if "history" in smeta:
            history = _meta_json(smeta, "history", state_path, list)
            if len(history) < done or not all(isinstance(r, dict) for r in history):
                raise _bad_state(state_path, "history", "does not hold every epoch's record")
            history = history[:done]
        else:
            history = [r for r in on_disk if "train_loss" in r
                       and isinstance(r.get("epoch"), int) and r["epoch"] <= done]
        reference = smeta.get("reference_loss", "")
        if reference:
            self.reference_loss = _meta_float(smeta, "reference_loss", state_path)
        metric = smeta.get("best_metric", "")
        best = {"epoch": _meta_int(smeta, "best_epoch", state_path)
                if smeta.get("best_epoch") else None,
                "metric": _meta_float(smeta, "best_metric", state_path) if metric else None}
        if smeta.get("best_key", self.best_key) != self.best_key:
            best = {"epoch": None, "metric": None}  # judged on another figure: start afresh
        self._repair(done, weights, history, best)
        return done + 1, history, best

    def _repair(self, done: int, weights: dict, history: list[dict], best: dict) -> None:
        """Bring the copies (last, best, metrics) up to the committed epoch, as a kill between
        the commit and their writes can leave them one epoch behind."""
        if not self.main:
            return
        out, meta = self.out, self._weights_meta(done)
        with _hold_sigint():
            if _epoch_of(out / LAST) != str(done):
                save_safetensors(out / LAST, weights, meta)
            if best["epoch"] == done and _epoch_of(out / BEST) != str(done):
                save_safetensors(out / BEST, weights, meta)
            records = [r for r in read_metrics(out / METRICS, strict=True) if "train_loss" in r]
            if records != history:
                write_metrics(out / METRICS, history, self.header)


WEIGHTS_PREFIX = "weights."  # the weights' names inside state.safetensors


def _bad_state(path, key, problem) -> CnncError:
    return CnncError(f"cannot resume: {path} is damaged: its {key} {problem}", code="weights",
                     hint="train again without --resume (with --overwrite), or restore the "
                          "folder from a copy")


def _meta_int(meta: dict, key: str, path, low: int = 0) -> int:
    text = meta.get(key, "")
    if not (text.isascii() and text.isdigit() and len(text) < 12 and int(text) >= low):
        raise _bad_state(path, key, f"is {text[:40]!r}, not a whole number of at least {low}")
    return int(text)


def _meta_float(meta: dict, key: str, path) -> float:
    text = meta.get(key, "")
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise _bad_state(path, key, f"is {text[:40]!r}, not a finite number")
    return value


def _meta_json(meta: dict, key: str, path, kind: type):
    try:
        value = json.loads(meta.get(key, ""))
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, kind):
        raise _bad_state(path, key, f"is not a JSON {kind.__name__}")
    return value


# [low, high) of the optimizer hyper-parameters a state may restore
_HPARAM_RANGES = {"lr": (0.0, math.inf), "momentum": (0.0, math.inf), "dampening": (0.0, 1.0),
                  "weight_decay": (0.0, math.inf), "eps": (0.0, math.inf),
                  "beta1": (0.0, 1.0), "beta2": (0.0, 1.0)}


def _check_optimizer_state(state: dict, shapes: dict, path) -> None:
    """Optimizer arrays as the backends save them: `step` a whole number, `hparam/NAME` finite
    numbers, `BUFFER/PARAM` finite float arrays of the parameter's shape. Anything else is a
    damaged file, refused before a backend reads it."""
    for key, value in state.items():
        a = np.asarray(value)
        kind, _, param = key.partition("/")
        if key == "step":
            ok = a.shape == () and a.dtype.kind in "iuf" and np.isfinite(a) and a >= 0 \
                and float(a) == int(a) and int(a) < 2**62
        elif kind == "hparam":
            low, high = _HPARAM_RANGES.get(param, (-math.inf, math.inf))
            ok = a.shape == () and a.dtype.kind in "iuf" and bool(np.isfinite(a)) \
                and low <= float(a) < high
        else:
            ok = (param in shapes and a.shape == tuple(shapes[param]) and a.dtype.kind == "f"
                  and bool(np.isfinite(a).all()))
        if not ok:
            raise _bad_state(path, f"optimizer entry {key!r}",
                             f"is not what an optimizer saves (shape {a.shape}, {a.dtype})")


def _epoch_of(path: Path) -> str | None:
    """The `epoch` a weights file says it holds, or None when it cannot be read."""
    try:
        return load_safetensors(path)[1].get("epoch")
    except CnncError:
        return None


def require_resume_files(out_dir, model_file: str) -> None:
    """Raise CnncError unless `out_dir` holds a run that can be resumed."""
    out = Path(out_dir)
    # state.safetensors is the commit point and holds the weights; last.safetensors is a copy
    # that a kill right after the first commit may not have written yet.
    missing = [out / name for name in (STATE,) if not (out / name).is_file()]
    if missing:
        raise CnncError(
            f"cannot resume: {' and '.join(str(p) for p in missing)} "
            f"{'does' if len(missing) == 1 else 'do'} not exist",
            notes=["--resume continues a run that `cnnc train ... --out DIR` started and "
                   "that completed at least one epoch"],
            hint=f"train without --resume first: cnnc train {model_file} --out {out}",
            code="weights")


def _finite(value):
    return value if (value is not None and math.isfinite(value)) else None


def write_metrics(path: Path, records: list[dict], header: dict | None = None) -> None:
    """The run's header line (what was trained, how: settings, augmentation, class names), then
    one line per record."""
    lines = ([header] if header else []) + list(records)
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in lines))


def read_metrics(path: Path, strict: bool = False) -> list[dict]:
    """The records of a metrics.jsonl (epochs, then the test record; not the header); a missing
    file has none.

    strict: a line that is not a JSON object, or a file that cannot be read as UTF-8 text,
    raises CnncError(code="data"); otherwise reading stops at the first such line."""
    return [r for r in _read_lines(path, strict) if "header" not in r]


def read_header(path: Path) -> dict | None:
    """The header of a metrics.jsonl: {"model_file", "model_sha256", "backend", "data",
    "settings", "augment", "classes"?}, or None (a file from before headers, or none)."""
    lines = _read_lines(path)
    return lines[0]["header"] if lines and isinstance(lines[0].get("header"), dict) else None


def _read_lines(path: Path, strict: bool = False) -> list[dict]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        if not strict:
            return []
        raise CnncError(f"cannot read {path}: {exc.strerror or exc}", code="io",
                        hint="move it away; a resume rewrites it from state.safetensors"
                        ) from exc
    records = []
    for number, line in enumerate(data.splitlines(), 1):
        try:
            record = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):
            record = None
        if not isinstance(record, dict):
            if not strict:
                break
            raise CnncError(f"{path} is damaged: line {number} is not a JSON record",
                            code="data", notes=["cnnc does not rewrite a damaged metrics file "
                                                "without the records it would lose"],
                            hint="repair or move the file away; a resume then rewrites it "
                                 "from state.safetensors")
        records.append(record)
    return records


def train(model, session, dataset, config: TrainConfig, *, out_dir=None, resume: bool = False,
          reporter: Reporter | None = None, log=None, model_file: str | None = None,
          eval_batch_size: int = 256, test: bool = True, meta: dict | None = None,
          overwrite: bool = False, test_each_epoch: bool = False) -> TrainResult:
    """Train `session` (a backend Session of `model`) on `dataset` as `config` says.

    out_dir: where metrics and checkpoints go (None: nothing is written). resume: continue the
    run saved in out_dir. reporter: a cnnc.train.progress reporter (None: silent). log: a
    callable for warnings (default: the reporter's message). test: evaluate the last weights on
    the test split at the end. meta: extra string metadata for the weight files. overwrite:
    replace the run a folder holds (otherwise that is an error). test_each_epoch: also score
    the test split after every epoch (see the module's docstring).

    Raises CnncError (code "diverged", see the rule above); Ctrl-C, SIGTERM or SIGHUP returns
    with `interrupted` set.
    """
    if resume and out_dir is None:
        raise CnncError("--resume needs --out DIR: the folder of the run to continue",
                        code="usage")
    main = int(getattr(session, "rank", 0) or 0) == 0
    if out_dir is None or not main:
        lock = contextlib.nullcontext()
    else:
        from .rundir import locked

        lock = locked(out_dir)
    with lock, _stop_signals_interrupt():
        return _train(model, session, dataset, config, out_dir=out_dir, resume=resume,
                      reporter=reporter, log=log, model_file=model_file,
                      eval_batch_size=eval_batch_size, test=test, meta=meta,
                      overwrite=overwrite, test_each_epoch=test_each_epoch)


def _train(model, session, dataset, config, *, out_dir, resume, reporter, log, model_file,
           eval_batch_size, test, meta, overwrite, test_each_epoch) -> TrainResult:
    t = _Trainer(model, session, dataset, config, out_dir=out_dir, reporter=reporter,
                 model_file=model_file, eval_batch_size=eval_batch_size, meta=meta)
    log = log or t.reporter.message
    result = TrainResult(out_dir=str(out_dir) if out_dir is not None else None,
                         best_key=t.best_key)

    train_rows, val_rows = split_indices(len(dataset.train_x), config.val_split, config.seed)
    session.configure_optimizer(config)
    first, history, best = 1, [], {"epoch": None, "metric": None}
    if resume:
        first, history, best = t.load_resume(log)
    elif t.out is not None and t.main:
        t.fresh_out_dir(overwrite)
    result.first_epoch, result.completed_epoch = first, first - 1
    result.history = history
    result.best_epoch, result.best_metric = best["epoch"], best["metric"]

    train_data = session.put(dataset.train_x[train_rows], dataset.train_y[train_rows])
    val = (t.prepare(dataset.train_x[val_rows], dataset.train_y[val_rows])
           if len(val_rows) else None)
    each_test = (t.prepare(dataset.test_x, dataset.test_y)
                 if test_each_epoch and len(dataset.test_x) else None)
    per_rank = len(rank_rows(np.arange(len(train_rows)), t.rank, t.world))
    batches = max(math.ceil(per_rank / config.batch_size), 1)

    epoch = first
    t.reporter.start(first, config.epochs, batches)
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for epoch in range(first, config.epochs + 1):
                record = t.run_epoch(epoch, train_data, len(train_rows), val, each_test)
                # The epoch's line, its files and its bookkeeping go together: a Ctrl-C held
                # back while they happen arrives after all three, so the run knows the epoch is
                # saved -- above all the Ctrl-C of a user who stops the run on seeing the line.
                with _hold_sigint():
                    history.append(record)
                    metric = record[t.best_key]
                    is_best = metric is not None and (best["metric"] is None
                                                      or metric < best["metric"])
                    if is_best:
                        best = {"epoch": epoch, "metric": metric}
                    if t.main:
                        t.reporter.epoch_end(record)
                    if t.main and t.out is not None:
                        t.save_epoch(epoch, history, is_best, best)
                    result.completed_epoch = epoch
                    result.best_epoch, result.best_metric = best["epoch"], best["metric"]
            epoch = None  # past the epochs: Ctrl-C now interrupts only the test evaluation
            del train_data, val  # free the backend's memory (a GPU's) for the test split
            if test and len(dataset.test_x):
                loss, acc, n = t.evaluate(each_test or t.prepare(dataset.test_x, dataset.test_y))
                result.test = {"test_loss": _finite(loss), "test_accuracy": acc,
                               "test_images": n, "weights": "last",
                               "epochs": result.completed_epoch}
                if t.main and t.out is not None:
                    with _hold_sigint():
                        write_metrics(t.out / METRICS, history + [result.test], t.header)
    except KeyboardInterrupt:
        result.interrupted = True
        result.interrupted_epoch = epoch
    finally:
        t.reporter.close()
    return result
