"""Likelihoods and the KL term of variational autoencoders, per sample, in nats.

* ``bernoulli``: binary pixels (binarized digits, the standard MNIST NLL protocol); the decoder gives logits.
* ``logistic``: 8-bit images through a discretized logistic (PixelCNN++ / Kingma et al. 2016): the probability
  of the 1/255-wide bin of each pixel value under a logistic of the decoder's mean and log-scale, with the edge
  bins taking the tails, so the likelihood is a true probability of the 8-bit image.
* ``logistic-mixture``: PixelCNN++'s output distribution (Salimans et al. 2017) without its autoregression over
  pixels: per pixel a mixture of discretized logistics whose colour channels are coupled linearly within the pixel
  (the green mean moves with the red value, the blue with both), so one pixel's three values are not independent.

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

    @classmethod
    def out_channels(cls, channels: int, components: int = 1) -> int:
        """Decoder output maps for an image of ``channels`` channels (``components``: of a mixture)."""
        return channels * cls.params_per_channel

    @staticmethod
    def mean(params: torch.Tensor, channels: int) -> torch.Tensor:
        """The distribution's mean image in [0, 1] (the first ``channels`` maps are its logits)."""
        return torch.sigmoid(params[:, :channels].float())


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


@LOSSES.register("logistic-mixture")
class DiscretizedLogisticMixture(Likelihood):
    """8-bit values; per pixel a mixture of discretized logistics with linearly coupled colour channels (the
    decoder gives, per component, a mixture logit, C means, C log-scales and C(C-1)/2 coupling coefficients)."""

    def __call__(self, params, x):
        return discretized_mixture_nll(params, x)

    @classmethod
    def out_channels(cls, channels: int, components: int = 1) -> int:
        return components * mixture_params(channels)

    @staticmethod
    def mean(params: torch.Tensor, channels: int) -> torch.Tensor:
        logit_pi, means, _, coeffs = split_mixture(params, channels)
        e: list[torch.Tensor] = []  # each component's mean per channel, coupled to the earlier channels' means
        for c in range(channels):
            e.append(couple(means[:, :, c], coeffs, e).clamp(-1, 1))
        per_comp = torch.stack(e, 2)  # B x n x C x H x W, on the [-1, 1] scale
        w = torch.softmax(logit_pi, 1)[:, :, None]
        return ((w * per_comp).sum(1) + 1) / 2


