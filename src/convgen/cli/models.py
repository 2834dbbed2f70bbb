"""Commands about saved models: ``zoo list``, ``average``, ``explain``, ``report``."""

from __future__ import annotations

import argparse
import json

from convgen.cli.common import command_group


def _cmd_zoo_list(args: argparse.Namespace) -> int:
    from convgen import zoo

    models = zoo.list_models()
    if args.json:
        print(json.dumps({"models": models}))
    else:
        for m in models:
            metrics = ", ".join(f"{k} {v}" for k, v in m["metrics"].items())
            print(f"{m['name']:<22} {m['task']:<16} {metrics}")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from convgen.pipelines.explain import explain

    result = explain(
        args.model, args.input, args.out, target=args.target, layer=args.layer, method=args.method,
        overwrite=args.overwrite,
    )  # fmt: skip
    if args.json:
        print(json.dumps(result))
    else:
        print(f"wrote {', '.join(result['pictures'])} ({args.method} at {result['gradcam_layer']})")
    return 0


def _cmd_average(args: argparse.Namespace) -> int:
    from convgen.modeldir import average

    out = average(args.models, args.out, args.weights, overwrite=args.overwrite)
    print(f"wrote {out} (the mean of {len(args.models)} models' weights)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from convgen.viz.report import build_report

    print(f"wrote {build_report(args.run_dir, args.out, args.overwrite)}")
    return 0


def add_commands(sub) -> None:
    zsub = command_group(sub, "zoo", "the bundled model zoo")
    zl = zsub.add_parser("list", help="list bundled models and their measured metrics")
    zl.add_argument("--json", action="store_true")
    zl.set_defaults(func=_cmd_zoo_list)

    xp = sub.add_parser(
        "explain",
        help="Grad-CAM / HiResCAM, feature maps and filters of a classifier or a GAN discriminator",
        description="MODEL is a classifier (zoo name or directory) or a GAN checkpoint directory with a "
        "discriminator (runs/NAME/checkpoints/best). Writes gradcam.png, feature_maps.png, filters.png.",
    )
    xp.add_argument("model")
    xp.add_argument("--input", required=True, help="image file or folder (the first 16 images are used)")
    xp.add_argument("--out", required=True, help="output folder")
    xp.add_argument("--target", type=int, help="class to explain (default: the predicted class)")
    xp.add_argument("--layer", help="convolution layer name (default: last for Grad-CAM, first for maps/filters)")
    xp.add_argument("--method", choices=["hirescam", "gradcam"], default="hirescam", help="class activation map")
    xp.add_argument("--overwrite", action="store_true", help="replace pictures already in --out")
    xp.add_argument("--json", action="store_true")
    xp.set_defaults(func=_cmd_explain)

    av = sub.add_parser(
        "average",
        help="average the weights of several saved models of one network (model soup / checkpoint averaging)",
        description="Write a model directory whose weights are the mean of MODELs' (zoo names, run directories, "
        "model/ exports or checkpoint directories of the same network), e.g. the last checkpoints of one run or "
        "two fine-tunes from one start: `convgen average runs/a runs/b --out runs/ab`.",
    )
    av.add_argument("models", nargs="+", metavar="MODEL")
    av.add_argument("--out", required=True, help="output model directory")
    av.add_argument("--weights", type=float, nargs="+", help="one weight per MODEL (default: equal)")
    av.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    av.set_defaults(func=_cmd_average)

    rp = sub.add_parser("report", help="an HTML report of a run: curves, pictures, metrics, networks, config")
    rp.add_argument("run_dir")
    rp.add_argument("--out", help="HTML file (default: RUN_DIR/report.html)")
    rp.add_argument("--overwrite", action="store_true")
    rp.set_defaults(func=_cmd_report)

