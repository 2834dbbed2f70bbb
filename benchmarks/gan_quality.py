"""Sample quality of generators in a domain classifier's feature space (FD-mnistcls / FD-cifarcls: *not* FID).

For each model: ``--n`` samples (seed 0) against held-out real images never trained on by the GANs or by the
classifier (MNIST: the 1,000 bundled validation digits; CIFAR-10: the 2,000 images the presets hold out of the
training split). Reports the Frechet distance and KID in that classifier's features, precision/recall, the class
shares of the samples (as predicted by the classifier: coverage of the ten classes), and for conditional models the
share of ``--per-class`` samples that the classifier assigns to the requested class, beside its accuracy on the
held-out real images (``real_accuracy``) and the ratio of the two (the issue's bar: >= 0.8). Prints one JSON object.

    # compare two trained models (a zoo name, run dir or model dir each)
    python benchmarks/gan_quality.py --model ours=mnist-dcgan --model reference=runs/dcgan-reference-15min
    # train both for the same wall-clock budget first, then compare (side by side in one run)
    python benchmarks/gan_quality.py --train-minutes 15
    # CIFAR-10: the zoo preset against the pytorch/examples recipe (64 px network on upsampled images)
    python benchmarks/gan_quality.py --dataset cifar10 --train-minutes 30 --runs ../runs/gan-quality-cifar10
    # and how blurred real photos score on the same scale (the issue's bar for cifar10-dcgan)
    python benchmarks/gan_quality.py --dataset cifar10 --model ours=cifar10-dcgan --blur 0.5 1 1.5
    # a conditional GAN by truncation: FD, recall and how often the classifier sees the requested class
    python benchmarks/gan_quality.py --dataset cifar10 --model cgan=cifar10-cgan --per-class 500 --truncation 0 1 0.5
    # a diffusion model beside the GANs, by classifier-free guidance scale (GANs at their defaults)
    python benchmarks/gan_quality.py --dataset cifar10 --model ddpm=cifar10-ddpm --model gan=cifar10-cgan --guidance 1 2

``--blur``: the held-out images are split in two halves (even / odd indices). The odd half, sharp and Gaussian-
blurred at each sigma (pixels), is scored against the even half; so are each model's first samples (as many as the
half holds), as ``fd_vs_half``: one scale for generated and blurred real images at the same sample count.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import torch
from _common import print_report

import convgen
from convgen.config import load_config
from convgen.data.attacks import blur
from convgen.data.datasets import build_data
from convgen.metrics.distribution import frechet_distance, generation_metrics
from convgen.metrics.extractors import get_extractor, tensor_features
from convgen.options import fields_of

REPO = Path(__file__).resolve().parents[1]

# per dataset: our preset, the pytorch/examples reference preset, the feature classifier, its input size
DATASETS = {
    "mnist": {
        "ours": "mnist-dcgan.yaml",
        "reference": "dcgan-reference.yaml",
        "extractor": "mnist-classifier",
        "size": 28,
        "real": "bundled MNIST val (1,000 digits)",
    },
    "cifar10": {
        "ours": "cifar10-dcgan.yaml",
        "reference": "dcgan-reference-cifar10.yaml",
        "extractor": "cifar10-classifier-v1",
        "size": 32,
        "real": "CIFAR-10 (JPEG q75 copy), the 2,000 images held out of the training split (split_seed 0)",
    },
}


def frechet(reference, images: torch.Tensor, extractor) -> float:
    """The Frechet distance of an image batch to the ``reference`` features (a FeatureSet) in the extractor's."""
    f = tensor_features(images, extractor)
    return frechet_distance(reference.mu, reference.sigma, f.mu, f.sigma)


def classify(pipe, images: torch.Tensor, size: int) -> torch.Tensor:
    """The classifier's predicted classes for images resized to its input ``size`` (bilinear, antialiased)."""
    return pipe.predict(torch.nn.functional.interpolate(images, size=size, mode="bilinear", antialias=True).clamp(0, 1))


def blur_baseline(reference, other: torch.Tensor, sigmas: list[float], extractor) -> dict:
    """FD of the second half of the real images (``other``), sharp and blurred at each sigma, to the first half's
    ``reference`` features."""
    out = {"sharp": frechet(reference, other, extractor)}
    for sigma in sigmas:
        out[f"blur_sigma_{sigma:g}"] = frechet(reference, blur(other, sigma).clamp(0, 1), extractor)
    return out


