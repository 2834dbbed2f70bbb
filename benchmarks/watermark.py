"""How well convgen's learned watermark survives what happens to pictures, beside invisible-watermark's DWT-DCT marks
(the ones Stable Diffusion XL ships), on the same photos.

For each photo (BSDS500 test by default: 200 photos of 481 x 321 that the watermark never saw), each method marks a
32-bit payload; every mark is then attacked (:data:`convgen.data.attacks.BENCHMARK`: JPEG 50/75, resize 0.5x/2x,
centre crops to 50%/25% of the area, blur, noise sigma 5, brightness +20%, contrast, saturation, resize 0.75x then
JPEG 75), saved as 8-bit pixels and read back. Per method and attack: the mean bit accuracy, and the detection rate
(convgen: p-value below 1e-4 *and* the right payload; invisible-watermark has no detection test, so: all 32 payload
bits right). Also: PSNR/SSIM of marked vs original, embed and detect seconds per megapixel, and false positives of
convgen's detector on unmarked pictures (the photos themselves plus random crops of them and of BSDS500 train
photos, at several sizes).

    pip install --no-deps invisible-watermark==0.2.0     # its declared deps pull opencv-python beside -headless
    python benchmarks/watermark.py                       # 200 photos, 4,000 unmarked crops (~15 min on 2 cores)
    python benchmarks/watermark.py --limit 20 --unmarked 200 --plot docs/watermark.png
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import print_report, ssim
from tqdm import tqdm

import convgen
from convgen.data.attacks import BENCHMARK, REQUIRED
from convgen.io.images import list_images, read_image
from convgen.metrics.reference import psnr
from convgen.pipelines.watermark import DEFAULT_PSNR, PAYLOAD_BITS, best_reading, default_payload, encode_payload

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def attacked(pixels: np.ndarray, name: str) -> np.ndarray:
    """uint8 H x W x 3 -> the attack ``name`` -> uint8 (saved as PNG would be)."""
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        y = BENCHMARK[name](x)
    return (y[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()


class Convgen:
    label = "convgen"

    def __init__(self, model: str, psnr_db: float) -> None:
        self.pipe = convgen.load(model, device="cpu")
        self.psnr = psnr_db

    def embed(self, rgb: np.ndarray, payload: int) -> np.ndarray:
        return self.pipe.embed(rgb, payload, self.psnr)

    def read(self, rgb: np.ndarray, payload: int) -> tuple[float, bool]:
        """Bit accuracy at the zoom the detector picks, and whether it detects the right payload."""
        with torch.no_grad():
            zoomed = self.pipe.net.decode_zooms(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)[0]
        rows = zoomed.double().numpy()
        best, d = best_reading(rows)
        acc = float(np.mean((rows[best] > 0) == encode_payload(payload).astype(bool)))
        return acc, bool(d.detected and d.payload == f"{payload:08x}")


class InvisibleWatermark:
    def __init__(self, method: str) -> None:
        from imwatermark import WatermarkDecoder, WatermarkEncoder

        self.method, self.label = method, f"invisible-watermark {method}"
        self.enc, self.dec = WatermarkEncoder(), WatermarkDecoder("bits", PAYLOAD_BITS)

    @staticmethod
    def _bits(payload: int) -> list[int]:
        return [(payload >> (PAYLOAD_BITS - 1 - i)) & 1 for i in range(PAYLOAD_BITS)]

    def embed(self, rgb: np.ndarray, payload: int) -> np.ndarray:
        self.enc.set_watermark("bits", self._bits(payload))
        return np.ascontiguousarray(self.enc.encode(np.ascontiguousarray(rgb[..., ::-1]), self.method)[..., ::-1])

    def read(self, rgb: np.ndarray, payload: int) -> tuple[float, bool]:
        try:
            bits = np.asarray(self.dec.decode(np.ascontiguousarray(rgb[..., ::-1]), self.method), dtype=np.int64)
        except Exception:  # noqa: BLE001 - its decoder fails on small or odd-sized pictures: nothing read
            return 0.5, False
        acc = float(np.mean(bits == np.asarray(self._bits(payload))))
        return acc, acc == 1.0


def unmarked_set(photos: list[np.ndarray], count: int) -> list[np.ndarray]:
    """``count`` unmarked pictures: the photos, then random crops (128 px to whole) of them and of BSDS500 train."""
    rng = np.random.default_rng(0)
    pool = photos + [read_image(f, channels=3) for f in list_images(DATA / "bsds500" / "train")[:100]]
    out = [(p * 255 + 0.5).astype(np.uint8) for p in photos][:count]
    while len(out) < count:
        img = pool[int(rng.integers(len(pool)))]
        h, w = img.shape[:2]
        ch, cw = int(rng.integers(128, h + 1)), int(rng.integers(128, w + 1))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        out.append((img[y : y + ch, x : x + cw] * 255 + 0.5).astype(np.uint8))
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = list(BENCHMARK)
    fig, ax = plt.subplots(figsize=(12, 4))
    width = 0.8 / len(results)
    for j, (label, r) in enumerate(results.items()):
        ax.bar(np.arange(len(attacks)) + j * width, [r["attacks"][a]["detected"] for a in attacks], width,
               label=label)  # fmt: skip
    ax.set_xticks(np.arange(len(attacks)) + 0.4 - width / 2, attacks, rotation=35, ha="right")
    ax.set_ylabel("photos detected with the right payload")
    ax.set_ylim(0, 1.05)
    ax.axhline(0.9, color="grey", lw=0.8, ls="--")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", default=str(DATA / "bsds500" / "test"), help="folder of colour photos")
    ap.add_argument("--limit", type=int, default=200, help="use the first N photos")
    ap.add_argument("--unmarked", type=int, default=4000, help="unmarked pictures for the false-positive count")
    ap.add_argument("--model", default="watermark", help="convgen watermark model (zoo name or directory)")
    ap.add_argument("--psnr", type=float, default=DEFAULT_PSNR, help="convgen's mark strength (dB)")
    ap.add_argument("--no-baseline", action="store_true", help="skip invisible-watermark")
    ap.add_argument("--plot", help="write a bar chart of detection rates to this PNG")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    files = list_images(args.photos)[: args.limit]
    photos = [read_image(f, channels=3) for f in files]
    methods = [Convgen(args.model, args.psnr)]
    if not args.no_baseline:
        try:
            methods += [InvisibleWatermark("dwtDct"), InvisibleWatermark("dwtDctSvd")]
        except ImportError:
            print("invisible-watermark is not installed: convgen only (see the docstring)", file=sys.stderr)
    payload = default_payload("benchmark")
    results = {}
    for m in methods:
        marks, t_embed, t_read, mp = [], 0.0, 0.0, 0.0
        quality = {"psnr": [], "ssim": []}
        for p in tqdm(photos, desc=f"{m.label}: embed", file=sys.stderr):
            rgb = (p * 255 + 0.5).astype(np.uint8)
            t0 = time.perf_counter()
            marked = m.embed(rgb, payload)
            t_embed += time.perf_counter() - t0
            mp += rgb.shape[0] * rgb.shape[1] / 1e6
            marks.append(marked)
            a, b = rgb.astype(np.float32) / 255, marked.astype(np.float32) / 255
            quality["psnr"].append(psnr(a, b))
            quality["ssim"].append(ssim(a, b))
        per_attack = {}
        for name in tqdm(BENCHMARK, desc=f"{m.label}: attacks", file=sys.stderr):
            accs, hits = [], []
            for marked in marks:
                img = attacked(marked, name)
                t0 = time.perf_counter()
                acc, hit = m.read(img, payload)
                t_read += time.perf_counter() - t0
                accs.append(acc)
                hits.append(hit)
            per_attack[name] = {"bit_accuracy": round(float(np.mean(accs)), 4),
                                "detected": round(float(np.mean(hits)), 4)}
        results[m.label] = {
            "psnr_mean": round(float(np.mean(quality["psnr"])), 2),
            "psnr_min": round(float(np.min(quality["psnr"])), 2),
            "ssim_mean": round(float(np.mean(quality["ssim"])), 4),
            "embed_s_per_mp": round(t_embed / mp, 4), "detect_s_per_mp": round(t_read / (mp * len(BENCHMARK)), 4),
            "required_min_detected": min(per_attack[a]["detected"] for a in REQUIRED),
            "attacks": per_attack,
        }  # fmt: skip
    pipe = methods[0].pipe
    unmarked = unmarked_set(photos, args.unmarked)
    p_values = [pipe.detect(u).p_value for u in tqdm(unmarked, desc="convgen: unmarked", file=sys.stderr)]
    results["convgen"]["false_positives"] = {
        "unmarked": len(unmarked), "detected": int(sum(p < 1e-4 for p in p_values)),
        "min_p_value": float(min(p_values)), "p_below_1e-2": int(sum(p < 1e-2 for p in p_values)),
    }  # fmt: skip
    if args.plot:
        plot(results, Path(args.plot))
    print_report("watermark", results, threads=torch.get_num_threads(), photos=f"{args.photos} ({len(photos)})",
                 payload=f"{payload:08x}", psnr_target=args.psnr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
