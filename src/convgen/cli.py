"""The ``convgen`` command line. The command contract is ../shared/BENCHMARKS.md; extend, never break it.

User errors print one line ``convgen: error: ...`` on stderr and exit 2; ``--json`` output is one JSON object
on stdout; progress and logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from convgen import __version__
from convgen.errors import ConvgenError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        raise ConvgenError(f"{message} (see '{self.prog} --help')")


def _cmd_train(args: argparse.Namespace) -> int:
    from convgen.engine.trainer import train

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not config.endswith((".yaml", ".yml", ".json")):
        config, overrides = None, [config, *overrides]  # only overrides given (resuming a run)
    out = args.out
    if out is None:
        if config is None:
            raise ConvgenError("--out is required when resuming")
        from pathlib import Path

        out = str(Path("runs") / Path(config).stem)
    result = train(config, out, overrides, resume=args.resume)
    summary = {
        "run_dir": str(result.run_dir),
        "steps": result.step,
        "best_metric": result.best_metric,
        "best_value": result.best_value,
        "final_metrics": result.final_metrics,
        "seconds": round(result.seconds, 1),
    }
    if args.json:
        print(json.dumps(summary))
    elif result.step:
        print(
            f"trained {result.step} steps in {result.seconds:.0f} s; best {result.best_metric} = "
            f"{result.best_value}; model saved in {result.run_dir / 'model'}",
            file=sys.stderr,
        )
    return 0


def _cmd_classify(args: argparse.Namespace) -> int:
    from convgen.pipelines import ClassifierPipeline, load

    pipe = load(args.model, device=args.device, expect=ClassifierPipeline, role="a classifier")
    predictions = pipe.classify_files(args.input, batch_size=args.batch_size)
    if args.json:
        print(json.dumps({"predictions": predictions}))
    else:
        names = pipe.class_names
        for name, c in predictions.items():
            print(f"{name}\t{c}\t{names[c] if c < len(names) else c}")
    return 0


def _generator(model: str, device: str):
    from convgen.generation import GeneratorPipeline
    from convgen.pipelines import load

    return load(model, device=device, expect=GeneratorPipeline, role="a generator")


def _cmd_sample(args: argparse.Namespace) -> int:
    pipe = _generator(args.model, args.device)
    if args.n is not None and args.n < 1:
        raise ConvgenError("--n must be >= 1")
    classes = [pipe.class_index(c) for c in args.classes] if args.classes else None
    if classes and args.per_class is not None:
        raise ConvgenError("--class and --per-class cannot be combined")
    written = pipe.save_samples(args.out, args.n, args.per_class, args.seed, classes, args.batch_size)
    if args.grid:
        import torch

        from convgen.viz.grid import save_grid

        if args.per_class is not None:
            k = min(args.per_class, 10)
            save_grid(torch.cat(list(pipe.sample_per_class(k, args.seed).values())), args.grid, nrow=k)
        else:
            save_grid(pipe.sample(min(args.n, 100), args.seed, classes), args.grid)
    print(f"wrote {written} images to {args.out}", file=sys.stderr)
    return 0


def _cmd_interpolate(args: argparse.Namespace) -> int:
    from convgen.generation import save_interpolation

    pipe = _generator(args.model, args.device)
    classes = None
    if args.classes:
        classes = (pipe.class_index(args.classes[0]), pipe.class_index(args.classes[1]))
    label = pipe.class_index(args.class_) if args.class_ is not None else None
    images = pipe.interpolate(args.steps, args.rows, args.seed, args.mode, classes, label)
    save_interpolation(images, args.steps, args.out, args.gif)
    print(f"wrote {args.out}" + (f" and {args.gif}" if args.gif else ""), file=sys.stderr)
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    from convgen.pipelines import load
    from convgen.restoration import RestorationPipeline

    pipe = load(args.model, device=args.device, expect=RestorationPipeline, role="a restoration model")
    pipe.check_verb(args.verb, args.model)
    if args.mask is not None and args.verb != "inpaint":
        raise ConvgenError(f"--mask is for inpainting, not {args.verb}")
    if args.tile is not None and args.tile < 16:
        raise ConvgenError(f"--tile {args.tile} is too small (at least 16 px)")
    if args.overlap < 0:
        raise ConvgenError("--overlap must be >= 0")
    tile = None if args.tile == 0 else args.tile
    written = pipe.restore_files(
        args.input,
        args.output,
        args.sigma,
        args.mask,
        tile,
        args.overlap,
        overwrite=args.overwrite,
        ensemble=args.ensemble,
    )
    print(f"{args.verb}: wrote {len(written)} image(s) to {args.output}", file=sys.stderr)
    return 0


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


def _cmd_download(args: argparse.Namespace) -> int:
    from convgen.data.download import download

    paths = download(args.dataset, args.root)
    for p in paths.values():
        print(p)
    return 0


def _cmd_data_export(args: argparse.Namespace) -> int:
    from convgen.data.export import export_images

    written = export_images(args.out, args.split, args.limit, args.overrides)
    print(f"wrote {written} images and labels.csv to {args.out}", file=sys.stderr)
    return 0


def _cmd_eval_restoration(args: argparse.Namespace) -> int:
    from convgen.evaluate import evaluate_restoration, finite_or_none

    result = finite_or_none(evaluate_restoration(args.reference, args.restored, args.mask, args.data_range))
    if args.json:
        print(json.dumps(result))
    else:
        extra = f", PSNR on missing pixels {result['psnr_missing']:.3f} dB" if "psnr_missing" in result else ""
        print(
            f"{result['n_images']} images: PSNR {result['psnr']} dB, SSIM {result['ssim']:.4f}, "
            f"MS-SSIM {result['ms_ssim']:.4f}{extra}"
        )
    return 0


def _cmd_eval_generation(args: argparse.Namespace) -> int:
    from convgen.evaluate import evaluate_generation

    if args.pairs and not args.train:
        raise ConvgenError("--pairs needs --train (the pairs are samples and their nearest training images)")
    result = evaluate_generation(
        args.real,
        args.fake,
        args.extractor,
        inception_weights=args.inception_weights,
        seed=args.seed,
        limit=args.limit,
        cache=not args.no_cache,
        cache_dir=args.cache_dir,
        train=args.train,
        pairs_out=args.pairs,
        two_sample=args.two_sample,
        audit_limit=args.audit_limit,
        device=args.device,
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(result["protocol"]["label"])
        for k in ("fid", "kid", "is", "precision", "recall", "density", "coverage"):
            print(f"{k:<10} {result[k]:.5g}")
        if "two_sample" in result:
            t = result["two_sample"]
            print(f"two-sample classifier accuracy {t['accuracy']:.3f} (0.5 = indistinguishable), p {t['p_value']:.3g}")
        if "memorization" in result:
            m = result["memorization"]
            print(
                f"memorisation: {m['verdict']} (near-copy fraction {m['near_copy_fraction']:.3f}, "
                f"median NN distance ratio {m['median_ratio']:.3f})"
            )
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from convgen.viz.insight import explain

    result = explain(args.model, args.input, args.out, target=args.target, layer=args.layer, method=args.method)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"wrote {', '.join(result['pictures'])} ({args.method} at {result['gradcam_layer']})")
    return 0


def _cmd_average(args: argparse.Namespace) -> int:
    from convgen.pipelines import average_models

    out = average_models(args.models, args.out, args.weights, overwrite=args.overwrite)
    print(f"wrote {out} (the mean of {len(args.models)} models' weights)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from convgen.viz.report import build_report

    print(f"wrote {build_report(args.run_dir, args.out, args.overwrite)}")
    return 0


def _command_group(sub, name: str, help: str):
    """A command with subcommands of its own (``convgen zoo list``, ``convgen eval restoration``)."""
    group = sub.add_parser(name, help=help).add_subparsers(
        dest=f"{name}_command", metavar="SUBCOMMAND", parser_class=_Parser
    )
    group.required = True
    return group


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="convgen", description="CNN image generation and restoration toolkit.")
    p.add_argument("--version", action="version", version=f"convgen {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    t = sub.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train from a config (configs/*.yaml) with key.sub=value overrides, e.g. "
        "`convgen train configs/mnist-classifier.yaml train.epochs=2 --out runs/x`. "
        "Multi-process: `torchrun --nproc_per_node 2 -m convgen train ...`.",
    )
    t.add_argument("config", nargs="?", help="YAML config file (optional when resuming a run)")
    t.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.lr=0.01")
    t.add_argument("--out", help="run directory (default: runs/<config name>)")
    t.add_argument("--resume", metavar="latest|CKPT", help="continue from the latest checkpoint in --out, or a path")
    t.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    t.set_defaults(func=_cmd_train)

    c = sub.add_parser(
        "classify",
        help="classify images with a classifier model",
        description="Classify an image, or every image in a directory (PNG/JPEG/TIFF/.npy).",
    )
    c.add_argument("model", help="zoo name (e.g. mnist-classifier) or saved model directory")
    c.add_argument("--input", required=True, help="image file or directory")
    c.add_argument("--json", action="store_true", help='print {"predictions": {"<file name>": <class>}}')
    c.add_argument("--batch-size", type=int, default=500)
    c.add_argument("--device", default="auto")
    c.set_defaults(func=_cmd_classify)

    sm = sub.add_parser(
        "sample",
        help="generate images with a generator model",
        description="Write DIR/00000.png ... (--n N), or DIR/<class>/00000.png ... for every class of a conditional "
        "model (--per-class K). The same --seed gives the same images.",
    )
    sm.add_argument("model", help="zoo name (e.g. mnist-dcgan, mnist-cgan) or saved model directory")
    how = sm.add_mutually_exclusive_group(required=True)
    how.add_argument("--n", type=int, help="number of images")
    how.add_argument("--per-class", type=int, help="images per class (conditional models)")
    sm.add_argument("--class", dest="classes", action="append", help="only this class (repeatable; with --n)")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    sm.add_argument("--grid", help="also write a preview grid PNG here")
    sm.add_argument("--batch-size", type=int, default=500)
    sm.add_argument("--device", default="auto")
    sm.set_defaults(func=_cmd_sample)

    ip = sub.add_parser(
        "interpolate",
        help="latent or class interpolation strips and GIFs",
        description="Each row walks from one random latent to another (spherical by default); with --classes A B "
        "a conditional model keeps the latent and walks from class A's embedding to class B's.",
    )
    ip.add_argument("model")
    ip.add_argument("--out", required=True, help="PNG strip (rows x steps)")
    ip.add_argument("--gif", help="also write an animated GIF")
    ip.add_argument("--steps", type=int, default=10)
    ip.add_argument("--rows", type=int, default=4)
    ip.add_argument("--seed", type=int, default=0)
    ip.add_argument("--mode", choices=["slerp", "lerp"], default="slerp")
    ip.add_argument("--classes", nargs=2, metavar=("FROM", "TO"), help="class interpolation (conditional models)")
    ip.add_argument("--class", dest="class_", help="class of a latent walk (conditional models)")
    ip.add_argument("--device", default="auto")
    ip.set_defaults(func=_cmd_interpolate)

    rsub = _command_group(sub, "restore", "denoise, inpaint, super-resolve or de-JPEG images")
    for verb, what in (
        ("denoise", "remove noise (--sigma: the noise level on the 0-255 scale, for non-blind models)"),
        ("inpaint", "fill missing regions given by --mask (255 = missing, 0 = known)"),
        ("superres", "bicubic-degraded super-resolution by the model's scale"),
        ("dejpeg", "remove JPEG compression artifacts"),
    ):
        r = rsub.add_parser(
            verb,
            help=what,
            description=f"{what[0].upper()}{what[1:]}. IN/OUT may be files or folders (outputs keep the input "
            "file names; .npy in gives .npy float out). Large images are restored in overlapping tiles.",
        )
        r.add_argument("model", help="zoo name (e.g. denoise-gray-s25) or saved model directory")
        r.add_argument("--input", required=True, help="image file or folder (PNG/JPEG/TIFF/.npy)")
        r.add_argument("--output", required=True, help="output file or folder")
        r.add_argument("--sigma", type=float, help="noise standard deviation on the 0-255 scale (denoise)")
        r.add_argument("--mask", help="mask file or folder of masks named like the inputs (inpaint)")
        r.add_argument("--tile", type=int, default=512, help="tile size in pixels for large images (0 = no tiling)")
        r.add_argument("--overlap", type=int, default=64, help="tile overlap in pixels")
        r.add_argument(
            "--ensemble",
            type=int,
            choices=[1, 2, 4, 8],
            help="average the model over this many flips/rotations (x time; default: the model's own setting, "
            "8 for denoise-color-blind, else 1)",
        )
        r.add_argument("--overwrite", action="store_true", help="replace existing output files")
        r.add_argument("--device", default="auto")
        r.set_defaults(func=_cmd_restore, verb=verb)

    zsub = _command_group(sub, "zoo", "the bundled model zoo")
    zl = zsub.add_parser("list", help="list bundled models and their measured metrics")
    zl.add_argument("--json", action="store_true")
    zl.set_defaults(func=_cmd_zoo_list)

    evsub = _command_group(sub, "eval", "evaluate restored or generated images")
    er = evsub.add_parser(
        "restoration",
        help="PSNR / SSIM / MS-SSIM against reference images",
        description="Pairs files by name. Masks (255 = missing) add PSNR on missing pixels.",
    )
    er.add_argument("--reference", required=True, help="clean image file or directory")
    er.add_argument("--restored", required=True, help="restored image file or directory (same file names)")
    er.add_argument("--mask", help="mask file or directory (same file names)")
    er.add_argument("--data-range", type=float, default=1.0)
    er.add_argument("--json", action="store_true")
    er.set_defaults(func=_cmd_eval_restoration)
    eg = evsub.add_parser(
        "generation",
        help="Frechet distance, KID, IS, precision/recall, density/coverage",
        description="Compares two image folders in a classifier's feature space (default: the "
        "mnist-classifier; results are labelled FD-mnistcls etc., not standard FID).",
    )
    eg.add_argument("--real", required=True)
    eg.add_argument("--fake", required=True)
    eg.add_argument(
        "--extractor",
        help="inception-v3 (standard FID), mnist-classifier, or a classifier model directory "
        "(default: mnist-classifier for gray images up to 64 px, else inception-v3)",
    )
    eg.add_argument("--inception-weights", help="path to pt_inception-2015-12-05-6726825d.pth (or .safetensors)")
    eg.add_argument("--seed", type=int, default=0)
    eg.add_argument("--limit", type=int, help="use at most this many images of each folder")
    eg.add_argument("--cache-dir", help="statistics cache (default: $CONVGEN_CACHE/stats or ~/.cache/convgen/stats)")
    eg.add_argument("--no-cache", action="store_true", help="do not read or write cached real-image features")
    eg.add_argument("--train", help="the generator's training images: adds a memorisation check (--real = held out)")
    eg.add_argument("--pairs", help="PNG of the closest sample / training-image pairs (with --train)")
    eg.add_argument("--two-sample", action="store_true", help="add a classifier two-sample test (real vs fake)")
    eg.add_argument("--audit-limit", type=int, default=5000, help="images per set for --train / --two-sample")
    eg.add_argument("--device", default="cpu")
    eg.add_argument("--json", action="store_true")
    eg.set_defaults(func=_cmd_eval_generation)

    desub = _command_group(sub, "data", "dataset utilities")
    ex = desub.add_parser(
        "export",
        help="write a dataset split as PNG files + labels.csv",
        description="Export images of a dataset split (default: the bundled MNIST split) as "
        "PNGs, e.g. `convgen data export --split val --limit 16 --out digits/`. "
        "Choose another dataset with overrides: data.type=image-folder data.root=DIR.",
    )
    ex.add_argument("overrides", nargs="*", help="data.key=value settings of the dataset (default data.type=mnist)")
    ex.add_argument("--split", choices=["train", "val"], default="val")
    ex.add_argument("--limit", type=int, help="at most this many images (in split order)")
    ex.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    ex.set_defaults(func=_cmd_data_export)

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

    d = sub.add_parser("download", help="download a dataset with checksum verification (needs internet)")
    d.add_argument("dataset", choices=["mnist", "fashion-mnist", "cifar10"])
    d.add_argument("--root", required=True, help="folder to download into")
    d.set_defaults(func=_cmd_download)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:
            # key=value overrides may also follow options (`convgen train cfg.yaml --out runs/x train.lr=0.1`)
            if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
                args.overrides = [*args.overrides, *extra]
            else:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return args.func(args)
    except ConvgenError as e:
        print(f"convgen: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("convgen: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