def evaluate_model(
    model: str,
    n: int,
    per_class: int,
    extractor,
    x_real: torch.Tensor,
    dataset: str = "mnist",
    halves: tuple | None = None,
    real_accuracy=None,
    **options,
) -> dict:
    """Sample metrics of one generator; ``options`` go to its sampler (``sampler="prior"`` for a VAE); with the
    ``halves`` of the real images (the first half's features, the second half's images), also ``fd_vs_half`` (as
    many first samples as the second half holds, against the first half); with ``real_accuracy`` (a function giving
    the classifier's accuracy on the real images), a conditional model's class accuracy also as a share of it."""
    spec = DATASETS[dataset]
    pipe = convgen.load(extractor.model_dir, device="cpu")  # the classifier behind the features
    gen = convgen.load(model, device="cpu")
    fakes = gen.sample(n, seed=0, **options)
    m = generation_metrics(x_real, fakes, extractor, spec["real"], pr_max=n)
    size = spec["size"]
    pred = classify(pipe, fakes, size)
    shares = (torch.bincount(pred, minlength=10).double() / len(pred)).tolist()
    out = {
        f"fd_{extractor.tag}": m[f"fd_{extractor.tag}"],
        f"kid_{extractor.tag}": m["kid"],
        "precision": m["precision"],
        "recall": m["recall"],
        "class_shares": [round(s, 4) for s in shares],
        "min_class_share": round(min(shares), 4),
        "image_size": gen.cfg.model.image_size,
        "network": gen.networks[0],
        "trained_steps": gen.meta.get("step"),
    }
    if halves is not None:
        out["fd_vs_half"] = frechet(halves[0], fakes[: len(halves[1])], extractor)
    if gen.num_classes:
        groups = gen.sample_per_class(per_class, seed=0, **options)
        correct = sum(int((classify(pipe, groups[c], size) == c).sum()) for c in groups)
        out["class_accuracy"] = correct / (per_class * len(groups))
        if real_accuracy is not None:
            out["real_accuracy"] = real_accuracy()
            out["class_accuracy_vs_real"] = round(out["class_accuracy"] / out["real_accuracy"], 4)
    return out


def sweep(model: str, values: dict[str, list[float] | None]) -> list[tuple[str | None, float | None]]:
    """The (option, value) settings to score ``model`` at: the first option in ``values`` with values given that
    the model's sampler declares (GANs: truncation; diffusion models: guidance), else its defaults only."""
    declared = {f.name for f, _ in fields_of(convgen.load(model, device="cpu").sample_options)}
    for option, given in values.items():
        if given and option in declared:
            return [(option, v) for v in given]
    return [(None, None)]


def train_for(config: str, minutes: float, out: Path) -> str:
    cfg = load_config(REPO / "configs" / "gan" / config, [f"train.max_minutes={minutes}", "train.progress=false"])
    t = time.perf_counter()
    convgen.train(cfg, out)
    print(f"{config}: {time.perf_counter() - t:.0f} s", flush=True, file=sys.stderr)
    return str(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", default=[], metavar="NAME=MODEL", help="model to evaluate")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    p.add_argument("--train-minutes", type=float, help="first train our preset and the reference this long")
    p.add_argument("--runs", default="runs/gan-quality", help="where --train-minutes puts its runs")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--per-class", type=int, default=200)
    p.add_argument("--blur", type=float, nargs="+", metavar="SIGMA", help="score blurred real images too (see above)")
    p.add_argument("--truncation", type=float, nargs="+", metavar="T", help="score each GAN at these truncations "
                   "(0 = none; default: each model's own)")  # fmt: skip
    p.add_argument("--guidance", type=float, nargs="+", metavar="W", help="score each diffusion model at these "
                   "classifier-free guidance scales (default: each model's own)")  # fmt: skip
    args = p.parse_args()
    spec = DATASETS[args.dataset]
    models = dict(m.split("=", 1) for m in args.model)
    if args.train_minutes:
        runs = Path(args.runs)
        for role in ("ours", "reference"):
            config = spec[role]
            models[role] = train_for(config, args.train_minutes, runs / Path(config).stem)
    if not models:
        p.error("give --model NAME=MODEL (repeatable) or --train-minutes")
    data = build_data(load_config(REPO / "configs" / "gan" / spec["ours"]).data)
    x_real, y_real = data.val.batch(torch.arange(len(data.val)))
    extractor = get_extractor(spec["extractor"])
    halves = (tensor_features(x_real[0::2], extractor), x_real[1::2]) if args.blur else None

    @functools.cache  # once, and only where a conditional model asks for it
    def real_accuracy() -> float:
        judge = convgen.load(extractor.model_dir, device="cpu")
        return float((classify(judge, x_real, spec["size"]) == y_real).double().mean())

    results = {}
    for name, model in models.items():
        for option, value in sweep(model, {"truncation": args.truncation, "guidance": args.guidance}):
            options = {} if option is None else {option: value}
            key = name if option is None else f"{name} {option} {value:g}"
            results[key] = evaluate_model(model, args.n, args.per_class, extractor, x_real, args.dataset, halves,
                                          real_accuracy, **options)  # fmt: skip
    ratio = {}
    if halves is not None:
        ratio["real_half_vs_half"] = blur_baseline(*halves, args.blur, extractor)
    fd_key = f"fd_{extractor.tag}"
    if "ours" in results and "reference" in results:
        ratio["fd_ratio_ours_vs_reference"] = round(results["ours"][fd_key] / results["reference"][fd_key], 4)
    print_report(
        "gan_quality",
        results,
        threads=torch.get_num_threads(),
        **ratio,
        protocol=f"FD-{extractor.tag} = Frechet distance in the penultimate features of the zoo {spec['extractor']} "
        f"(not InceptionV3, not a standard FID); samples resized to {spec['size']} px (bilinear, antialiased); "
        f"{args.n} samples, seed 0, vs {spec['real']}; class shares from the same classifier",
        models=models,
    )


if __name__ == "__main__":
    main()
