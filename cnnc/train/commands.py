"""`cnnc train` and `cnnc eval`: from a model file and flags to a trained, saved, evaluated model.

The argparse flags are declared in cnnc/cli.py; these functions take its namespace and return
the exit code: 0 done, 1 an error (printed as a diagnostic, never a traceback), 130 Ctrl-C.
"""

from __future__ import annotations

import json
import os
import sys

EXIT_OK, EXIT_ERRORS, EXIT_INTERRUPTED = 0, 1, 130

# Data sets that are searched for in folders: `--data DIR` with one of these in the model's
# `train:` section means "look for it in DIR".
_SEARCHED = ("fashion-mnist", "mnist")


# ---------------------------------------------------------------------------------------------
# Printing errors


def _print_error(err, model=None, span=None) -> None:
    """A CnncError as a diagnostic at `span` (with the source line) or, without one, as
    `cnnc: error: ...` with its notes and hint."""
    from ..cli import _use_color, print_diagnostics
    from ..diagnostics import CompileError

    if isinstance(err, CompileError):
        print_diagnostics(err.diagnostics, {d.span.file: model.source for d in err.diagnostics}
                          if model is not None else {})
        return
    span = err.span or span
    if span is not None:
        sources = {span.file: model.source} if model is not None else {}
        print_diagnostics([err.to_diagnostic(span)], sources)
        return
    color = _use_color(sys.stderr)

    def style(text, code):
        return f"\x1b[{code}m{text}\x1b[0m" if color else text

    lines = [f"cnnc: {style('error:', '1;31')} {err.message}  [{err.code}]"]
    lines += [f"{style('note:', '1;36')} {n}" for n in err.notes]
    if err.hint:
        lines.append(f"{style('hint:', '1;32')} {err.hint}")
    sys.stderr.write("\n".join(lines) + "\n")


def _compile(path: str):
    """The compiled model, or None after printing its diagnostics."""
    from ..cli import _compile as compile_path, print_diagnostics

    model = compile_path(path)
    print_diagnostics(model.diagnostics, {model.file: model.source})  # warnings too
    return model if model.ok else None


def _data_span(model, from_file: bool):
    """Where a data problem points: the `train:` section's `data` line when the name came from
    there, else the model's input statement."""
    if from_file:
        try:
            from ..syntax import ast
            from ..syntax.parser import parse

            program, _ = parse(model.source, model.file)
            for item in program.items:
                if isinstance(item, ast.Section) and item.name == "train":
                    for stmt in item.body:
                        if isinstance(stmt, ast.Call) and stmt.head == "data":
                            return stmt.span
        except Exception:  # pragma: no cover - the input line is a fine fallback
            pass
    return model.graph[model.graph.input].span


def _load_data(model, args, config, *, limit=None):
    """The data set for `config.data` (or `--data`), checked against the model before any
    backend is built. Raises CnncError with a span set."""
    from ..data import check_fits, load_dataset
    from ..diagnostics import CnncError

    spec, data_dir = config.data, None
    from_file = args.data is None and model.train_config is not None
    if args.data is not None and os.path.isdir(args.data) and spec in _SEARCHED:
        data_dir = args.data  # `--data DIR`: look for the file's data set in DIR (see _config)
        from_file = True
    classes = model.output_shape[0] if len(model.output_shape) == 1 else None
    try:
        ds = load_dataset(spec, data_dir=data_dir, input_shape=model.input_shape,
                          num_classes=classes, seed=config.seed)
    except CnncError as e:
        e.span = e.span or _data_span(model, from_file)
        raise
    try:
        check_fits(ds, model.input_shape, classes)
    except CnncError as e:
        e.span = e.span or _data_span(model, False)
        raise
    if limit is not None and limit < len(ds.train_x):
        ds.train_x, ds.train_y = ds.train_x[:limit], ds.train_y[:limit]
    return ds


