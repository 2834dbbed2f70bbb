"""``convgen classify``: classify images with a classifier model."""

from __future__ import annotations

import argparse
import json


def _cmd_classify(args: argparse.Namespace) -> int:
    from convgen.pipelines import ClassifierPipeline, load

    pipe = load(args.model, device=args.device, expect=ClassifierPipeline, role="a classifier")
    predictions = pipe.classify_files(args.input, batch_size=args.batch_size)
    scored = pipe.score(predictions)  # a folder of class sub-folders named as the model's classes
    if args.json:
        print(json.dumps({"predictions": predictions, **(scored or {})}))
    else:
        names = pipe.class_names
        for name, c in predictions.items():
            print(f"{name}\t{c}\t{names[c] if c < len(names) else c}")
        if scored:
            print(f"accuracy {scored['accuracy']:.4f} on {scored['count']} images")
    return 0


def add_commands(sub) -> None:
    c = sub.add_parser(
        "classify",
        help="classify images with a classifier model",
        description="Classify an image, or every image in a directory (PNG/JPEG/TIFF/.npy).",
    )
    c.add_argument("model", help="zoo name (e.g. mnist-classifier) or saved model directory")
    c.add_argument("--input", required=True, help="image file or directory")
    c.add_argument(
        "--json",
        action="store_true",
        help='print {"predictions": {"<file name>": <class>}}; for a folder of class sub-folders the keys are '
        '"<class>/<file>", with "accuracy", "count" and "per_class_accuracy"',
    )
    c.add_argument("--batch-size", type=int, default=500)
    c.add_argument("--device", default="auto")
    c.set_defaults(func=_cmd_classify)
