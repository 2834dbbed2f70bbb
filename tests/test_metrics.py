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
    # every subset is the whole set: the std is undefined (NaN, null in JSON), not a certain 0
    assert value == pytest.approx(expected, rel=1e-12) and np.isnan(std)


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


def _prdc_reference(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """clovaai/generative-evaluation-prdc ``compute_prdc`` (MIT), as published: k-th neighbour radii by
    partition (the point itself is the 0th), strict ``<`` everywhere."""

    def dist(a, b):
        return np.sqrt(np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0))

    def kth(d, k):
        return np.take_along_axis(d, np.argpartition(d, k, axis=-1)[..., k : k + 1], axis=-1)[..., 0]

    r_real, r_fake = kth(dist(real, real), k), kth(dist(fake, fake), k)
    d = dist(real, fake)
    return {
        "precision": float((d < r_real[:, None]).any(axis=0).mean()),
        "recall": float((d < r_fake[None, :]).any(axis=1).mean()),
        "density": float((1.0 / k) * (d < r_real[:, None]).sum(axis=0).mean()),
        "coverage": float((d.min(axis=1) < r_real).mean()),
    }


def test_density_and_coverage_match_the_reference_code_with_ties():
    rng = np.random.default_rng(3)
    # integer grid points: many equal distances, so "<" and "<=" give different answers
    real = rng.integers(0, 4, (60, 2)).astype(np.float64)
    fake = rng.integers(0, 4, (50, 2)).astype(np.float64)
    for a, b in ((real, fake), (real, real), (real, real[:40]), (fake, real)):
        ours, ref = gm.precision_recall_density_coverage(a, b, k_dc=5), _prdc_reference(a, b, 5)
        assert ours["density"] == pytest.approx(ref["density"], abs=1e-12)
        assert ours["coverage"] == pytest.approx(ref["coverage"], abs=1e-12)
    # identical continuous sets (no ties): density and coverage are exactly 1
    feats = rng.standard_normal((300, 16))
    same = gm.precision_recall_density_coverage(feats, feats.copy())
    assert same["density"] == 1.0 and same["coverage"] == 1.0


def test_kid_std_is_undefined_when_every_subset_is_the_whole_set():
    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((50, 8)), rng.standard_normal((50, 8)) + 0.5
    kid, std = gm.kernel_inception_distance(real, fake, subsets=10, subset_size=1000)
    assert kid > 0 and np.isnan(std)
    kid2, std2 = gm.kernel_inception_distance(real, fake, subsets=10, subset_size=20)
    assert np.isfinite(std2) and std2 > 0 and abs(kid2 - kid) < 0.2


def test_papers_ssim_matches_scikit_image_gaussian_form():
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    ref = rng.random((40, 52, 3))
    out = np.clip(ref + rng.normal(0, 0.1, ref.shape), 0, 1)
    want = skm.structural_similarity(
        ref, out, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ssim(ref, out, gaussian=True) == pytest.approx(want, abs=1e-6)
    gray_want = skm.structural_similarity(
        ref[..., 0], out[..., 0], data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ssim(ref[..., :1], out[..., :1], gaussian=True) == pytest.approx(gray_want, abs=1e-6)
    assert ssim(ref, out, gaussian=True) < ssim(ref, out)  # the papers' form reads lower on noisy images
