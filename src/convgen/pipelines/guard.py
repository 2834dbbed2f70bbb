"""Never worse than the input: a denoiser's result blended back towards the input where it would do harm.

For Gaussian noise of level sigma, Stein's unbiased risk estimate (SURE) gives the expected squared error of any
(weakly differentiable) denoiser f from the noisy image alone: ``SURE(f) = ||x - f(x)||^2 - N sigma^2 + 2 sigma^2
div f(x)`` (Stein 1981; used for blind denoiser training by Soltanayev & Chun 2018, Metzler et al. 2018). For the
blend ``g = x + lam (f(x) - x)`` it is a parabola in ``lam``: ``lam^2 ||r||^2 + N sigma^2 - 2 lam sigma^2 (N - div
f)`` with ``r = x - f(x)``, whose value at ``lam = 0`` is the input's own error, ``N sigma^2``. So the best blend,
``lam* = sigma^2 (N - div f) / ||r||^2`` clamped to [0, 1], is never expected to be worse than the input. The
divergence is a one-sample Monte-Carlo estimate (Ramani et al. 2008): ``b . (f(x + eps b) - f(x)) / eps``, one more
network pass. The guard works per tile of ``window`` px, so a denoiser that fails on one part of a picture (a
painting's brush strokes beside a smooth sky) is held back there only, and steps in only where its blend would
change the result by more than rounding (``lam* < keep``) and where the full result is not clearly better than the
input (its estimated error above ``TRUST`` of the input's): on what the denoiser was trained for it changes nothing.
The noise level SURE needs is the one given or estimated, lowered where what the denoiser removed is visibly picture
detail rather than white noise (:func:`residual_noise_level`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

#: blends at or above this share of the denoiser's change are left as they are (the estimate's own noise)
KEEP = 0.9
#: a result whose estimated error is at most this share of the input's is left as it is: the estimate, biased where
#: the noise level was read low (clipped highlights), must not hold back a denoiser that clearly helps
TRUST = 0.5
#: a blend below this share is the input itself: what it would keep of the denoiser's change is worth at most
#: ``lam^2`` of its error, less than the Monte-Carlo estimate's own noise
DROP = 0.2
#: a noise-estimating model's own level is the one checked against where it reads at least this many times the
#: white-noise estimate: camera noise is correlated (demosaicking, in-camera noise reduction, JPEG), so the
#: white-noise estimators read it 6-15x low on real photos (cc15), while on white noise, clean pictures and synthetic
#: ones (text, screenshots, paintings: sharp edges it reads as noise) the model reads 1.5-5x the white estimate and
#: that estimate is the right one. Nothing read as white noise at all (flat synthetic pictures) is never noise.
CORRELATED = 5.0
#: a removed part whose neighbouring pixels correlate below this is mostly picture detail, not noise (white noise:
#: about 0 at every level on photos; detail removed from a clean painting or text: -0.3 to -0.45)
STRUCTURED = -0.25


def _local_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """The mean over each pixel's ``window`` x ``window`` neighbourhood (odd ``window``; fewer pixels at the
    borders) of ``x`` summed over its channels: 1 x C x H x W -> 1 x 1 x H x W."""
    s = x.sum(1, keepdim=True)
    return F.avg_pool2d(s, window, stride=1, padding=window // 2, count_include_pad=False)


def residual_noise_level(r: torch.Tensor, structured: float = STRUCTURED, texture_corr: float = -0.5) -> float:
    """An upper bound on the noise in what a denoiser removed (``r`` = input - result, 1 x C x H x W), or infinity:
    removed noise is white, removed picture detail (brush strokes, text edges) is a high-pass pattern whose
    neighbouring pixels are anti-correlated. When the removed part's neighbour correlation is below ``structured``,
    the noise in it is at most its power times ``1 - corr / texture_corr`` (texture alone at ``texture_corr``), a
    level that a textured but clean picture's other estimates read far too high."""
    def corr(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / (a.square().sum().sqrt() * b.square().sum().sqrt()).clamp_min(1e-20))

    if min(r.shape[-2:]) < 3:
        return float("inf")
    c = 0.5 * (corr(r[..., :, 1:], r[..., :, :-1]) + corr(r[..., 1:, :], r[..., :-1, :]))
    if c >= structured:
        return float("inf")
    return float((r.square().mean() * max(0.0, 1 - c / texture_corr)).sqrt())


def sure_blend(
    denoise: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    out: torch.Tensor,
    sigma: float,
    window: int = 65,
    seed: int = 0,
    keep: float = KEEP,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``out`` (the denoiser's result on ``x``, both 1 x C x H x W) blended back towards ``x`` by the SURE-optimal
    weight of each ``window`` x ``window`` neighbourhood, for noise of level ``sigma`` on the [0, 1] scale. Returns
    the image and what the guard did (the smallest weight, the share of pixels it held back)."""
    sigma = min(sigma, residual_noise_level(x - out))
    if sigma <= 0:  # nothing in the picture reads as noise: whatever the denoiser changed was picture
        return x.clone(), {"min_weight": 0.0, "held_back": 1.0}
    g = torch.Generator().manual_seed(seed)
    b = torch.randn(x.shape, generator=g)
    eps = max(sigma, 1e-3) * 0.01
    window = max(1, min(window | 1, 2 * (min(x.shape[-2:]) // 2) - 1))  # odd, and no larger than the image
    div = b * (denoise(x + eps * b) - out) / eps  # per pixel; averaged per window below
    r = x - out
    channels = x.shape[1]
    energy, spread = _local_mean(r.square(), window), sigma**2 * (channels - _local_mean(div, window))
    lam = (spread / energy.clamp_min(1e-12)).clamp(0, 1)
    risk = (energy - 2 * spread) / (channels * sigma**2) + 1  # SURE of the full result / the input's error
    trusted = (lam >= keep) | (risk <= TRUST)
    lam = torch.where(trusted, torch.ones_like(lam), torch.where(lam < DROP, torch.zeros_like(lam), lam))
    blended = torch.where(lam >= 1, out, x - lam * r)  # trusted pixels: the denoiser's own values, bit for bit
    info = {"min_weight": float(lam.min()), "held_back": float((lam < 1).float().mean())}
    return blended, info
