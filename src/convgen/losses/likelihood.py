"""Likelihoods and the KL term of variational autoencoders, per sample, in nats.

* ``bernoulli``: binary pixels (binarized digits, the standard MNIST NLL protocol); the decoder gives logits.
* ``logistic``: 8-bit images through a discretized logistic (PixelCNN++ / Kingma et al. 2016): the probability
  of the 1/255-wide bin of each pixel value under a logistic of the decoder's mean and log-scale, with the edge
  bins taking the tails, so the likelihood is a true probability of the 8-bit image.

Bits per dimension are nats / (D ln 2) for D pixel values (:func:`bits_per_dim`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from convgen.losses.base import Loss
from convgen.registry import LOSSES


class Likelihood(Loss):
    """``nll(params, x)``: -log p(x) per sample under the decoder's output ``params`` (family ``likelihood``: a
    VAE's ``model.likelihood``); ``params_per_channel`` output maps per image channel."""

    family = "likelihood"
    params_per_channel = 1

    def __call__(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@LOSSES.register("bernoulli")
class Bernoulli(Likelihood):
    """Binary pixels; the decoder gives logits."""

    def __call__(self, params, x):
        return bernoulli_nll(params, x)


@LOSSES.register("logistic")
class DiscretizedLogistic(Likelihood):
    """8-bit values; the decoder gives a mean (as a logit) and a log-scale per pixel."""

    params_per_channel = 2

    def __call__(self, params, x):
        return discretized_logistic_nll(params, x)


def likelihood_names() -> list[str]:
    from convgen.losses.base import losses_of

    return losses_of("likelihood").names()


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x) per sample for binary ``x`` (B x ...) under independent Bernoullis with ``logits``."""
    return F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none").flatten(1).sum(1)


def discretized_logistic_nll(params: torch.Tensor, x: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """-log P(x) per sample for ``x`` in [0, 1] on a grid of ``bins`` values; ``params`` is B x 2C x H x W (means
    in [0, 1] scale as logits of the mean, then log-scales)."""
    c = x.shape[1]
    mean, log_scale = torch.sigmoid(params[:, :c].float()), params[:, c:].float().clamp(min=-7.0)
    half = 0.5 / (bins - 1)
    inv = torch.exp(-log_scale)
    upper = torch.sigmoid((x - mean + half) * inv)
    lower = torch.sigmoid((x - mean - half) * inv)
    upper = torch.where(x > 1 - half, torch.ones_like(upper), upper)  # the last bin takes the upper tail
    lower = torch.where(x < half, torch.zeros_like(lower), lower)  # the first bin takes the lower tail
    return -torch.log((upper - lower).clamp(min=1e-12)).flatten(1).sum(1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample, in nats."""
    return 0.5 * (mu.square() + logvar.exp() - 1 - logvar).flatten(1).sum(1)


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, exp(logvar)) per sample (summed over the latent dimensions)."""
    return (-0.5 * (math.log(2 * math.pi) + logvar + (z - mu).square() / logvar.exp())).flatten(1).sum(1)


def bits_per_dim(nats: float | torch.Tensor, dims: int) -> float | torch.Tensor:
    """Nats per image -> bits per pixel value."""
    return nats / (dims * math.log(2))


#: the seed of the one binarization of the held-out digits (the protocol's fixed binarization)
EVAL_BINARIZE_SEED = 1234


def binarize(x: torch.Tensor, how: str, gen: torch.Generator | None = None) -> torch.Tensor:
    """``stochastic``: each pixel 1 with probability its value; ``threshold``: 1 above 0.5; ``none``: unchanged."""
    if how == "stochastic":
        return (torch.rand(x.shape, generator=gen) < x).to(x.dtype)
    if how == "threshold":
        return (x > 0.5).to(x.dtype)
    return x


def log_weights(
    model, x: torch.Tensor, labels, k: int, gen: torch.Generator | None = None, target: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance log-weights ``log p(target|z) + log p(z) - log q(z|x)`` for ``k`` posterior samples per image
    (k x B; ``target`` defaults to ``x``, a denoising model encodes a corrupted ``x``), and the reconstruction NLL
    of each sample (k x B)."""
    target = x if target is None else target
    mu, logvar = model.encode(x, labels)
    std = (0.5 * logvar).exp()
    z = mu + std * torch.randn((k, *mu.shape), generator=gen, dtype=mu.dtype).to(mu.device)  # k x B x D
    flat = z.reshape(k * len(x), -1)
    rep = None if labels is None else labels.repeat(k)
    rec = model.nll(model.decode(flat, rep), target.repeat(k, 1, 1, 1)).view(k, len(x))
    zero = torch.zeros_like(flat)
    log_p = gaussian_log_density(flat, zero, zero).view(k, len(x))
    log_q = gaussian_log_density(flat, mu.repeat(k, 1), logvar.repeat(k, 1)).view(k, len(x))
    return -rec + log_p - log_q, rec


def iwae_nll(log_w: torch.Tensor) -> torch.Tensor:
    """The importance-weighted NLL estimate per image: -(logsumexp_k log w - log k). It is never above the
    negative ELBO estimated from the same samples (-mean_k log w): log-mean-exp >= mean-log."""
    return -(torch.logsumexp(log_w.double(), 0) - math.log(log_w.shape[0]))
