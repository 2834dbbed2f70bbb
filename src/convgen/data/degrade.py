"""Image degradations: one pipeline for training restoration networks and for benchmarking them.

* Gaussian noise, by the benchmark protocol (../shared/BENCHMARKS.md, the DnCNN/KAIR protocol):
  ``noisy = clean + rng.standard_normal(clean.shape) * sigma / 255`` with ``rng = numpy.random.default_rng(seed)``,
  not clipped, not quantised (:func:`gaussian_noise`). Training draws sigma per image from a fixed value or a blind
  range.
* Poisson-Gaussian noise (photon shot noise plus read noise): ``clean * peak ~ Poisson``, divided by ``peak``,
  plus Gaussian noise.
* Missing regions: binary masks (1 = missing) of random boxes, free-form strokes (DeepFill v2 style) or both, with
  a requested coverage (:func:`random_mask`), or read from mask files. Training patches can take a window of a mask
  drawn for a whole photo (``mask_frame``, :func:`framed_mask`), so that their holes are as large as on a photo
  rather than scaled to the patch. The holes are zeroed, or pre-filled by
  OpenCV's Telea inpainting (``prefill: telea``), optionally smoothed by depth in the hole (``telea-smooth``), or
  by the least-squared-error fill under a Gaussian Markov random field image prior (``gmrf``, :func:`gmrf_fill`), so
  that a network only has to improve on the classical fill (:func:`mask_out`; training, validation and
  ``convgen restore inpaint`` all go through it).
* Bicubic down-sampling (x2, x4; the network sees the bicubic re-upsampled image, as in VDSR / DnCNN-3) and
  JPEG compression artifacts (OpenCV's encoder at a given quality).

Images are float in [0, 1]: NumPy H x W (x C) arrays or torch B x C x H x W batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from convgen.config import check

KINDS = ("noise", "poisson-gaussian", "inpaint", "superres", "jpeg")
#: the ``convgen restore`` verb for each degradation kind
VERBS = {
    "noise": "denoise",
    "poisson-gaussian": "denoise",
    "inpaint": "inpaint",
    "superres": "superres",
    "jpeg": "dejpeg",
}


@dataclass
class DegradeConfig:
    kind: Literal["noise", "poisson-gaussian", "inpaint", "superres", "jpeg"] = "noise"
    sigma: float | None = 25.0  # Gaussian noise std on the 0-255 scale (fixed); null with sigma_range = blind
    sigma_range: list[float] | None = None  # blind training: sigma uniform in [lo, hi] per image
    peak: list[float] = field(default_factory=lambda: [10.0, 200.0])  # poisson-gaussian: photons at white, range
    mask: Literal["boxes", "strokes", "mixed"] = "mixed"
    coverage: list[float] = field(default_factory=lambda: [0.05, 0.5])  # fraction of missing pixels, range
    # training masks: drawn for a frame of this H x W (e.g. the photos' size), a patch-sized window cut from it, so
    # holes have the sizes they have on whole photos; null = drawn for the patch itself
    mask_frame: list[int] | None = None
    prefill: Literal["zero", "telea", "telea-smooth", "gmrf"] = "zero"  # what an inpainting input's holes hold
    smooth_scale: float = 1.0  # telea-smooth: blur std per pixel of depth in the hole
    bilaplacian: float = 1.0  # gmrf: weight of the L @ L term of the prior's precision (0 = harmonic fill)
    scale: int = 2  # superres factor
    quality: list[int] = field(default_factory=lambda: [10, 50])  # JPEG quality range

    def __post_init__(self) -> None:
        where = "task.degradation"
        if self.is_noise:
            check(
                (self.sigma is None) != (self.sigma_range is None),
                f"{where}.sigma",
                "set exactly one of sigma (fixed) and sigma_range (blind)",
            )
        check(self.sigma is None or 0 <= self.sigma <= 255, f"{where}.sigma", "must be in [0, 255]")
        if self.sigma_range is not None:
            ok = len(self.sigma_range) == 2 and 0 <= self.sigma_range[0] <= self.sigma_range[1] <= 255
            check(ok, f"{where}.sigma_range", "must be [lo, hi] with 0 <= lo <= hi <= 255")
        check(len(self.peak) == 2 and 0 < self.peak[0] <= self.peak[1], f"{where}.peak", "must be [lo, hi] > 0")
        ok = len(self.coverage) == 2 and 0 < self.coverage[0] <= self.coverage[1] < 1
        check(ok, f"{where}.coverage", "must be [lo, hi] with 0 < lo <= hi < 1")
        ok = self.prefill in ("zero", "telea", "telea-smooth", "gmrf")
        check(ok, f"{where}.prefill", "must be zero, telea, telea-smooth or gmrf")
        check(self.smooth_scale > 0, f"{where}.smooth_scale", "must be > 0")
        check(self.bilaplacian >= 0, f"{where}.bilaplacian", "must be >= 0")
        ok = self.mask_frame is None or (len(self.mask_frame) == 2 and min(self.mask_frame) >= 8)
        check(ok, f"{where}.mask_frame", "must be [height, width] >= 8, or null")
        check(self.scale in (2, 3, 4), f"{where}.scale", "must be 2, 3 or 4")
        ok = len(self.quality) == 2 and 1 <= self.quality[0] <= self.quality[1] <= 100
        check(ok, f"{where}.quality", "must be [lo, hi] within 1..100")

    @property
    def is_noise(self) -> bool:
        return self.kind in ("noise", "poisson-gaussian")

    @property
    def verb(self) -> str:
        return VERBS[self.kind]

    @property
    def blind(self) -> bool:
        return self.sigma_range is not None

    @property
    def max_sigma(self) -> float:
        return float(self.sigma_range[1] if self.sigma_range is not None else self.sigma or 0.0)


# ---------------------------------------------------------------------------------------------------------------
# The benchmark protocol (NumPy, one image)
# ---------------------------------------------------------------------------------------------------------------


def gaussian_noise(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """The protocol's noisy image: ``clean + default_rng(seed).standard_normal(clean.shape) * sigma / 255``."""
    rng = np.random.default_rng(seed)
    return clean + rng.standard_normal(clean.shape) * sigma / 255.0


