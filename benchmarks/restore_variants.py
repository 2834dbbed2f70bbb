"""Plain CNN vs conv-recurrent vs CNN + attention denoisers at (about) equal parameter count, side by side.

Each variant is trained from scratch with the same recipe (Train400, sigma 25, 40 px patches, batch 16, Adam with a
cosine schedule, ``--steps`` steps, seed 0) and scored on the first ``--limit`` BSD68 images by the benchmark
protocol (``clean + default_rng(i).standard_normal * 25/255``). Prints one JSON object: parameters, training seconds
per step, inference seconds per image, PSNR/SSIM, and the validation curve (PSNR on 4 held-out Train400 crops at
``--evals`` evenly spaced steps), which shows whether a variant was still improving when training stopped.

    python benchmarks/restore_variants.py --steps 300 --limit 20

Variants (about 0.5 M parameters each):
- ``plain``: DnCNN, 17 conv layers of 60 channels with BatchNorm (residual learning);
- ``unet``: U-Net with residual blocks, widths 24/48/96;
- ``unet-attention``: the same U-Net plus a 4-head self-attention block at the bottleneck (CNN + attention);
- ``convlstm``: recurrent refinement, a CNN encoder and a ConvLSTM (64 channels) iterated 4 times at half resolution.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import print_report
from denoise import DATA, run_method  # the denoising benchmark's protocol loop (noise, PSNR, SSIM, timing)

import convgen
from convgen.config import build_config
from convgen.engine.trainer import Trainer
from convgen.io.images import list_images, read_image

VARIANTS = {
    "plain": {"type": "dncnn", "depth": 17, "width": 60},
    "unet": {"type": "unet-restore", "widths": [24, 48, 96]},
    "unet-attention": {"type": "unet-restore", "widths": [24, 48, 96], "attention": True},
    "convlstm": {"type": "convlstm-restore", "width": 64, "encoder_depth": 4, "steps": 4},
}


def config(model: dict, steps: int, root: Path, evals: int = 1) -> dict:
    return {
        "name": f"variant-{model['type']}",
        "seed": 0,
        "task": {"type": "restoration", "degradation": {"kind": "noise", "sigma": 25}, "loss": "l2"},
        "model": {**model, "channels": 1},
        "data": {
            "type": "image-patches",
            "root": str(root),
            "patch_size": 40,
            "stride": 20,
            "val_count": 4,
            "val_crop": 96,
        },
        "train": {
            "epochs": 1000,
            "max_steps": steps,
            "batch_size": 16,
            "lr": 0.001,
            "optimizer": "adam",
            "scheduler": "cosine",
            "warmup_fraction": 0.02,
            "log_every": max(1, steps // 10),
            "eval_every": max(1, steps // evals),
            "ckpt_every": steps,
            "progress": False,
        },
    }


def val_curve(metrics: Path) -> dict[int, float]:
    """Step -> validation PSNR from a run's metrics log."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return {r["step"]: round(r["val/psnr"], 3) for r in rows if "val/psnr" in r}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--limit", type=int, default=20, help="first N BSD68 images")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--evals", type=int, default=5, help="validation points along training (the curve)")
    p.add_argument("--keep", metavar="DIR", help="keep the trained runs in DIR/<variant> (default: a temporary folder)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    files = list_images(DATA / "bsd68")[: args.limit]
    clean = [read_image(f, channels=1).astype(np.float64) for f in files]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants:
            cfg = build_config(config(VARIANTS[name], args.steps, DATA / "train400", args.evals))
            run = Path(args.keep or tmp) / name
            t0 = time.perf_counter()
            Trainer(cfg, run).fit()
            train_s = time.perf_counter() - t0
            pipe = convgen.load(run, device="cpu")
            results[name] = {
                "model": VARIANTS[name],
                "parameters": sum(q.numel() for q in pipe.net.parameters()),
                **run_method(lambda x, pipe=pipe: pipe.restore(x, sigma=25), clean, 25, name),
                "train_seconds_per_step": round(train_s / args.steps, 3),
                "val_curve": val_curve(run / "metrics.jsonl"),
            }
            print(json.dumps({name: results[name]}), file=sys.stderr)
    print_report(
        "restore_variants",
        results,
        threads=args.threads,
        protocol=f"Train400 sigma 25, {args.steps} steps x 16 patches of 40 px; first {len(files)} "
        "BSD68 images, sigma 25, default_rng(index), unclipped; PSNR data_range 1",
    )


if __name__ == "__main__":
    main()