def _config(model, args):
    from .config import TrainConfig

    base = model.train_config or TrainConfig()
    flags = {k: getattr(args, k, None) for k in
             ("epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "schedule",
              "loss", "seed", "val_split", "data")}
    if flags["data"] is not None and os.path.isdir(flags["data"]) and \
            base.data in _SEARCHED:
        flags["data"] = None  # a folder to search for the file's data set; see _load_data
    return base.merged(**flags)


def _backend_options(args) -> dict:
    options = {"device": getattr(args, "device", None)}
    if getattr(args, "channels_last", None) is not None:
        options["channels_last"] = args.channels_last
    if getattr(args, "compile", False):
        options["compile"] = True
    return {k: v for k, v in options.items() if v is not None}


# ---------------------------------------------------------------------------------------------
# cnnc train


def _with_model(args, body) -> int:
    """Compile args.file and run body(model, args); a CnncError becomes a diagnostic."""
    from ..diagnostics import CnncError

    model = None
    try:
        model = _compile(args.file)
        if model is None:
            return EXIT_ERRORS
        return body(model, args)
    except CnncError as e:
        _print_error(e, model)
        return EXIT_ERRORS


def train_command(args) -> int:
    return _with_model(args, _train)


def _train(model, args) -> int:
    from ..diagnostics import CnncError
    from .engine import BEST, LAST, METRICS, split_indices, train
    from .progress import make_reporter

    config = _config(model, args)
    if not 0 <= config.val_split < 1:
        raise CnncError(f"--val-split must be at least 0 and below 1, not {config.val_split}",
                        code="usage")
    if args.resume and not args.out:
        raise CnncError("--resume needs --out DIR: the folder of the run to continue",
                        code="usage", hint=f"cnnc train {args.file} --out DIR --resume")
    if args.resume:  # before the slow part: loading the data, building the backend
        from .engine import require_resume_files

        require_resume_files(args.out, args.file)
    ds = _load_data(model, args, config, limit=args.limit)
    backend = args.backend or "numpy"
    if backend == "numpy":
        # A training step allocates and frees the same large arrays each time; keeping freed
        # memory in this process (glibc) instead of handing it back saves about a fifth of a
        # step (benchmarks/numpy_backend.py). A process-wide choice, so the command makes it.
        from ..backends.numpy.kernels import keep_freed_memory

        keep_freed_memory()
    session = model.to_backend(backend, seed=config.seed, loss=config.loss,
                               **_backend_options(args))
    main = int(getattr(session, "rank", 0) or 0) == 0
    say = print if main else (lambda *a, **k: None)

    n_val = len(split_indices(len(ds.train_x), config.val_split, config.seed)[1])
    shape = "x".join(map(str, ds.image_shape))
    params = model.summary().trainable_params
    opt = config.optimizer + (f" momentum {config.momentum:g}" if config.optimizer == "sgd"
                              and config.momentum else "")
    world = int(getattr(session, "world_size", 1) or 1)
    say(f"{model.name}: {params:,} parameters | backend {getattr(session, 'backend', backend)} | "
        f"data {ds.name} {shape}, {len(ds.train_x) - n_val:,} train / {n_val:,} val / "
        f"{len(ds.test_x):,} test | {config.epochs} epoch{'s' * (config.epochs != 1)}, "
        f"batch {config.batch_size}"
        + (f" per process x {world} processes" if world > 1 else "")
        + f", {opt} lr {config.lr:g}"
        + (f" {config.schedule}" if config.schedule != "constant" else "")
        + (", resuming" if args.resume else ""), flush=True)

    reporter = make_reporter(sys.stdout)
    result = train(model, session, ds, config, out_dir=args.out, resume=args.resume,
                   reporter=reporter, log=lambda text: print(text, file=sys.stderr),
                   model_file=os.path.basename(model.file))
    if result.interrupted:
        if main:
            _report_interrupt(args, result)
        return EXIT_INTERRUPTED
    if result.first_epoch > config.epochs and main:
        print(f"{args.out} already holds {result.completed_epoch} epochs; pass a larger "
              "--epochs to train longer")
    if result.test is not None:
        say(f"test_loss {_fmt(result.test['test_loss'])}  test_accuracy "
            f"{result.test['test_accuracy']:.4f}  ({result.test['test_images']:,} images, "
            f"weights after epoch {result.completed_epoch})")
    if args.out and main:
        best = f" (best: epoch {result.best_epoch}, lowest {result.best_key})" \
            if result.best_epoch else ""
        say(f"saved {os.path.join(args.out, LAST)}, {os.path.join(args.out, BEST)}{best} and "
            f"{os.path.join(args.out, METRICS)}")
    return EXIT_OK