def random_mask(height: int, width: int, coverage: float, kind: str = "mixed", seed: int | np.random.Generator = 0):
    """A boolean H x W mask (True = missing) of boxes and/or free-form strokes covering ~``coverage`` of the image.

    Shapes are added until the coverage is reached; each new shape is sized from the area still missing, so the
    result overshoots the requested coverage by at most 1 % of the image.
    """
    import cv2

    if not 0 < coverage < 1:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    target = coverage * height * width
    slack = 0.01 * height * width  # a shape that overshoots the target by more than this is redrawn smaller
    shrink = 1.0
    for _ in range(10_000):
        covered = int(mask.sum())
        if covered >= target:
            break
        remaining = target - covered
        before = mask.copy()
        shape = kind if kind != "mixed" else ("boxes" if rng.random() < 0.5 else "strokes")
        if shape == "boxes":
            side = max(2.0, math.sqrt(remaining) * rng.uniform(0.5, 1.2) * shrink)
            bh = int(np.clip(side * rng.uniform(0.6, 1.6), 2, height))
            bw = int(np.clip(side * side / bh, 2, width))
            y, x = int(rng.integers(0, height - bh + 1)), int(rng.integers(0, width - bw + 1))
            mask[y : y + bh, x : x + bw] = 1
        else:
            # a DeepFill v2 style stroke: a few connected segments of one brush width
            scale = min(height, width)
            brush = int(np.clip(rng.uniform(0.03, 0.08) * scale * shrink, 2, max(2.0, math.sqrt(remaining) / 2)))
            budget = remaining / brush  # stroke length that would cover the remaining area
            y, x = float(rng.integers(0, height)), float(rng.integers(0, width))
            for _ in range(int(rng.integers(1, 6))):
                angle = rng.uniform(0, 2 * math.pi)
                length = min(rng.uniform(0.1, 0.4) * scale * shrink, max(budget, brush))
                ny = float(np.clip(y + length * math.sin(angle), 0, height - 1))
                nx = float(np.clip(x + length * math.cos(angle), 0, width - 1))
                cv2.line(mask, (int(x), int(y)), (int(nx), int(ny)), 1, brush)
                budget -= length
                y, x = ny, nx
                if budget <= 0:
                    break
        if mask.sum() > target + slack:
            mask, shrink = before, shrink * 0.7
    return mask.astype(bool)


