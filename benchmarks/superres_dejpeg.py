"""Super-resolution and JPEG artifact removal benchmark: convgen models vs the classical answers, side by side.

``--task superres``: each clean image is cropped to a multiple of the scale, down-sampled by antialiased bicubic
interpolation (``convgen.data.degradations.superres.bicubic_downscale``, the degradation the models train on) and
quantised to 8 bits, as a saved low-resolution PNG would be. Baselines: bicubic and Lanczos (OpenCV) up-sampling.
``--task dejpeg``: each clean image is encoded and decoded by OpenCV's JPEG codec at every ``--qualities`` value
(``convgen.data.degradations.jpeg.jpeg``; 4:2:0 chroma for colour). Baseline: the decoded JPEG itself.

Reported per method: PSNR (data range 1, no border crop, all channels: the restoration protocol of
../shared/BENCHMARKS.md), SSIM (scikit-image), and for super-resolution also PSNR on the luminance Y (ITU-R BT.601,
as MATLAB's rgb2ycbcr) with ``scale`` pixels cropped at each border, the convention of SR papers; plus seconds per
image. Default test images: the first ``--limit`` BSDS500 *test* photos (never trained on); ``--images bsd68`` or
``set12`` runs the gray sets.

    python benchmarks/superres_dejpeg.py --task superres --model superres-x2 --limit 20
    python benchmarks/superres_dejpeg.py --task dejpeg --model dejpeg --limit 20 --qualities 10 20 30 40
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _common import load_models, print_report, ssim
from tqdm import tqdm

from convgen.data.degradations.jpeg import jpeg
from convgen.data.degradations.superres import shrink_8bit
from convgen.io.images import list_images, read_image
from convgen.metrics.reference import psnr

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def luminance(img: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an H x W x C image in [0, 1], on MATLAB rgb2ycbcr's [16, 235] / 255 scale."""
    if img.shape[-1] == 1:
        return img[..., 0]
    return (16.0 + img @ np.array([65.481, 128.553, 24.966])) / 255.0


def upscale(name: str, scale: int):
    """A classical up-sampler: bicubic (PyTorch, as the models' own input) or Lanczos-4 (OpenCV)."""

    def bicubic(low: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(low, np.float32)).permute(2, 0, 1)[None]
        return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)[0].permute(1, 2, 0).numpy()

    def lanczos(low: np.ndarray) -> np.ndarray:
        import cv2

        h, w = low.shape[:2]
        out = cv2.resize(low.astype(np.float32), (w * scale, h * scale), interpolation=cv2.INTER_LANCZOS4)
        return out.reshape(h * scale, w * scale, low.shape[-1])

    return {"bicubic": bicubic, "lanczos": lanczos}[name]


def score(clean: list[np.ndarray], inputs: list[np.ndarray], fn, label: str, crop: int | None) -> dict:
    psnrs, ssims, ys, secs = [], [], [], []
    for c, x in zip(tqdm(clean, desc=label, file=sys.stderr, leave=False), inputs, strict=True):
        t = time.perf_counter()
        out = np.clip(np.asarray(fn(x.astype(np.float32)), np.float64), 0, 1).reshape(c.shape)
        secs.append(time.perf_counter() - t)
        psnrs.append(psnr(c, out))
        ssims.append(ssim(c, out))
        if crop is not None:
            sl = (slice(crop, -crop), slice(crop, -crop))
            ys.append(psnr(luminance(c)[sl], luminance(out)[sl]))
    row = {"psnr": round(float(np.mean(psnrs)), 3), "ssim": round(float(np.mean(ssims)), 4)}
    if crop is not None:
        row["psnr_y_crop"] = round(float(np.mean(ys)), 3)
    return {**row, "seconds_per_image": round(float(np.mean(secs)), 3), "n_images": len(clean)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=["superres", "dejpeg"])
    p.add_argument("--model", action="append", default=[], help="NAME or LABEL=NAME_OR_PATH (repeatable)")
    p.add_argument("--images", default="bsds500/test", help="a folder, or bsds500/test, bsd68, set12")
    p.add_argument("--limit", type=int, help="first N images")
    p.add_argument("--scale", type=int, default=2, help="super-resolution factor")
    p.add_argument("--qualities", nargs="+", type=int, default=[10, 20, 30, 40], help="JPEG qualities")
    p.add_argument("--gray", action="store_true", help="convert colour photos to gray first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ensemble", type=int, choices=[1, 2, 4, 8], help="flips/rotations averaged (default: model's)")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    folder = next((d for d in (DATA / args.images, DATA / "denoise" / args.images) if d.is_dir()), Path(args.images))
    files = list_images(folder)[: args.limit]
    clean = [read_image(f, channels=None).astype(np.float64) for f in files]
    if args.gray:
        clean = [c.mean(-1, keepdims=True) for c in clean]
    models = load_models(args.model)

    def model_fn(pipe):
        return lambda x: pipe.restore(x, ensemble=args.ensemble)

    results: dict = {}
    if args.task == "superres":
        s = args.scale
        clean = [c[: c.shape[0] // s * s, : c.shape[1] // s * s] for c in clean]
        inputs = [shrink_8bit(c, s) for c in clean]
        methods = {label: model_fn(pipe) for label, pipe in models.items()}
        methods.update({b: upscale(b, s) for b in ("bicubic", "lanczos")})
        results[f"x{s}"] = {k: score(clean, inputs, fn, f"x{s} {k}", crop=s) for k, fn in methods.items()}
    else:
        for q in args.qualities:
            inputs = [jpeg(c, q).astype(np.float64) for c in clean]
            methods = {label: model_fn(pipe) for label, pipe in models.items()}
            methods["jpeg"] = lambda x: x
            results[f"q{q}"] = {k: score(clean, inputs, fn, f"q{q} {k}", crop=None) for k, fn in methods.items()}
            print(json.dumps({f"q{q}": results[f"q{q}"]}), file=sys.stderr)
    print_report(
        args.task,
        results,
        args.threads,
        images=f"{folder} (first {len(files)})" + (", converted to gray" if args.gray else ""),
        protocol=(
            f"antialiased bicubic x{args.scale} down-sampling, 8-bit; PSNR all channels, no crop; "
            f"psnr_y_crop: BT.601 Y, {args.scale} px border cropped"
            if args.task == "superres"
            else "OpenCV JPEG encode/decode (4:2:0 chroma for colour); PSNR all channels, no crop"
        ),
    )


if __name__ == "__main__":
    main()
