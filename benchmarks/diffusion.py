"""Diffusion benchmark: sample quality and speed of ``mnist-ddpm`` by DDIM steps and guidance, against the GANs at
equal sample counts, and inpainting of half-missing digits against OpenCV Telea and the ``inpaint`` CNN.

Sample quality is measured in the feature space of the zoo ``mnist-classifier`` (FD-mnistcls / KID-mnistcls: *not*
a standard FID / KID) against the 1,000 bundled validation digits, which neither the generators nor the classifier
trained on. ``class_accuracy`` is the share of ``--per-class`` samples the classifier assigns to the requested
digit.

Inpainting: the first ``--inpaint-n`` validation digits, each with its top, bottom, left and right half missing
(missing pixels painted white, as the independent check does); a fill is scored by whether ``mnist-classifier``
recognises the right digit, and by PSNR on the missing pixels only. Speed (``--only speed``) is measured in a part
of its own, so the quality parts can run side by side in two one-thread processes. Prints one JSON object.

    python benchmarks/diffusion.py --out docs/diffusion_benchmark.json
    python benchmarks/diffusion.py --only inpaint --inpaint-n 50      # a quick look
    # as measured for docs/benchmarks.md: two one-thread processes side by side, then the timings alone
    python benchmarks/diffusion.py --only sweep --threads 1 --out A.json & \
    python benchmarks/diffusion.py --only final inpaint --threads 1 --out B.json; wait
    python benchmarks/diffusion.py --only speed --out C.json
    # issue 38: the teacher at 10/25/50 steps and the distilled student at 1/2/4/8 steps, in one run
    python benchmarks/diffusion.py --only fast --out docs/diffusion_fast.json

The ``fast`` part times each row's ``--n`` samples (wall clock, the threads given) next to its quality, so the
speed/quality table comes from one run on one machine.
"""

from __future__ import annotations

import argparse
import json
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
HALVES = ("top", "bottom", "left", "right")


def quality(gen, n: int, per_class: int, extractor, classifier, x_real, **options) -> dict:
    """Metrics of ``n`` samples (seed 0), the seconds they took per 1,000, and the class accuracy of ``per_class``
    samples of every class."""
    start = time.perf_counter()
    fakes = gen.sample(n, seed=0, **options)
    seconds = 1000 * (time.perf_counter() - start) / n
    m = generation_metrics(x_real, fakes, extractor, "bundled MNIST val (1,000 digits)", pr_max=min(n, 5000))
    pred = classifier.predict(fakes)
    shares = (torch.bincount(pred, minlength=10).double() / len(pred)).tolist()
    out = {
        "n": n,
        "fd_mnistcls": round(m["fd_mnistcls"], 3),
        "kid_mnistcls": round(m["kid"], 4),
        "precision": round(m["precision"], 3),
        "recall": round(m["recall"], 3),
        "min_class_share": round(min(shares), 4),
        "seconds_per_1000": round(seconds, 2),
    }
    if per_class and gen.num_classes:
        groups = gen.sample_per_class(per_class, seed=0, **options)
        correct = sum(int((classifier.predict(groups[c]) == c).sum()) for c in groups)
        out["per_class"] = per_class
        out["class_accuracy"] = round(correct / (per_class * len(groups)), 4)
    print(json.dumps({k: v for k, v in {**options, **out}.items()}), file=sys.stderr, flush=True)
    return out


def speed(pipe, gans: list[str], steps: list[int], n: int) -> dict:
    """Seconds per 1,000 samples (wall clock, batches of 500) by DDIM steps at the default guidance (2 network
    passes per step), and of the GANs (one generator pass)."""
    out = {}
    pipe.sample(8, seed=0, steps=2)  # warm-up
    for s in steps:
        t = time.perf_counter()
        pipe.sample(n, seed=0, steps=s)
        out[f"mnist-ddpm, {s} steps"] = round(1000 * (time.perf_counter() - t) / n, 2)
    x = torch.rand(100, 1, 28, 28)
    m = half_masks(100)["top"]
    t = time.perf_counter()
    pipe.inpaint_batch(x, m)
    out["mnist-ddpm inpainting (RePaint default), seconds per 1,000 digits"] = round(10 * (time.perf_counter() - t), 2)
    for g in gans:
        gen = convgen.load(g, device="cpu")
        gen.sample(8, seed=0)
        t = time.perf_counter()
        gen.sample(max(n, 1000), seed=0)
        out[g] = round(1000 * (time.perf_counter() - t) / max(n, 1000), 3)
    print(json.dumps(out), file=sys.stderr, flush=True)
    return out


