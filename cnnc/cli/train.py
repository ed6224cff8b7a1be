"""`cnnc train FILE`: from a model file and flags to a trained, saved model.

Exit 0 done, 1 an error (printed by cnnc.cli.report), 130 Ctrl-C (the last completed epoch
kept, and the command that resumes it printed).
"""

from __future__ import annotations

import argparse

from .common import add_run_flags, fraction, non_negative_float, positive_float, positive_int, seed
from .report import EXIT_INTERRUPTED, EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model",
                       description="Train a model. Flags override the model file's `train:` "
                                   "section.")
    p.add_argument("file", metavar="FILE")
    add_run_flags(p)
    p.add_argument("--epochs", type=positive_int, metavar="N")
    p.add_argument("--batch-size", type=positive_int, metavar="N")
    p.add_argument("--lr", type=positive_float, metavar="F", help="learning rate")
    p.add_argument("--optimizer", choices=["sgd", "adam"])
    p.add_argument("--momentum", type=non_negative_float, metavar="F", help="SGD momentum")
    p.add_argument("--weight-decay", type=non_negative_float, metavar="F")
    p.add_argument("--schedule", choices=["constant", "cosine"],
                   help="learning rate: constant, or cosine decay to 0 over the run")
    p.add_argument("--loss", choices=["auto", "cross_entropy", "bce", "mse"])
    p.add_argument("--seed", type=seed, metavar="N")
    p.add_argument("--val-split", type=fraction, metavar="F",
                   help="fraction of the training images held out for validation")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="augment: mirror training images left-right at random")
    p.add_argument("--shift", type=int, metavar="N",
                   help="augment: shift training images by up to N pixels (pad and crop)")
    p.add_argument("--erase", type=float, metavar="P",
                   help="augment: blank a random rectangle of a training image with "
                        "probability P")
    p.add_argument("--out", metavar="DIR", help="write metrics.jsonl and checkpoints here")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved in DIR (needs --out)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run DIR holds (otherwise a folder with a run is refused)")
    p.add_argument("--init", metavar="W",
                   help="start from these weights: a cnnc .safetensors file or a PyTorch "
                        "state_dict, matched by name, else by graph order and shape; what does "
                        "not fit keeps its initial values")
    p.add_argument("--test-each-epoch", action="store_true",
                   help="also score the test split after every epoch (test curves, time to "
                        "accuracy; choosing settings by it overfits the test split)")
    p.add_argument("--limit", type=positive_int, metavar="N",
                   help="use only the first N training images (quick experiments)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="torch: NHWC memory layout (default: chosen by a quick measurement)")
    p.add_argument("--compile", action="store_true", help="torch: use torch.compile")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                   help="torch: autocast precision, weights stay float32 (default auto: bf16 "
                        "where a measured bf16 matmul is at least 1.5x fp32, fp32 elsewhere)")
    p.set_defaults(run=run)


def run(args) -> int:
    import contextlib
    import os

    from ..diagnostics import CnncError
    from ..train.memory import check_memory
    from .common import check_config, load_model, train_config

    model = load_model(args.file)
    config = train_config(model, args)
    check_config(config)
    if config.shift < 0:
        raise CnncError(f"--shift must be 0 or more pixels, not {config.shift}", code="usage")
    if not 0 <= config.erase < 1:
        raise CnncError(f"--erase must be a probability at least 0 and below 1, not "
                        f"{config.erase}", code="usage")
    check_memory(model, config.batch_size, config, limit=args.max_memory)
    if model.summary().trainable_params == 0:
        raise CnncError("the model has no trainable parameters: there is nothing to train",
                        code="usage", span=model.graph[model.graph.input].span,
                        hint="add a layer with weights (conv, dense, bn)")
    if args.resume and not args.out:
        raise CnncError("--resume needs --out DIR: the folder of the run to continue",
                        code="usage", hint=f"cnnc train {args.file} --out DIR --resume")
    if args.resume and args.init:
        raise CnncError("--init and --resume both say where training starts; pass one",
                        code="usage", hint="--resume continues a run from its own weights")
    if args.out is None:
        return _train(model, args, config)
    from ..train.rundir import check_out_dir, locked

    # All before the slow part (loading the data, building the backend): a folder that cannot
    # take the run, or that another training is using, fails at once.
    check_out_dir(args.out, resume=args.resume, overwrite=args.overwrite)
    # Under torchrun only rank 0 writes the folder, so only it holds the lock.
    first_rank = os.environ.get("RANK", "0").strip() in ("", "0")
    with locked(args.out) if first_rank else contextlib.nullcontext():
        if args.resume:
            from ..train.engine import require_resume_files

            require_resume_files(args.out, args.file)
        return _train(model, args, config)


