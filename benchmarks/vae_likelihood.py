"""Bits per dimension of 8-bit colour images: VAEs' importance-weighted bound beside lossless image coders.

For every image of ``--input`` (sorted, the first ``--limit``): each ``--model``'s IWAE bound and negative ELBO
(``convgen eval likelihood --binarize none --samples K``, the same code path), and the file size the classical
lossless coders need for the same pixels -- PNG (zlib, ``optimize``) and WebP lossless (``method 6``, the
strongest setting), header bytes included, as bits per pixel value. A VAE's bound is a code length too (bits-back
coding reaches it up to a small overhead), so the coders are the baseline a user would otherwise pick to store the
pictures. Prints one JSON object.

    python benchmarks/vae_likelihood.py --model cifar10-vae --input HELD_OUT_DIR --limit 1000 --samples 64

Without ``--input``: the 2,000 validation images the CIFAR-10 presets hold out from ``../shared/data/cifar10``
(split_seed 0), exported once to a temporary folder.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import print_report
from PIL import Image

import convgen
from convgen.io.images import read_image, resolve_inputs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "train"


def held_out_cifar(out: Path) -> Path:
    """The presets' 2,000 validation images of the CIFAR-10 training split as PNG files in ``out``."""
    from convgen.cli.main import main as cli

    code = cli(["data", "export", "--split", "val", "--out", str(out), "data.type=image-folder", f"data.root={DATA}",
                "data.val_count=2000", "data.split_seed=0"])  # fmt: skip
    if code:
        raise SystemExit(f"could not export the held-out images from {DATA}")
    return out


def coder_bits(files: list[Path]) -> dict[str, float]:
    """Bits per pixel value of PNG and lossless WebP files of the images, headers included."""
    sizes = {"png": 0, "webp_lossless": 0}
    dims = 0
    for f in files:
        im = Image.fromarray(np.round(read_image(f) * 255).astype(np.uint8).squeeze())
        dims += im.width * im.height * len(im.getbands())
        for name, kw in (
            ("png", {"format": "PNG", "optimize": True}),
            ("webp_lossless", {"format": "WEBP", "lossless": True, "quality": 100, "method": 6}),
        ):
            buf = io.BytesIO()
            im.save(buf, **kw)
            sizes[name] += 8 * len(buf.getvalue())
    return {name: bits / dims for name, bits in sizes.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", default=[], metavar="[LABEL=]MODEL", help="a VAE (zoo name or folder)")
    p.add_argument("--input", help="a folder of 8-bit images (default: the CIFAR-10 presets' held-out images)")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--samples", type=int, default=64, help="importance samples per image (k)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.input) if args.input else held_out_cifar(Path(tmp) / "held-out")
        files = resolve_inputs(folder)[: args.limit]
        subset = Path(tmp) / "subset"
        subset.mkdir()
        for f in files:
            (subset / f.name).symlink_to(f.resolve())
        results = {"coders": coder_bits(files)}
        for spec in args.model:
            label, _, name = spec.partition("=") if "=" in spec else (spec, "", spec)
            pipe = convgen.load(name or label, device="cpu")
            t = time.perf_counter()
            r = pipe.likelihood_files(subset, k=args.samples, binarization="none", seed=args.seed)
            seconds = time.perf_counter() - t
            results[label] = {
                "bits_per_dim_iwae": r["bits_per_dim"],
                "bits_per_dim_elbo": r["bits_per_dim_elbo"],
                "seconds_per_image": seconds / len(files),
                "k": args.samples,
            }
    print_report(
        "vae_likelihood",
        results,
        threads=torch.get_num_threads(),
        images=f"{len(files)} images of {args.input or 'the CIFAR-10 presets held-out split (JPEG q75 copy)'}",
        protocol="IWAE bound (k samples) and negative ELBO of 8-bit values in bits/dim; PNG optimize and WebP "
        "lossless method 6 file sizes, headers included, in bits per pixel value",
    )


if __name__ == "__main__":
    main()
