"""Directory-level evaluation behind ``convgen eval restoration`` and ``convgen eval generation``.

Every result carries its protocol, so a number can be reproduced and is never mistaken for another metric: a
Fréchet distance computed in the ``mnist-classifier`` feature space is reported as ``fd_mnistcls`` (and, for the
command-line contract, as ``fid`` with ``protocol.fid_is_standard: false``), never as a bare standard FID.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from convgen.errors import ConvgenError, ImageError
from convgen.io.images import list_images, read_image, read_mask
from convgen.metrics import generation as gm
from convgen.metrics.restoration import ms_ssim, psnr, ssim


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
        raise ConvgenError("--reference is a directory but --restored is a single file")
    return [(reference, restored)]


def evaluate_restoration(
    reference: str | Path, restored: str | Path, mask: str | Path | None = None, data_range: float = 1.0
) -> dict[str, Any]:
    """PSNR / SSIM / MS-SSIM per image and their means; PSNR on missing pixels when masks are given."""
    reference, restored = Path(reference), Path(restored)
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
        values = {
            "psnr": psnr(ref, out, data_range),
            "ssim": ssim(ref, out, data_range),
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
            "ms_ssim": "7x7 uniform window, up to 5 scales, Wang et al. 2003 weights",
        },
    }


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
) -> dict[str, Any]:
    """Fréchet distance, KID, IS, precision/recall, density/coverage between two image folders.

    ``extractor`` is ``inception-v3`` (standard FID), ``mnist-classifier`` or any convgen classifier; ``None``
    picks one from the images (:func:`~convgen.metrics.extractors.default_extractor`). Features of ``real`` are
    cached (see :class:`~convgen.metrics.extractors.StatsCache`). With ``train`` (the generator's training images),
    a memorisation check compares the fakes' nearest training neighbours with those of the held-out ``real``
    images; ``two_sample`` adds a classifier two-sample test.
    """
    from convgen.metrics.extractors import StatsCache, default_extractor, folder_features, get_extractor

    for name, folder in (("--real", real), ("--fake", fake)):
        if not Path(folder).is_dir():
            raise ImageError(f"{folder}: directory not found ({name})")
    if extractor is None:
        first = list_images(real)
        if not first:
            raise ImageError(f"{real}: no images found")
        extractor = default_extractor(read_image(first[0]))
    ex = get_extractor(extractor, inception_weights, device=device)
    stats_cache = StatsCache(cache_dir) if cache else None
    real_fs, _ = folder_features(real, ex, limit, stats_cache, batch_size, desc="real")
    fake_fs, _ = folder_features(fake, ex, limit, None, batch_size, desc="fake")
    result = metrics_from_features(real_fs, fake_fs, ex, str(real), kid_subsets, kid_subset_size, pr_max, seed)
    result["protocol"]["real_features_cached"] = real_fs.cached
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
            raise ConvgenError(f"--{name} has {len(fs.features)} images; at least 10 are needed")
    fd = gm.frechet_distance(real.mu, real.sigma, fake.mu, fake.sigma)
    kid, kid_std = gm.kernel_inception_distance(real.features, fake.features, kid_subsets, kid_subset_size, seed=seed)
    is_mean, is_std = gm.inception_score(fake.probs.astype(np.float64), splits=min(10, len(fake.probs)))
    rng = np.random.default_rng(seed)
    sub_r = real.features[rng.choice(len(real.features), min(pr_max, len(real.features)), replace=False)]
    sub_f = fake.features[rng.choice(len(fake.features), min(pr_max, len(fake.features)), replace=False)]
    prdc = gm.precision_recall_density_coverage(sub_r, sub_f)
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
                "kernel": "(x.y/d + 1)^3",
            },
            "is_splits": min(10, len(fake.probs)),
            "precision_recall": {"k": 3, "n_max": pr_max},
            "density_coverage": {"k": 5},
            "seed": seed,
        },
    }


def generation_metrics(
    x_real: torch.Tensor, x_fake: torch.Tensor, extractor, real_split: str, pr_max: int = 5000, seed: int = 0
) -> dict[str, Any]:
    """The metrics of :func:`evaluate_generation` for two image batches (B x C x H x W in [0, 1])."""
    from convgen.metrics.extractors import tensor_features

    real, fake = tensor_features(x_real, extractor), tensor_features(x_fake, extractor)
    return metrics_from_features(real, fake, extractor, real_split, pr_max=pr_max, seed=seed)


def finite_or_none(obj: Any) -> Any:
    """JSON has no infinity: PSNR of identical images becomes null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    return obj
