"""Pixel losses between a network's output and the clean image, optionally weighted per pixel."""

from __future__ import annotations

import torch

from convgen.registry import LOSSES


@LOSSES.register("psnr")
def psnr_loss(diff: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Minus each sample's PSNR (its weighted mean squared error, in dB), averaged over the batch: the benchmarks
    average PSNR per image, which rewards an error halved on a smooth image as much as on a textured one, whereas
    a plain L2 over the batch is dominated by the textured samples with the largest errors."""
    w = torch.ones_like(diff) if weight is None else weight.expand_as(diff)
    mse = (diff.square() * w).flatten(1).sum(1) / w.flatten(1).sum(1)
    return 10 * torch.log10(mse + 1e-5).mean()


def _weighted_mean(per: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    return (per * weight).mean() if weight is not None else per.mean()


@LOSSES.register("l2")
def l2_loss(diff: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    return _weighted_mean(diff.square(), weight)


@LOSSES.register("l1")
def l1_loss(diff: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    return _weighted_mean(diff.abs(), weight)


@LOSSES.register("charbonnier")
def charbonnier_loss(diff: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    return _weighted_mean(torch.sqrt(diff.square() + 1e-6), weight)


def restoration_loss(out: torch.Tensor, clean: torch.Tensor, kind: str, weight: torch.Tensor | None) -> torch.Tensor:
    """Pixel loss ``kind`` (a registered name: l1, l2, charbonnier, psnr), weighted per pixel by ``weight``
    (broadcast to ``out``) when given."""
    return LOSSES.get(kind)(out.float() - clean, weight)
