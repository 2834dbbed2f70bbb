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