def sample_mixture(params: torch.Tensor, channels: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """One draw per pixel from the coupled mixture of discretized logistics, in [0, 1] on the 8-bit grid: a
    component by its weight, then each channel from its logistic around the coupled mean (PixelCNN++'s
    ``sample_from_discretized_mix_logistic``)."""
    logit_pi, means, log_scales, coeffs = split_mixture(params, channels)
    b, n, c, h, w = means.shape
    probs = torch.softmax(logit_pi, 1).permute(0, 2, 3, 1).reshape(-1, n).cpu()
    pick = torch.multinomial(probs, 1, generator=gen).view(b, 1, 1, h, w).to(means.device)
    take = lambda t: t.gather(1, pick.expand(b, 1, t.shape[2], h, w))[:, 0]  # noqa: E731
    m, s, co = take(means), take(log_scales).exp(), take(coeffs)[:, None]  # (co: B x 1 x C(C-1)/2 x H x W)
    u = torch.rand(m.shape, generator=gen).clamp(1e-5, 1 - 1e-5).to(m.device)
    noise = s * (torch.log(u) - torch.log1p(-u))  # logistic draws
    out: list[torch.Tensor] = []
    for ch in range(c):
        out.append(couple((m[:, ch] + noise[:, ch])[:, None], co, out).clamp(-1, 1))
    out = [v[:, 0] for v in out]
    return ((torch.stack(out, 1) + 1) / 2 * 255).round() / 255


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


def mixture_params(channels: int) -> int:
    """Decoder maps per mixture component: a logit, a mean and a log-scale per channel, and the coupling
    coefficients of each channel on the earlier ones."""
    return 1 + 2 * channels + channels * (channels - 1) // 2


def split_mixture(params: torch.Tensor, channels: int):
    """(logits B x n x H x W, means and log-scales B x n x C x H x W on the [-1, 1] scale, coupling coefficients
    B x n x C(C-1)/2 x H x W in (-1, 1)) from B x n*(1 + 2C + C(C-1)/2) x H x W decoder maps."""
    b, p, h, w = params.shape
    n = p // mixture_params(channels)
    if n * mixture_params(channels) != p:
        raise ValueError(f"{p} decoder maps are not a mixture over {channels} channels")
    params = params.float()
    nc, nk = n * channels, n * (channels * (channels - 1) // 2)
    logit_pi = params[:, :n]
    means = params[:, n : n + nc].view(b, n, channels, h, w)
    log_scales = params[:, n + nc : n + 2 * nc].view(b, n, channels, h, w).clamp(min=-7.0)
    coeffs = torch.tanh(params[:, n + 2 * nc : n + 2 * nc + nk]).view(b, n, -1, h, w)
    return logit_pi, means, log_scales, coeffs


def couple(mean: torch.Tensor, coeffs: torch.Tensor, earlier: list[torch.Tensor]) -> torch.Tensor:
    """Channel ``len(earlier)``'s coupled mean: its own ``mean`` plus its coupling coefficients (``coeffs[:, :, i]``,
    the coefficients of channel c on channels 0..c-1 stored from index c(c-1)/2) times the earlier channels'
    ``earlier`` values (the image, their means, or their draws)."""
    first = len(earlier) * (len(earlier) - 1) // 2
    for j, value in enumerate(earlier):
        mean = mean + coeffs[:, :, first + j] * value
    return mean


def discretized_mixture_nll(params: torch.Tensor, x: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """-log P(x) per sample for ``x`` in [0, 1] on a grid of ``bins`` values under the coupled mixture of
    discretized logistics (PixelCNN++'s ``discretized_mix_logistic_loss``, on the [-1, 1] scale)."""
    c = x.shape[1]
    logit_pi, means, log_scales, coeffs = split_mixture(params, c)
    xs = (x.float() * 2 - 1)[:, None]  # B x 1 x C x H x W
    coupled = [couple(means[:, :, ch], coeffs, [xs[:, :, j] for j in range(ch)]) for ch in range(c)]
    centered = xs - torch.stack(coupled, 2)
    inv = torch.exp(-log_scales)
    half = 1.0 / (bins - 1)  # half a bin on the [-1, 1] scale
    plus_in, min_in = inv * (centered + half), inv * (centered - half)
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    log_cdf_plus = plus_in - F.softplus(plus_in)  # the first bin: the lower tail
    log_one_minus_cdf_min = -F.softplus(min_in)  # the last bin: the upper tail
    mid_in = inv * centered  # where the bin's probability underflows: the density times the bin width
    log_pdf_mid = mid_in - log_scales - 2 * F.softplus(mid_in) + math.log(2 * half)
    log_mid = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid)
    edge = 1 - half / 2
    log_probs = torch.where(xs < -edge, log_cdf_plus, torch.where(xs > edge, log_one_minus_cdf_min, log_mid))
    log_mix = log_probs.sum(2) + torch.log_softmax(logit_pi, 1)  # B x n x H x W
    return -torch.logsumexp(log_mix, 1).flatten(1).sum(1)


def gaussian_kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) of each latent dimension, in nats: B x D."""
    return 0.5 * (mu.square() + logvar.exp() - 1 - logvar).flatten(1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample, in nats."""
    return gaussian_kl_per_dim(mu, logvar).sum(1)


def free_bits_kl(per_dim: torch.Tensor, floor: float) -> torch.Tensor:
    """The KL term with "free bits" (Kingma et al. 2016) from :func:`gaussian_kl_per_dim`'s B x D values: each latent
    dimension's KL, averaged over the batch, counts as at least ``floor`` nats, so the training objective gains
    nothing from switching a dimension off (the decoder cannot collapse the posterior onto the prior). Per sample,
    for adding to the reconstruction term; the ELBO itself is still the plain sum (:func:`gaussian_kl`)."""
    return per_dim.mean(0).clamp(min=floor).sum().expand(len(per_dim))


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
