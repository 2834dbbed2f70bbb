"""Generation metrics on feature vectors (any extractor): Fréchet distance, KID, IS, precision/recall,
density/coverage. All in float64; inputs are N x D arrays.

References: Heusel et al. 2017 (FID), Bińkowski et al. 2018 (KID, unbiased polynomial-kernel MMD), Salimans et
al. 2016 (IS), Kynkäänniemi et al. 2019 (improved precision/recall, k-NN manifolds), Naeem et al. 2020
(density/coverage).
"""

from __future__ import annotations

import numpy as np
import torch


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2).

    Tr((S1 S2)^1/2) is the sum of square roots of the eigenvalues of S1^1/2 S2 S1^1/2 (symmetric PSD), which avoids
    the complex round-off of a general matrix square root.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def kernel_inception_distance(
    real: np.ndarray,
    fake: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    coef0: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """Unbiased MMD^2 with the kernel (x.y / d + coef0)^degree, mean and std over random subsets."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    m = min(subset_size, len(real), len(fake))
    d = real.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), m, replace=False)]
        y = fake[rng.choice(len(fake), m, replace=False)]
        kxx = (x @ x.T / d + coef0) ** degree
        kyy = (y @ y.T / d + coef0) ** degree
        kxy = (x @ y.T / d + coef0) ** degree
        values.append(
            (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
        )
    return float(np.mean(values)), float(np.std(values))


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))), mean and std over ``splits`` consecutive chunks."""
    p = np.asarray(probs, np.float64)
    scores = []
    for chunk in np.array_split(p, splits):
        py = chunk.mean(0, keepdims=True)
        kl = (chunk * (np.log(chunk + 1e-12) - np.log(py + 1e-12))).sum(1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return torch.cdist(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def precision_recall_density_coverage(
    real: np.ndarray, fake: np.ndarray, k_pr: int = 3, k_dc: int = 5
) -> dict[str, float]:
    """Improved precision/recall with ``k_pr``-NN manifolds (paper: k=3) and density/coverage with ``k_dc`` (k=5)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    d_rr, d_ff = np.sort(_pairwise(real, real), axis=1), np.sort(_pairwise(fake, fake), axis=1)
    r_real_pr, r_fake_pr, r_real_dc = d_rr[:, k_pr], d_ff[:, k_pr], d_rr[:, k_dc]  # column 0 is the point itself
    d_rf = _pairwise(real, fake)  # real x fake
    inside_dc = d_rf <= r_real_dc[:, None]
    return {
        "precision": float((d_rf <= r_real_pr[:, None]).any(0).mean()),
        "recall": float((d_rf <= r_fake_pr[None, :]).any(1).mean()),
        "density": float(inside_dc.sum(0).mean() / k_dc),
        "coverage": float(inside_dc.any(1).mean()),
    }
