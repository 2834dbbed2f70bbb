"""Metric parity with reference implementations (scipy, scikit-image) and known answers."""

import numpy as np
import pytest
import scipy.linalg
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from convgen.metrics import distribution as gm
from convgen.metrics.reference import ms_ssim, psnr, ssim


def scipy_frechet(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("dim", [8, 64])
def test_frechet_matches_scipy(dim):
    rng = np.random.default_rng(dim)
    a = rng.standard_normal((500, dim))
    b = rng.standard_normal((400, dim)) @ rng.standard_normal((dim, dim)) * 0.3 + 0.5
    ours = gm.frechet_distance(*gm.feature_stats(a), *gm.feature_stats(b))
    ref = scipy_frechet(*gm.feature_stats(a), *gm.feature_stats(b))
    assert ours == pytest.approx(ref, rel=1e-6)
    assert gm.frechet_distance(*gm.feature_stats(a), *gm.feature_stats(a)) == pytest.approx(0, abs=1e-8)


def test_kid_formula_on_hand_built_features():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = np.array([[2.0, 0.0], [0.0, 0.0], [1.0, 2.0]])
    k = lambda a, b: (a @ b.T / 2 + 1) ** 3  # noqa: E731
    m = 3
    expected = (
        (k(x, x).sum() - np.trace(k(x, x))) / (m * (m - 1))
        + (k(y, y).sum() - np.trace(k(y, y))) / (m * (m - 1))
        - 2 * k(x, y).mean()
    )
    value, std = gm.kernel_inception_distance(x, y, subsets=3, subset_size=3)
    assert value == pytest.approx(expected, rel=1e-12) and std == pytest.approx(0, abs=1e-12)


def test_inception_score_known_answers():
    uniform_confident = np.eye(10)[np.arange(100) % 10]  # every class equally, each prediction certain
    assert gm.inception_score(uniform_confident, splits=1)[0] == pytest.approx(10, rel=1e-6)
    collapsed = np.tile(np.eye(10)[3], (100, 1))
    assert gm.inception_score(collapsed, splits=1)[0] == pytest.approx(1, rel=1e-6)
    undecided = np.full((50, 10), 0.1)
    assert gm.inception_score(undecided, splits=5)[0] == pytest.approx(1, rel=1e-6)


def test_precision_recall_constructed_sets():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((400, 2))
    same = gm.precision_recall_density_coverage(real, real.copy())
    assert same["precision"] == 1 and same["recall"] == 1 and same["coverage"] == 1
    far = gm.precision_recall_density_coverage(real, real + 100)
    assert far["precision"] == 0 and far["recall"] == 0 and far["density"] == 0 and far["coverage"] == 0
    # fakes collapsed onto one real point: precise, but recall and coverage are tiny
    collapsed = gm.precision_recall_density_coverage(real, np.repeat(real[:1], 400, 0) + 1e-9)
    assert collapsed["precision"] == 1 and collapsed["recall"] < 0.05 and collapsed["coverage"] < 0.05


def test_psnr_ssim_match_skimage():
    rng = np.random.default_rng(1)
    for shape in [(40, 50), (33, 47, 3)]:
        clean = rng.random(shape)
        noisy = clean + rng.standard_normal(shape) * 0.1
        assert psnr(clean, noisy) == pytest.approx(peak_signal_noise_ratio(clean, noisy, data_range=1.0), abs=1e-4)
        ref = structural_similarity(clean, noisy, data_range=1.0, channel_axis=-1 if len(shape) == 3 else None)
        assert ssim(clean, noisy) == pytest.approx(ref, abs=1e-4)
    gray = rng.random((30, 30, 1))
    assert ssim(gray, gray * 0.9) == pytest.approx(
        structural_similarity(gray[..., 0], gray[..., 0] * 0.9, data_range=1.0), abs=1e-4
    )


def test_masked_psnr_and_ms_ssim_behaviour():
    rng = np.random.default_rng(2)
    clean = rng.random((64, 64))
    out = clean.copy()
    mask = np.zeros((64, 64), bool)
    mask[10:20, 10:30] = True
    out[mask] += 0.1
    assert psnr(clean, out, mask=mask) == pytest.approx(20.0, abs=1e-9)
    assert psnr(clean, out, mask=~mask) == float("inf")
    assert ms_ssim(clean, clean) == pytest.approx(1.0)
    slight, heavy = clean + rng.standard_normal(clean.shape) * 0.02, clean + rng.standard_normal(clean.shape) * 0.2
    assert 1 > ms_ssim(clean, slight) > ms_ssim(clean, heavy) > 0
