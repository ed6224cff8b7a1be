"""What a person sees while a model trains: a live bar on a terminal, one line per epoch elsewhere.

The engine talks to a reporter through five calls and knows nothing about how they are drawn:

    reporter.start(first_epoch, epochs, batches)   # before the first epoch of this run
    reporter.batch(epoch, done, batches, stats)    # after each batch; stats None or a BatchStats
    reporter.epoch_end(record)                     # a metrics.jsonl record
    reporter.message(text)                         # a line of its own (warnings, notes)
    reporter.close()                               # always, also after Ctrl-C or an error

`make_reporter(stream)` picks `RichReporter` for a terminal and `PlainReporter` otherwise (a file,
a pipe, CI logs): that one prints nothing but complete lines, and no escape codes.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass


@dataclass
class BatchStats:
    """Running figures for the epoch so far (this process's batches)."""

    loss: float
    accuracy: float | None  # None without classes (an autoencoder)
    images_per_second: float


def _num(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "nan" if value is not None else "-"
    return f"{value:.{digits}f}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def epoch_line(record: dict, epochs: int) -> str:
    """`epoch 3/10  train_loss 0.1234  train_acc 0.9650  val_loss ...  1234 img/s  2.1s`."""
    parts = [f"epoch {record['epoch']}/{epochs}",
             f"train_loss {_num(record['train_loss'])}",
             f"train_acc {_num(record['train_accuracy'])}"]
    if record.get("val_loss") is not None or record.get("val_accuracy") is not None:
        parts += [f"val_loss {_num(record['val_loss'])}",
                  f"val_acc {_num(record['val_accuracy'])}"]
    if "test_loss" in record:  # --test-each-epoch
        parts += [f"test_loss {_num(record['test_loss'])}",
                  f"test_acc {_num(record['test_accuracy'])}"]
    parts += [f"{record['images_per_second']:,.0f} img/s", _duration(record["seconds"])]
    return "  ".join(parts)


class Reporter:
    """Prints nothing: for ranks other than 0, and for library use."""

    def start(self, first_epoch: int, epochs: int, batches: int) -> None: ...

    def batch(self, epoch: int, done: int, batches: int, stats: BatchStats | None) -> None: ...

    def epoch_end(self, record: dict) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


class PlainReporter(Reporter):
    """One line per epoch, flushed at once: for logs, pipes and files."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.epochs = 0

    def start(self, first_epoch, epochs, batches):
        self.epochs = epochs

    def epoch_end(self, record):
        self._write(epoch_line(record, self.epochs))

    def message(self, text):
        self._write(text)

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()


class RichReporter(Reporter):
    """A live bar (epoch k/N, batch, loss, accuracy, images/s, time left for the whole run);
    each finished epoch leaves its line above the bar."""

    def __init__(self, stream=None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.console = Console(file=stream or sys.stdout, highlight=False)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(bar_width=30),
            MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
            console=self.console, transient=True, refresh_per_second=8)
        self.task = None
        self.epochs = 0
        self.first_epoch = 1
        self.batches = 0
        self.started = 0.0
        self.batches_done = 0  # in this run, for the time left
        self.stats_text = ""

    def start(self, first_epoch, epochs, batches):
        self.epochs, self.first_epoch, self.batches = epochs, first_epoch, batches
        self.started = time.perf_counter()
        self.progress.start()
        self.task = self.progress.add_task(f"epoch {first_epoch}/{epochs}", total=batches,
                                           stats="")

    def batch(self, epoch, done, batches, stats):
        if self.task is None:
            return
        self.batches_done += 1
        if stats is not None:
            elapsed = time.perf_counter() - self.started
            left_batches = (self.epochs - epoch) * batches + (batches - done)
            left = elapsed / max(self.batches_done, 1) * left_batches
            self.stats_text = (f"loss {_num(stats.loss)}  acc {_num(stats.accuracy)}  "
                               f"{stats.images_per_second:,.0f} img/s  "
                               f"{_duration(left)} left")
        self.progress.update(self.task, completed=done, total=batches,
                             description=f"epoch {epoch}/{self.epochs}", stats=self.stats_text)

    def epoch_end(self, record):
        self.progress.console.print(epoch_line(record, self.epochs), markup=False,
                                    soft_wrap=True)
        if self.task is not None and record["epoch"] < self.epochs:
            nxt = min(record["epoch"] + 1, self.epochs)
            self.progress.reset(self.task, total=self.batches, description=f"epoch {nxt}/"
                                f"{self.epochs}", stats=self.stats_text)

    def message(self, text):
        self.progress.console.print(text, markup=False, soft_wrap=True)

    def close(self):
        try:
            self.progress.stop()
        except Exception:  # pragma: no cover - never let drawing hide the real outcome
            pass
        self.task = None


def is_terminal(stream) -> bool:
    return (hasattr(stream, "isatty") and stream.isatty()
            and os.environ.get("TERM") != "dumb")


def make_reporter(stream=None) -> Reporter:
    """A RichReporter on a terminal, a PlainReporter otherwise."""
    stream = stream or sys.stdout
    return RichReporter(stream) if is_terminal(stream) else PlainReporter(stream)
