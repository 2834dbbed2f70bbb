"""Denoising benchmark: convgen models vs classical denoisers, side by side, by the DnCNN protocol.

For every image of each test set (sorted by file name, index i): ``noisy = clean + default_rng(i).standard_normal
* sigma / 255`` (not clipped, not quantised). Every method sees the same noisy image. PSNR (data_range 1, no border
crop) and SSIM (scikit-image) are averaged over images; seconds are wall-clock per image on this machine.

Classical baselines: scikit-image NL-means (fast mode, h = 0.8 sigma), TV (Chambolle), wavelet (BayesShrink),
OpenCV NL-means (on the clipped, 8-bit-quantised noisy image, which is all it accepts), BM3D (the ``bm3d``
package). TV's weight and OpenCV's ``h`` are chosen per sigma on 4 Train400 images (never on the test sets).

    python benchmarks/denoise.py --model denoise-gray-s25 --sets bsd68 set12 --sigmas 25
    python benchmarks/denoise.py --model s25=denoise-gray-s25 --model blind=denoise-gray-blind --baselines all
    python benchmarks/denoise.py --color --model denoise-color-blind --sets ../shared/data/bsds500/test --limit 40 \
        --sigmas 25 --baselines bm3d nlm-opencv

With ``--color`` images are read as RGB and the baselines are their colour versions: CBM3D (``bm3d.bm3d_rgb``, in
the opponent colour space), OpenCV ``fastNlMeansDenoisingColored``, scikit-image NL-means / TV / wavelet (YCbCr)
over all channels; parameters are tuned on 4 BSDS500 train photos. A set is a name under ../shared/data/denoise or
a folder path.
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

from convgen.data.degradations.noise import gaussian_noise
from convgen.io.images import list_images, read_image
from convgen.metrics.reference import psnr

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "denoise"
BASELINES = ("bm3d", "nlm-skimage", "nlm-opencv", "tv", "wavelet")


def classical(name: str, sigma: float, param: float | None = None):
    """A function noisy (H x W x C float, C = 1 or 3) -> restored for a classical method."""
    s = sigma / 255.0
    if name == "bm3d":
        import bm3d

        return lambda x: bm3d.bm3d(x[..., 0], sigma_psd=s)[..., None] if x.shape[-1] == 1 else bm3d.bm3d_rgb(x, s)
    if name == "nlm-skimage":
        from skimage.restoration import denoise_nl_means

        return lambda x: denoise_nl_means(
            x, h=0.8 * s, sigma=s, fast_mode=True, patch_size=5, patch_distance=6, channel_axis=-1
        )
    if name == "tv":
        from skimage.restoration import denoise_tv_chambolle

        return lambda x: denoise_tv_chambolle(x, weight=param * s, channel_axis=-1)
    if name == "wavelet":
        from skimage.restoration import denoise_wavelet

        return lambda x: denoise_wavelet(
            x,
            sigma=s,
            mode="soft",
            method="BayesShrink",
            rescale_sigma=True,
            channel_axis=-1,
            convert2ycbcr=x.shape[-1] == 3,
        )
    if name == "nlm-opencv":
        import cv2

        def run(x: np.ndarray) -> np.ndarray:
            u8 = (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)
            h = param * sigma
            if x.shape[-1] == 1:
                return (
                    cv2.fastNlMeansDenoising(u8[..., 0], None, h=h, templateWindowSize=7, searchWindowSize=21) / 255.0
                )[..., None]
            bgr = np.ascontiguousarray(u8[..., ::-1])
            out = cv2.fastNlMeansDenoisingColored(bgr, None, h, h, 7, 21)
            return out[..., ::-1] / 255.0

        return run
    raise ValueError(name)


def tune(name: str, sigma: float, channels: int = 1) -> float | None:
    """The baseline's free parameter, chosen on 4 training images (Train400, or BSDS500 train for colour)."""
    grid = {"tv": [0.5, 0.75, 1.0, 1.5, 2.0], "nlm-opencv": [0.6, 0.8, 1.0, 1.2]}.get(name)
    if grid is None:
        return None
    folder = DATA / "train400" if channels == 1 else DATA.parent / "bsds500" / "train"
    files = list_images(folder)[:4]
    clean = [read_image(f, channels=channels) for f in files]
    noisy = [gaussian_noise(c, sigma, 1000 + i).astype(np.float32) for i, c in enumerate(clean)]
    scores = {
        p: np.mean([psnr(c, classical(name, sigma, p)(n)) for c, n in zip(clean, noisy, strict=True)]) for p in grid
    }
    return max(scores, key=scores.get)


