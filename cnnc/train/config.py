"""The training section of a model file, and the command-line flags that override it.

    train:
        data fashion-mnist
        optimizer adam lr=1e-3
        epochs 5; batch 64; seed 0

Each statement is a setting followed by its value; `optimizer` also takes its hyperparameters as
options. Validated at compile time (so `cnnc check` reports a bad setting with its line), used by
`cnnc train`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..diagnostics import ERROR, Diagnostic, did_you_mean
from ..ops import Arg
from ..ops.args import bind

LOSSES = ("auto", "cross_entropy", "bce", "mse")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    data: str = "digits"
    loss: str = "auto"  # auto: cross-entropy for many classes, bce for one sigmoid output
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0  # sgd
    nesterov: bool = False  # sgd
    weight_decay: float = 0.0
    schedule: str = "constant"  # cosine: from lr down to 0 over all the steps, step by step
    epochs: int = 10
    batch_size: int = 64
    seed: int = 0
    val_split: float = 0.1  # the fraction of the training images held out for validation
    # augmentation of training batches (cnnc/train/augment.py)
    flip: bool = False  # mirror left-right with probability 1/2
    shift: int = 0  # move by up to this many pixels each way (pad and random crop)
    erase: float = 0.0  # probability of blanking a random rectangle (random erasing)
    # torch: autocast precision, weights stay float32 (auto: bf16 where it measures faster)
    precision: str = "auto"

    def merged(self, **overrides) -> "TrainConfig":
        """A copy with every override that is not None applied (command-line flags)."""
        values = asdict(self)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return TrainConfig(**values)


MAX_SEED = 2**31 - 1  # as for any whole number in a model file
FLOAT32_MAX = 3.4028234663852886e38


def config_problems(config: TrainConfig) -> list[tuple[str, str, str | None]]:
    """What is wrong with a whole configuration, the file's settings and the flags together:
    [(field, message, hint)]. The same rules for `train:` settings and command-line flags."""
    import math

    out = []

    def number(name, value, low, *, above=False, top=FLOAT32_MAX):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value > top \
                or value < low or (above and value == low):
            word = "above" if above else "at least"
            out.append((name, f"{name} must be a number {word} {low:g}"
                        + (f" and at most {top:g}" if top != FLOAT32_MAX else "")
                        + f", not {value!r}", None))
            return False
        return True

    number("lr", config.lr, 0.0, above=True)
    number("momentum", config.momentum, 0.0)
    number("weight_decay", config.weight_decay, 0.0)
    if number("val_split", config.val_split, 0.0, top=1.0) and config.val_split >= 1:
        out.append(("val_split", f"val_split must be below 1, not {config.val_split!r}", None))
    for name in ("epochs", "batch_size"):
        value = getattr(config, name)
        if not isinstance(value, int) or not 1 <= value <= MAX_SEED:
            out.append((name, f"{name} must be a whole number from 1 to {MAX_SEED:,}, not "
                              f"{value!r}", None))
    if not isinstance(config.seed, int) or not 0 <= config.seed <= MAX_SEED:
        out.append(("seed", f"seed must be a whole number from 0 to {MAX_SEED:,}, not "
                            f"{config.seed!r}", None))
    if config.nesterov and (config.optimizer != "sgd" or not config.momentum > 0):
        out.append(("nesterov", "nesterov=true needs SGD with a momentum above 0"
                    + (f" (the optimizer is {config.optimizer})" if config.optimizer != "sgd"
                       else f" (momentum is {config.momentum:g})"),
                    "add momentum, like `optimizer sgd momentum=0.9 nesterov=true`"))
    return out


# setting -> (positional args, options); the TrainConfig field each fills is the arg's name
_SETTINGS = {
    "data": ((Arg("data", "string", help="a data set name or npz:PATH"),), ()),
    "loss": ((Arg("loss", "enum", choices=LOSSES),), ()),
    "optimizer": ((Arg("optimizer", "enum", choices=OPTIMIZERS),),
                  (Arg("lr", "float", None, min=0.0), Arg("momentum", "float", None, min=0.0),
                   Arg("nesterov", "bool", None), Arg("weight_decay", "float", None, min=0.0))),
    "lr": ((Arg("lr", "float", min=0.0),), ()),
    "momentum": ((Arg("momentum", "float", min=0.0),), ()),
    "weight_decay": ((Arg("weight_decay", "float", min=0.0),), ()),
    "schedule": ((Arg("schedule", "enum", choices=SCHEDULES),), ()),
    "epochs": ((Arg("epochs", "int", min=1),), ()),
    "batch": ((Arg("batch_size", "int", min=1),), ()),
    "batch_size": ((Arg("batch_size", "int", min=1),), ()),
    "seed": ((Arg("seed", "int", min=0),), ()),
    "val": ((Arg("val_split", "float", min=0.0, max_exclusive=1.0),), ()),
    "val_split": ((Arg("val_split", "float", min=0.0, max_exclusive=1.0),), ()),
    "flip": ((Arg("flip", "bool", True),), ()),  # `flip` alone turns it on
    "shift": ((Arg("shift", "int", min=0),), ()),
    "erase": ((Arg("erase", "float", min=0.0, max_exclusive=1.0),), ()),
    "precision": ((Arg("precision", "enum", choices=PRECISIONS),), ()),
}


def _set_twice(stmt, key: str, set_by: dict) -> Diagnostic | None:
    """A setting given a second time by another statement: as an option of `optimizer` and on a
    line of its own (`lr`, `momentum`, `weight_decay`), or under both names (`batch` and
    `batch_size`, `val` and `val_split`). Records the first; says where it was for the second."""
    option = next((o for o in stmt.options if o.key == key), None)
    if option is not None:
        word, span, how = key, option.span, f"`{key}={option.value.text}` of `{stmt.head}`"
    else:
        word, span = stmt.head, stmt.span
        how = " ".join(["`" + stmt.head, *(v.text for v in stmt.args)]) + "`"
    if key not in set_by:
        set_by[key] = (stmt.span.line, how, word)
        return None
    line, first, first_word = set_by[key]
    same = "remove one of them" if first_word == word else \
        f"`{first_word}` and `{word}` set the same thing: remove one of them"
    return Diagnostic(ERROR, "train-section", f"`{word}` is set twice", span,
                      [f"first set at line {line}, by {first}"], same)


def parse_sections(sections, file: str) -> tuple[TrainConfig | None, list[Diagnostic]]:
    """The TrainConfig of a program's `train:` section (None if it has none), with diagnostics."""
    from ..syntax import ast

    diagnostics: list[Diagnostic] = []
    config: TrainConfig | None = None
    for section in sections:
        if section.name == "budget":  # cnnc/analysis/budget.py reads it
            continue
        if section.name != "train":
            diagnostics.append(Diagnostic(ERROR, "train-section",
                                          f"unknown section `{section.name}:`",
                                          section.name_span, [],
                                          did_you_mean(section.name, ["train", "budget"])
                                          or "the sections are `train:` and `budget:`"))
            continue
        if config is not None:
            diagnostics.append(Diagnostic(ERROR, "train-section", "a second `train:` section",
                                          section.name_span, [], "merge the two sections"))
            continue
        config = TrainConfig()
        seen: dict[str, int] = {}
        set_by: dict[str, tuple] = {}  # TrainConfig field -> (line, how it was written)
        spans: dict = {}  # TrainConfig field -> the statement that set it
        for stmt in section.body:
            if not isinstance(stmt, ast.Call):
                diagnostics.append(Diagnostic(ERROR, "train-section", "the training section "
                                              "holds settings like `epochs 5`", stmt.span, []))
                continue
            spec = _SETTINGS.get(stmt.head)
            if spec is None:
                diagnostics.append(Diagnostic(
                    ERROR, "train-section", f"unknown training setting `{stmt.head}`",
                    stmt.head_span, [], did_you_mean(stmt.head, _SETTINGS)
                    or "settings: " + ", ".join(_SETTINGS)))
                continue
            if stmt.head in seen:
                note = f"first set at line {seen[stmt.head]}"
                first = set_by.get(spec[0][0].name) if spec[0] else None
                if first is not None and first[0] < seen[stmt.head]:  # `lr=` of `optimizer`
                    note = f"first set at line {first[0]}, by {first[1]}"
                diagnostics.append(Diagnostic(ERROR, "train-section",
                                              f"`{stmt.head}` is set twice", stmt.span, [note]))
                continue
            seen[stmt.head] = stmt.span.line
            written: dict = {}
            attrs, problems = bind(stmt.head, *spec, stmt.args, stmt.options, written)
            for span, _code, message, hint in problems:
                diagnostics.append(Diagnostic(ERROR, "train-section", message, span or stmt.span,
                                              [], hint))
            if problems:
                continue
            for key in written:  # `lr 0.1` after `optimizer adam lr=1e-3`; `batch`, `batch_size`
                twice = _set_twice(stmt, key, set_by)
                if twice is not None:
                    diagnostics.append(twice)
                    attrs[key] = None
            names = {f.name for f in fields(TrainConfig)}
            for key, value in attrs.items():
                if key in names and value is not None:
                    setattr(config, key, value)
                    spans[key] = stmt.span
        for key, message, hint in config_problems(config):
            diagnostics.append(Diagnostic(ERROR, "train-section", message,
                                          spans.get(key, section.name_span), [], hint))
    return config, diagnostics
