"""Checks of generated images beyond distribution distances.

* :func:`two_sample_test` -- the discriminator-based score: a classifier two-sample test (Lopez-Paz & Oquab 2017).
  A small CNN learns to tell real from generated images on one half of the data; its accuracy on the other half is
  the score (0.5 = indistinguishable, 1.0 = always told apart), with a binomial p-value against chance.
* :func:`memorization_report` -- the privacy check: does the generator copy its training images? Each generated
  image's nearest training image is compared with the nearest training image of *held-out* real images. A generator
  that generalises sits no closer to the training set than new real data does; copies show up as a pile of
  near-zero distances, and the closest pairs are drawn so a person can look.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from convgen.data.transforms import resize
from convgen.errors import ConvgenError, ImageError
from convgen.io.images import list_images, read_image

AUDIT_SIZE = 64  # larger images are resized to this for the audits (pixel-space distances, the two-sample CNN)


def load_image_tensor(folder: str | Path, limit: int | None, like: torch.Tensor | None = None) -> torch.Tensor:
    """Images of ``folder`` (sorted, at most ``limit``) as B x C x S x S in [0, 1].

    Without ``like``, C is the first image's channel count and S its size capped at 64 px; with ``like``, the
    images are converted to its channels and size so that the two sets are comparable.
    """
    files = list_images(folder) if Path(folder).is_dir() else []
    if not files:
        raise ImageError(f"{folder}: no images found")
    files = files[:limit] if limit else files
    if like is None:
        first = read_image(files[0])
        channels, size = first.shape[2], min(AUDIT_SIZE, max(first.shape[:2]))
    else:
        channels, size = like.shape[1], like.shape[-1]
    out = torch.empty(len(files), channels, size, size)
    for i, f in enumerate(tqdm(files, desc=f"read {Path(folder).name}", file=sys.stderr, disable=None, leave=False)):
        out[i] = resize(torch.from_numpy(read_image(f, channels=channels)).permute(2, 0, 1), size)
    return out.clamp_(0, 1)


class _Critic(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(64, 128, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(128, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1).squeeze(1)


def two_sample_test(
    real: torch.Tensor, fake: torch.Tensor, epochs: int = 8, batch_size: int = 64, lr: float = 1e-3, seed: int = 0
) -> dict[str, Any]:
    """Classifier two-sample test on equal numbers of real and fake images, split in half for training/testing."""
    from scipy.stats import binomtest

    n = min(len(real), len(fake))
    if n < 20:
        raise ConvgenError(f"the two-sample test needs at least 20 images per set, got {n}")
    g = torch.Generator().manual_seed(seed)
    real = real[torch.randperm(len(real), generator=g)[:n]]
    fake = fake[torch.randperm(len(fake), generator=g)[:n]]
    x = torch.cat([real, fake])
    y = torch.cat([torch.zeros(n), torch.ones(n)])
    order = torch.randperm(2 * n, generator=g)
    x, y = x[order], y[order]
    half = n  # first half trains, second half tests
    torch.manual_seed(seed)
    critic = _Critic(x.shape[1])
    opt = torch.optim.Adam(critic.parameters(), lr=lr)
    steps = epochs * math.ceil(half / batch_size)
    critic.train()
    with tqdm(total=steps, desc="two-sample test", file=sys.stderr, disable=None, leave=False) as bar:
        for _ in range(epochs):
            perm = torch.randperm(half, generator=g)
            for i in range(0, half, batch_size):
                idx = perm[i : i + batch_size]
                if len(idx) < 2:
                    continue
                loss = F.binary_cross_entropy_with_logits(critic(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                bar.update(1)
    critic.eval()
    with torch.no_grad():
        logits = torch.cat([critic(x[half + i : half + i + 500]) for i in range(0, len(x) - half, 500)])
    pred = (logits > 0).float()
    y_test = y[half:]
    correct = int((pred == y_test).sum())
    n_test = len(y_test)
    return {
        "accuracy": correct / n_test,
        "accuracy_real": float((pred[y_test == 0] == 0).float().mean()),
        "accuracy_fake": float((pred[y_test == 1] == 1).float().mean()),
        "p_value": float(binomtest(correct, n_test, 0.5, alternative="greater").pvalue),
        "n_train": half,
        "n_test": n_test,
        "protocol": f"classifier two-sample test: 3-conv CNN, {epochs} epochs Adam {lr:g}, images at "
        f"{x.shape[-1]} px; 0.5 = indistinguishable, 1.0 = always told apart; p-value: one-sided binomial vs 0.5",
    }


def nearest_neighbours(queries: torch.Tensor, base: torch.Tensor, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """RMS pixel distance from each query to its nearest ``base`` image, and that image's index (chunked)."""
    q, b = queries.flatten(1).float(), base.flatten(1).float()
    d = q.shape[1]
    b_sq = (b * b).sum(1)
    dists, idxs = [], []
    for i in range(0, len(q), chunk):
        qc = q[i : i + chunk]
        best_d = torch.full((len(qc),), float("inf"))
        best_i = torch.zeros(len(qc), dtype=torch.long)
        for j in range(0, len(b), 8192):
            sq = (qc * qc).sum(1, keepdim=True) + b_sq[None, j : j + 8192] - 2 * qc @ b[j : j + 8192].T
            m, k = sq.min(1)
            better = m < best_d
            best_d = torch.where(better, m, best_d)
            best_i = torch.where(better, k + j, best_i)
        dists.append(best_d.clamp_min(0).div(d).sqrt())
        idxs.append(best_i)
    return torch.cat(dists).numpy(), torch.cat(idxs).numpy()


