"""Unsupervised clustering of a training set (no labels used): k-means++ seeding, then Lloyd iterations.

Used by the self-conditioned GAN (``model.clusters``): cluster ids stand in for class labels, so the generator is
told which part of the data to imitate and the discriminator checks each part separately, which keeps rare modes
from being dropped (Liu et al. 2020, "Diverse Image Generation via Self-Conditioned GANs").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cluster_features(images: torch.Tensor, max_size: int = 32) -> torch.Tensor:
    """uint8 or float N x C x H x W images -> N x D float features (pixels in [0, 1], area-downsampled so that
    the longer side is at most ``max_size``)."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    h, w = x.shape[-2:]
    if max(h, w) > max_size:
        scale = max_size / max(h, w)
        x = F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")
    return x.flatten(1)


def _nearest(x: torch.Tensor, centres: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of the nearest centre, squared distance to it) for every row of ``x``, in bounded memory."""
    idx, dist = [], []
    c_sq = centres.pow(2).sum(1)
    for i in range(0, len(x), chunk):
        xi = x[i : i + chunk]
        d = (xi.pow(2).sum(1, keepdim=True) - 2 * xi @ centres.T + c_sq).clamp_min_(0)
        v, j = d.min(1)
        idx.append(j)
        dist.append(v)
    return torch.cat(idx), torch.cat(dist)


def kmeans(x: torch.Tensor, k: int, seed: int = 0, iters: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means of the rows of ``x`` (N x D float): returns (labels N int64, centres k x D).

    Deterministic for a given seed. Every cluster keeps at least one member (an empty cluster is re-seeded with the
    point farthest from its centre), so ``labels`` uses all ``k`` ids.
    """
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= number of points ({n}), got k={k}")
    x = x.double()
    gen = torch.Generator().manual_seed(seed)
    centres = x[torch.randint(n, (1,), generator=gen)]
    _, d2 = _nearest(x, centres)
    for _ in range(k - 1):  # k-means++: next centre drawn with probability proportional to squared distance
        pick = torch.multinomial(d2 / d2.sum(), 1, generator=gen) if d2.sum() > 0 else torch.randint(n, (1,))
        centres = torch.cat([centres, x[pick]])
        _, d_new = _nearest(x, centres[-1:])
        d2 = torch.minimum(d2, d_new)
    labels = None
    for _ in range(iters):
        new, d2 = _nearest(x, centres)
        counts = torch.bincount(new, minlength=k)
        for j in torch.nonzero(counts == 0).flatten().tolist():  # empty cluster: take the worst-fitted point
            far = int(d2.argmax())
            new[far], d2[far] = j, 0.0
        counts = torch.bincount(new, minlength=k)
        centres = torch.zeros_like(centres).index_add_(0, new, x) / counts[:, None]
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
    return labels, centres.float()
