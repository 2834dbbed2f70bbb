"""Pixel losses between a network's output and the clean image, optionally weighted per pixel (family ``pixel``:
``restoration`` tasks name one in ``task.loss``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from convgen.losses.base import Loss
from convgen.registry import LOSSES
from convgen.schema import check


class PixelLoss(Loss):
    """``loss(diff, weight)``: a scalar from the output-minus-clean difference, weighted per pixel by ``weight``
    (broadcast to ``diff``) when given."""

    family = "pixel"

    def __call__(self, diff: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


def _weighted_mean(per: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    return (per * weight).mean() if weight is not None else per.mean()


@LOSSES.register("psnr")
class PSNRLoss(PixelLoss):
    """Minus each sample's PSNR (its weighted mean squared error, in dB), averaged over the batch: the benchmarks
    average PSNR per image, which rewards an error halved on a smooth image as much as on a textured one, whereas
    a plain L2 over the batch is dominated by the textured samples with the largest errors."""

    def __call__(self, diff, weight):
        w = torch.ones_like(diff) if weight is None else weight.expand_as(diff)
        mse = (diff.square() * w).flatten(1).sum(1) / w.flatten(1).sum(1)
        return 10 * torch.log10(mse + 1e-5).mean()


@LOSSES.register("l2")
class L2Loss(PixelLoss):
    def __call__(self, diff, weight):
        return _weighted_mean(diff.square(), weight)


@LOSSES.register("l1")
class L1Loss(PixelLoss):
    def __call__(self, diff, weight):
        return _weighted_mean(diff.abs(), weight)


@LOSSES.register("charbonnier")
class CharbonnierLoss(PixelLoss):
    """sqrt(diff^2 + eps^2): L1 away from zero, smooth at it."""

    @dataclass
    class Config:
        eps: float = 1e-3

        def __post_init__(self) -> None:
            check(0 < self.eps < 1, "task.loss.eps", "must be in (0, 1)")

    def __call__(self, diff, weight):
        return _weighted_mean(torch.sqrt(diff.square() + self.cfg.eps**2), weight)


def restoration_loss(out: torch.Tensor, clean: torch.Tensor, kind, weight: torch.Tensor | None) -> torch.Tensor:
    """Pixel loss ``kind`` (a registered name such as ``charbonnier``, or a typed loss config), weighted per pixel
    by ``weight`` (broadcast to ``out``) when given."""
    from convgen.losses.base import build_loss_config, make_loss

    cfg = build_loss_config("loss", kind, "pixel") if isinstance(kind, str) else kind
    return make_loss(cfg)(out.float() - clean, weight)
