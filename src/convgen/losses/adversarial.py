"""Adversarial losses on discriminator logits, and the gradient penalties that stabilise them.

``ns`` is the non-saturating loss of Goodfellow et al. / DCGAN (BCE on logits), ``hinge`` (Miyato et al.),
``wgan-gp`` (Gulrajani et al.; with :func:`gradient_penalty`) and ``ls`` (least squares, Mao et al.).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from convgen.losses.base import Loss
from convgen.registry import LOSSES


class AdversarialLoss(Loss):
    """``d(real_logits, fake_logits)`` for the discriminator, ``g(fake_logits)`` for the generator (family
    ``adversarial``: ``gan`` tasks name one in ``task.loss``)."""

    family = "adversarial"

    @staticmethod
    def d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def g(fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@LOSSES.register("ns")
class NonSaturating(AdversarialLoss):
    @staticmethod
    def d(real, fake):
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    @staticmethod
    def g(fake):
        return F.softplus(-fake).mean()


@LOSSES.register("hinge")
class Hinge(AdversarialLoss):
    @staticmethod
    def d(real, fake):
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()

    @staticmethod
    def g(fake):
        return -fake.mean()


@LOSSES.register("wgan-gp")
class Wasserstein(AdversarialLoss):
    @staticmethod
    def d(real, fake):
        return fake.mean() - real.mean()

    @staticmethod
    def g(fake):
        return -fake.mean()


@LOSSES.register("ls")
class LeastSquares(AdversarialLoss):
    @staticmethod
    def d(real, fake):
        return 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake**2).mean()

    @staticmethod
    def g(fake):
        return 0.5 * ((fake - 1) ** 2).mean()


def _name(kind) -> str:
    return kind if isinstance(kind, str) else kind.registry_name


def d_loss(kind, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss of ``kind`` (a registered name or a typed loss config)."""
    return LOSSES.get(_name(kind)).d(real, fake)


def g_loss(kind, fake: torch.Tensor) -> torch.Tensor:
    return LOSSES.get(_name(kind)).g(fake)


def gradient_penalty(
    disc: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """WGAN-GP: ``E (|grad D(mix)| - 1)^2`` on random mixes of real and (detached) fake images."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=gen).to(real.device)
    mix = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(mix).float().sum(), mix, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def r1_penalty(disc: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): ``E |grad D(real)|^2`` (the caller scales it by gamma / 2)."""
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(real).float().sum(), real, create_graph=True)
    return grad.flatten(1).pow(2).sum(1).mean()
