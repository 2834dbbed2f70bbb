"""Classical image restoration methods: what the shipped models build on and what the benchmarks compare with.

* :func:`telea_fill`: OpenCV's Telea inpainting (fast marching), optionally smoothed by depth in the hole
  (:func:`smooth_by_depth`).
* :func:`gmrf_fill`: the conditional mean of a Gaussian Markov random field image prior given the known pixels,
  solved exactly by sparse LU (coarse-to-fine for very large holes). The zoo ``inpaint`` model's pre-fill.

Images are float NumPy H x W (x C) arrays or torch B x C x H x W batches in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch

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
