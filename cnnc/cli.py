"""The `cnnc` command line: check, summary, train, eval.

Start-up matters: `cnnc check` imports lark and cnnc's front end, nothing more. rich is imported
by the commands that draw tables or progress bars, numpy and torch by those that compute, and
networkx only by code that asks for `LayerGraph.nx`.
Every user-facing failure prints a diagnostic and exits 1; a malformed command line exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2


def _use_color(stream) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR") or os.environ.get("CLICOLOR_FORCE"):
        return True
    return hasattr(stream, "isatty") and stream.isatty() and os.environ.get("TERM") != "dumb"


def _compile(path: str):
    from .pipeline import compile_file, compile_text

    if path == "-":
        return compile_text(sys.stdin.read(), "<stdin>")
    return compile_file(path)


def print_diagnostics(diagnostics, sources: dict[str, str], stream=None) -> None:
    from .diagnostics import render_text

    if not diagnostics:
        return
    stream = stream or sys.stderr
    stream.write(render_text(diagnostics, sources, color=_use_color(stream)) + "\n")


# ---------------------------------------------------------------------------------------------
# check


def cmd_check(args) -> int:
    from .analysis.summary import total_params
    from .diagnostics import ERROR, render_json

    all_diags = []
    sources = {}
    summaries = []
    for path in args.files:
        model = _compile(path)
        sources[model.file] = model.source
        all_diags.extend(model.diagnostics)
        if model.ok:
            summaries.append(f"{model.file}: ok ({len(model.graph)} layers, "
                             f"{total_params(model.graph):,} parameters)")
    ok = not any(d.severity == ERROR for d in all_diags)
    if args.json:
        print(render_json(all_diags))
    else:
        print_diagnostics(all_diags, sources)
        if not args.quiet:
            for line in summaries:
                print(line)
    return EXIT_OK if ok else EXIT_ERRORS


# ---------------------------------------------------------------------------------------------
# summary


def cmd_summary(args) -> int:
    import json

    model = _compile(args.file)
    if not model.ok:
        if args.json:
            from .diagnostics import render_json
            print(render_json(model.diagnostics))
        else:
            print_diagnostics(model.diagnostics, {model.file: model.source})
        return EXIT_ERRORS
    summary = model.summary()
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
        return EXIT_OK
    print_diagnostics(model.diagnostics, {model.file: model.source})  # warnings
    from .render import print_summary

    print_summary(summary, color=_use_color(sys.stdout))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# train / eval live in cnnc.train.commands; the parser is declared here so `--help` is cheap.


def cmd_train(args) -> int:
    from .train.commands import train_command

    return train_command(args)


def cmd_eval(args) -> int:
    from .train.commands import eval_command

    return eval_command(args)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="cnnc",
        description="A compiler for convolutional networks: check shapes, count costs, train.",
        epilog="Run `cnnc COMMAND --help` for a command's options. Docs: docs/language.md.")
    parser.add_argument("--version", action="version", version=f"cnnc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("check", help="parse and shape-check model files",
                       description="Parse and shape-check model files. Exit 0 when clean, "
                                   "1 with errors, 2 on a malformed command line.")
    p.add_argument("files", nargs="+", metavar="FILE", help="model files (- for standard input)")
    p.add_argument("--json", action="store_true", help="print diagnostics as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="print only diagnostics")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("summary", help="print layers, shapes, parameters and MACs",
                       description="Print each layer's output shape, parameters and "
                                   "multiply-accumulates, and the model's totals.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("train", help="train a model",
                       description="Train a model. Flags override the model file's `train:` "
                                   "section.")
    p.add_argument("file", metavar="FILE")
    _add_run_flags(p)
    p.add_argument("--epochs", type=_positive_int, metavar="N")
    p.add_argument("--batch-size", type=_positive_int, metavar="N")
    p.add_argument("--lr", type=_positive_float, metavar="F", help="learning rate")
    p.add_argument("--optimizer", choices=["sgd", "adam"])
    p.add_argument("--momentum", type=float, metavar="F", help="SGD momentum")
    p.add_argument("--weight-decay", type=float, metavar="F")
    p.add_argument("--schedule", choices=["constant", "cosine"],
                   help="learning rate: constant, or cosine decay to 0 over the run")
    p.add_argument("--loss", choices=["auto", "cross_entropy", "bce", "mse"])
    p.add_argument("--seed", type=int, metavar="N")
    p.add_argument("--val-split", type=float, metavar="F",
                   help="fraction of the training images held out for validation")
    p.add_argument("--out", metavar="DIR", help="write metrics.jsonl and checkpoints here")
    p.add_argument("--resume", action="store_true",
                   help="continue from DIR/last.safetensors (needs --out)")
    p.add_argument("--limit", type=_positive_int, metavar="N",
                   help="use only the first N training images (quick experiments)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="torch: NHWC memory layout (default: chosen by a quick measurement)")
    p.add_argument("--compile", action="store_true", help="torch: use torch.compile")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate trained weights on the test split")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--weights", required=True, metavar="W", help="a .safetensors file")
    _add_run_flags(p)
    p.add_argument("--batch-size", type=_positive_int, default=256, metavar="N")
    p.add_argument("--json", action="store_true", help="print {loss, accuracy, images} as JSON")
    p.set_defaults(func=cmd_eval)
    return parser


def _add_run_flags(p) -> None:
    p.add_argument("--backend", default=None, metavar="NAME",
                   help="numpy (default) or torch, or a plugin's")
    p.add_argument("--data", metavar="NAME|PATH",
                   help="digits, fashion-mnist, mnist, shapes, npz:PATH or a folder of IDX files")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="torch: where to run (auto takes a GPU when there is one)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        sys.exit(EXIT_USAGE)
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        sys.stderr.write("cnnc: interrupted\n")
        code = 130
    except BrokenPipeError:
        code = EXIT_OK
    except Exception as e:  # a bug in cnnc, not the user's fault: say so, briefly
        from .diagnostics import CnncError

        if isinstance(e, CnncError):
            sys.stderr.write(f"cnnc: error: {e.message}\n")
            if e.hint:
                sys.stderr.write(f"hint: {e.hint}\n")
            code = EXIT_ERRORS
        else:
            if os.environ.get("CNNC_DEBUG"):
                raise
            sys.stderr.write(f"cnnc: internal error: {type(e).__name__}: {e}\n"
                             "This is a bug in cnnc; run with CNNC_DEBUG=1 to see where.\n")
            code = 3
    sys.exit(code)


if __name__ == "__main__":
    main()
