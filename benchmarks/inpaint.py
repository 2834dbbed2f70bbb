"""Inpainting benchmark: convgen models vs OpenCV Telea / Navier-Stokes and scikit-image biharmonic inpainting,
``telea-smooth`` (Telea blurred by depth in the hole: stage 1 of the ``inpaint`` network started from it), and
``gmrf`` (the conditional mean under a Gaussian Markov random field prior, ``convgen.classical.fills.gmrf_fill``: the
pre-fill the shipped ``inpaint`` network starts from, so the network's own gain is the difference to it) and
``harmonic`` (the same with a membrane prior).

Held-out photos (default: the first ``--limit`` BSDS500 *test* images, never trained on) with seeded masks
(``convgen.data.degradations.inpaint.random_mask``: image i gets seed 10_000 + i, coverage drawn from
``--coverage``, shape ``--mask``). Reports PSNR/SSIM on the whole image and PSNR on the missing pixels only, plus
seconds per image.

    python benchmarks/inpaint.py --model inpaint --limit 50
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _common import load_models, print_report
from tqdm import tqdm

from convgen.data.degradations.inpaint import random_mask
from convgen.io.images import list_images, read_image
from convgen.metrics.reference import psnr

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO.parent / "shared" / "data" / "bsds500" / "test"


def baseline(name: str, radius: int = 3):
    def opencv(img: np.ndarray, mask: np.ndarray, flag: int) -> np.ndarray:
        import cv2

        u8 = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
        out = cv2.inpaint(u8, mask.astype(np.uint8) * 255, radius, flag)
        return out.reshape(img.shape).astype(np.float64) / 255.0

    if name == "opencv-telea":
        import cv2

        return lambda img, m: opencv(img, m, cv2.INPAINT_TELEA)
    if name == "opencv-ns":
        import cv2

        return lambda img, m: opencv(img, m, cv2.INPAINT_NS)
    if name == "telea-smooth":  # the classical pre-fill of the stage-1 network (restoration/inpaint-stage1.yaml)
        import cv2

        from convgen.classical.fills import smooth_by_depth

        return lambda img, m: smooth_by_depth(opencv(img, m, cv2.INPAINT_TELEA), m, 0.8)
    if name in ("gmrf", "harmonic"):  # the conditional mean under a Gaussian Markov random field prior
        from convgen.classical.fills import gmrf_fill

        lam = 1.0 if name == "gmrf" else 0.0
        return lambda img, m: gmrf_fill(img, m, lam)
    if name == "biharmonic":
        from skimage.restoration import inpaint_biharmonic

        return lambda img, m: inpaint_biharmonic(img, m, channel_axis=-1)
    raise ValueError(name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=[], help="NAME or LABEL=NAME_OR_PATH (repeatable)")
    p.add_argument("--images", default=str(DEFAULT_DIR))
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--mask", default="mixed", choices=["boxes", "strokes", "mixed"])
    p.add_argument("--coverage", nargs=2, type=float, default=[0.1, 0.4])
    p.add_argument("--gray", action="store_true", help="convert the photos to gray first")
    p.add_argument("--ensemble", type=int, choices=[1, 2, 4, 8], help="flips/rotations per model (default: its own)")
    baselines = ["opencv-telea", "opencv-ns", "biharmonic", "telea-smooth", "gmrf"]
    p.add_argument("--baselines", nargs="*", default=baselines)
    args = p.parse_args()

    from skimage.metrics import structural_similarity

    models = load_models(args.model)
    methods = {k: (lambda img, m, pipe=v: pipe.restore(img, mask=m, ensemble=args.ensemble)) for k, v in models.items()}
    methods.update({b: baseline(b) for b in args.baselines})
    files = list_images(args.images)[: args.limit]
    scores: dict[str, dict[str, list[float]]] = {
        k: {"psnr": [], "ssim": [], "psnr_missing": [], "s": []} for k in methods
    }
    for i, f in enumerate(tqdm(files, desc="inpaint", file=sys.stderr)):
        img = read_image(f, channels=3).astype(np.float64)
        if args.gray:
            img = img.mean(-1, keepdims=True)
        rng = np.random.default_rng(10_000 + i)
        mask = random_mask(img.shape[0], img.shape[1], rng.uniform(*args.coverage), args.mask, rng)
        masked = img * (1 - mask[..., None])
        for name, fn in methods.items():
            t = time.perf_counter()
            out = np.clip(np.asarray(fn(masked.astype(np.float32), mask), np.float64), 0, 1).reshape(img.shape)
            s = scores[name]
            s["s"].append(time.perf_counter() - t)
            s["psnr"].append(psnr(img, out))
            s["psnr_missing"].append(psnr(img, out, mask=mask))
            s["ssim"].append(structural_similarity(img, out, data_range=1.0, channel_axis=-1))
    results = {
        k: {
            "psnr": round(float(np.mean(v["psnr"])), 3),
            "psnr_missing": round(float(np.mean(v["psnr_missing"])), 3),
            "ssim": round(float(np.mean(v["ssim"])), 4),
            "seconds_per_image": round(float(np.mean(v["s"])), 3),
        }
        for k, v in scores.items()
    }
    print_report(
        "inpaint",
        results,
        images=f"{args.images} (first {len(files)})" + (", converted to gray" if args.gray else ""),
        masks=f"{args.mask}, coverage uniform {args.coverage}, seed 10000 + image index",
        ensemble=args.ensemble or "each model's default",
    )


if __name__ == "__main__":
    main()
