"""`cnnc eval FILE --weights W`: loss and accuracy of trained weights on the test split."""

from __future__ import annotations

from .common import add_run_flags, positive_int
from .report import EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate trained weights on the test split")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--weights", required=True, metavar="W",
                   help="a cnnc .safetensors file or a PyTorch state_dict (.pt/.pth)")
    add_run_flags(p)
    p.add_argument("--batch-size", type=positive_int, default=256, metavar="N")
    p.add_argument("--json", action="store_true", help="print {loss, accuracy, images} as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    import json

    from ..train.engine import model_hash
    from ..weights import load_weights
    from .common import backend_options, load_data, load_model, train_config

    model = load_model(args.file, json=args.json)
    config = train_config(model, args)
    from ..train.memory import check_memory

    check_memory(model, args.batch_size, limit=args.max_memory)  # evaluation
    # before the data: a typo fails fast. A cnnc or a PyTorch file, matched in full.
    weights, _, meta = load_weights(model, args.weights, seed=config.seed, partial=False)
    ds = load_data(model, args, config)
    session = model.to_backend(args.backend or "numpy", seed=config.seed, loss=config.loss,
                               **backend_options(args))
    session.set_weights(weights, source=args.weights)
    if meta.get("model_sha256") and meta.get("model_sha256") != model_hash(model) \
            and not args.json:
        from ..diagnostics import WARNING, Diagnostic
        from .report import print_diagnostics

        try:
            saved = json.loads(meta.get("params") or "{}")
        except (ValueError, RecursionError):
            saved = None
        if not isinstance(saved, dict):  # damaged metadata: only this warning reads it
            saved = {"params": "(unreadable)"}
        other = saved != json.loads(json.dumps(model.params))
        what = "with other parameter values (" + (" ".join(
            f"{k}={v}" for k, v in saved.items()) or "none") + ")" if other else \
            f"from a different version of {meta.get('model_file', 'the model file')}"
        print_diagnostics([Diagnostic(WARNING, "weights", f"{args.weights} was trained {what}",
                                      None)])
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        data = session.put(ds.test_x, ds.test_y)
        loss, correct = session.evaluate(data, args.batch_size)
    loss, n = float(loss), len(ds.test_x)
    # an autoencoder (mse against the input) has no accuracy: null, and "-" in text
    accuracy = int(correct) / max(n, 1) if session.plan.has_accuracy else None
    if args.json:
        print(json.dumps({"loss": loss if np.isfinite(loss) else None, "accuracy": accuracy,
                          "images": n}))
    else:
        shown = f"{accuracy:.4f}" if accuracy is not None else "-"
        print(f"test_loss {loss:.4f}  test_accuracy {shown}  ({n:,} images)")
    return EXIT_OK
