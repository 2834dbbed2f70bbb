"""Style-transfer benchmark: how far each method moves held-out photos towards each painting, what it keeps of
the photo, the perceptual losses it reaches, and the seconds per 512 x 512 image.

Independent statistics (none of them is a loss any method optimises): **colour** -- the Frechet distance between
the CIE Lab pixel distributions (mean and covariance) of an image and the painting; **texture** -- the L2 distance
of a vector of luminance statistics: log mean energy of oriented (0, 45, 90, 135 degree) derivative-of-Gaussian
responses at three scales, and the uniform local-binary-pattern histogram (P = 8, R = 1); **gradient texture** --
the L1 distance of gradient histograms (log Sobel magnitude, 16 bins, and magnitude-weighted orientation, 8 bins)
at 1, 1/2 and 1/4 size (and at full size alone, ``gradient_texture_full``): a second, independent texture statistic
that an artefact at one scale (a fine regular pattern) cannot hide from by matching mean energies.
``progress`` = 1 - d(result, painting) / d(photo, painting): 0 = the photo's statistics, 1 = the painting's.
**Structure**: SSIM of the result's and the photo's luminance after a Gaussian blur (sigma 2 px), beside the same
SSIM between the photo and the painting resized to it (what no structure at all scores), and the correlation of
their gradient magnitudes (``edge_corr``, sigma 1 px).

Parts: ``features`` (the offline fallback against the alternatives tried, with Gatys' optimisation at a small
size), ``quality`` (the zoo fast models and Gatys at 512 px on held-out BSDS500 test photos), ``speed`` (seconds
per 512 x 512 photo). Prints one JSON object.

    python benchmarks/style.py --only features --out docs/style_benchmark.json
    python benchmarks/style.py --only quality speed --images docs/style --grid docs/style_grid.jpg \
        --out docs/style_benchmark.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import print_report

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
STYLES = {"starry-night": "starry_night.jpg", "shipwreck": "shipwreck.jpg", "scream": "the_scream.jpg"}


# -- independent statistics ------------------------------------------------------------------------------------
def lab_stats(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from skimage.color import rgb2lab

    lab = rgb2lab(np.clip(img, 0, 1)).reshape(-1, 3)
    return lab.mean(0), np.cov(lab, rowvar=False)


def frechet(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    from scipy import linalg

    (m1, c1), (m2, c2) = a, b
    covmean = linalg.sqrtm(c1 @ c2).real
    return float(np.sqrt(max(0.0, ((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean))))


def luminance(img: np.ndarray) -> np.ndarray:
    """H x W x 3 in [0, 1] (clipped) -> H x W luma (Rec. 601 weights)."""
    return np.clip(img, 0, 1) @ np.array([0.299, 0.587, 0.114])


def texture_stats(img: np.ndarray) -> np.ndarray:
    from scipy import ndimage
    from skimage.feature import local_binary_pattern

    y = luminance(img)
    feats = []
    for sigma in (1.0, 2.0, 4.0):
        gy = ndimage.gaussian_filter(y, sigma, order=(1, 0)) * sigma
        gx = ndimage.gaussian_filter(y, sigma, order=(0, 1)) * sigma
        for theta in np.deg2rad([0, 45, 90, 135]):
            feats.append(np.log(np.abs(np.cos(theta) * gx + np.sin(theta) * gy).mean() + 1e-4))
    lbp = local_binary_pattern((y * 255).astype(np.uint8), 8, 1, method="uniform")
    hist = np.bincount(lbp.astype(int).ravel(), minlength=10)[:10] / lbp.size
    return np.concatenate([np.array(feats), 3 * np.sqrt(hist)])


MAGNITUDE_BINS, ORIENTATION_BINS = 16, 8


def gradient_histograms(img: np.ndarray, scales=(1, 2, 4)) -> np.ndarray:
    """Per scale (1, 1/2, 1/4 size): the histogram of log10 Sobel gradient magnitude of the luminance (16 bins over
    1e-3 .. 1) and the magnitude-weighted histogram of gradient orientation (8 bins), each normalised to sum 1."""
    from scipy import ndimage

    y = luminance(img)
    feats = []
    for s in scales:
        z = y if s == 1 else ndimage.zoom(ndimage.gaussian_filter(y, 0.5 * s), 1 / s, order=1)
        gx, gy = ndimage.sobel(z, 1) / 8, ndimage.sobel(z, 0) / 8
        mag = np.hypot(gx, gy)
        h, _ = np.histogram(np.log10(mag + 1e-3), bins=MAGNITUDE_BINS, range=(-3, 0))
        o, _ = np.histogram(np.mod(np.arctan2(gy, gx), np.pi), bins=ORIENTATION_BINS, range=(0, np.pi), weights=mag)
        feats += [h / h.sum(), o / (o.sum() + 1e-12)]
    return np.concatenate(feats)


def edge_correlation(result: np.ndarray, photo: np.ndarray, sigma: float = 1.0) -> float:
    """Pearson correlation of the two images' luminance gradient magnitudes (derivative of Gaussian, ``sigma``)."""
    from scipy import ndimage

    def edges(a):
        y = luminance(a)
        return np.hypot(ndimage.gaussian_filter(y, sigma, order=(0, 1)),
                        ndimage.gaussian_filter(y, sigma, order=(1, 0))).ravel()  # fmt: skip

    return float(np.corrcoef(edges(result), edges(photo))[0, 1])


