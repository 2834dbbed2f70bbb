"""The camera degradation's noise against real camera noise: level, neighbour and cross-channel correlation, and
how the level depends on brightness.

Real: the 15 pairs of ``../shared/data/realnoise/cc15`` (noisy shot minus the mean of ~500 shots). Synthetic: the
``camera`` degradation (JPEG off, no clean images; ``--mosaic`` its demosaicking probability) on 128 x 128 crops of
BSDS500 train photos, noise = its output minus the same photo through the noise-free camera. For comparison the
white Gaussian noise the zoo's other denoisers were trained on has no correlation at all.

    python benchmarks/camera_noise.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _common import print_report
from PIL import Image

from convgen.data.degradations import make_degradation

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def stats(noisy: np.ndarray, clean: np.ndarray) -> dict[str, float | list[float]]:
    d, v = (noisy - clean).astype(np.float64), clean.astype(np.float64)
    edges = np.linspace(0, 1, 6)
    curve = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        m = (v >= a) & (v < b)
        curve.append(float(d[m].std()) if m.sum() > 500 else float("nan"))
    curve = np.array(curve) / np.nanmedian(curve)
    return {
        "std_255": float(d.std() * 255),
        "neighbour_corr": float(np.corrcoef(d[:, :-1].ravel(), d[:, 1:].ravel())[0, 1]),
        "rg_corr": float(np.corrcoef(d[..., 0].ravel(), d[..., 1].ravel())[0, 1]),
        "std_by_brightness_fifth": [round(float(c), 3) for c in curve],
    }


def summary(rows: list[dict]) -> dict:
    out = {}
    for key in ("std_255", "neighbour_corr", "rg_corr"):
        values = np.array([r[key] for r in rows])
        out[key] = {"min": round(float(values.min()), 3), "median": round(float(np.median(values)), 3),
                    "max": round(float(values.max()), 3)}  # fmt: skip
    curves = np.array([r["std_by_brightness_fifth"] for r in rows], dtype=np.float64)
    out["std_by_brightness_fifth (median, / its median)"] = [round(float(c), 3) for c in np.nanmedian(curves, 0)]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=48, help="synthetic crops")
    p.add_argument("--mosaic", type=float, default=1.0)
    args = p.parse_args()
    real_dir = DATA / "realnoise" / "cc15"
    real = [stats(np.asarray(Image.open(f), np.float64) / 255,
                  np.asarray(Image.open(real_dir / "clean" / f.name), np.float64) / 255)
            for f in sorted((real_dir / "noisy").glob("*.png"))]  # fmt: skip
    deg = make_degradation({"kind": "camera", "jpeg_probability": 0.0, "clean_probability": 0.0,
                            "mosaic": args.mosaic})  # fmt: skip
    files = sorted((DATA / "bsds500" / "train").glob("*.jpg"))[: args.n]
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), np.float32)[:128, :128] / 255)
                     .permute(2, 0, 1) for f in files])  # fmt: skip
    noisy, target = deg.degrade(x, torch.Generator().manual_seed(0))
    syn = [stats(noisy[i].permute(1, 2, 0).numpy(), target[i].permute(1, 2, 0).numpy()) for i in range(len(files))]
    white = x[0].permute(1, 2, 0).numpy() + np.random.default_rng(0).standard_normal((128, 128, 3)) * 6 / 255
    print_report("camera_noise", {"real cc15": summary(real), "camera degradation": summary(syn),
                                  "white Gaussian, sigma 6": stats(white, x[0].permute(1, 2, 0).numpy())},
                 real_pairs=len(real), synthetic_crops=len(syn), mosaic=args.mosaic)  # fmt: skip


if __name__ == "__main__":
    main()
