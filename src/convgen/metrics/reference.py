"""Full-reference restoration metrics on float images (HxW or HxWxC) with an explicit data range, and the
directory-level evaluation behind ``convgen eval restoration``.

SSIM follows scikit-image's ``structural_similarity`` defaults exactly (7x7 uniform window, sample covariance,
K1 0.01, K2 0.03, mean over the window-valid region, channels averaged); computed in float64.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from convgen.errors import ConvgenError, ImageError
from convgen.io.images import list_images, read_image, read_mask

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


def _gaussian_window(sigma: float = 1.5, radius: int = 5) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    w = w / w.sum()
    return (w[:, None] * w[None, :])[None, None]


def _ssim_maps(
    x: torch.Tensor, y: torch.Tensor, data_range: float, win: int = 7, gaussian: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and contrast-structure maps over the window-valid region: a uniform ``win`` x ``win`` window with sample
    covariance (scikit-image's default), or with ``gaussian`` the 11 x 11 Gaussian window of sigma 1.5 with
    population covariance (Wang et al. 2004, the MATLAB ``ssim`` of the papers)."""
    if gaussian:
        kernel = _gaussian_window()
        pool = lambda t: F.conv2d(t, kernel)  # noqa: E731
        cov_norm = 1.0
    else:
        pool = lambda t: F.avg_pool2d(t, win, stride=1)  # noqa: E731
        cov_norm = win * win / (win * win - 1)
    ux, uy = pool(x), pool(y)
    vx = cov_norm * (pool(x * x) - ux * ux)
    vy = cov_norm * (pool(y * y) - uy * uy)
    vxy = cov_norm * (pool(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    cs = (2 * vxy + c2) / (vx + vy + c2)
    return ((2 * ux * uy + c1) / (ux * ux + uy * uy + c1)) * cs, cs


def ssim(reference: np.ndarray, restored: np.ndarray, data_range: float = 1.0, gaussian: bool = False) -> float:
    """Mean SSIM, equal to ``skimage.metrics.structural_similarity(..., data_range=...)`` (channel_axis=-1); with
    ``gaussian``, the papers' form (11 x 11 Gaussian window, sigma 1.5, population covariance), equal to scikit-image
    with ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``."""
    x, y = _as_nchw(reference), _as_nchw(restored)
    side = 11 if gaussian else 7
    if min(x.shape[-2:]) < side:
        raise ValueError(f"SSIM needs images of at least {side}x{side} pixels, got {tuple(x.shape[-2:])}")
    s, _ = _ssim_maps(x, y, data_range, gaussian=gaussian)
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


# ---------------------------------------------------------------------------------------------------------------
# Directory-level evaluation behind ``convgen eval restoration``
# ---------------------------------------------------------------------------------------------------------------


def _pair_files(reference: Path, restored: Path) -> list[tuple[Path, Path]]:
    refs = list_images(reference) if reference.is_dir() else [reference]
    if restored.is_dir():
        pairs = []
        for r in refs:
            match = restored / r.name
            if not match.is_file():
                alt = [p for p in restored.glob(r.stem + ".*") if p.suffix.lower() in (".png", ".npy", ".tif", ".tiff")]
                if len(alt) != 1:
                    raise ImageError(f"{restored}: no restored image for {r.name}")
                match = alt[0]
            pairs.append((r, match))
        return pairs
    if not restored.is_file():
        raise ImageError(f"{restored}: file or directory not found")
    if reference.is_dir():
        raise ConvgenError("`reference` is a directory but `restored` is a single file")
    return [(reference, restored)]


def evaluate_restoration(
    reference: str | Path, restored: str | Path, mask: str | Path | None = None, data_range: float = 1.0
) -> dict[str, Any]:
    """PSNR / SSIM (scikit-image's default and the papers' Gaussian form) / MS-SSIM per image and their means; PSNR
    on missing pixels when masks are given."""
    reference, restored = Path(reference), Path(restored)
    if not (math.isfinite(data_range) and data_range > 0):
        raise ConvgenError(f"`data_range` must be a positive number (1.0 for images in [0, 1]), got {data_range}")
    if not reference.exists():
        raise ImageError(f"{reference}: file or directory not found")
    per_image: dict[str, dict[str, float]] = {}
    for ref_path, out_path in tqdm(
        _pair_files(reference, restored), desc="eval", file=sys.stderr, leave=False, disable=None
    ):
        ref, out = read_image(ref_path), read_image(out_path)
        if ref.shape[:2] != out.shape[:2]:
            raise ImageError(
                f"{out_path}: size {out.shape[1]}x{out.shape[0]} differs from the reference "
                f"{ref.shape[1]}x{ref.shape[0]}"
            )
        if ref.shape[-1] != out.shape[-1]:
            raise ImageError(f"{out_path}: {out.shape[-1]} channels, the reference has {ref.shape[-1]}")
        if min(ref.shape[:2]) < 11:
            raise ImageError(f"{ref_path}: {ref.shape[1]}x{ref.shape[0]} is too small for SSIM (at least 11x11)")
        values = {
            "psnr": psnr(ref, out, data_range),
            "ssim": ssim(ref, out, data_range),
            "ssim_wang": ssim(ref, out, data_range, gaussian=True),
            "ms_ssim": ms_ssim(ref, out, data_range),
        }
        if mask is not None:
            mask_path = Path(mask) / ref_path.name if Path(mask).is_dir() else Path(mask)
            m = read_mask(mask_path.with_suffix(".png") if not mask_path.exists() else mask_path, ref.shape[:2])
            values["psnr_missing"] = psnr(ref, out, data_range, mask=m)
        per_image[ref_path.name] = values
    keys = next(iter(per_image.values())).keys()
    means = {k: float(np.mean([v[k] for v in per_image.values()])) for k in keys}
    return {
        **means,
        "n_images": len(per_image),
        "per_image": per_image,
        "protocol": {
            "data_range": data_range,
            "border_crop": 0,
            "ssim": "skimage defaults: 7x7 uniform window, sample covariance, K1 0.01, K2 0.03, channels averaged",
            "ssim_wang": "the papers' SSIM (Wang et al. 2004, MATLAB ssim): 11x11 Gaussian window sigma 1.5, "
            "population covariance, K1 0.01, K2 0.03, channels averaged (skimage gaussian_weights=True, sigma=1.5, "
            "use_sample_covariance=False)",
            "ms_ssim": "7x7 uniform window, up to 5 scales, Wang et al. 2003 weights",
        },
    }


def finite_or_none(obj: Any) -> Any:
    """JSON has no infinity or NaN: PSNR of identical images, an undefined std, become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def bits_per_pixel_of_file(path: str | Path, height: int, width: int) -> float:
    """The rate of a compressed file: 8 x its size in bytes (header included) / (height x width)."""
    return 8.0 * Path(path).stat().st_size / (height * width)
