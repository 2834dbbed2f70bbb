"""The rate-distortion objective of learned compression (Ballé et al.; CompressAI's ``RateDistortionLoss``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from convgen.losses.base import Loss
from convgen.registry import LOSSES


def bits_per_pixel(likelihoods: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Per-image bits per pixel, -sum(log2 p) / (H * W), of B-first likelihood tensors for the B images ``x``."""
    pixels = x.shape[-2] * x.shape[-1]
    return sum(-torch.log2(lik).flatten(1).sum(1) for lik in likelihoods) / pixels


def rate_distortion_loss(
    x_hat: torch.Tensor, x: torch.Tensor, likelihoods: list[torch.Tensor], lambdas: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """mean(lambda_b * 255^2 * MSE_b + bpp_b) with a weight per image; also the batch's bpp, MSE and PSNR."""
    mse = (x_hat - x).square().flatten(1).mean(1)
    bpp = bits_per_pixel(likelihoods, x)
    loss = (lambdas * 255**2 * mse + bpp).mean()
    psnr = -10 * torch.log10(mse.detach().clamp_min(1e-10))
    return loss, {"bpp": float(bpp.detach().mean()), "mse": float(mse.detach().mean()), "psnr": float(psnr.mean())}


@LOSSES.register("rate-distortion")
class RateDistortionLoss(Loss):
    """:func:`rate_distortion_loss` (family ``rate-distortion``: what a ``codec`` task trains with, one lambda per
    quality from the model)."""

    family = "rate-distortion"

    @dataclass
    class Config:
        pass

    def __call__(self, x_hat, x, likelihoods, lambdas):
        return rate_distortion_loss(x_hat, x, likelihoods, lambdas)