def run_method(fn, clean: list[np.ndarray], sigma: float, label: str) -> dict:
    psnrs, ssims, secs = [], [], []
    for i, c in enumerate(tqdm(clean, desc=label, file=sys.stderr, leave=False)):
        noisy = gaussian_noise(c, sigma, i).astype(np.float32)
        t = time.perf_counter()
        out = np.clip(np.asarray(fn(noisy), dtype=np.float64), 0, 1)
        secs.append(time.perf_counter() - t)
        psnrs.append(psnr(c, out))
        ssims.append(ssim(c, out))
    return {
        "psnr": round(float(np.mean(psnrs)), 3),
        "ssim": round(float(np.mean(ssims)), 4),
        "seconds_per_image": round(float(np.mean(secs)), 3),
        "n_images": len(clean),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=[], help="NAME or LABEL=NAME_OR_PATH (repeatable)")
    p.add_argument("--sets", nargs="+", default=["bsd68", "set12"])
    p.add_argument("--sigmas", nargs="+", type=float, default=[15, 25, 50])
    p.add_argument("--baselines", nargs="*", default=["all"], help=f"any of {', '.join(BASELINES)}, all, or none")
    p.add_argument("--bm3d-sets", nargs="*", default=None, help="limit BM3D (slow) to these sets")
    p.add_argument("--limit", type=int, help="first N images of each set")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--color", action="store_true", help="RGB test images and colour baselines")
    p.add_argument(
        "--ensemble", type=int, choices=[1, 2, 4, 8], help="flips/rotations averaged (default: each model's own)"
    )
    args = p.parse_args()
    channels = 3 if args.color else 1

    import torch

    torch.set_num_threads(args.threads)
    baselines = list(BASELINES) if args.baselines == ["all"] else [b for b in args.baselines if b != "none"]
    models = load_models(args.model)
    results: dict = {}
    for set_name in args.sets:
        folder = DATA / set_name if (DATA / set_name).is_dir() else Path(set_name)
        files = list_images(folder)[: args.limit]
        clean = [read_image(f, channels=channels).astype(np.float64) for f in files]
        for sigma in args.sigmas:
            key = f"{set_name}/sigma{sigma:g}"
            results[key] = {}
            for label, pipe in models.items():
                ens = args.ensemble or pipe.default_ensemble
                fn = lambda x, pipe=pipe, sigma=sigma, ens=ens: pipe.restore(  # noqa: E731
                    x.astype(np.float32), sigma=sigma, ensemble=ens
                )
                results[key][label] = {**run_method(fn, clean, sigma, f"{key} {label}"), "ensemble": ens}
            for b in baselines:
                if b == "bm3d" and args.bm3d_sets is not None and set_name not in args.bm3d_sets:
                    continue
                param = tune(b, sigma, channels)
                results[key][b] = run_method(classical(b, sigma, param), clean, sigma, f"{key} {b}")
                if param is not None:
                    results[key][b]["tuned_parameter"] = param
            print(json.dumps({key: results[key]}), file=sys.stderr)
    print_report(
        "denoise",
        results,
        args.threads,
        protocol="AWGN sigma/255, numpy default_rng(index), unclipped; PSNR data_range 1, no crop",
    )


if __name__ == "__main__":
    main()