def structure(result: np.ndarray, photo: np.ndarray) -> float:
    from scipy import ndimage
    from skimage.metrics import structural_similarity

    def lum(a):
        return ndimage.gaussian_filter(luminance(a), 2.0)

    return float(structural_similarity(lum(result), lum(photo), data_range=1.0))


class Judge:
    """The independent statistics of one painting, against which results are scored."""

    def __init__(self, painting: np.ndarray) -> None:
        self.painting = painting
        self.lab, self.tex, self.grad = lab_stats(painting), texture_stats(painting), gradient_histograms(painting)

    def score(self, result: np.ndarray, photo: np.ndarray) -> dict[str, float]:
        d_col, d_tex = frechet(lab_stats(result), self.lab), float(np.linalg.norm(texture_stats(result) - self.tex))
        p_col, p_tex = frechet(lab_stats(photo), self.lab), float(np.linalg.norm(texture_stats(photo) - self.tex))
        g_res, g_photo = gradient_histograms(result), gradient_histograms(photo)
        d_grad, p_grad = float(np.abs(g_res - self.grad).sum()), float(np.abs(g_photo - self.grad).sum())
        full = slice(0, MAGNITUDE_BINS + ORIENTATION_BINS)  # the full-size histograms come first
        d_full = float(np.abs(g_res[full] - self.grad[full]).sum())
        p_full = float(np.abs(g_photo[full] - self.grad[full]).sum())
        painting = resize(self.painting, photo.shape[:2])
        return {
            "color_progress": 1 - d_col / p_col,
            "texture_progress": 1 - d_tex / p_tex,
            "gradient_texture_progress": 1 - d_grad / p_grad,
            "gradient_texture_full_progress": 1 - d_full / p_full,
            "structure_ssim": structure(result, photo),
            "edge_corr": edge_correlation(result, photo),
            "painting_ssim": structure(painting, photo),
            "painting_edge_corr": edge_correlation(painting, photo),
        }


def mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """H x W x 3 -> size (antialiased bilinear)."""
    x = torch.from_numpy(np.ascontiguousarray(img, np.float32)).permute(2, 0, 1)[None]
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x[0].permute(1, 2, 0).numpy()


def load(path: Path, side: int | None = None) -> np.ndarray:
    from convgen.io.images import read_image

    img = read_image(path, channels=3)
    if side:
        h, w = img.shape[:2]
        s = side / max(h, w)
        img = resize(img, (round(h * s), round(w * s)))
    return img


def photos(n: int) -> list[Path]:
    return sorted((DATA / "bsds500" / "test").glob("*.jpg"))[:n]


