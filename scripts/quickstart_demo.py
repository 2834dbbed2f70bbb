"""The Quickstart's restoration picture: ``noisy DIR`` writes DIR/noisy.png (the bundled painting detail with
Gaussian noise, sigma 25 on the 0-255 scale, seed 0); ``compare DIR`` writes DIR/before-after.png (noisy | restored |
original) and prints the PSNR of both against the original."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import numpy as np

from convgen.io.images import read_image, write_image


def main() -> None:
    what, out = sys.argv[1], Path(sys.argv[2])
    clean = read_image(Path(str(resources.files("convgen") / "assets" / "demo" / "shipwreck-detail.png")))
    if what == "noisy":
        rng = np.random.default_rng(0)
        write_image(out / "noisy.png", np.clip(clean + rng.normal(0, 25 / 255, clean.shape), 0, 1))
        return
    noisy, restored = read_image(out / "noisy.png"), read_image(out / "restored.png")

    def psnr(x: np.ndarray) -> float:
        return float(10 * np.log10(1 / np.mean((x - clean) ** 2)))

    gap = np.ones((clean.shape[0], 6, 3), np.float32)
    write_image(out / "before-after.png", np.concatenate([noisy, gap, restored, gap, clean], axis=1))
    print(f"denoise-color-blind: PSNR {psnr(noisy):.2f} dB (noisy) -> {psnr(restored):.2f} dB (restored)")


if __name__ == "__main__":
    main()