def framed_mask(
    height: int, width: int, frame: list[int], coverage: list[float], kind: str, rng: np.random.Generator
) -> np.ndarray:
    """A height x width window of a :func:`random_mask` drawn for a larger ``frame`` (H, W; either orientation),
    so that a training patch has holes of the sizes they have on a whole photo. Coverage is drawn from the
    ``coverage`` range for the frame; a window with less than half its lower end missing is drawn again."""
    fh, fw = (frame[0], frame[1]) if rng.random() < 0.5 else (frame[1], frame[0])
    fh, fw = max(fh, height), max(fw, width)
    for _ in range(20):
        full = random_mask(fh, fw, rng.uniform(*coverage), kind, rng)
        y, x = int(rng.integers(0, fh - height + 1)), int(rng.integers(0, fw - width + 1))
        window = full[y : y + height, x : x + width]
        if window.mean() >= coverage[0] / 2:
            break
    return window


SMOOTH_SIGMAS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


def smooth_by_depth(filled: np.ndarray, mask: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Blur an inpainted H x W x C float image inside its hole, more the deeper a pixel lies in the hole.

    A pixel at distance ``d`` (pixels) from the nearest known pixel gets a Gaussian blur of std ``scale * d``, at
    most 64 px (interpolated between blurs of std 1, 2, 4, ... 64 px, linearly in log-sigma above 1 px).
    Far from known pixels any fill is a guess, and the guess with the least squared error is a smooth one: on 20
    BSDS500 *training* photos this raises PSNR on the missing pixels of OpenCV's Telea fill by about 1 dB.
    Known pixels are returned unchanged."""
    import cv2

    m8 = (mask > 0.5).astype(np.uint8)
    if not m8.any():
        return filled
    sigma = cv2.distanceTransform(m8, cv2.DIST_L2, 5) * scale  # wanted blur std per pixel
    level = np.log2(np.maximum(sigma, 1e-6))  # position on the ladder 1, 2, 4, ... px: 0, 1, 2, ...
    img = np.ascontiguousarray(filled, np.float32).reshape(*m8.shape, -1)  # H x W x C, also for gray
    out, prev = img.copy(), img
    for i, s in enumerate(SMOOTH_SIGMAS):
        blurred = cv2.GaussianBlur(img, (0, 0), s).reshape(img.shape)
        w = np.clip(sigma, 0.0, 1.0) if i == 0 else np.clip(level - (i - 1), 0.0, 1.0)
        out = out + w[..., None] * (blurred - prev)  # image -> blur(sigma), telescoping
        prev = blurred
    return np.where(m8[..., None] > 0, out, img).reshape(filled.shape)


def telea_fill(images: torch.Tensor, masks: torch.Tensor, radius: int = 3, smooth: float = 0.0) -> torch.Tensor:
    """OpenCV Telea inpainting of a B x C x H x W batch (C = 1 or 3) where ``masks`` (B x 1 x H x W) is 1; with
    ``smooth > 0`` the fill is then blurred in proportion to depth in the hole (:func:`smooth_by_depth`).

    OpenCV works on 8-bit images, so the filled values are quantised to 1/255; known pixels are returned exactly."""
    import cv2

    out = []
    for img, m in zip(images, masks, strict=True):
        u8 = np.ascontiguousarray((img.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
        m_np = (m[0].numpy() > 0.5).astype(np.uint8)
        filled = cv2.inpaint(u8, m_np, radius, cv2.INPAINT_TELEA).reshape(u8.shape).astype(np.float32) / 255.0
        if smooth > 0:  # blur the fill together with the exact (not 8-bit) known pixels around it
            exact = img.permute(1, 2, 0).float().numpy()
            filled = smooth_by_depth(np.where(m_np[..., None] > 0, filled, exact), m_np, smooth)
        out.append(torch.from_numpy(filled).permute(2, 0, 1))
    return images * (1 - masks) + torch.stack(out).to(images.dtype) * masks


# ---------------------------------------------------------------------------------------------------------------
# A statistical pre-fill: the conditional mean of a Gaussian Markov random field
# ---------------------------------------------------------------------------------------------------------------

#: holes (connected parts) of at most this many pixels are solved exactly by one sparse LU factorisation
GMRF_DIRECT_MAX = 100_000
#: larger holes: pixels deeper than this take the half-resolution fill; only the band nearer the edge is solved
GMRF_BAND = 24


def _gmrf_direct(img: np.ndarray, hole: np.ndarray, lam: float) -> np.ndarray:
    """Exact conditional mean: the hole rows of the precision ``Q = L + lam L @ L`` written out as a 13-point
    stencil, one sparse LU of the hole block (shared by the channels). Returns the N x C values of the hole's pixels
    in row-major order (``img[hole]``'s order). The matrix and its factors grow with the hole, not the image."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    h, w = hole.shape
    ys, xs = np.nonzero(hole)
    deg = np.full((h, w), 4.0)  # in-image neighbours (the grid's border reflects)
    deg[0] -= 1
    deg[-1] -= 1
    deg[:, 0] -= 1
    deg[:, -1] -= 1
    dp = deg[ys, xs]
    index = np.full((h, w), -1, np.int64)
    index[ys, xs] = np.arange(len(ys))
    rows, cols, vals = [np.arange(len(ys))], [np.arange(len(ys))], [dp + lam * (dp * dp + dp)]
    rhs = np.zeros((len(ys), img.shape[-1]))
    stencil = [((0, 1), None), ((0, -1), None), ((1, 0), None), ((-1, 0), None)]
    if lam:
        stencil += [((dy, dx), lam) for dy, dx in ((0, 2), (0, -2), (2, 0), (-2, 0))]
        stencil += [((dy, dx), 2 * lam) for dy, dx in ((1, 1), (1, -1), (-1, 1), (-1, -1))]
    for (dy, dx), weight in stencil:
        qy, qx = ys + dy, xs + dx
        ok = (qy >= 0) & (qy < h) & (qx >= 0) & (qx < w)
        src, qy, qx = np.flatnonzero(ok), qy[ok], qx[ok]
        val = -1.0 - lam * (dp[src] + deg[qy, qx]) if weight is None else np.full(len(src), weight)
        col = index[qy, qx]
        inside = col >= 0
        rows.append(src[inside])
        cols.append(col[inside])
        vals.append(val[inside])
        np.add.at(rhs, src[~inside], -val[~inside, None] * img[qy[~inside], qx[~inside]])
    q = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), (len(ys), len(ys)))
    return spla.splu(q).solve(rhs)


