"""Directory-level evaluation behind ``convgen eval restoration`` and ``convgen eval generation``.

Every result carries its protocol, so a number can be reproduced and is never mistaken for another metric: a
Fréchet distance computed in the ``mnist-classifier`` feature space is reported as ``fd_mnistcls`` (and, for the
command-line contract, as ``fid`` with ``protocol.fid_is_standard: false``), never as a bare standard FID.
"""

from __future__ import annotations

import hashlib
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


def _load_folder(folder: str | Path, pipe, limit: int | None) -> torch.Tensor:
    """Every image of ``folder`` (up to ``limit``) as a batch at the extractor's input size."""
    files = list_images(folder)
    if not files:
        raise ImageError(f"{folder}: no images found")
    files = files[:limit] if limit else files
    channels = pipe.cfg.model.in_channels
    return pipe.prepare([read_image(f, channels=channels) for f in files])  # generation_metrics clamps


def evaluate_generation(
    real: str | Path,
    fake: str | Path,
    extractor: str = "mnist-classifier",
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    pr_max: int = 5000,
    seed: int = 0,
    limit: int | None = None,
) -> dict[str, Any]:
    """Fréchet distance, KID, IS, precision/recall, density/coverage between two image folders.

    The extractor is a convgen classifier (a zoo name or model directory); its penultimate features give the
    distances and its class probabilities the Inception-Score analogue. Names carry the extractor.
    """
    pipe = load_extractor(extractor)
    x_real, x_fake = _load_folder(real, pipe, limit), _load_folder(fake, pipe, limit)
    return generation_metrics(x_real, x_fake, pipe, str(real), kid_subsets, kid_subset_size, pr_max, seed)


def load_extractor(extractor: str = "mnist-classifier"):
    from convgen.pipelines import ClassifierPipeline, load

    return load(extractor, device="cpu", expect=ClassifierPipeline, role="a classifier (needed as feature extractor)")


def generation_metrics(
    x_real: torch.Tensor,
    x_fake: torch.Tensor,
    pipe,
    real_split: str,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    pr_max: int = 5000,
    seed: int = 0,
) -> dict[str, Any]:
    """The metrics of :func:`evaluate_generation` for two image batches (B x C x H x W in [0, 1])."""
    extractor = str(pipe.model_dir.name) if pipe.model_dir.parent.name == "zoo" else str(pipe.model_dir)
    c, s = pipe.cfg.model.in_channels, pipe.cfg.model.image_size
    from convgen.data.transforms import resize

    x_real, x_fake = resize(x_real, s).clamp(0, 1), resize(x_fake, s).clamp(0, 1)
    for name, x in (("real", x_real), ("fake", x_fake)):
        if len(x) < 10:
            raise ConvgenError(f"--{name} has {len(x)} images; at least 10 are needed")
    f_real, f_fake = pipe.features(x_real).double().numpy(), pipe.features(x_fake).double().numpy()
    fd = gm.frechet_distance(*gm.feature_stats(f_real), *gm.feature_stats(f_fake))
    kid, kid_std = gm.kernel_inception_distance(f_real, f_fake, kid_subsets, kid_subset_size, seed=seed)
    probs = pipe.predict_proba(x_fake).double().numpy()
    is_mean, is_std = gm.inception_score(probs, splits=min(10, len(probs)))
    rng = np.random.default_rng(seed)
    sub_r = f_real[rng.choice(len(f_real), min(pr_max, len(f_real)), replace=False)]
    sub_f = f_fake[rng.choice(len(f_fake), min(pr_max, len(f_fake)), replace=False)]
    prdc = gm.precision_recall_density_coverage(sub_r, sub_f)
    weights = sorted(pipe.model_dir.glob("*.safetensors"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in weights)).hexdigest()[:16]
    tag = "mnistcls" if extractor == "mnist-classifier" else "domaincls"
    return {
        "fid": fd,
        f"fd_{tag}": fd,
        "kid": kid,
        "kid_std": kid_std,
        "is": is_mean,
        "is_std": is_std,
        **prdc,
        "protocol": {
            "extractor": extractor,
            "extractor_sha256_16": digest,
            "feature": f"penultimate layer, {f_real.shape[1]}-d",
            "fid_is_standard": False,
            "label": f"FD-{tag} / KID-{tag} / IS-{tag}: computed in the {extractor} feature space, not InceptionV3",
            "resize": f"bilinear antialiased to {s}x{s}, {c} channel(s)",
            "n_real": len(f_real),
            "n_fake": len(f_fake),
            "real_split": real_split,
            "kid": {
                "subsets": kid_subsets,
                "subset_size": min(kid_subset_size, len(f_real), len(f_fake)),
                "kernel": "(x.y/d + 1)^3",
            },
            "is_splits": min(10, len(probs)),
            "precision_recall": {"k": 3, "n_max": pr_max},
            "density_coverage": {"k": 5},
            "seed": seed,
        },
    }


def finite_or_none(obj: Any) -> Any:
    """JSON has no infinity: PSNR of identical images becomes null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    return obj