def _fmt(value) -> str:
    return "nan" if value is None else f"{value:.4f}"


def _report_interrupt(args, result) -> None:
    done = result.completed_epoch
    when = (f"during epoch {result.interrupted_epoch}"
            if result.interrupted_epoch and result.interrupted_epoch > done
            else f"after epoch {done}")
    lines = [f"interrupted {when}."]
    if args.out and done >= 1:
        cmd = resume_command(args)
        lines.append(f"{args.out} holds epoch {done} (the last completed one); to continue "
                     f"from epoch {done + 1} exactly where it stopped, run:")
        lines.append(f"  {cmd}")
    elif args.out:
        lines.append("no epoch was completed, so nothing was saved.")
    else:
        lines.append("nothing was saved: pass --out DIR to keep checkpoints.")
    sys.stderr.write("\n".join(lines) + "\n")


def resume_command(args) -> str:
    """The `cnnc train ... --resume` line that continues this run: the same file and flags."""
    import shlex

    words = ["cnnc", "train", args.file]
    flags = [("backend", "--backend"), ("data", "--data"), ("epochs", "--epochs"),
             ("batch_size", "--batch-size"), ("lr", "--lr"), ("optimizer", "--optimizer"),
             ("momentum", "--momentum"), ("weight_decay", "--weight-decay"),
             ("schedule", "--schedule"), ("loss", "--loss"),
             ("seed", "--seed"), ("val_split", "--val-split"), ("limit", "--limit"),
             ("out", "--out")]
    for attr, flag in flags:
        value = getattr(args, attr, None)
        if value is not None:
            words += [flag, str(value)]
    if getattr(args, "device", "auto") not in (None, "auto"):
        words += ["--device", args.device]
    if getattr(args, "channels_last", None) is not None:
        words.append("--channels-last" if args.channels_last else "--no-channels-last")
    if getattr(args, "compile", False):
        words.append("--compile")
    words.append("--resume")
    return " ".join(shlex.quote(w) for w in words)


# ---------------------------------------------------------------------------------------------
# cnnc eval


def eval_command(args) -> int:
    return _with_model(args, _eval)


def _eval(model, args) -> int:
    from .checkpoint import load_safetensors

    config = _config(model, args)
    weights, meta = load_safetensors(args.weights)  # before the data: a typo fails fast
    ds = _load_data(model, args, config)
    session = model.to_backend(args.backend or "numpy", seed=config.seed, loss=config.loss,
                               **_backend_options(args))
    session.set_weights(weights, source=args.weights)
    if meta.get("model_sha256") and meta.get("model_sha256") != _hash(model) and not args.json:
        sys.stderr.write(f"note: {args.weights} was trained from a different version of "
                         f"{meta.get('model_file', 'the model file')}\n")
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        data = session.put(ds.test_x, ds.test_y)
        loss, correct = session.evaluate(data, args.batch_size)
    loss, n = float(loss), len(ds.test_x)
    accuracy = int(correct) / max(n, 1)
    if args.json:
        print(json.dumps({"loss": loss if np.isfinite(loss) else None, "accuracy": accuracy,
                          "images": n}))
    else:
        print(f"test_loss {loss:.4f}  test_accuracy {accuracy:.4f}  ({n:,} images)")
    return EXIT_OK


def _hash(model) -> str:
    from .engine import model_hash

    return model_hash(model)