def _gmrf_large(img: np.ndarray, hole: np.ndarray, lam: float, unknown: np.ndarray) -> np.ndarray:
    """A hole too large to factorise: fill the image at half resolution (its prior's ``lam`` / 4, in coarse
    pixels), up-sample that fill bilinearly into the hole's inner part (deeper than ``GMRF_BAND`` px, where the
    conditional mean is smooth), and solve exactly for the band between it and the known pixels (returns the
    values of the hole's pixels, as :func:`_gmrf_direct`). ``unknown``
    (at least ``hole``) marks the pixels the coarse level must not use: other holes within the crop."""
    import cv2

    h, w = hole.shape
    ph, pw = h + h % 2, w + w % 2  # pad to even, repeating the last row / column
    known = np.pad((~unknown).astype(np.float64), ((0, ph - h), (0, pw - w)), mode="edge")[..., None]
    vals = np.pad(img, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge") * known

    def pool(a: np.ndarray) -> np.ndarray:
        return a.reshape(ph // 2, 2, pw // 2, 2, -1).sum(axis=(1, 3))

    count = pool(known)
    coarse = gmrf_fill(pool(vals) / np.maximum(count, 1), count[..., 0] == 0, lam / 4).reshape(ph // 2, pw // 2, -1)
    fine = cv2.resize(coarse.astype(np.float32), (pw, ph), interpolation=cv2.INTER_LINEAR)
    fine = fine.reshape(ph, pw, -1)[:h, :w].astype(np.float64)
    depth = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 5)
    band = GMRF_BAND
    while band > 4 and np.count_nonzero(hole & (depth <= band)) > GMRF_DIRECT_MAX:
        band //= 2
    inner = hole & (depth > band)
    filled = fine[hole]  # the band's values are replaced below
    filled[~inner[hole]] = _gmrf_direct(np.where(inner[..., None], fine, img), hole & ~inner, lam)
    return filled


def gmrf_fill(image: np.ndarray, mask: np.ndarray, bilaplacian: float = 1.0) -> np.ndarray:
    """Fill the holes of an H x W (x C) float image with the conditional mean of a Gaussian Markov random field
    given its known pixels: the image prior with precision ``L + bilaplacian * L @ L`` (``L`` the 4-neighbour grid
    Laplacian), i.e. a power spectrum ~ 1 / (f^2 + bilaplacian * f^4), close to natural images' 1 / f^2 with the
    faster fall-off of their finest scales.

    This is the fill with the least expected squared error under that prior, so it is what PSNR on the missing
    pixels rewards. ``bilaplacian=0`` is harmonic (membrane) interpolation; large values approach the biharmonic
    (thin-plate) fill. 1.0 was chosen on 12 BSDS500 *training* photos (boxes 18.42, strokes 21.25 dB against
    harmonic's 18.41 / 21.08 and OpenCV Telea's 16.68 / 20.17). Each channel is filled alone (the prior is the
    same for every channel, so any linear colour space gives the same result).

    If all holes together have at most ``GMRF_DIRECT_MAX`` pixels they are solved exactly at once (sparse LU; about
    0.5 s for 40 % of a 481 x 321 photo). Otherwise each connected hole is solved in its own bounding box: exactly
    if it is within that limit, else coarse-to-fine (:func:`_gmrf_large`), so memory stays bounded on large images.
    Known pixels are returned unchanged."""
    import cv2

    if bilaplacian < 0:
        raise ValueError(f"bilaplacian must be >= 0, got {bilaplacian}")
    hole = np.asarray(mask) > 0.5
    if hole.all():
        raise ValueError("the mask covers the whole image: there is nothing to fill from")
    out = np.array(image, np.float64).reshape(*hole.shape, -1)  # the one image-sized copy
    if not hole.any():
        return out.reshape(np.asarray(image).shape)
    if hole.sum() <= GMRF_DIRECT_MAX:
        parts = [(slice(None), slice(None), hole)]
    else:  # holes coupled by the 13-point stencil (closer than 3 px) are one part
        near = cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8))
        n, labels, stats, _ = cv2.connectedComponentsWithStats(near, connectivity=8)
        parts = []
        for i in range(1, n):
            x, y, bw, bh = stats[i, :4]
            ys = slice(max(y - 2, 0), min(y + bh + 2, hole.shape[0]))
            xs = slice(max(x - 2, 0), min(x + bw + 2, hole.shape[1]))
            parts.append((ys, xs, hole[ys, xs] & (labels[ys, xs] == i)))
    for ys, xs, part in parts:
        crop = out[ys, xs]  # a view: the fill is written into ``out``
        if part.sum() <= GMRF_DIRECT_MAX:
            crop[part] = _gmrf_direct(crop, part, bilaplacian)
        else:
            crop[part] = _gmrf_large(crop, part, bilaplacian, unknown=hole[ys, xs])
    return out.reshape(np.asarray(image).shape)