def _train(model, args, config) -> int:
    import os
    import sys

    from ..backends.base import loss_warnings
    from ..train.augment import Augmentation
    from ..train.engine import BEST, LAST, METRICS, split_indices, train
    from ..train.progress import make_reporter
    from ..train.runs import new_run_dir, write_run_files
    from ..viz.curves import CurvesReporter
    from .common import load_data, training_session
    from .report import print_diagnostics

    print_diagnostics(loss_warnings(model, config.loss))
    ds = load_data(model, args, config, limit=args.limit)
    init = _initial_weights(model, args.init, config.seed) if args.init else None
    backend = args.backend or "numpy"
    session = training_session(model, args, config)
    if init is not None:
        session.set_weights(init, source=args.init)
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
    if getattr(session, "precision_note", None):
        say(f"precision: {session.precision_note}", flush=True)
    if ds.preparation:
        say(f"data: {ds.preparation}", flush=True)
    augment = Augmentation.of(config)
    if not augment.off:
        say(f"augmenting training batches: {augment.describe()}", flush=True)
    if args.out is None and main:  # runs are kept: runs/<model>/<n>, a new n each time
        args.out = str(new_run_dir(model.name))
        say(f"run folder: {args.out} (--out DIR chooses another)", flush=True)
    if args.out and main:
        write_run_files(args.out, model, config, backend=getattr(session, "backend", backend),
                        dataset=ds, argv=["cnnc", *sys.argv[1:]])

    reporter = make_reporter(sys.stdout)
    if args.out and main:
        reporter = CurvesReporter(reporter, args.out, resume=args.resume)
    result = train(model, session, ds, config, out_dir=args.out, resume=args.resume,
                   reporter=reporter, log=lambda text: print(text, file=sys.stderr),
                   model_file=os.path.basename(model.file), overwrite=args.overwrite,
                   test_each_epoch=args.test_each_epoch)
    if result.interrupted:
        if main:
            _report_interrupt(args, result)
        return EXIT_INTERRUPTED
    if result.first_epoch > config.epochs and main:
        print(f"{args.out} already holds {result.completed_epoch} epochs; pass a larger "
              "--epochs to train longer")
    if result.test is not None:
        accuracy = result.test["test_accuracy"]  # None for an autoencoder
        say(f"test_loss {_fmt(result.test['test_loss'])}  test_accuracy "
            f"{'-' if accuracy is None else _fmt(accuracy)}  "
            f"({result.test['test_images']:,} images, "
            f"weights after epoch {result.completed_epoch})")
    if args.out and main:
        best = f" (best: epoch {result.best_epoch}, lowest {result.best_key})" \
            if result.best_epoch else ""
        say(f"saved {os.path.join(args.out, LAST)}, {os.path.join(args.out, BEST)}{best} and "
            f"{os.path.join(args.out, METRICS)}")
    return EXIT_OK


def _initial_weights(model, path: str, seed: int):
    """The weights --init names, matched to the model (see cnnc/weights.py); says what loaded
    and what kept its initial values."""
    from ..diagnostics import WARNING, Diagnostic
    from ..weights import load_weights
    from .report import print_diagnostics

    weights, report, _ = load_weights(model, path, seed=seed, partial=True)
    total = report.loaded + len(report.left)
    how = []
    if report.by_name:
        how.append(f"{len(report.by_name)} by name")
    if report.by_order:
        how.append(f"{len(report.by_order)} by graph order and shape")
    print(f"--init {path}: {report.loaded} of {total} tensors loaded ({', '.join(how)})")
    if report.left or report.unused:
        notes = []
        layers = list(dict.fromkeys(k.rpartition(".")[0] for k, _ in report.left))
        if layers:
            notes.append("left at their initial values: " + ", ".join(
                f"{k} {tuple(s)}" for k, s in report.left[:12])
                + (" ..." if len(report.left) > 12 else ""))
        if report.unused:
            notes.append("not used from the file: " + ", ".join(
                f"{k} {tuple(s)}" for k, s in report.unused[:12])
                + (" ..." if len(report.unused) > 12 else ""))
        print_diagnostics([Diagnostic(
            WARNING, "weights", f"{path} fits this model only in part: "
            f"{len(report.left)} tensor{'s' * (len(report.left) != 1)} of "
            f"{len(layers)} layer{'s' * (len(layers) != 1)} start from their initial values",
            None, notes)])
    return weights


def _fmt(value) -> str:
    return "nan" if value is None else f"{value:.4f}"


def _report_interrupt(args, result) -> None:
    import sys

    done = result.completed_epoch
    when = (f"during epoch {result.interrupted_epoch}"
            if result.interrupted_epoch and result.interrupted_epoch > done
            else f"after epoch {done}")
    lines = [f"interrupted {when}."]
    if args.out and done >= 1:
        lines.append(f"{args.out} holds epoch {done} (the last completed one); to continue "
                     f"from epoch {done + 1} exactly where it stopped, run:")
        lines.append(f"  {resume_command(args)}")
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
             ("shift", "--shift"), ("erase", "--erase"),
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
    if getattr(args, "skip_bad_images", False):
        words.append("--skip-bad-images")
    if getattr(args, "test_each_epoch", False):
        words.append("--test-each-epoch")
    if getattr(args, "flip", None) is not None:
        words.append("--flip" if args.flip else "--no-flip")
    words.append("--resume")
    return " ".join(shlex.quote(w) for w in words)
