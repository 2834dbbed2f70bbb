"""Image grids: many images in one picture (samples, reconstructions, predictions)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from convgen.io.images import write_image


def make_grid(
    images: torch.Tensor | np.ndarray, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0
) -> np.ndarray:
    """Tile a batch BxCxHxW (values in [0, 1]) into one HxWxC float array with ``nrow`` images per row."""
    batch = torch.as_tensor(images).detach().float().cpu()
    if batch.ndim == 3:
        batch = batch[:, None]
    if batch.ndim != 4:
        raise ValueError(f"expected a BxCxHxW batch, got shape {tuple(batch.shape)}")
    b, c, h, w = batch.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(b)))
    ncol = math.ceil(b / nrow)
    grid = torch.full((c, ncol * (h + padding) + padding, nrow * (w + padding) + padding), pad_value)
    for i in range(b):
        r, q = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, y : y + h, x : x + w] = batch[i]
    return grid.permute(1, 2, 0).numpy()


def save_grid(images: torch.Tensor | np.ndarray, path: str | Path, nrow: int | None = None, padding: int = 2,
              provenance=None) -> Path:  # fmt: skip
    """Write a grid of images in [0, 1] as a PNG (atomically), with a :class:`~convgen.io.provenance.Provenance`
    record when given."""
    return write_image(path, make_grid(images, nrow=nrow, padding=padding), provenance=provenance)
