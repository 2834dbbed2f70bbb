"""``convgen eval restoration`` and ``convgen eval generation``."""

from __future__ import annotations

import argparse
import json

from convgen.cli.common import command_group


def _cmd_eval_restoration(args: argparse.Namespace) -> int:
    from convgen.metrics.reference import evaluate_restoration, finite_or_none

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
    from convgen.metrics.distribution import evaluate_generation
    from convgen.metrics.reference import finite_or_none

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
        per_class=args.per_class,
    )
    if args.json:
        print(json.dumps(finite_or_none(result)))
    else:
        print(result["protocol"]["label"])
        for k in ("fid", "kid", "is", "precision", "recall", "density", "coverage"):
            print(f"{k:<10} {result[k]:.5g}")
        if "two_sample" in result:
            t = result["two_sample"]
            print(f"two-sample classifier accuracy {t['accuracy']:.3f} (0.5 = indistinguishable), p {t['p_value']:.3g}")
        for name, row in result.get("per_class", {}).items():
            pr = (
                "too few images"
                if row["precision"] is None
                else f"precision {row['precision']:.3f}, recall {row['recall']:.3f}"
            )
            print(f"class {name}: {pr}; share of samples {row['fake_share']:.3f} (real {row['real_share']:.3f})")
        if "memorization" in result:
            m = result["memorization"]
            print(
                f"memorisation: {m['verdict']} (near-copy fraction {m['near_copy_fraction']:.3f}, "
                f"median NN distance ratio {m['median_ratio']:.3f})"
            )
    return 0


def _cmd_eval_likelihood(args: argparse.Namespace) -> int:
    from convgen.metrics.reference import finite_or_none
    from convgen.pipelines import load
    from convgen.pipelines.vae import VAEPipeline, read_labels

    pipe = load(args.model, device=args.device, expect=VAEPipeline, role="a VAE")
    labels = read_labels(args.labels) if args.labels else None
    result = pipe.likelihood_files(args.input, labels, k=args.samples, binarization=args.binarize, seed=args.seed)
    if args.json:
        print(json.dumps(finite_or_none(result)))
    else:
        print(
            f"{result['n']} images, k={result['k']}: negative ELBO {result['neg_elbo_nats']:.2f} nats, "
            f"IWAE NLL {result['nll_iwae_nats']:.2f} nats ({result['bits_per_dim']:.4f} bits/dim)"
        )
    return 0


def add_commands(sub) -> None:
    evsub = command_group(sub, "eval", "evaluate restored or generated images")
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
    eg.add_argument("--per-class", action="store_true",
                    help="precision/recall within each class the feature classifier predicts")  # fmt: skip
    eg.add_argument("--audit-limit", type=int, default=5000, help="images per set for --train / --two-sample")
    eg.add_argument("--device", default="cpu")
    eg.add_argument("--json", action="store_true")
    eg.set_defaults(func=_cmd_eval_generation)
    el = evsub.add_parser(
        "likelihood",
        help="held-out negative ELBO, IWAE NLL and bits/dim of a VAE",
        description="Importance-weighted NLL (Burda et al. 2016) and negative ELBO of the images in --input, in "
        "nats per image, from --samples posterior samples each (5000 is the literature's protocol). Binary models "
        "are evaluated on binarized images (--binarize stochastic: each pixel 1 with probability its value, seeded).",
    )
    el.add_argument("model", help="zoo name (e.g. mnist-vae) or saved model directory")
    el.add_argument("--input", required=True, help="image file or folder (the model's size and channels)")
    el.add_argument("--samples", type=int, default=1000, help="importance samples per image (k)")
    el.add_argument("--binarize", choices=["stochastic", "threshold", "none"], default="stochastic")
    el.add_argument("--seed", type=int, default=0)
    el.add_argument("--labels", help="labels.csv (file,label) for a conditional model, as `convgen data export` writes")
    el.add_argument("--device", default="auto")
    el.add_argument("--json", action="store_true")
    el.set_defaults(func=_cmd_eval_likelihood)
