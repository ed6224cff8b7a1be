"""`cnnc export FILE [--weights W] --format onnx|torch -o OUT`: the model for another framework.

ONNX (cnnc/export/onnx_model.py) or a standalone PyTorch file (cnnc/export/torch_source.py),
both written from the checked layer graph. Without --weights, the model's initial weights
(seeded by --seed, else the `train:` section's seed, else 0).
"""

from __future__ import annotations

from .report import EXIT_OK

FORMATS = {"onnx": ".onnx", "torch": ".py"}


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write the model as ONNX or as PyTorch source",
                       description="Write the model as an ONNX file or as a standalone PyTorch "
                                   "file (one nn.Module), from the checked layer graph. See "
                                   "docs/export.md.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--weights", metavar="W",
                   help="a cnnc .safetensors file or a PyTorch state_dict (.pt/.pth); default: "
                        "the model's initial weights")
    p.add_argument("--format", choices=sorted(FORMATS),
                   help="onnx or torch (default: from the extension of -o)")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="the file to write (default: the model's name + .onnx or .py)")
    p.add_argument("--layout", choices=["nhwc", "nchw"], default="nhwc",
                   help="onnx: the input's layout (default nhwc, as the language writes images)")
    p.add_argument("--seed", type=int, metavar="N", help="the seed of the initial weights")
    p.set_defaults(run=run)


def run(args) -> int:
    import os

    from ..diagnostics import CnncError
    from .common import load_model

    fmt = args.format
    if fmt is None:
        ext = os.path.splitext(args.output or "")[1].lower()
        fmt = {".onnx": "onnx", ".py": "torch"}.get(ext)
        if fmt is None:
            raise CnncError("which format? pass --format onnx or --format torch (or an -o "
                            "file ending in .onnx or .py)", code="usage")
    model = load_model(args.file)
    out = args.output or model.name + FORMATS[fmt]
    if fmt == "onnx":
        weights, what = model_weights(model, args)
        data = _onnx_bytes(model, weights, args.layout)
        _write(out, data)
        from ..export.onnx_model import OPSET

        layout = args.layout.upper() if len(model.input_shape) == 3 else "flat"
        print(f"wrote {out}: ONNX opset {OPSET}, input {layout} with a dynamic batch, "
              f"{what}")
    else:
        if args.layout != "nhwc":
            raise CnncError("--layout applies to ONNX; a PyTorch module takes N x C x H x W",
                            code="usage")
        if args.weights:
            model_weights(model, args)  # the weights must fit even though the file holds none
        from ..export.torch_source import class_name, to_torch_source

        _write(out, to_torch_source(model).encode("utf-8"))
        print(f"wrote {out}: class {class_name(model.name)}(nn.Module); load weights with "
              f"net.load_state_dict(safetensors.torch.load_file(W))")
    return EXIT_OK


def model_weights(model, args):
    """(weights, how they were chosen): --weights, matched in full, or the initial ones."""
    from ..weights import load_weights

    seed = args.seed if args.seed is not None else (
        model.train_config.seed if model.train_config is not None else 0)
    if args.weights:
        weights, _, _ = load_weights(model, args.weights, seed=seed, partial=False)
        return weights, f"weights from {args.weights}"
    from ..backends.init import initial_weights

    return initial_weights(model.graph, seed), f"initial weights (seed {seed})"


def _onnx_bytes(model, weights, layout) -> bytes:
    from ..diagnostics import CnncError

    try:
        import onnx  # noqa: F401

        from ..export.onnx_model import to_onnx
    except ImportError:
        raise CnncError("exporting to ONNX needs the onnx package", code="backend",
                        hint="pip install onnx") from None
    return to_onnx(model, weights, layout=layout).SerializeToString()


def _write(path: str, data: bytes) -> None:
    from ..train.checkpoint import _atomic_write

    _atomic_write(path, lambda f: f.write(data))