def _summary(d: np.ndarray) -> dict[str, float]:
    return {
        "min": float(d.min()),
        "p01": float(np.percentile(d, 1)),
        "p05": float(np.percentile(d, 5)),
        "median": float(np.median(d)),
    }


def memorization_report(
    fake: torch.Tensor,
    train: torch.Tensor,
    heldout: torch.Tensor,
    pairs_out: str | Path | None = None,
    n_pairs: int = 16,
) -> dict[str, Any]:
    """Nearest-training-neighbour distances of generated vs held-out real images (RMS pixel distance in [0, 1]).

    ``near_copy_fraction`` is the share of generated images closer to a training image than 99% of held-out real
    images are; about 0.01 means no copying, much more means the model reproduces training images.
    """
    from scipy.stats import mannwhitneyu

    d_fake, i_fake = nearest_neighbours(fake, train)
    d_held, _ = nearest_neighbours(heldout, train)
    threshold = float(np.percentile(d_held, 1))
    near = float((d_fake < threshold).mean())
    ratio = float(np.median(d_fake) / max(np.median(d_held), 1e-12))
    p = float(mannwhitneyu(d_fake, d_held, alternative="less").pvalue)
    verdict = (
        "possible memorisation: many samples are near-copies of training images"
        if near > 0.05
        else "no sign of copying: samples are no closer to the training set than new real images"
        if ratio >= 0.9
        else "samples sit closer to the training set than new real images do; inspect the closest pairs"
    )
    out: dict[str, Any] = {
        "fake_to_train": _summary(d_fake),
        "heldout_to_train": _summary(d_held),
        "median_ratio": ratio,
        "near_copy_threshold": threshold,
        "near_copy_fraction": near,
        "p_value_fake_closer": p,
        "verdict": verdict,
        "n_fake": len(fake),
        "n_train": len(train),
        "n_heldout": len(heldout),
        "protocol": f"RMS pixel distance at {fake.shape[-1]} px; near copy = closer than the 1st percentile of "
        "held-out real -> train distances; p-value: one-sided Mann-Whitney U (fake distances smaller)",
    }
    if pairs_out is not None:
        from convgen.viz.grid import save_grid

        order = np.argsort(d_fake)[:n_pairs]
        pairs = torch.cat([fake[order], train[i_fake[order]]])  # row 1: samples, row 2: nearest training images
        save_grid(pairs, pairs_out, nrow=len(order))
        out["pairs_image"] = str(pairs_out)
    return out
