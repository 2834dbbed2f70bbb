"""Rate-distortion of the learned codec against Pillow JPEG, WebP (and AVIF where Pillow has it).

For every image of each set and every rate point: the real file (ours: the ``.cvgc`` bytes, header included;
the others: the bytes Pillow writes), bpp = 8 x bytes / pixels, PSNR (data range 1, over all channels) and
MS-SSIM of the decoded image; the curves are the averages over the images at each rate point (CompressAI's
protocol). BD-rate (%, negative = fewer bits) and BD-PSNR (dB) against JPEG and WebP (Bjøntegaard, cubic fits
over the overlapping range), JPEG's and WebP's PSNR interpolated at our default quality's rate, encode and decode
seconds per image, the time for one 768 x 512 photo, and a PNG of the curves. Prints one JSON object.

    python benchmarks/codec.py --model codec --plot docs/codec_rd.png
    python benchmarks/codec.py --sets set12 --limit 4          # a quick look
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
from _common import print_report
from PIL import Image, features

import convgen
from convgen.io.images import read_image
from convgen.metrics.reference import ms_ssim, psnr

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {"set12": (SHARED / "denoise" / "set12", 1), "bsd68": (SHARED / "denoise" / "bsd68", 1),
        "bsds500-test": (SHARED / "bsds500" / "test", 3)}  # fmt: skip
JPEG_Q = [1, 2, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95]
WEBP_Q = [0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90]
AVIF_Q = [5, 10, 20, 30, 40, 50, 60, 70, 80]


def pillow_codec(fmt: str):
    def run(image: np.ndarray, quality: int) -> tuple[int, np.ndarray, float, float]:
        pixels = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
        pil = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        buf = io.BytesIO()
        t = time.perf_counter()
        pil.save(buf, format=fmt, quality=quality)
        enc = time.perf_counter() - t
        t = time.perf_counter()
        decoded = Image.open(io.BytesIO(buf.getvalue()))
        decoded.load()
        dec = time.perf_counter() - t
        arr = np.asarray(decoded.convert("L" if pixels.shape[-1] == 1 else "RGB"), dtype=np.float32) / 255
        return len(buf.getvalue()), arr.reshape(image.shape), enc, dec

    return run


def ours(pipe):
    def run(image: np.ndarray, quality: int) -> tuple[int, np.ndarray, float, float]:
        t = time.perf_counter()
        data = pipe.compress_array(image, quality)
        enc = time.perf_counter() - t
        t = time.perf_counter()
        out = pipe.decompress_bytes(data)
        dec = time.perf_counter() - t
        return len(data), (np.round(out * 255) / 255).astype(np.float32), enc, dec  # as the PNG it writes

    return run


def curve(run, qualities: list[int], images: list[np.ndarray]) -> list[dict]:
    points = []
    for q in qualities:
        rows = []
        for img in images:
            size, out, enc, dec = run(img, q)
            rows.append((8 * size / (img.shape[0] * img.shape[1]), psnr(img, out), ms_ssim(img, out), enc, dec))
        m = np.mean(rows, axis=0)
        points.append({"quality": q, "bpp": m[0], "psnr": m[1], "ms_ssim": m[2], "encode_s": m[3], "decode_s": m[4]})
    return points


def bd(anchor: list[dict], test: list[dict]) -> dict:
    """Bjøntegaard delta rate (%) and PSNR (dB) of ``test`` against ``anchor`` (cubic fits in log rate)."""
    r1, p1 = np.log([p["bpp"] for p in anchor]), np.array([p["psnr"] for p in anchor])
    r2, p2 = np.log([p["bpp"] for p in test]), np.array([p["psnr"] for p in test])
    lo, hi = max(r1.min(), r2.min()), min(r1.max(), r2.max())
    if hi <= lo:
        return {"bd_rate_percent": None, "bd_psnr_db": None}
    i1, i2 = np.polyint(np.polyfit(r1, p1, 3)), np.polyint(np.polyfit(r2, p2, 3))
    bd_psnr = (np.polyval(i2, hi) - np.polyval(i2, lo) - np.polyval(i1, hi) + np.polyval(i1, lo)) / (hi - lo)
    plo, phi = max(p1.min(), p2.min()), min(p1.max(), p2.max())
    if phi <= plo:
        return {"bd_rate_percent": None, "bd_psnr_db": float(bd_psnr)}
    j1, j2 = np.polyint(np.polyfit(p1, r1, 3)), np.polyint(np.polyfit(p2, r2, 3))
    avg = (np.polyval(j2, phi) - np.polyval(j2, plo) - np.polyval(j1, phi) + np.polyval(j1, plo)) / (phi - plo)
    return {"bd_rate_percent": float((np.exp(avg) - 1) * 100), "bd_psnr_db": float(bd_psnr)}


def at_rate(points: list[dict], bpp: float) -> float | None:
    """PSNR of a curve at ``bpp`` (linear in log rate between its points; None outside them)."""
    rates = np.log([p["bpp"] for p in points])
    order = np.argsort(rates)
    if not rates.min() <= np.log(bpp) <= rates.max():
        return None
    return float(np.interp(np.log(bpp), rates[order], np.array([p["psnr"] for p in points])[order]))


def timing_768x512(pipe, quality: int) -> dict:
    """Encode / decode seconds of one 768 x 512 photo (a BSDS500 test photo resized), best of 3."""
    src = sorted(SETS["bsds500-test"][0].iterdir())[0]
    img = np.asarray(Image.open(src).convert("RGB").resize((768, 512), Image.BICUBIC), dtype=np.float32) / 255
    enc, dec = [], []
    for _ in range(3):
        t = time.perf_counter()
        data = pipe.compress_array(img, quality)
        enc.append(time.perf_counter() - t)
        t = time.perf_counter()
        pipe.decompress_bytes(data)
        dec.append(time.perf_counter() - t)
    return {"encode_s": min(enc), "decode_s": min(dec), "bpp": 8 * len(data) / (768 * 512)}


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items(), strict=True):
        for label, points in res["curves"].items():
            points = [p for p in points if p["bpp"] <= 1.5]
            ax.plot([p["bpp"] for p in points], [p["psnr"] for p in points], "o-", ms=3, label=label)
        ax.set(title=f"{name} ({res['images']} images)", xlabel="bits per pixel (file size)", ylabel="PSNR (dB)",
               xlim=(0, 1.5))  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="codec")
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    p.add_argument("--limit", type=int, help="first N images of each set")
    p.add_argument("--plot", help="write the rate-distortion curves here (PNG)")
    args = p.parse_args()
    pipe = convgen.load(args.model, device="cpu")
    codecs = {"ours": (ours(pipe), list(range(1, pipe.qualities + 1))), "jpeg": (pillow_codec("JPEG"), JPEG_Q),
              "webp": (pillow_codec("WEBP"), WEBP_Q)}  # fmt: skip
    if features.check("avif"):
        codecs["avif"] = (pillow_codec("AVIF"), AVIF_Q)
    results = {}
    for name in args.sets:
        folder, channels = SETS[name]
        files = sorted(folder.iterdir())[: args.limit]
        images = [read_image(f, channels) for f in files]
        curves = {label: curve(run, qs, images) for label, (run, qs) in codecs.items()}
        default = curves["ours"][pipe.default_quality - 1]
        results[name] = {
            "images": len(images),
            "channels": channels,
            "curves": curves,
            "bd_vs_jpeg": bd(curves["jpeg"], curves["ours"]),
            "bd_vs_webp": bd(curves["webp"], curves["ours"]),
            "default_quality": {"quality": pipe.default_quality, "bpp": default["bpp"], "psnr": default["psnr"],
                                "jpeg_psnr_at_that_rate": at_rate(curves["jpeg"], default["bpp"]),
                                "webp_psnr_at_that_rate": at_rate(curves["webp"], default["bpp"])},  # fmt: skip
        }
    if args.plot:
        plot(results, args.plot)
    timing = timing_768x512(pipe, pipe.default_quality)
    print_report("codec", results, model=args.model, avif=features.check("avif"), timing_768x512=timing)


if __name__ == "__main__":
    main()
