"""Image transforms in plain torch, applied to whole batches (B x C x H x W floats in [0, 1]).

Random transforms take an explicit ``torch.Generator`` so that training is reproducible and resumable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from convgen.schema import check


def resize(x: torch.Tensor, size: int | tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """Bilinear resize to ``size`` (an int gives a square), antialiased when shrinking."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == hw:
        return x
    squeeze = x.ndim == 3
    out = F.interpolate(x[None] if squeeze else x, size=hw, mode="bilinear", align_corners=False, antialias=antialias)
    return out[0] if squeeze else out


def resize_arrays(images, size: int) -> torch.Tensor:
    """H x W (x C) float arrays -> one B x C x S x S batch, each image resized with :func:`resize`."""
    arrays = [a[..., None] if a.ndim == 2 else a for a in (np.asarray(a, np.float32) for a in images)]
    return torch.stack([resize(torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1), size) for a in arrays])


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return x[..., top : top + size, left : left + size]


def resize_center_crop_numpy(arr: np.ndarray, size: int) -> np.ndarray:
    """Resize the short side to ``size`` and centre-crop a square (HxWxC float arrays)."""
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    h, w = t.shape[-2:]
    scale = size / min(h, w)
    t = resize(t, (max(size, round(h * scale)), max(size, round(w * scale))))
    return center_crop(t, size).permute(1, 2, 0).clamp(0, 1).numpy()


def dihedral(x: torch.Tensor, k: int, inverse: bool = False) -> torch.Tensor:
    """The k-th (0-7) of the 8 flips/rotations of the last two axes (rotate by k % 4 quarter turns, then flip the
    last axis when k >= 4), or its inverse; k = 0 is the identity."""
    if not inverse:
        x = torch.rot90(x, k % 4, (-2, -1))
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, -(k % 4), (-2, -1)) if inverse else x


def normalize(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - m) / s


def random_hflip(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=gen) < p
    out = x.clone()
    out[flip] = x[flip].flip(-1)
    return out


def random_crop(x: torch.Tensor, gen: torch.Generator, padding: int, fill: float = 0.0,
                mode: str = "constant") -> torch.Tensor:  # fmt: skip
    """Pad by ``padding`` (with ``fill``, or ``mode="reflect"``) then crop back to the original size at a random
    offset per image."""
    if padding <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode="reflect") if mode == "reflect" else F.pad(x, (padding,) * 4, value=fill)
    offs = torch.randint(0, 2 * padding + 1, (b, 2), generator=gen)
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offs.tolist())])


def random_affine(
    x: torch.Tensor,
    gen: torch.Generator,
    degrees: float = 0.0,
    translate: float = 0.0,
    scale: tuple[float, float] = (1.0, 1.0),
    fill: float = 0.0,
) -> torch.Tensor:
    """Random rotation (+-degrees), translation (fraction of size) and scaling, one draw per image."""
    b = x.shape[0]
    angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(degrees)
    s = scale[0] + torch.rand(b, generator=gen) * (scale[1] - scale[0])
    t = (torch.rand(b, 2, generator=gen) * 2 - 1) * translate * 2  # grid units span [-1, 1]
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype).to(x.device), list(x.shape), align_corners=False)
    if fill == 0.0:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


@dataclass
class AugmentConfig:
    """Training-time augmentation (off by default)."""

    hflip: bool = False
    crop_padding: int = 0
    crop_reflect: bool = False  # pad by reflection (no black borders) instead of zeros
    degrees: float = 0.0
    translate: float = 0.0
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # [min, max] zoom factors

    def __post_init__(self) -> None:
        check(self.crop_padding >= 0, "augment.crop_padding", "must be >= 0")
        check(0 <= self.degrees <= 180, "augment.degrees", "must be in [0, 180]")
        check(0 <= self.translate < 0.5, "augment.translate", "must be in [0, 0.5)")
        check(
            len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1],
            "augment.scale",
            "[min, max] with 0 < min <= max",
        )

    @property
    def active(self) -> bool:
        return self.hflip or self.crop_padding > 0 or self.degrees > 0 or self.translate > 0 or self.scale != [1.0, 1.0]

    def apply(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.degrees > 0 or self.translate > 0 or self.scale != [1.0, 1.0]:
            x = random_affine(x, gen, self.degrees, self.translate, (self.scale[0], self.scale[1]))
        if self.crop_padding > 0:
            x = random_crop(x, gen, self.crop_padding, mode="reflect" if self.crop_reflect else "constant")
        if self.hflip:
            x = random_hflip(x, gen)
        return x
