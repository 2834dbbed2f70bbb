"""Sample quality of GANs in the mnist-classifier feature space (FD-mnistcls: *not* a standard FID).

For each model: ``--n`` samples (seed 0) against the 1,000 bundled validation digits (never trained on by the GANs
or by the classifier). Reports FD-mnistcls, KID, precision/recall, the class shares of the samples (as predicted by
the classifier: coverage of the ten digits), and for conditional models the share of ``--per-class`` samples that
the classifier assigns to the requested class. Prints one JSON object.

    # compare two trained models (a zoo name, run dir or model dir each)
    python benchmarks/gan_quality.py --model ours=mnist-dcgan --model reference=runs/dcgan-reference-15min
    # train both for the same wall-clock budget first, then compare (side by side in one run)
    python benchmarks/gan_quality.py --train-minutes 15
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from _common import print_report

import convgen
from convgen.config import load_config
from convgen.data.datasets import build_data
from convgen.metrics.distribution import generation_metrics
from convgen.metrics.extractors import get_extractor

REPO = Path(__file__).resolve().parents[1]


def evaluate_model(model: str, n: int, per_class: int, extractor, x_real: torch.Tensor, **options) -> dict:
    """Sample metrics of one generator; ``options`` go to its sampler (``sampler="prior"`` for a VAE)."""
    pipe = convgen.load(extractor.model_dir, device="cpu")  # the classifier behind the features
    gen = convgen.load(model, device="cpu")
    fakes = gen.sample(n, seed=0, **options)
    m = generation_metrics(x_real, fakes, extractor, "bundled MNIST val (1,000 digits)", pr_max=n)
    pred = pipe.predict(torch.nn.functional.interpolate(fakes, size=28, mode="bilinear", antialias=True).clamp(0, 1))
    shares = (torch.bincount(pred, minlength=10).double() / len(pred)).tolist()
    out = {
        "fd_mnistcls": m["fd_mnistcls"],
        "kid_mnistcls": m["kid"],
        "precision": m["precision"],
        "recall": m["recall"],
        "class_shares": [round(s, 4) for s in shares],
        "min_class_share": round(min(shares), 4),
        "image_size": gen.cfg.model.image_size,
        "network": gen.networks[0],
        "trained_steps": gen.meta.get("step"),
    }
    if gen.num_classes:
        groups = gen.sample_per_class(per_class, seed=0, **options)
        correct = sum(int((pipe.predict(groups[c]) == c).sum()) for c in groups)
        out["class_accuracy"] = correct / (per_class * len(groups))
    return out


def train_for(config: str, minutes: float, out: Path) -> str:
    cfg = load_config(REPO / "configs" / "gan" / config, [f"train.max_minutes={minutes}", "train.progress=false"])
    t = time.perf_counter()
    convgen.train(cfg, out)
    print(f"{config}: {time.perf_counter() - t:.0f} s", flush=True, file=sys.stderr)
    return str(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", default=[], metavar="NAME=MODEL", help="model to evaluate")
    p.add_argument("--train-minutes", type=float, help="first train mnist-dcgan and the reference this long")
    p.add_argument("--runs", default="runs/gan-quality", help="where --train-minutes puts its runs")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--per-class", type=int, default=200)
    args = p.parse_args()
    models = dict(m.split("=", 1) for m in args.model)
    if args.train_minutes:
        runs = Path(args.runs)
        models["ours"] = train_for("mnist-dcgan.yaml", args.train_minutes, runs / "mnist-dcgan")
        models["reference"] = train_for("dcgan-reference.yaml", args.train_minutes, runs / "dcgan-reference")
    if not models:
        p.error("give --model NAME=MODEL (repeatable) or --train-minutes")
    data = build_data(load_config(REPO / "configs" / "gan" / "mnist-dcgan.yaml").data)
    x_real, _ = data.val.batch(torch.arange(len(data.val)))
    extractor = get_extractor("mnist-classifier")
    results = {name: evaluate_model(model, args.n, args.per_class, extractor, x_real) for name, model in models.items()}
    ratio = {}
    if "ours" in results and "reference" in results:
        ratio["fd_ratio_ours_vs_reference"] = round(
            results["ours"]["fd_mnistcls"] / results["reference"]["fd_mnistcls"], 4
        )
    print_report(
        "gan_quality",
        results,
        threads=torch.get_num_threads(),
        **ratio,
        protocol="FD-mnistcls = Frechet distance in the penultimate features of the zoo mnist-classifier "
        "(not InceptionV3, not a standard FID); samples resized to 28 px (bilinear, antialiased); "
        f"{args.n} samples, seed 0, vs the 1,000 bundled validation digits; class shares from the same classifier",
        models=models,
    )


if __name__ == "__main__":
    main()
