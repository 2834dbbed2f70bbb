"""Real camera noise: the zoo's colour denoisers and CBM3D on real noisy photos with ground truth.

Default set: ``../shared/data/realnoise/cc15`` (15 crops of 512 x 512 from Canon 5D Mark III and Nikon D600/D800
shots at ISO 1600-6400; ``noisy/X.png`` one shot, ``clean/X.png`` the mean of about 500; research licence, not
bundled). Every method sees the same 8-bit noisy PNG. Methods: the noisy input itself; CBM3D (``bm3d.bm3d_rgb``) at
the noise level the wavelet median-absolute-deviation estimator reads from the photo (what a user without a noise
model would give it; scikit-image's ``estimate_sigma``, equal to ``convgen.classical.noise.estimate_sigma``); and
every colour zoo denoiser at its defaults (``convgen restore denoise MODEL`` with no options). PSNR (data range 1)
and SSIM (scikit-image default window) per photo and on average, the number of photos a method made worse than
they came in, and seconds per photo on this machine.

    python benchmarks/denoise_real.py
    python benchmarks/denoise_real.py --model denoise-real --model run=../runs/denoise-real --no-cbm3d
    python benchmarks/denoise_real.py --set DIR      # any folder with noisy/ and clean/ of the same file names
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _common import load_models, print_report, ssim
from tqdm import tqdm

from convgen.classical.noise import estimate_sigma
from convgen.io.images import list_images, read_image
from convgen.metrics.reference import psnr

REPO = Path(__file__).resolve().parents[1]
CC15 = REPO.parent / "shared" / "data" / "realnoise" / "cc15"
COLOUR_DENOISERS = ("denoise-color-blind", "denoise-real")


def cbm3d(noisy: np.ndarray) -> np.ndarray:
    import bm3d

    return np.asarray(bm3d.bm3d_rgb(noisy, max(estimate_sigma(noisy), 0.5 / 255)), np.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", type=Path, default=CC15, help="folder with noisy/ and clean/ (same file names)")
    p.add_argument("--model", action="append", help="zoo name or LABEL=PATH (default: every colour zoo denoiser)")
    p.add_argument("--no-cbm3d", action="store_true")
    p.add_argument("--limit", type=int)
    args = p.parse_args()
    from convgen import zoo

    files = list_images(args.set / "noisy")[: args.limit]
    methods = {"noisy input": lambda x: x}
    if not args.no_cbm3d:
        methods["cbm3d (wavelet-MAD sigma)"] = cbm3d
    for label, pipe in load_models(args.model or [m for m in COLOUR_DENOISERS if m in zoo.names()]).items():
        methods[label] = pipe.restore
    rows: dict = {m: {"per_image": {}} for m in methods}
    with tqdm(total=len(files) * len(methods), desc="denoise-real", file=sys.stderr) as bar:
        for f in files:
            noisy, clean = read_image(f), read_image(args.set / "clean" / f.name)
            base = psnr(clean, noisy)
            for name, fn in methods.items():
                t0 = time.perf_counter()
                out = np.clip(fn(noisy), 0, 1)
                seconds = time.perf_counter() - t0
                value = psnr(clean, out)
                rows[name]["per_image"][f.name] = {
                    "psnr": round(value, 3),
                    "ssim": round(ssim(clean, out), 4),
                    "gain": round(value - base, 3),
                    "seconds": round(seconds, 3),
                }
                bar.update(1)
    for row in rows.values():
        per = list(row["per_image"].values())
        row.update(psnr=round(float(np.mean([r["psnr"] for r in per])), 3),
                   ssim=round(float(np.mean([r["ssim"] for r in per])), 4),
                   gain=round(float(np.mean([r["gain"] for r in per])), 3),
                   worse_than_input=int(sum(r["gain"] < 0 for r in per)),
                   seconds_per_image=round(float(np.mean([r["seconds"] for r in per])), 3))  # fmt: skip
    print_report("denoise_real", rows, images=len(files), set=str(args.set),
                 protocol="8-bit noisy PNG in; PSNR data_range 1, no border crop, mean over photos; SSIM scikit-image "
                 "default (7x7 uniform window, channel_axis=-1); gain = PSNR minus the noisy input's")  # fmt: skip


if __name__ == "__main__":
    main()
