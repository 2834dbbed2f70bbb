"""Never worse than the input: every blind zoo denoiser on pictures that are not photos, at noise levels 0 to 50.

Picture kinds: photos (BSDS500 test, the control), paintings (``../shared/data/styles``, crops), rendered text,
screenshots (flat panels, text, borders), line art, flat colour regions and gradients; the non-photo kinds are drawn
here from a fixed seed, so the benchmark needs nothing but Pillow. Each picture gets Gaussian noise by the protocol
(``noisy = clean + default_rng(i).standard_normal * sigma / 255``, clipped to [0, 1] as a saved picture is) at each
level; the table has, per kind and level, the mean input PSNR, the mean output PSNR and the worst case (the smallest
output-minus-input PSNR over the pictures; at level 0 the smallest output PSNR to the clean picture, which must stay
above 40 dB).

    python benchmarks/robustness.py                                   # every blind zoo denoiser
    python benchmarks/robustness.py --model denoise-real --levels 0 5 25 50 --per-kind 4
    python benchmarks/robustness.py --unguarded      # also every model with --no-guard, side by side
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _common import load_models, print_report
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from convgen.metrics.reference import psnr

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
KINDS = ("photo", "painting", "text", "screenshot", "line-art", "flat", "gradient")
BLIND = ("denoise-gray-blind", "denoise-color-blind", "denoise-real")


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def draw(kind: str, i: int, side: int = 192) -> np.ndarray:
    """Picture ``i`` of ``kind`` as H x W x 3 float32 in [0, 1] (fixed seed per kind and index)."""
    rng = np.random.default_rng(1000 * KINDS.index(kind) + i)
    if kind in ("photo", "painting"):
        files = sorted((DATA / "bsds500" / "test").glob("*.jpg")) if kind == "photo" else sorted(
            (DATA / "styles").glob("*.jpg"))
        img = Image.open(files[i % len(files)]).convert("RGB")
        scale = max(side / min(img.size), 0.5 if kind == "painting" else 1.0)
        img = img.resize((max(side, round(img.width * scale)), max(side, round(img.height * scale))), Image.BICUBIC)
        x0, y0 = (int(rng.integers(0, s - side + 1)) for s in img.size)
        return np.asarray(img.crop((x0, y0, x0 + side, y0 + side)), np.float32) / 255
    img = Image.new("RGB", (side, side), _colour(rng) if kind != "line-art" else (255, 255, 255))
    d = ImageDraw.Draw(img)
    if kind == "text":
        for row in range(int(rng.integers(4, 9))):
            words = " ".join("".join(chr(int(c)) for c in rng.integers(97, 123, int(rng.integers(2, 8))))
                             for _ in range(5))  # fmt: skip
            d.text((4, 6 + row * side // 8), words, fill=_colour(rng), font=_font(int(rng.integers(10, 22))))
    elif kind == "screenshot":
        for _ in range(int(rng.integers(3, 7))):
            x0, y0 = int(rng.integers(0, side - 40)), int(rng.integers(0, side - 30))
            box = (x0, y0, x0 + int(rng.integers(30, side - x0)), y0 + int(rng.integers(20, side - y0)))
            d.rectangle(box, fill=_colour(rng), outline=_colour(rng), width=int(rng.integers(1, 3)))
            d.text((box[0] + 4, box[1] + 4), "Button OK", fill=_colour(rng), font=_font(12))
    elif kind == "line-art":
        for _ in range(int(rng.integers(6, 16))):
            pts = [tuple(int(v) for v in rng.integers(0, side, 2)) for _ in range(2)]
            if rng.random() < 0.5:
                d.line(pts, fill=(0, 0, 0), width=int(rng.integers(1, 4)))
            else:
                c, r = pts[0], int(rng.integers(5, side // 3))
                d.ellipse((c[0] - r, c[1] - r, c[0] + r, c[1] + r), outline=(0, 0, 0), width=int(rng.integers(1, 3)))
    elif kind == "flat":
        for _ in range(int(rng.integers(2, 6))):
            x0, y0 = int(rng.integers(0, side)), int(rng.integers(0, side))
            d.polygon([(x0, y0), (int(rng.integers(0, side)), y0), (x0, int(rng.integers(0, side)))], fill=_colour(rng))
    elif kind == "gradient":
        a, b = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
        t = np.linspace(0, 1, side, dtype=np.float32)
        grid = t[None, :] if rng.random() < 0.5 else np.hypot(t[:, None] - 0.5, t[None, :] - 0.5) / 0.71
        grid = np.broadcast_to(grid, (side, side))
        return ((1 - grid[..., None]) * a + grid[..., None] * b) / 255
    return np.asarray(img, np.float32) / 255


def run(pipe, clean: np.ndarray, level: float, index: int, guard: bool = True) -> tuple[float, float]:
    """(input PSNR, output PSNR) of one picture at one noise level (gray models see the picture's luminance)."""
    if getattr(pipe, "channels", 3) == 1:
        clean = clean.mean(-1, keepdims=True)
    noisy = clean + np.random.default_rng(index).standard_normal(clean.shape) * level / 255
    noisy = np.clip(noisy, 0, 1).astype(np.float32)
    out = pipe.restore(noisy, guard=guard)
    return psnr(clean, noisy) if level > 0 else float("inf"), psnr(clean, out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", help="zoo name or LABEL=PATH (default: every blind zoo denoiser)")
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--levels", type=float, nargs="+", default=[0.0, 5.0, 15.0, 25.0, 50.0])
    p.add_argument("--per-kind", type=int, default=3)
    p.add_argument("--unguarded", action="store_true", help="also each model with --no-guard (what the guard does)")
    args = p.parse_args()
    from convgen import zoo

    specs = args.model or [m for m in BLIND if m in zoo.names()]
    models = load_models(specs)
    runs = [(label, pipe, True) for label, pipe in models.items()]
    runs += [(f"{label} (no guard)", pipe, False) for label, pipe in models.items()] if args.unguarded else []
    results: dict = {}
    total = len(runs) * len(args.kinds) * len(args.levels) * args.per_kind
    with tqdm(total=total, desc="robustness", file=sys.stderr) as bar:
        for label, pipe, guard in runs:
            rows = results.setdefault(label, {})
            for kind in args.kinds:
                for level in args.levels:
                    ins, outs = [], []
                    for i in range(args.per_kind):
                        a, b = run(pipe, draw(kind, i), level, i, guard)
                        ins.append(a)
                        outs.append(b)
                        bar.update(1)
                    gains = [o - i for i, o in zip(ins, outs, strict=True)]
                    rows[f"{kind}@{level:g}"] = {
                        "input_psnr": None if level == 0 else round(float(np.mean(ins)), 3),
                        "output_psnr": round(float(np.mean(outs)), 3),
                        "worst": round(float(min(outs) if level == 0 else min(gains)), 3),
                        "worse_than_input": 0 if level == 0 else int(sum(g < 0 for g in gains)),
                    }
            failed = [k for k, r in rows.items() if r["worse_than_input"] or (k.endswith("@0") and r["worst"] < 40)]
            rows["summary"] = {"cases_failed": failed, "n_cases": len(rows)}
    print_report("robustness", results, kinds=args.kinds, levels=args.levels, per_kind=args.per_kind,
                 protocol="Gaussian noise by the protocol, clipped to [0, 1]; PSNR data_range 1 over the whole "
                 "picture; level 0: the clean picture itself, output PSNR to it (the promise: >= 40 dB)")  # fmt: skip


if __name__ == "__main__":
    main()
