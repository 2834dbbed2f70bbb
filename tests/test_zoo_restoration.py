"""The shipped denoisers reproduce their model cards by the benchmark protocol (Set12 fast, BSD68 slow)."""

from __future__ import annotations

import numpy as np
import pytest

import convgen
from convgen.data.degrade import gaussian_noise
from convgen.io.images import list_images, read_image
from convgen.metrics.restoration import psnr
from tests.conftest import SHARED_DATA

DENOISE = SHARED_DATA / "denoise"
needs_data = pytest.mark.skipif(not DENOISE.is_dir(), reason="../shared/data/denoise not present")


def protocol_psnr(set_name: str, limit: int | None = None, sigma: float = 25, model: str = "denoise-gray-s25") -> float:
    pipe = convgen.load(model, device="cpu")
    scores = []
    for i, f in enumerate(list_images(DENOISE / set_name)[:limit]):
        clean = read_image(f, channels=1).astype(np.float64)
        noisy = gaussian_noise(clean, sigma, i).astype(np.float32)
        restored = pipe.restore(noisy, sigma=sigma)
        assert restored.shape == clean.shape and restored.dtype == np.float32
        scores.append(psnr(clean, restored))
    return float(np.mean(scores))


@needs_data
def test_denoise_gray_s25_on_set12_images():
    # first four Set12 images at sigma 25; the card gives the full Set12 mean (29.98 dB; BM3D: 29.97)
    assert protocol_psnr("set12", limit=4) > 30.2  # measured 30.34


@pytest.mark.slow
@needs_data
def test_denoise_gray_s25_on_bsd68():
    assert protocol_psnr("bsd68") >= 28.9


@needs_data
def test_denoise_gray_blind_on_set12_images_at_three_levels():
    # one blind model for every level; first four Set12 images (measured 32.27 / 30.16 / 26.89 dB)
    for sigma, floor in ((15, 32.1), (25, 30.0), (50, 26.7)):
        assert protocol_psnr("set12", limit=4, sigma=sigma, model="denoise-gray-blind") > floor


@pytest.mark.slow
@needs_data
def test_denoise_gray_blind_within_0p3_db_of_s25_on_bsd68():
    assert protocol_psnr("bsd68", model="denoise-gray-blind") >= 28.96 - 0.3
