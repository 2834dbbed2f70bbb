"""Generation metrics on feature vectors (any extractor): Fréchet distance, KID, IS, precision/recall,
density/coverage. All in float64; inputs are N x D arrays. Also the directory-level evaluation behind ``convgen eval
generation`` and :class:`SampleValidator`, the validation of a generator's samples during training.

References: Heusel et al. 2017 (FID), Bińkowski et al. 2018 (KID, unbiased polynomial-kernel MMD), Salimans et
al. 2016 (IS), Kynkäänniemi et al. 2019 (improved precision/recall, k-NN manifolds), Naeem et al. 2020
(density/coverage).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from convgen.data.transforms import resize
from convgen.errors import ConvgenError, ImageError
from convgen.io.images import list_images, read_image
from convgen.metrics.extractors import (
    ClassifierExtractor,
    StatsCache,
    default_extractor,
    folder_features,
    get_extractor,
    tensor_features,
)


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
    """Unbiased MMD^2 with the kernel (x.y / d + coef0)^degree, mean and std over random subsets.

    The subsets have ``min(subset_size, len(real), len(fake))`` samples; when that is all of both sets every subset
    is the same, and the std is NaN (undefined), not 0."""
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
    if m == len(real) == len(fake) or subsets < 2:
        return float(np.mean(values)), float("nan")
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
    """Improved precision/recall with ``k_pr``-NN manifolds (paper: k=3) and density/coverage with ``k_dc`` (k=5).

    As in the reference code: precision/recall count a sample inside a k-NN ball when its distance is ``<=`` the
    radius (Kynkäänniemi et al.'s ``distance <= radii``), density/coverage when it is strictly ``<`` (Naeem et
    al.'s ``prdc``), so identical real and fake sets without ties give density 1 and coverage 1."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    d_rr, d_ff = np.sort(_pairwise(real, real), axis=1), np.sort(_pairwise(fake, fake), axis=1)
    r_real_pr, r_fake_pr, r_real_dc = d_rr[:, k_pr], d_ff[:, k_pr], d_rr[:, k_dc]  # column 0 is the point itself
    d_rf = _pairwise(real, fake)  # real x fake
    inside_dc = d_rf < r_real_dc[:, None]
    return {
        "precision": float((d_rf <= r_real_pr[:, None]).any(0).mean()),
        "recall": float((d_rf <= r_fake_pr[None, :]).any(1).mean()),
        "density": float(inside_dc.sum(0).mean() / k_dc),
        "coverage": float(inside_dc.any(1).mean()),
    }


def per_class_precision_recall(
    real_features: np.ndarray,
    real_probs: np.ndarray,
    fake_features: np.ndarray,
    fake_probs: np.ndarray,
    pr_max: int = 2000,
    seed: int = 0,
    min_images: int = 10,
) -> dict[str, dict[str, float | None]]:
    """Precision and recall within each class, both sets grouped by the feature network's predicted class (so an
    unconditional generator's samples are grouped the same way as the real images): whether the samples the
    classifier calls "cat" look like real cats (precision) and cover them (recall), and each class's share of the
    samples and of the real images. A class with fewer than ``min_images`` in either set gets None."""
    rng = np.random.default_rng(seed)
    real_cls, fake_cls = real_probs.argmax(1), fake_probs.argmax(1)
    out: dict[str, dict[str, float | None]] = {}
    for c in range(real_probs.shape[1]):
        r, f = real_features[real_cls == c], fake_features[fake_cls == c]
        row: dict[str, float | None] = {"real_share": len(r) / len(real_cls), "fake_share": len(f) / len(fake_cls)}
        if min(len(r), len(f)) >= min_images:
            r = r[rng.choice(len(r), min(pr_max, len(r)), replace=False)]
            f = f[rng.choice(len(f), min(pr_max, len(f)), replace=False)]
            prdc = precision_recall_density_coverage(r, f)
            row.update(precision=prdc["precision"], recall=prdc["recall"])
        else:
            row.update(precision=None, recall=None)
        out[str(c)] = row
    return out


# ---------------------------------------------------------------------------------------------------------------
# Directory-level evaluation behind ``convgen eval generation``, and validation of a generator's samples
# ---------------------------------------------------------------------------------------------------------------


def evaluate_generation(
    real: str | Path,
    fake: str | Path,
    extractor: str | None = None,
    inception_weights: str | Path | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    pr_max: int = 5000,
    seed: int = 0,
    limit: int | None = None,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    batch_size: int = 250,
    train: str | Path | None = None,
    pairs_out: str | Path | None = None,
    two_sample: bool = False,
    audit_limit: int = 5000,
    device: str = "cpu",
    per_class: bool = False,
) -> dict[str, Any]:
    """Fréchet distance, KID, IS, precision/recall, density/coverage between two image folders.

    ``extractor`` is ``inception-v3`` (standard FID), ``mnist-classifier`` or any convgen classifier; ``None``
    picks one from the images (:func:`~convgen.metrics.extractors.default_extractor`). Features of ``real`` are
    cached (see :class:`~convgen.metrics.extractors.StatsCache`). With ``train`` (the generator's training images),
    a memorisation check compares the fakes' nearest training neighbours with those of the held-out ``real``
    images; ``two_sample`` adds a classifier two-sample test; ``per_class`` precision and recall within each class
    the feature network predicts (:func:`per_class_precision_recall`).
    """
    if pairs_out is not None and train is None:
        raise ConvgenError("`pairs` needs `train` (the pairs are samples and their nearest training images)")
    for name, value in (("limit", limit), ("audit_limit", audit_limit)):
        if value is not None and value < 10:
            raise ConvgenError(f"`{name}` {value}: at least 10 images are needed")
    if kid_subsets < 1 or kid_subset_size < 2 or pr_max < 10 or batch_size < 1:
        raise ConvgenError("KID needs >= 1 subset of >= 2 samples, precision/recall >= 10, and a batch size >= 1")
    for name, folder in (("`real`", real), ("`fake`", fake)):
        if not Path(folder).is_dir():
            raise ImageError(f"{folder}: directory not found ({name})")
        count = len(list_images(folder))
        if min(count, limit or count) < 10:
            raise ConvgenError(f"{name} has {count} images; at least 10 are needed")
    if extractor is None:
        first = list_images(real)
        if not first:
            raise ImageError(f"{real}: no images found")
        extractor = default_extractor(read_image(first[0]))
    if per_class and extractor == "inception-v3":
        raise ConvgenError("`per_class` groups images by a domain classifier's classes: give one as `extractor`")
    ex = get_extractor(extractor, inception_weights, device=device)
    stats_cache = StatsCache(cache_dir) if cache else None
    real_fs, _ = folder_features(real, ex, limit, stats_cache, batch_size, desc="real")
    fake_fs, _ = folder_features(fake, ex, limit, None, batch_size, desc="fake")
    result = metrics_from_features(real_fs, fake_fs, ex, str(real), kid_subsets, kid_subset_size, pr_max, seed)
    result["protocol"]["real_features_cached"] = real_fs.cached
    if per_class:
        names = list(getattr(ex, "class_names", None) or [])
        rows = per_class_precision_recall(real_fs.features, real_fs.probs, fake_fs.features, fake_fs.probs, seed=seed)
        result["per_class"] = {names[int(c)] if int(c) < len(names) else c: row for c, row in rows.items()}
        result["protocol"]["per_class"] = "both sets grouped by the feature network's predicted class; k = 3"
    if train is not None or two_sample:
        from convgen.metrics.audit import load_image_tensor, memorization_report, two_sample_test

        x_real = load_image_tensor(real, audit_limit)
        x_fake = load_image_tensor(fake, audit_limit, like=x_real)
        if two_sample:
            result["two_sample"] = two_sample_test(x_real, x_fake, seed=seed)
        if train is not None:
            x_train = load_image_tensor(train, None, like=x_real)
            result["memorization"] = memorization_report(x_fake, x_train, x_real, pairs_out=pairs_out)
    return result


def metrics_from_features(
    real,
    fake,
    extractor,
    real_split: str,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    pr_max: int = 5000,
    seed: int = 0,
) -> dict[str, Any]:
    """The metrics of :func:`evaluate_generation` from two :class:`~convgen.metrics.extractors.FeatureSet`."""
    for name, fs in (("real", real), ("fake", fake)):
        if len(fs.features) < 10:
            raise ConvgenError(f"`{name}` has {len(fs.features)} images; at least 10 are needed")
    fd = frechet_distance(real.mu, real.sigma, fake.mu, fake.sigma)
    kid, kid_std = kernel_inception_distance(real.features, fake.features, kid_subsets, kid_subset_size, seed=seed)
    is_mean, is_std = inception_score(fake.probs.astype(np.float64), splits=min(10, len(fake.probs)))
    rng = np.random.default_rng(seed)
    sub_r = real.features[rng.choice(len(real.features), min(pr_max, len(real.features)), replace=False)]
    sub_f = fake.features[rng.choice(len(fake.features), min(pr_max, len(fake.features)), replace=False)]
    prdc = precision_recall_density_coverage(sub_r, sub_f)
    named = {} if extractor.standard else {f"fd_{extractor.tag}": fd, f"kid_{extractor.tag}": kid}
    return {
        "fid": fd,
        **named,
        "kid": kid,
        "kid_std": kid_std,
        "is": is_mean,
        "is_std": is_std,
        **prdc,
        "protocol": {
            **extractor.protocol(),
            "feature_dim": int(real.features.shape[1]),
            "n_real": len(real.features),
            "n_fake": len(fake.features),
            "real_split": real_split,
            "kid": {
                "subsets": kid_subsets,
                "subset_size": min(kid_subset_size, len(real.features), len(fake.features)),
                "subset_size_requested": kid_subset_size,
                "kernel": "(x.y/d + 1)^3",
                **_kid_note(kid_subset_size, len(real.features), len(fake.features)),
            },
            "is_splits": min(10, len(fake.probs)),
            "precision_recall": {"k": 3, "n_max": pr_max},
            "density_coverage": {"k": 5},
            "seed": seed,
        },
    }


def _kid_note(requested: int, n_real: int, n_fake: int) -> dict[str, str]:
    m = min(requested, n_real, n_fake)
    if m == requested:
        return {}
    note = f"subsets shrunk from {requested} to {m} samples (the smaller set)"
    if m == n_real == n_fake:
        note += "; every subset is the whole set, so kid_std is undefined (null)"
    return {"note": note}


def generation_metrics(
    x_real: torch.Tensor, x_fake: torch.Tensor, extractor, real_split: str, pr_max: int = 5000, seed: int = 0
) -> dict[str, Any]:
    """The metrics of :func:`evaluate_generation` for two image batches (B x C x H x W in [0, 1])."""
    real, fake = tensor_features(x_real, extractor), tensor_features(x_fake, extractor)
    return metrics_from_features(real, fake, extractor, real_split, pr_max=pr_max, seed=seed)


class SampleValidator:
    """Validation of generated samples in a classifier's feature space, as every generator family reports it:
    the Fréchet distance to the real images (``fd``; FD-<classifier>, not a standard FID), a diversity ratio (mean
    pairwise feature distance of the samples / of the real images; mode collapse drives it down), the smallest
    class share among the samples, and, given the requested ``labels``, the share the classifier assigns to them.
    Real statistics are computed once, on the first call."""

    def __init__(self, extractor: ClassifierExtractor, real: torch.Tensor, max_real: int = 10_000) -> None:
        self.extractor = extractor
        self._real = real[:max_real]
        self._real_stats: tuple[np.ndarray, np.ndarray, float] | None = None

    @classmethod
    def for_training(cls, name: str, channels: int, data, device: str) -> SampleValidator | None:
        """The validator a training task's ``fd_extractor`` names, against its validation images (or training
        images when it has none): ``auto`` is ``mnist-classifier`` for 1-channel data, else ``none`` (None)."""
        if name == "auto":
            name = "mnist-classifier" if channels == 1 else "none"
        if name == "none":
            return None
        ex = ClassifierExtractor(name, device, role="a classifier (task.fd_extractor)")
        if ex.channels != channels:
            raise ConvgenError(f"task.fd_extractor {name!r} expects {ex.channels}-channel images")
        split = data.val if data.val is not None else data.train
        real, _ = split.batch(torch.arange(min(len(split), 10_000)))
        return cls(ex, real)

    def features(self, x: torch.Tensor, batch_size: int = 500) -> tuple[np.ndarray, torch.Tensor]:
        """(float64 features, class probabilities) of images in [0, 1] at any size."""
        x = resize(x, self.extractor.image_size).clamp(0, 1)
        out = [self.extractor(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return torch.cat([f for f, _ in out]).double().numpy(), torch.cat([p for _, p in out])

    @staticmethod
    def diversity(feats: np.ndarray, n: int = 500) -> float:
        f = torch.from_numpy(feats[:n])
        d = torch.cdist(f, f)
        return float(d.sum() / (len(f) * (len(f) - 1)))

    def __call__(self, fakes: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        if self._real_stats is None:
            fr, _ = self.features(self._real)
            self._real_stats = (*feature_stats(fr), self.diversity(fr))
        mu_r, sig_r, div_r = self._real_stats
        ff, probs = self.features(fakes)
        pred = probs.argmax(1)
        shares = torch.bincount(pred, minlength=probs.shape[1]).double() / len(pred)
        result = {
            "fd": frechet_distance(mu_r, sig_r, *feature_stats(ff)),
            "diversity": self.diversity(ff) / div_r,
            "min_class_share": float(shares.min()),
        }
        if labels is not None:
            result["class_accuracy"] = float((pred == labels).double().mean())
        return result
