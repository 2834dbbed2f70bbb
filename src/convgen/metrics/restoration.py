"""Full-reference restoration metrics on float images (HxW or HxWxC) with an explicit data range.

SSIM follows scikit-image's ``structural_similarity`` defaults exactly (7x7 uniform window, sample covariance,
K1 0.01, K2 0.03, mean over the window-valid region, channels averaged); computed in float64.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _as_nchw(img: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(img, dtype=np.float64))
    if t.ndim == 2:
        t = t[..., None]
    return t.permute(2, 0, 1)[:, None]  # channels as batch: C x 1 x H x W


def psnr(reference: np.ndarray, restored: np.ndarray, data_range: float = 1.0, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB; with ``mask`` (True = counted), only those pixels count."""
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(restored, dtype=np.float64)
    diff2 = (ref - out) ** 2
    if mask is not None:
        m = np.broadcast_to(mask.reshape(mask.shape[:2] + (1,) * (diff2.ndim - 2)), diff2.shape)
        if not m.any():
            return float("nan")
        mse = diff2[m].mean()
    else:
        mse = diff2.mean()
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def _ssim_maps(x: torch.Tensor, y: torch.Tensor, data_range: float, win: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and contrast-structure maps over the window-valid region (uniform window, sample covariance)."""
    pool = lambda t: F.avg_pool2d(t, win, stride=1)  # noqa: E731
    cov_norm = win * win / (win * win - 1)
    ux, uy = pool(x), pool(y)
    vx = cov_norm * (pool(x * x) - ux * ux)
    vy = cov_norm * (pool(y * y) - uy * uy)
    vxy = cov_norm * (pool(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    cs = (2 * vxy + c2) / (vx + vy + c2)
    return ((2 * ux * uy + c1) / (ux * ux + uy * uy + c1)) * cs, cs


def ssim(reference: np.ndarray, restored: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM, equal to ``skimage.metrics.structural_similarity(..., data_range=...)`` (channel_axis=-1)."""
    x, y = _as_nchw(reference), _as_nchw(restored)
    if min(x.shape[-2:]) < 7:
        raise ValueError(f"SSIM needs images of at least 7x7 pixels, got {tuple(x.shape[-2:])}")
    s, _ = _ssim_maps(x, y, data_range)
    return float(s.mean(dim=(1, 2, 3)).mean())


def ms_ssim(reference: np.ndarray, restored: np.ndarray, data_range: float = 1.0) -> float:
    """Multi-scale SSIM (Wang et al. 2003): contrast-structure at coarse scales, full SSIM at the coarsest.

    Uses the 7x7 window of :func:`ssim` and as many of the five standard scales as the image size allows
    (weights renormalised when fewer than five fit).
    """
    x, y = _as_nchw(reference), _as_nchw(restored)
    scales = 1
    while scales < 5 and min(x.shape[-2:]) // 2**scales >= 7:
        scales += 1
    w = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=torch.float64)
    w = w / w.sum()
    values = []
    for i in range(scales):
        s, cs = _ssim_maps(x, y, data_range)
        values.append((s if i == scales - 1 else cs).mean(dim=(1, 2, 3)).clamp_min(0))
        if i < scales - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    stacked = torch.stack(values, 0)  # scales x C
    return float(torch.prod(stacked ** w[:, None], 0).mean())
