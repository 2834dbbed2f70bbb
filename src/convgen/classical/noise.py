"""Blind noise-level estimation: the wavelet median-absolute-deviation estimate of Donoho & Johnstone (1994), as
scikit-image's ``estimate_sigma`` computes it (Daubechies-2 diagonal detail band of one 2-D DWT level, symmetric
extension, zero coefficients dropped, median(|d|) / 0.6745), in NumPy alone so no optional dependency is needed."""

from __future__ import annotations

import numpy as np

#: the Daubechies-2 decomposition high-pass filter (PyWavelets' ``Wavelet("db2").dec_hi``)
DB2_HIGH = np.array([-0.48296291314453416, 0.8365163037378079, -0.2241438680420134, -0.12940952255126037])
#: the 0.75 quantile of the standard normal distribution (scipy.stats.norm.ppf(0.75))
NORMAL_Q75 = 0.6744897501960817


def _high_pass(x: np.ndarray, axis: int) -> np.ndarray:
    """One level of the DWT's detail coefficients along ``axis`` (symmetric extension, as PyWavelets' default)."""
    x = np.moveaxis(x, axis, -1)
    pad = [(0, 0)] * (x.ndim - 1) + [(len(DB2_HIGH) - 1, len(DB2_HIGH) - 1)]
    ext = np.pad(x, pad, mode="symmetric")
    n = x.shape[-1]
    out_len = (n + len(DB2_HIGH) - 1) // 2
    windows = np.lib.stride_tricks.sliding_window_view(ext, len(DB2_HIGH), axis=-1)  # ... x (n + L - 1) x L
    full = windows @ DB2_HIGH[::-1]
    return np.moveaxis(full[..., 1::2][..., :out_len], -1, axis)


def estimate_sigma(image: np.ndarray) -> float:
    """The noise standard deviation (on the image's own scale) of an H x W or H x W x C image, averaged over its
    channels. Equal to ``skimage.restoration.estimate_sigma(image, channel_axis=-1, average_sigmas=True)`` for
    colour images (tested)."""
    arr = np.asarray(image, dtype=np.float64)
    channels = [arr] if arr.ndim == 2 else [arr[..., c] for c in range(arr.shape[-1])]
    sigmas = []
    for ch in channels:
        detail = _high_pass(_high_pass(ch, 0), 1)
        detail = detail[np.nonzero(detail)]
        sigmas.append(float(np.median(np.abs(detail)) / NORMAL_Q75) if detail.size else 0.0)
    return float(np.mean(sigmas))


#: the 20th percentile of the block estimates of pure Gaussian noise, as a share of its true level, for gray and
#: colour blocks of 32 x 32 pixels (measured over 4,000 blocks each; tests/test_restoration.py checks the result)
BLOCK_QUANTILE = 0.2
BLOCK_BIAS = {1: 0.905, 3: 0.932}


def estimate_sigma_blocks(image: np.ndarray, block: int = 32, quantile: float = BLOCK_QUANTILE) -> float:
    """The noise standard deviation of an image whose texture would fool :func:`estimate_sigma`: the wavelet
    estimate of every ``block`` x ``block`` tile, the ``quantile`` of them (the least textured tiles, where the
    diagonal band is mostly noise), corrected for the quantile's bias on pure noise. Equal to it on flat noise;
    near 0 on a clean but textured picture, where the global estimate reads its texture as noise."""
    arr = np.asarray(image, dtype=np.float64)
    arr = arr[..., None] if arr.ndim == 2 else arr
    h, w = arr.shape[:2]
    if min(h, w) < 2 * block:
        return estimate_sigma(arr)
    values = []
    for y in range(0, h - block + 1, block):
        for x in range(0, w - block + 1, block):
            values.append(estimate_sigma(arr[y : y + block, x : x + block]))
    bias = BLOCK_BIAS.get(arr.shape[-1], BLOCK_BIAS[3]) if quantile == BLOCK_QUANTILE and block == 32 else 1.0
    return float(np.quantile(values, quantile) / bias)


def estimate_sigma_pca(image: np.ndarray, patch: int = 7, stride: int | None = None) -> float:
    """The noise standard deviation by the patch-PCA estimate of Chen, Zhu & Heng (ICCV 2015): the covariance of
    the picture's ``patch`` x ``patch`` patches has the noise variance as its smallest eigenvalues, while texture
    lives in a few large ones; the estimate is the mean of the largest set of smallest eigenvalues whose mean equals
    their median. Not fooled by dense texture (a painting's brush strokes) as the wavelet estimates are. The patches
    are taken every ``stride`` pixels (default: as densely as it takes to have 50 per dimension; 64 x 64 colour
    pictures use them all), within 3% of the true level on pure noise from 48 px up."""
    arr = np.asarray(image, dtype=np.float64)
    arr = arr[..., None] if arr.ndim == 2 else arr
    if arr.shape[-1] > 1 and all(np.array_equal(arr[..., 0], arr[..., k]) for k in range(1, arr.shape[-1])):
        arr = arr[..., :1]  # a gray picture stored as RGB: its copies would read as noise-free directions
    h, w, c = arr.shape
    if min(h, w) < patch:
        return estimate_sigma(arr)
    if stride is None:  # about 50 patches per dimension of a patch: fewer bias the smallest eigenvalues low
        stride = max(1, int(np.sqrt((h - patch + 1) * (w - patch + 1) / (50 * c * patch * patch))))
    windows = np.lib.stride_tricks.sliding_window_view(arr, (patch, patch), axis=(0, 1))[::stride, ::stride]
    x = windows.reshape(-1, c * patch * patch)
    x = x - x.mean(0)
    eig = np.sort(np.linalg.eigvalsh(x.T @ x / max(len(x) - 1, 1)))
    for r in range(len(eig), 0, -1):
        sub = eig[:r]
        tau = sub.mean()
        if abs(int((sub > tau).sum()) - int((sub < tau).sum())) <= 1:
            return float(np.sqrt(max(tau, 0.0)))
    return float(np.sqrt(max(eig[0], 0.0)))


def estimate_noise_level(image: np.ndarray) -> float:
    """The noise level a guard can trust on any picture: the smaller of the patch-PCA estimate (not fooled by
    dense texture) and the block-wavelet one (not fooled by sharp synthetic edges: text, screenshots)."""
    return min(estimate_sigma_pca(image), estimate_sigma_blocks(image))
