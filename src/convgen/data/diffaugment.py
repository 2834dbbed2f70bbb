"""Differentiable augmentation for GAN training (Zhao et al. 2020, "DiffAugment").

The same random policy is applied to real and generated images before every discriminator pass, and it is
differentiable, so the generator learns through it. Policies: ``color`` (brightness, saturation, contrast),
``translation`` (shift by up to 1/8 of the size, zero fill) and ``cutout`` (a zeroed square of half the size).
Random draws come from a CPU ``torch.Generator`` so a resumed run repeats them exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def _rand(gen: torch.Generator, b: int, x: torch.Tensor) -> torch.Tensor:
    return torch.rand(b, 1, 1, 1, generator=gen).to(device=x.device, dtype=x.dtype)


def color(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    x = x + (_rand(gen, b, x) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(gen, b, x) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(gen, b, x) + 0.5) + mean


def translation(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    b, c, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (b, 1, 1), generator=gen).to(x.device)
    tx = torch.randint(-sw, sw + 1, (b, 1, 1), generator=gen).to(x.device)
    gb, gy, gx = torch.meshgrid(
        torch.arange(b, device=x.device),
        torch.arange(h, device=x.device),
        torch.arange(w, device=x.device),
        indexing="ij",
    )
    gy = (gy + ty + 1).clamp(0, h + 1)
    gx = (gx + tx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    return padded[gb, gy, gx].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    b, c, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=gen).to(x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=gen).to(x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = ((ys - oy + ch // 2) >= 0) & ((ys - oy + ch // 2) < ch) & ((xs - ox + cw // 2) >= 0)
    inside = inside & ((xs - ox + cw // 2) < cw)
    return x * (~inside)[:, None].to(x.dtype)


def diff_augment(x: torch.Tensor, policies: list[str], gen: torch.Generator) -> torch.Tensor:
    for p in policies:
        x = {"color": color, "translation": translation, "cutout": cutout}[p](x, gen)
    return x