def half_masks(n: int, size: int = 28) -> dict[str, torch.Tensor]:
    masks = {}
    for half in HALVES:
        m = torch.zeros(n, 1, size, size)
        h = size // 2
        {"top": m[:, :, :h], "bottom": m[:, :, h:], "left": m[..., :h], "right": m[..., h:]}[half].fill_(1)
        masks[half] = m
    return masks


def inpainting(pipe, x: torch.Tensor, y: torch.Tensor, classifier, variants: dict[str, dict]) -> dict:
    from convgen.classical.fills import telea_fill

    masks = half_masks(len(x))
    inpaint_cnn = convgen.load("inpaint", device="cpu")
    methods = {
        "opencv-telea": lambda img, m: telea_fill(img, m),
        "inpaint (zoo CNN, natural images)": lambda img, m: torch.stack(
            [
                torch.from_numpy(inpaint_cnn.restore(i.permute(1, 2, 0).numpy(), mask=mk[0].numpy())).permute(2, 0, 1)
                for i, mk in zip(img, m, strict=True)
            ]
        ),  # fmt: skip
    }
    for name, opts in variants.items():
        methods[name] = lambda img, m, opts=opts: pipe.inpaint_batch(img, m, seed=0, **opts)
    methods[f"{pipe.name}, told the true digit (oracle)"] = lambda img, m: pipe.inpaint_batch(
        img, m, seed=0, labels=y.tolist()
    )
    clean = float((classifier.predict(x) == y).double().mean())
    results: dict[str, dict] = {"clean digits": {"accuracy": round(clean, 4)}}
    for name, fill in methods.items():
        acc, psnr, per_half = [], [], {}
        for half, m in masks.items():
            painted = torch.where(m.bool(), torch.ones_like(x), x)
            out = torch.where(m.bool(), fill(painted, m).clamp(0, 1), x)  # every method scored on its fill alone
            right = (classifier.predict(out) == y).double()
            mse = ((out - x) ** 2 * m).sum((1, 2, 3)) / m.sum((1, 2, 3))
            p = 10 * torch.log10(1 / mse.clamp(min=1e-10))
            per_half[half] = round(float(right.mean()), 4)
            acc.append(right)
            psnr.append(p)
        results[name] = {
            "accuracy": round(float(torch.cat(acc).mean()), 4),
            "accuracy_by_half": per_half,
            "psnr_missing_db": round(float(torch.cat(psnr).mean()), 2),
        }
        print(json.dumps({name: results[name]}), file=sys.stderr, flush=True)
    return results


