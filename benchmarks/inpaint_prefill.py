"""Classical pre-fills for inpainting, compared on missing-pixel PSNR: the one the ``inpaint`` network starts from
(:func:`convgen.classical.fills.gmrf_fill`, the GMRF conditional mean), the one its stage 1 was trained on (OpenCV
Telea, then :func:`convgen.classical.fills.smooth_by_depth` with scale 0.8) and alternatives.

Runs on BSDS500 *training* photos by default (this is a design study, not a test-set result), with masks from
``random_mask`` (image i gets seed 50_000 + i, coverage uniform in [0.1, 0.4]) of each kind. Prints JSON.

    python benchmarks/inpaint_prefill.py --limit 24
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from convgen.classical.fills import gmrf_fill, smooth_by_depth
from convgen.data.degradations.inpaint import random_mask
from convgen.data.transforms import dihedral
from convgen.io.images import list_images, read_image
from convgen.metrics.reference import psnr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_report
from inpaint import baseline  # noqa: E402  (the benchmark's own OpenCV wrappers)

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "bsds500" / "train"
TELEA, NS = baseline("opencv-telea"), baseline("opencv-ns")


def normalised_convolution(img: np.ndarray, mask: np.ndarray, scale: float) -> np.ndarray:
    """Gaussian-weighted mean of the known pixels, std ``scale`` x depth in the hole (log-interpolated ladder)."""
    import cv2

    known = (mask < 0.5).astype(np.float32)
    depth = cv2.distanceTransform((mask > 0.5).astype(np.uint8), cv2.DIST_L2, 5)
    sigmas = [1, 2, 4, 8, 16, 32, 64, 128]
    ests = np.stack(
        [
            cv2.GaussianBlur(img * known[..., None], (0, 0), s).reshape(img.shape)
            / np.maximum(cv2.GaussianBlur(known, (0, 0), s)[..., None], 1e-6)
            for s in sigmas
        ]
    )
    level = np.clip(np.log2(np.maximum(depth * scale, 1.0)), 0, len(sigmas) - 1)
    lo = np.floor(level).astype(int)
    hi, w = np.minimum(lo + 1, len(sigmas) - 1), (level - lo)[..., None]
    ii, jj = np.indices(mask.shape)
    out = (1 - w) * ests[lo, ii, jj] + w * ests[hi, ii, jj]
    return np.where(mask[..., None] > 0, out, img)


def dihedral_telea(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of Telea's fills of the 8 flipped/rotated copies (each mapped back)."""
    import torch

    chw, m_t = torch.from_numpy(img).permute(2, 0, 1), torch.from_numpy(mask)[None]
    acc = torch.zeros(chw.shape, dtype=torch.float64)
    for k in range(8):
        a = np.ascontiguousarray(dihedral(chw, k).permute(1, 2, 0).numpy())
        fill = TELEA(a, np.ascontiguousarray(dihedral(m_t, k)[0].numpy()))
        acc += dihedral(torch.from_numpy(np.ascontiguousarray(fill)).permute(2, 0, 1), k, inverse=True)
    return acc.permute(1, 2, 0).numpy() / 8


def methods() -> dict:
    def blur(fill, scale=0.8):
        return lambda img, m: smooth_by_depth(fill(img, m).astype(np.float32), m, scale)

    return {
        "telea": TELEA,
        "gmrf, L + L @ L (shipped)": lambda img, m: gmrf_fill(img, m, 1.0),
        "harmonic": lambda img, m: gmrf_fill(img, m, 0.0),
        "telea + blur 0.8 (stage 1 of the shipped model)": blur(TELEA),
        "telea r6 + blur 0.8": blur(baseline("opencv-telea", radius=6)),
        "telea r12 + blur 0.8": blur(baseline("opencv-telea", radius=12)),
        "normalised convolution 0.8": lambda img, m: normalised_convolution(img, m, 0.8),
        "blend shipped / normalised convolution": lambda img, m: (
            0.5 * blur(TELEA)(img, m) + 0.5 * normalised_convolution(img, m, 0.8)
        ),
        "mean(telea, ns) + blur 0.8": blur(lambda img, m: (TELEA(img, m) + NS(img, m)) / 2),
        "dihedral telea + blur 0.8": blur(dihedral_telea),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default=str(DEFAULT_DIR))
    p.add_argument("--limit", type=int, default=24)
    p.add_argument("--masks", nargs="+", default=["mixed", "boxes", "strokes"])
    args = p.parse_args()
    files = list_images(args.images)[: args.limit]
    fns = methods()
    scores: dict[str, dict[str, list[float]]] = {name: {k: [] for k in args.masks} for name in fns}
    for kind in args.masks:
        for i, f in enumerate(tqdm(files, desc=kind, file=sys.stderr)):
            img = read_image(f, channels=3).astype(np.float32)
            rng = np.random.default_rng(50_000 + i)
            mask = random_mask(img.shape[0], img.shape[1], rng.uniform(0.1, 0.4), kind, rng)
            masked = img * (1 - mask[..., None].astype(np.float32))
            for name, fn in fns.items():
                out = np.clip(np.asarray(fn(masked, mask), np.float64), 0, 1).reshape(img.shape)
                scores[name][kind].append(psnr(img, out, mask=mask))
    results = {n: {k: round(float(np.mean(v)), 3) for k, v in d.items()} for n, d in scores.items()}
    print_report(
        "inpaint_prefill",
        results,
        metric="PSNR on the missing pixels (dB)",
        images=f"{args.images} (first {len(files)})",
        masks="random_mask, coverage uniform [0.1, 0.4], seed 50000 + image index",
    )


if __name__ == "__main__":
    main()
