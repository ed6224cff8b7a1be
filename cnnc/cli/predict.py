"""`cnnc predict FILE --weights W IMAGE_OR_DIR... [--top K] [--json]`: what the model sees in
image files (cnnc/predict.py reads and scales them)."""

from __future__ import annotations

from .common import positive_int
from .report import EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="classify image files with trained weights",
                       description="Classify PNG/JPEG files (or every image in a folder) with "
                                   "trained weights: the top classes and their probabilities. "
                                   "See docs/predict.md.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of them")
    p.add_argument("--weights", required=True, metavar="W",
                   help="a cnnc .safetensors file or a PyTorch state_dict (.pt/.pth)")
    p.add_argument("--top", type=positive_int, default=3, metavar="K",
                   help="how many classes to show per image (default 3)")
    p.add_argument("--backend", default=None, metavar="NAME",
                   help="numpy (default) or torch, or a plugin's")
    p.add_argument("--batch-size", type=positive_int, default=64, metavar="N")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    import json

    from ..predict import class_names, class_probabilities, image_files, load_images, top_classes
    from ..weights import load_weights
    from .common import load_model

    model = load_model(args.file, json=args.json)
    class_probabilities(model, [[0.0] * int(model.output_shape[0])]
                        if len(model.output_shape) == 1 else [[0.0]])  # a classifier?
    files = image_files(args.images)
    x = load_images(files, model.input_shape)  # before the weights: a bad image fails fast
    weights, _, meta = load_weights(model, args.weights, partial=False)
    session = model.to_backend(args.backend or "numpy", device="cpu")
    session.set_weights(weights, source=args.weights)
    probs = class_probabilities(model, session.predict(x, args.batch_size))
    names = class_names(model, args.weights, meta, probs.shape[1])
    k = min(args.top, probs.shape[1])
    tops = top_classes(probs, k, names)
    if args.json:
        print(json.dumps({"predictions": [{"file": f, "top": t} for f, t in zip(files, tops)]},
                         indent=2))
        return EXIT_OK
    for f, top in zip(files, tops):
        best = top[0]
        label = best["name"] if best["name"] is not None else f"class {best['class']}"
        print(f"{f}: {label} ({best['probability']:.1%})")
        for t in top[1:]:
            other = t["name"] if t["name"] is not None else f"class {t['class']}"
            print(f"    {other} ({t['probability']:.1%})")
    return EXIT_OK