def fast(teacher, student, args, extractor, classifier, x_real, y_real) -> dict:
    """Issue 38's table: quality and seconds per 1,000 samples of the teacher and the student by steps (each at
    its default guidance; ``--n`` 0 skips it), the done-when row (``--final-n`` samples; 0 skips it) of both
    defaults, and inpainting at the student's default (``--inpaint-n`` digits; 0 skips it)."""
    out: dict = {}
    student.sample(8, seed=0)  # warm-up
    if args.n:
        rows = {f"{args.model}, {s} steps": quality(teacher, args.n, args.per_class, extractor, classifier, x_real,
                                                    steps=s) for s in args.teacher_steps}  # fmt: skip
        for s in args.student_steps:
            rows[f"{args.fast_model}, {s} steps"] = quality(student, args.n, args.per_class, extractor, classifier,
                                                            x_real, steps=s)  # fmt: skip
        out["by_steps"] = rows
    if args.final_n:
        out["defaults"] = {name: quality(pipe, args.final_n, args.final_per_class, extractor, classifier, x_real)
                           for name, pipe in ((args.model, teacher), (args.fast_model, student))}  # fmt: skip
    if args.inpaint_n:
        k = args.inpaint_n
        variants = {f"{args.fast_model} (its default: the digit inferred)": {},
                    f"{args.fast_model}, --no-infer-label (unconditional)": {"infer_label": False}}  # fmt: skip
        out["inpainting"] = inpainting(student, x_real[:k], y_real[:k], classifier, variants)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mnist-ddpm")
    p.add_argument("--gan", action="append", default=None, metavar="MODEL", help="GANs to compare (mnist-dcgan ...)")
    p.add_argument("--n", type=int, default=1000, help="samples per row of the steps / guidance sweeps")
    p.add_argument("--per-class", type=int, default=50, help="per-class samples of the guidance sweep")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50, 100])
    p.add_argument("--guidance", type=float, nargs="+", default=[0.0, 1.0, 3.0])
    p.add_argument("--final-n", type=int, default=5000, help="samples of the default-sampler row (the done-when)")
    p.add_argument("--final-per-class", type=int, default=200)
    p.add_argument("--inpaint-n", type=int, default=200, help="validation digits (x 4 halves) for inpainting")
    p.add_argument(
        "--only",
        nargs="+",
        choices=["sweep", "final", "inpaint", "speed", "fast"],
        help="run these parts (default: all but fast)",
    )
    p.add_argument("--fast-model", default="mnist-ddpm-fast", help="the distilled student (part fast)")
    p.add_argument("--teacher-steps", type=int, nargs="+", default=[10, 25, 50])
    p.add_argument("--student-steps", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--speed-n", type=int, default=200, help="samples per row of the speed part")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--out", help="also write the results here (merged into the file's existing parts)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gans = args.gan if args.gan is not None else ["mnist-dcgan", "mnist-cgan"]

    data = build_data(load_config(REPO / "configs" / "diffusion" / "mnist-ddpm.yaml").data)
    x_real, y_real = data.val.batch(torch.arange(len(data.val)))
    extractor = get_extractor("mnist-classifier")
    classifier = convgen.load(extractor.model_dir, device="cpu")
    pipe = convgen.load(args.model, device="cpu")
    defaults = pipe.defaults
    results: dict = {"default_sampler": defaults}
    parts = set(args.only or ["sweep", "final", "inpaint", "speed"])
    if "sweep" in parts:
        results["steps"] = {
            str(s): quality(pipe, args.n, 0, extractor, classifier, x_real, steps=s) for s in args.steps
        }
        results["guidance"] = {
            str(w): quality(pipe, args.n, args.per_class, extractor, classifier, x_real, guidance=w)
            for w in args.guidance
        }
    if "final" in parts:
        results["default"] = quality(pipe, args.final_n, args.final_per_class, extractor, classifier, x_real)
        results["gans"] = {
            f"{g} n={n}": quality(
                convgen.load(g, device="cpu"),
                n,
                args.final_per_class if n == args.final_n else 0,
                extractor,
                classifier,
                x_real,
            )  # fmt: skip
            for g in gans
            for n in sorted({args.n, args.final_n})
        }
    if "inpaint" in parts:
        k = args.inpaint_n
        variants = {
            "mnist-ddpm RePaint, no resampling (25 steps)": {"steps": 25, "jump": 1, "resample": 1},
            "mnist-ddpm RePaint, default (25 steps, jump 5, resample 4)": {},
            "mnist-ddpm RePaint, 25 steps, jump 5, resample 8": {"steps": 25, "jump": 5, "resample": 8},
        }
        results["inpainting"] = inpainting(pipe, x_real[:k], y_real[:k], classifier, variants)
    if "speed" in parts:
        results["speed"] = speed(pipe, gans, args.steps, args.speed_n)
    if "fast" in parts:
        results["fast"] = fast(pipe, convgen.load(args.fast_model, device="cpu"), args, extractor, classifier,
                               x_real, y_real)  # fmt: skip
    print_report(
        "diffusion",
        results,
        threads=torch.get_num_threads(),
        protocol="FD-mnistcls / KID-mnistcls = Frechet distance / KID in the penultimate features of the zoo "
        "mnist-classifier (not InceptionV3: not a standard FID); samples seed 0 vs the 1,000 bundled validation "
        "digits; inpainting on the first validation digits with each half missing (painted white)",
        model=args.model,
    )
    if args.out:
        from convgen.io.atomic import atomic_write_text

        out = Path(args.out)
        merged = json.loads(out.read_text()) if out.is_file() else {}
        merged.update(results)
        merged[f"machine_{'+'.join(sorted(parts))}"] = f"{torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}"
        atomic_write_text(out, json.dumps(merged, indent=1) + "\n")


if __name__ == "__main__":
    main()