def mask_out(clean: torch.Tensor, masks: torch.Tensor, cfg: DegradeConfig) -> torch.Tensor:
    """The inpainting network's input: ``clean`` (B x C x H x W) with the ``masks`` (B x 1 x H x W, 1 = missing)
    pixels zeroed, pre-filled by Telea (``cfg.prefill: telea``), by Telea smoothed by depth in the hole
    (``telea-smooth``, :func:`smooth_by_depth` with ``cfg.smooth_scale``) or by the conditional mean of a Gaussian
    Markov random field (``gmrf``, :func:`gmrf_fill` with ``cfg.bilaplacian``)."""
    x = clean * (1 - masks)
    if cfg.prefill == "zero":
        return x
    if cfg.prefill == "gmrf":  # image by image, in place (bounded memory on large images)
        for img, m in zip(x, masks, strict=True):
            filled = gmrf_fill(img.permute(1, 2, 0).numpy(), m[0].numpy(), cfg.bilaplacian)
            img.copy_(torch.from_numpy(filled).permute(2, 0, 1))
        return x
    return telea_fill(x, masks, smooth=cfg.smooth_scale if cfg.prefill == "telea-smooth" else 0.0)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode an H x W (x C) float image with OpenCV's JPEG codec; returns float in [0, 1]."""
    import cv2

    pixels = (np.clip(image, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[-1] == 3:
        pixels = pixels[..., ::-1]  # OpenCV is BGR
    ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if out.ndim == 3:
        out = out[..., ::-1]
    return out.reshape(image.shape).astype(np.float32) / 255.0


def bicubic_downscale(x: torch.Tensor, scale: int) -> torch.Tensor:
    """B x C x H x W -> antialiased bicubic down-sampling to (H // scale) x (W // scale) (like MATLAB's imresize)."""
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)


def shrink_8bit(clean: np.ndarray, scale: int) -> np.ndarray:
    """The super-resolution benchmark's low-resolution input for an H x W x C float image: antialiased bicubic
    down-sampling (:func:`bicubic_downscale`), quantised to 8 bits as a saved small PNG would be."""
    x = torch.from_numpy(np.ascontiguousarray(clean, np.float32)).permute(2, 0, 1)[None]
    low = bicubic_downscale(x, scale)[0].permute(1, 2, 0).numpy()
    return np.round(np.clip(low, 0, 1) * 255) / 255


def bicubic_degrade(x: torch.Tensor, scale: int) -> torch.Tensor:
    """B x C x H x W -> bicubic down-sampled by ``scale`` (antialiased) and bicubic re-upsampled to H x W."""
    return F.interpolate(bicubic_downscale(x, scale), size=x.shape[-2:], mode="bicubic", align_corners=False)


# ---------------------------------------------------------------------------------------------------------------
# Training batches (torch)
# ---------------------------------------------------------------------------------------------------------------


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _sigmas(cfg: DegradeConfig, gen: torch.Generator, n: int) -> torch.Tensor:
    """Per-image Gaussian noise std on the [0, 1] scale, shaped n x 1 x 1 x 1: fixed, or uniform in the range."""
    sigma = torch.full((n,), float(cfg.sigma)) if cfg.sigma is not None else _uniform(gen, n, *cfg.sigma_range)
    return sigma.view(n, 1, 1, 1) / 255.0


def degrade_batch(
    clean: torch.Tensor, cfg: DegradeConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Degrade a B x C x H x W batch. Returns (degraded input, conditioning map or None).

    The conditioning map is B x 1 x H x W: the noise level sigma/255 for noise (what a noise-map model such as
    FFDNet takes; ignored by blind models) and the mask (1 = missing) for inpainting.
    """
    b, _, h, w = clean.shape
    if cfg.kind == "noise":
        sigma = _sigmas(cfg, gen, b)
        noise = torch.randn(clean.shape, generator=gen)
        return clean + noise * sigma, sigma.expand(b, 1, h, w)
    if cfg.kind == "poisson-gaussian":
        peak = torch.exp(_uniform(gen, b, math.log(cfg.peak[0]), math.log(cfg.peak[1]))).view(b, 1, 1, 1)
        shot = torch.poisson(clean.clamp(0, 1) * peak, generator=gen) / peak
        sigma = _sigmas(cfg, gen, b)
        noisy = shot + torch.randn(clean.shape, generator=gen) * sigma
        level = torch.sqrt(clean.clamp(0, 1).mean((1, 2, 3), keepdim=True) / peak + sigma**2)  # effective std
        return noisy, level.expand(b, 1, h, w)
    if cfg.kind == "inpaint":
        masks = []
        for _ in range(b):
            seed = int(torch.randint(0, 2**62, (1,), generator=gen))
            rng = np.random.default_rng(seed)
            if cfg.mask_frame is None:
                masks.append(random_mask(h, w, rng.uniform(*cfg.coverage), cfg.mask, rng))
            else:
                masks.append(framed_mask(h, w, cfg.mask_frame, cfg.coverage, cfg.mask, rng))
        m = torch.from_numpy(np.stack(masks)).unsqueeze(1).float()
        return mask_out(clean, m, cfg), m
    if cfg.kind == "superres":
        return bicubic_degrade(clean, cfg.scale), None
    # jpeg
    q = torch.randint(cfg.quality[0], cfg.quality[1] + 1, (b,), generator=gen).tolist()
    pairs = zip(clean, q, strict=True)
    out = [torch.from_numpy(jpeg(img.permute(1, 2, 0).numpy(), qi)).permute(2, 0, 1) for img, qi in pairs]
    return torch.stack(out), None


def degrade_eval(clean: np.ndarray, cfg: DegradeConfig, index: int, sigma: float | None = None):
    """Deterministic degradation of validation/benchmark image ``index`` (H x W x C float), by the protocol.

    Returns (degraded, conditioning H x W x 1 or None). Noise uses ``sigma`` (default: the config's fixed sigma,
    else 25) seeded with ``index``; masks are seeded with ``index`` at the middle of the coverage range.
    """
    if cfg.is_noise:
        s = float(sigma if sigma is not None else (cfg.sigma if cfg.sigma is not None else 25.0))
        return gaussian_noise(clean, s, index).astype(np.float32), np.full(clean.shape[:2] + (1,), s / 255, np.float32)
    if cfg.kind == "inpaint":
        cov = float(np.mean(cfg.coverage))
        h, w = clean.shape[:2]
        if cfg.mask_frame is None or (max(h, w), min(h, w)) == (max(cfg.mask_frame), min(cfg.mask_frame)):
            m = random_mask(h, w, cov, cfg.mask, index)
        else:  # a crop of a photo: a window of a whole-photo mask, as in training
            m = framed_mask(h, w, cfg.mask_frame, [cov, cov], cfg.mask, np.random.default_rng(index))
        m = m[..., None].astype(np.float32)
        x = mask_out(
            torch.from_numpy(np.ascontiguousarray(clean, np.float32)).permute(2, 0, 1)[None],
            torch.from_numpy(m).permute(2, 0, 1)[None],
            cfg,
        )
        return x[0].permute(1, 2, 0).numpy(), m
    if cfg.kind == "superres":
        x = torch.from_numpy(np.ascontiguousarray(clean)).permute(2, 0, 1)[None]
        return bicubic_degrade(x, cfg.scale)[0].permute(1, 2, 0).numpy(), None
    q = int(round(float(np.mean(cfg.quality))))
    return jpeg(clean, q), None
