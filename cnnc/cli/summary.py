"""`cnnc summary FILE`: each layer's output shape, parameters, MACs and receptive field; the
memory inference and training need (cnnc/analysis/memory.py) and the input sizes the model
accepts (cnnc/analysis/sizes.py)."""

from __future__ import annotations

from .common import add_input_flag, amount, positive_int
from .report import EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser("summary", help="print layers, shapes, parameters, MACs and memory",
                       description="Print each layer's output shape, parameters and "
                                   "multiply-accumulates, the model's totals, and the memory "
                                   "inference and a training step need.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_input_flag(p)
    g = p.add_argument_group("training memory")
    g.add_argument("--batch", type=positive_int, metavar="N",
                   help="batch size (default: the file's `train:` section, else 64)")
    g.add_argument("--optimizer", choices=["sgd", "momentum", "adam"],
                   help="sgd (no state), momentum (SGD with momentum) or adam (default: the "
                        "file's `train:` section, else adam)")
    g.add_argument("--fit", type=amount, metavar="BYTES",
                   help="also the largest batch whose training step fits in this memory, "
                        "like 8GiB")
    p.set_defaults(run=run)


def _training_settings(model, args) -> tuple[int, str, float]:
    config = model.train_config
    batch = args.batch or (config.batch_size if config else 64)
    optimizer = args.optimizer or (config.optimizer if config else "adam")
    momentum = 0.9 if optimizer == "momentum" else (config.momentum if config else 0.0)
    return batch, "sgd" if optimizer == "momentum" else optimizer, momentum


def run(args) -> int:
    import json
    import sys

    from ..analysis import memory
    from .common import load_model
    from .report import use_color

    model = load_model(args.file, json=args.json, input_shape=args.input_shape)
    summary = model.summary()
    batch, optimizer, momentum = _training_settings(model, args)
    inference = memory.inference(model.graph)
    training = memory.training(model.graph, batch, optimizer, momentum)
    fits = (memory.largest_batch(model.graph, args.fit, optimizer, momentum)
            if args.fit is not None else None)
    if args.json:
        out = summary.to_json()
        out["memory"] = {"inference": inference.to_json(), "training": training.to_json()}
        if fits is not None:
            out["memory"]["fit"] = {"bytes": args.fit, "largest_batch": fits}
        if len(model.input_shape) == 3:
            from ..analysis.sizes import analyse

            out["sizes"] = analyse(model.graph, scan=False).to_json()
        print(json.dumps(out, indent=2))
        return EXIT_OK
    from ..render import print_memory, print_summary

    color = use_color(sys.stdout)
    print_summary(summary, color=color)
    print_memory(inference, training, fits, args.fit, color=color)
    return EXIT_OK