# -- parts -----------------------------------------------------------------------------------------------------
class ShallowRandom(torch.nn.Module):
    """Ustyuzhaninov et al. (2016): one layer of random filters at several sizes (3 ... 15 px), 64 each, ReLU."""

    def __init__(self, sizes=(3, 5, 7, 11, 15), filters: int = 64, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.convs = torch.nn.ModuleList()
        for k in sizes:
            conv = torch.nn.Conv2d(3, filters, k, padding=k // 2, padding_mode="reflect")
            with torch.no_grad():
                w = torch.randn(conv.weight.shape, generator=g)
                conv.weight.copy_(w - w.mean((1, 2, 3), keepdim=True))
                conv.weight /= conv.weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                conv.bias.zero_()
            self.convs.append(conv)
        self.sizes = sizes
        self.name = "shallow-random-multiscale"
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def forward(self, x, layers):
        out = {f"k{k}": conv(x - self.mean).relu() for k, conv in zip(self.sizes, self.convs, strict=True)}
        out["all"] = torch.cat([out[f"k{k}"] for k in self.sizes], 1)
        return {k: out[k] for k in layers}


def part_features(args) -> dict:
    """Gatys at ``--features-size`` px with each candidate feature network, judged by the independent statistics."""
    from convgen.models.backbones.vgg import random_vgg19
    from convgen.pipelines.style import GatysOptions, gatys, to_array, to_tensor

    candidates = {
        "random-vgg19 (the fallback)": (lambda: random_vgg19(), {}),
        "random-vgg19, per-channel activation normalisation": (lambda: random_vgg19(normalise=True), {}),
        "random-vgg19, average pooling": (lambda: random_vgg19(pool="avg"), {}),
        "shallow random multiscale filters": (
            lambda: ShallowRandom(),
            {"style_layers": ("k3", "k5", "k7", "k11", "k15"), "content_layers": ("all",)},
        ),
    }
    out = {}
    content = [load(p, args.features_size) for p in photos(args.features_photos)]
    for label, (make, layers) in candidates.items():
        net = make()
        rows, t0 = [], time.perf_counter()
        for fname in STYLES.values():
            painting = load(DATA / "styles" / fname, 512)
            judge = Judge(painting)
            for img in content:
                opts = GatysOptions(iterations=args.features_iterations, **layers)
                res = to_array(gatys(to_tensor(img), [to_tensor(painting)], net, opts))
                rows.append(judge.score(res, img))
        out[label] = {**mean_rows(rows), "seconds": round(time.perf_counter() - t0, 1)}
        print(label, out[label], file=sys.stderr)
    return {"features": {"size": args.features_size, "iterations": args.features_iterations,
                         "photos": len(content), "candidates": out}}  # fmt: skip


def reinhard(photo: np.ndarray, painting: np.ndarray) -> np.ndarray:
    """Reinhard et al. (2001) colour transfer: match each Lab channel's mean and spread to the painting's (the
    classical baseline: colour only, no texture)."""
    from skimage.color import lab2rgb, rgb2lab

    a, b = rgb2lab(np.clip(photo, 0, 1)), rgb2lab(np.clip(painting, 0, 1))
    out = (a - a.mean((0, 1))) / (a.std((0, 1)) + 1e-6) * b.std((0, 1)) + b.mean((0, 1))
    return np.clip(lab2rgb(out), 0, 1).astype(np.float32)


def perceptual_losses(result: np.ndarray, photo: np.ndarray, painting: np.ndarray, net) -> dict[str, float]:
    """The style and content losses of the fallback feature network, with the painting's Grams taken at the
    result's longer side: the same yardstick for every method."""
    from convgen.losses.perceptual import PerceptualLoss
    from convgen.models.backbones.vgg import resize_to
    from convgen.pipelines.style import to_tensor

    x, c = to_tensor(result), to_tensor(photo)
    s = resize_to(to_tensor(painting), max(x.shape[-2:]))
    loss = PerceptualLoss(net, PerceptualLoss.style_targets(net, [s]))
    with torch.no_grad():
        parts = loss(x, loss.content_features(c))
    return {"style_loss": float(parts["style"]), "content_loss": float(parts["content"])}


def part_quality(args) -> dict:
    """Each zoo style on ``--photos`` held-out BSDS500 test photos at ``--side`` px, Gatys on the first
    ``--gatys-photos`` of them, Reinhard colour transfer as the colour-only baseline."""
    import convgen
    from convgen.io.images import write_image
    from convgen.models.backbones.vgg import random_vgg19
    from convgen.pipelines.style import Gatys

    net = random_vgg19()
    out: dict = {}
    images = Path(args.images) if args.images else None
    for style, fname in STYLES.items():
        painting = load(DATA / "styles" / fname, 512)
        judge = Judge(painting)
        fast = convgen.load(f"style-{style}", device="cpu")
        gat = Gatys([DATA / "styles" / fname])
        rows: dict[str, list] = {"fast": [], "gatys": [], "fast (same photos as gatys)": [], "reinhard": []}
        for i, path in enumerate(photos(args.photos)):
            img = load(path, args.side)
            res = fast.stylize(img)
            row = {**judge.score(res, img), **perceptual_losses(res, img, painting, net)}
            rows["fast"].append(row)
            rows["reinhard"].append(judge.score(reinhard(img, painting), img))
            if images is not None and i < 2:
                write_image(images / f"{path.stem}_{style}_fast.png", res)
                write_image(images / f"{path.stem}.png", img)
            if i < args.gatys_photos:
                rows["fast (same photos as gatys)"].append(row)
                t0 = time.perf_counter()
                g = gat.stylize(img, iterations=args.gatys_iterations)
                grow = {**judge.score(g, img), **perceptual_losses(g, img, painting, net),
                        "seconds": time.perf_counter() - t0}  # fmt: skip
                rows["gatys"].append(grow)
                if images is not None and i < 2:
                    write_image(images / f"{path.stem}_{style}_gatys.png", g)
            print(style, i, row, file=sys.stderr)
        if images is not None:
            write_image(images / f"painting_{style}.png", load(DATA / "styles" / fname, args.side))
        out[style] = {k: mean_rows(v) for k, v in rows.items() if v}
    return {"quality": {"photos": args.photos, "side": args.side, "gatys_photos": args.gatys_photos,
                        "gatys_iterations": args.gatys_iterations, "feature_net": "random-vgg19",
                        "styles": out}}  # fmt: skip


def part_speed(args) -> dict:
    """Seconds per 512 x 512 photo: each fast zoo model (median of 5 after a warm-up) and one default Gatys run."""
    import convgen
    from convgen.pipelines.style import Gatys

    img = load(photos(1)[0])
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    img = torch.nn.functional.interpolate(x, size=(512, 512), mode="bilinear")[0].permute(1, 2, 0).numpy().copy()
    out = {}
    for style in STYLES:
        fast = convgen.load(f"style-{style}", device="cpu")
        fast.stylize(img)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fast.stylize(img)
            times.append(time.perf_counter() - t0)
        out[f"fast style-{style}"] = round(float(np.median(times)), 3)
    if args.gatys_speed_iterations:
        gat = Gatys([DATA / "styles" / STYLES["starry-night"]])
        t0 = time.perf_counter()
        gat.stylize(img, iterations=args.gatys_speed_iterations)
        out[f"gatys, {args.gatys_speed_iterations} L-BFGS iterations (256 then 512 px)"] = round(
            time.perf_counter() - t0, 1)
    return {"speed_s_per_512x512": out}


def part_grid(args) -> None:
    """The README picture: per style, the painting, then each of two photos with its Gatys and fast results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from convgen.io.images import read_image

    images = Path(args.images)
    stems = [p.stem for p in photos(2)]
    with_gatys = all((images / f"{stem}_{style}_gatys.png").is_file() for stem in stems for style in STYLES)
    kinds = ["", "_gatys", "_fast"] if with_gatys else ["", "_fast"]  # Gatys only where this run made it
    names = {"": "photo", "_gatys": "Gatys (optimisation)", "_fast": "fast (zoo model)"}
    fig, axes = plt.subplots(len(STYLES), 1 + 2 * len(kinds),
                             figsize=(3 * (1 + 2 * len(kinds)), 3 * len(STYLES) * 0.75 + 0.6))  # fmt: skip
    titles = [names[k] for k in kinds] * 2
    for r, style in enumerate(STYLES):
        tiles = [images / f"painting_{style}.png"]
        for stem in stems:
            tiles += [images / (f"{stem}.png" if not k else f"{stem}_{style}{k}.png") for k in kinds]
        for c, path in enumerate(tiles):
            ax = axes[r, c]
            ax.imshow(read_image(path, channels=3))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c - 1] if c else "painting", fontsize=11)
            if c == 0:
                ax.set_ylabel(style, fontsize=12)
    fig.suptitle("convgen stylize, offline feature network random-vgg19 (not the ImageNet VGG19)", fontsize=13)
    fig.tight_layout()
    fig.savefig(args.grid, dpi=60, pil_kwargs={"quality": 88} if str(args.grid).endswith(".jpg") else None)
    print(f"wrote {args.grid}", file=sys.stderr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=["features", "quality", "speed"], default=["quality", "speed"])
    p.add_argument("--photos", type=int, default=20, help="held-out BSDS500 test photos for the fast models")
    p.add_argument("--side", type=int, default=512, help="longer side the photos are stylised at")
    p.add_argument("--gatys-photos", type=int, default=2)
    p.add_argument("--gatys-iterations", type=int, default=300)
    p.add_argument("--gatys-speed-iterations", type=int, default=300, help="0: skip the Gatys timing")
    p.add_argument("--images", help="write the results of the first two photos here (for --grid)")
    p.add_argument("--grid", help="compose the README picture from --images into this PNG")
    p.add_argument("--features-size", type=int, default=128)
    p.add_argument("--features-photos", type=int, default=4)
    p.add_argument("--features-iterations", type=int, default=100)
    p.add_argument("--threads", type=int)
    p.add_argument("--out")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict = {}
    if "features" in args.only:
        results.update(part_features(args))
    if "quality" in args.only:
        results.update(part_quality(args))
    if "speed" in args.only:
        results.update(part_speed(args))
    if args.grid:
        part_grid(args)
    if args.out:
        path = Path(args.out)
        old = json.loads(path.read_text()) if path.is_file() else {}
        merged = {**old.get("results", {}), **results}
        path.write_text(json.dumps({**old, "results": merged}, indent=1) + "\n")
    print_report("style", results, threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
