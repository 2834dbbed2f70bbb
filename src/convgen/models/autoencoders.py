"""Autoencoders and variational autoencoders: a convolutional VAE (optionally class-conditional, or a plain
deterministic autoencoder), and the fully connected VAE of pytorch/examples as the reference.

Every model has the same interface: ``encode(x, labels) -> (mu, logvar)`` (``logvar`` None for a plain
autoencoder), ``decode(z, labels) -> params`` (Bernoulli logits, or the means and log-scales of a discretized
logistic), ``nll(params, x)`` per sample in nats, and ``mean_image(params)`` in [0, 1]. Images are B x C x H x W
in [0, 1]; a conditional model (``num_classes`` > 0) sees a learned class embedding in its encoder (as extra
input maps) and its decoder (concatenated to z).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from convgen.losses.likelihood import likelihood_names, sample_mixture
from convgen.registry import LOSSES, MODELS
from convgen.schema import check


class GaussianMixture(nn.Module):
    """A full-covariance Gaussian mixture over latent codes: the ex-post density sampler of Ghosh et al. 2020
    (pythae's GMM sampler), fitted by EM to the training images' posterior means, so samples come from where the
    encoder actually puts digits rather than from the whole prior. For a conditional model each class has its own
    components (``component_class``), fitted to that class's codes, and a sample of class c is drawn from them."""

    def __init__(self, components: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("component_class", torch.full((components,), -1, dtype=torch.long))  # -1: any class
        self.register_buffer("log_weights", torch.full((components,), -math.log(components)))
        self.register_buffer("means", torch.zeros(components, dim))
        self.register_buffer("chol", torch.eye(dim).repeat(components, 1, 1))  # lower Cholesky factors

    @torch.no_grad()
    def log_prob_components(self, z: torch.Tensor) -> torch.Tensor:
        """N x K: log w_k + log N(z; mu_k, Sigma_k)."""
        chol = self.chol.double()
        # one component at a time: a broadcast solve would copy a D x D factor for every code (N x K x D x D)
        maha = torch.stack([
            torch.linalg.solve_triangular(chol[k], (z.double() - self.means[k].double()).T, upper=False)
            .square().sum(0) for k in range(len(chol))
        ], 1)  # fmt: skip
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        d = z.shape[1]
        return self.log_weights.double() - 0.5 * (maha + logdet + d * math.log(2 * math.pi))

    @torch.no_grad()
    def fit(
        self, z: torch.Tensor, labels: torch.Tensor | None = None, iters: int = 100, seed: int = 0, ridge: float = 1e-4
    ) -> GaussianMixture:
        """EM from ``seed``; with ``labels`` (C classes), ``components // C`` components per class, each class's
        fitted to its own codes (weights within a class sum to one)."""
        if labels is not None:
            return self._fit_per_class(z, labels, iters, seed, ridge)
        z = z.double()
        n, d = z.shape
        k = self.means.shape[0]
        gen = torch.Generator().manual_seed(seed)
        self.means.copy_(z[torch.randperm(n, generator=gen)[:k]].float())
        cov = torch.cov(z.T) + ridge * torch.eye(d, dtype=z.dtype)
        self.chol.copy_(torch.linalg.cholesky(cov).float().repeat(k, 1, 1))
        for _ in range(iters if k > 1 else 1):  # one Gaussian: the first step is its maximum-likelihood fit
            resp = torch.softmax(self.log_prob_components(z), dim=1)  # N x K
            nk = resp.sum(0) + 1e-10
            means = resp.T @ z / nk[:, None]
            diff = z[:, None, :] - means[None]
            covs = torch.einsum("nk,nki,nkj->kij", resp, diff, diff) / nk[:, None, None]
            covs = covs + ridge * torch.eye(d, dtype=z.dtype)
            self.log_weights.copy_(torch.log(nk / n).float())
            self.means.copy_(means.float())
            self.chol.copy_(torch.linalg.cholesky(covs).float())
        return self

    def _fit_per_class(self, z, labels, iters, seed, ridge) -> GaussianMixture:
        classes = int(labels.max()) + 1
        per = self.means.shape[0] // classes
        if per < 1 or per * classes != self.means.shape[0]:
            raise ValueError(f"{self.means.shape[0]} components do not divide among {classes} classes")
        for c in range(classes):
            part = GaussianMixture(per, z.shape[1]).fit(z[labels == c], None, iters, seed + c, ridge)
            sl = slice(c * per, (c + 1) * per)
            self.component_class[sl] = c
            self.log_weights[sl], self.means[sl], self.chol[sl] = part.log_weights, part.means, part.chol
        return self

    @torch.no_grad()
    def sample(self, n: int, gen: torch.Generator, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` codes; for a per-class mixture, code ``i`` from the components of class ``labels[i]``."""
        weights = self.log_weights.exp()
        if labels is None or bool((self.component_class < 0).all()):
            comp = torch.multinomial(weights, n, replacement=True, generator=gen)
        else:
            masks = self.component_class[None, :] == labels.cpu()[:, None]  # n x K
            comp = torch.multinomial(weights[None] * masks, 1, replacement=True, generator=gen)[:, 0]
        eps = torch.randn(n, self.means.shape[1], generator=gen)
        return self.means[comp] + (self.chol[comp] @ eps[..., None])[..., 0]


def check_likelihood(name: str) -> None:
    names = likelihood_names()
    check(name in names, "model.likelihood", f"unknown likelihood {name!r} (known: {', '.join(names)})")


class AutoencoderBase(nn.Module):
    latent_dim: int
    num_classes: int
    likelihood: str
    variational: bool
    channels: int
    ex_post_components: int

    def component(self, name: str) -> nn.Module:
        """The network saved as ``<name>.safetensors``: ``vae`` (this model) or ``gmm`` (its ex-post sampler)."""
        if name == "gmm":
            return GaussianMixture(self.gmm_components, self.latent_dim)
        return self

    @property
    def gmm_components(self) -> int:
        """Components of the ex-post mixture: ``ex_post_components``, or that many split among the classes (at
        least one each) for a conditional model."""
        if self.num_classes:
            return self.num_classes * max(1, self.ex_post_components // self.num_classes)
        return self.ex_post_components

    mixture_components = 1  # of a mixture likelihood

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return LOSSES.get(self.likelihood)()(params, x)

    def mean_image(self, params: torch.Tensor) -> torch.Tensor:
        """The decoder's mean image in [0, 1] (what samples and reconstructions show)."""
        return LOSSES.get(self.likelihood).mean(params, self.channels)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, noise: torch.Tensor | None = None):
        """(decoder params, mu, logvar) for the posterior sample ``z = mu + exp(logvar / 2) * noise`` (``z = mu``
        with no noise, or for a plain autoencoder). The training step goes through here, so DDP sees it."""
        mu, logvar = self.encode(x, labels)
        z = mu if noise is None or logvar is None else mu + (0.5 * logvar).exp() * noise.to(mu.device, mu.dtype)
        return self.decode(z, labels), mu, logvar

    def _out_channels(self) -> int:
        return LOSSES.get(self.likelihood).out_channels(self.channels, self.mixture_components)


@MODELS.register("conv-vae")
class ConvVAE(AutoencoderBase):
    """Conv encoder (two stride-2 4x4 convolutions, 28 -> 14 -> 7, then two fully connected layers to mu and
    log-variance) and its mirror as decoder."""

    @dataclass
    class Config:
        image_size: int = 28  # a multiple of 4
        channels: int = 1
        latent_dim: int = 32
        width: int = 32  # channels of the first convolution (the second has twice as many)
        hidden: int = 512
        num_classes: int = 0  # > 0: conditional VAE
        embed_dim: int = 16
        likelihood: str = "bernoulli"  # a registered likelihood: bernoulli (binary pixels), logistic (8-bit)
        variational: bool = True  # false: a plain (deterministic) autoencoder
        ex_post_components: int = 10  # Gaussians of the ex-post sampler (split among the classes if conditional)

        def __post_init__(self) -> None:
            check(self.image_size >= 8 and self.image_size % 4 == 0, "model.image_size", "must be a multiple of 4")
            check(self.channels in (1, 3), "model.channels", "must be 1 or 3")
            check_likelihood(self.likelihood)
            check(self.latent_dim >= 1, "model.latent_dim", "must be >= 1")
            check(self.width >= 1 and self.hidden >= 1, "model.width", "width and hidden must be >= 1")
            check(self.num_classes >= 0, "model.num_classes", "must be >= 0")
            check(self.embed_dim >= 1, "model.embed_dim", "must be >= 1")
            check(self.ex_post_components >= 1, "model.ex_post_components", "must be >= 1")

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.latent_dim, self.num_classes, self.channels = cfg.latent_dim, cfg.num_classes, cfg.channels
        self.likelihood, self.variational = cfg.likelihood, cfg.variational
        self.ex_post_components = cfg.ex_post_components
        w, s = cfg.width, cfg.image_size // 4
        self.side = s
        self.embed = nn.Embedding(cfg.num_classes, cfg.embed_dim) if cfg.num_classes else None
        e = cfg.embed_dim if cfg.num_classes else 0
        self.enc = nn.Sequential(
            nn.Conv2d(cfg.channels + e, w, 4, 2, 1), nn.SiLU(), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.SiLU(), nn.Flatten()
        )
        self.enc_fc = nn.Sequential(nn.Linear(2 * w * s * s, cfg.hidden), nn.SiLU())
        self.to_latent = nn.Linear(cfg.hidden, cfg.latent_dim * (2 if cfg.variational else 1))
        self.dec_fc = nn.Sequential(
            nn.Linear(cfg.latent_dim + e, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, 2 * w * s * s), nn.SiLU()
        )
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.SiLU(), nn.ConvTranspose2d(w, self._out_channels(), 4, 2, 1)
        )

    def _condition(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        if self.embed is None:
            return None
        if labels is None:
            raise ValueError("this autoencoder is class-conditional: labels are required")
        return self.embed(labels)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        emb = self._condition(labels)
        if emb is not None:
            x = torch.cat([x, emb[:, :, None, None].expand(-1, -1, *x.shape[-2:])], 1)
        h = self.to_latent(self.enc_fc(self.enc(x)))
        if not self.variational:
            return h, None
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None, embedding: torch.Tensor | None = None):
        emb = embedding if embedding is not None else self._condition(labels)
        if emb is not None:
            z = torch.cat([z, emb.to(z.dtype)], 1)
        h = self.dec_fc(z).view(len(z), -1, self.side, self.side)
        return self.dec(h)


class ResBlock(nn.Module):
    """x + conv(SiLU(conv(SiLU(x)))), 3 x 3, the second convolution starting at zero (each block starts as the
    identity, so a deep stack trains without normalisation layers, whose batch statistics would make a
    sample's likelihood depend on the rest of its batch)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(ch, ch, 3, padding=1), nn.Conv2d(ch, ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(nn.functional.silu(self.conv1(nn.functional.silu(x))))


@MODELS.register("resnet-vae")
class ResNetVAE(AutoencoderBase):
    """A VAE with a spatial latent for colour images (CIFAR-10): a residual encoder down to a ``latent_channels``
    x H/s x W/s Gaussian posterior (``s = 2 ** downsamplings``), a mirrored residual decoder (nearest-neighbour
    upsampling + 3 x 3 convolution) to the parameters of a per-pixel likelihood (default: the coupled mixture of
    discretized logistics). The latent is exposed flattened (``latent_dim = latent_channels * (H/s) ** 2``), so
    the ELBO, the importance-weighted bound and prior sampling are those of every other VAE here.

    Unlike ``conv-vae``'s single global code, a spatial latent can keep where things are in the image at a low
    rate, which is what a likelihood in bits/dim on natural images rewards (a global code cannot describe 32 x 32
    colour photographs well enough to bring the per-pixel likelihood near the data's entropy)."""

    @dataclass
    class Config:
        image_size: int = 32
        channels: int = 3
        width: int = 64  # channels at full resolution; doubled at the first downsampling, then kept
        downsamplings: int = 2  # the latent is image_size / 2**downsamplings on a side
        blocks: int = 2  # residual blocks per resolution, in the encoder and in the decoder
        latent_channels: int = 16
        likelihood: str = "logistic-mixture"
        mixtures: int = 10  # components of a mixture likelihood
        num_classes: int = 0
        ex_post_components: int = 1  # full-covariance Gaussians of the ex-post sampler
        # > 0: a k x k causal convolution over the pixels above and to the left feeds the output layer (PixelVAE's
        # local autoregression, Gulrajani et al. 2017); 0: each pixel independent given the latent
        autoregressive_kernel: int = 0
        # with a causal head: each pixel at its conditional mean (``mean``, deterministic) or drawn from its
        # conditional distribution (``sample``, ancestral sampling from a fixed seed, 8-bit values)
        pixel_decoding: Literal["mean", "sample"] = "mean"

        def __post_init__(self) -> None:
            check(self.channels in (1, 3), "model.channels", "must be 1 or 3")
            k = self.autoregressive_kernel
            check(k == 0 or (k >= 3 and k % 2 == 1), "model.autoregressive_kernel", "must be 0 or an odd size >= 3")
            check(1 <= self.downsamplings <= 4, "model.downsamplings", "must be in 1..4")
            side = 2**self.downsamplings
            check(self.image_size >= side and self.image_size % side == 0, "model.image_size",
                  f"must be a multiple of {side} (2 ** downsamplings)")  # fmt: skip
            check(self.width >= 1 and self.latent_channels >= 1, "model.width", "width and latent_channels >= 1")
            check(self.blocks >= 0, "model.blocks", "must be >= 0")
            check_likelihood(self.likelihood)
            check(self.mixtures >= 1, "model.mixtures", "must be >= 1")
            check(self.num_classes == 0, "model.num_classes", "resnet-vae is unconditional (0)")
            check(self.ex_post_components >= 1, "model.ex_post_components", "must be >= 1")
            sampled = self.likelihood == "logistic-mixture" and k > 0
            check(self.pixel_decoding == "mean" or sampled, "model.pixel_decoding",
                  "sample needs likelihood logistic-mixture and autoregressive_kernel > 0")  # fmt: skip

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.num_classes, self.channels, self.likelihood, self.variational = 0, cfg.channels, cfg.likelihood, True
        self.ex_post_components, self.mixture_components = cfg.ex_post_components, cfg.mixtures
        self.pixel_decoding = cfg.pixel_decoding
        self.side = cfg.image_size // 2**cfg.downsamplings
        self.latent_channels = cfg.latent_channels
        self.latent_dim = cfg.latent_channels * self.side**2
        w, deep = cfg.width, 2 * cfg.width

        def blocks(ch: int) -> list[nn.Module]:
            return [ResBlock(ch) for _ in range(cfg.blocks)]

        enc: list[nn.Module] = [nn.Conv2d(cfg.channels, w, 3, padding=1), *blocks(w)]
        dec: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, deep, 3, padding=1), *blocks(deep)]
        for i in range(cfg.downsamplings):
            enc += [nn.SiLU(), nn.Conv2d(w if i == 0 else deep, deep, 4, 2, 1), *blocks(deep)]
            last = i == cfg.downsamplings - 1
            dec += [nn.Upsample(scale_factor=2), nn.Conv2d(deep, w if last else deep, 3, padding=1),
                    *blocks(w if last else deep)]  # fmt: skip
        enc += [nn.SiLU(), nn.Conv2d(deep, 2 * cfg.latent_channels, 1)]
        self.enc = nn.Sequential(*enc)
        self.causal = CausalHead(cfg.channels, w, self._out_channels(), cfg.autoregressive_kernel) if (
            cfg.autoregressive_kernel) else None  # fmt: skip
        if self.causal is None:
            dec += [nn.SiLU(), nn.Conv2d(w, self._out_channels(), 3, padding=1)]
        self.dec = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        mu, logvar = self.enc(x).chunk(2, dim=1)
        return mu.flatten(1), logvar.clamp(-12, 8).flatten(1)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None, embedding: torch.Tensor | None = None):
        """The likelihood's parameters, or with a causal head the decoder's feature maps (which :meth:`nll` and
        :meth:`mean_image` complete with the image's earlier pixels)."""
        return self.dec(z.view(len(z), self.latent_channels, self.side, self.side))

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.causal is not None:
            params = self.causal(params, x)  # every pixel's parameters from the true earlier pixels, in parallel
        return super().nll(params, x)

    def mean_image(self, params: torch.Tensor) -> torch.Tensor:
        if self.causal is None:
            return super().mean_image(params)
        if self.pixel_decoding == "sample":  # the config admits it only with the mixture likelihood
            gen = torch.Generator().manual_seed(0)
            return self.causal.generate(params, lambda p: sample_mixture(p, self.channels, gen))
        mean = LOSSES.get(self.likelihood).mean
        return self.causal.generate(params, lambda p: mean(p, self.channels))


class CausalHead(nn.Module):
    """The output layer of a locally autoregressive decoder: the decoder's features plus a masked k x k convolution
    of the image (only pixels above, and to the left in the same row: PixelCNN's mask A), then two 1 x 1 layers to
    the likelihood's parameters. The likelihood of an image is computed in one pass; an image is produced pixel by
    pixel (:meth:`generate`), each row from the rows just above it."""

    def __init__(self, channels: int, width: int, out: int, kernel: int) -> None:
        super().__init__()
        self.k = kernel
        self.pixels = nn.Conv2d(channels, width, kernel, padding=kernel // 2)
        mask = torch.zeros(1, 1, kernel, kernel)
        mask[..., : kernel // 2, :] = 1  # the rows above
        mask[..., kernel // 2, : kernel // 2] = 1  # the pixels to the left
        self.register_buffer("mask", mask, persistent=False)
        self.out = nn.Sequential(nn.SiLU(), nn.Conv2d(width, width, 1), nn.SiLU(), nn.Conv2d(width, out, 1))

    def forward(self, features: torch.Tensor, x: torch.Tensor, padding: tuple[int, int] | None = None):
        pad = self.k // 2 if padding is None else padding
        past = nn.functional.conv2d(x * 2 - 1, self.pixels.weight * self.mask, self.pixels.bias, padding=pad)
        return self.out(features + past)

    @torch.no_grad()
    def generate(self, features: torch.Tensor, pick) -> torch.Tensor:
        """An image in raster order: each pixel ``pick(params)`` (B x C x 1 x W -> values in [0, 1]) of its
        parameters given the pixels already produced; only the row being produced is recomputed."""
        b, _, h, w = features.shape
        r = self.k // 2
        # the image between r rows of 0.5 above and below: 0 on the convolution's [-1, 1] scale, its zero padding
        x = torch.full((b, self.pixels.in_channels, h + 2 * r, w), 0.5, dtype=features.dtype, device=features.device)
        for i in range(h):
            rows = x[:, :, i : i + 2 * r + 1]  # the kernel's rows around row i (those below are masked out)
            for j in range(w):
                params = self.forward(features[:, :, i : i + 1], rows, padding=(0, r))
                x[:, :, i + r, j] = pick(params[..., j : j + 1])[..., 0, 0]
        return x[:, :, r : r + h]


@MODELS.register("mlp-vae")
class MLPVAE(AutoencoderBase):
    """pytorch/examples' VAE: 784 -> 400 -> (mu, logvar) of 20, 20 -> 400 -> 784 Bernoulli logits."""

    @dataclass
    class Config:
        image_size: int = 28
        channels: int = 1
        latent_dim: int = 20
        hidden: int = 400
        num_classes: int = 0
        ex_post_components: int = 10  # Gaussians of the ex-post sampler

        def __post_init__(self) -> None:
            check(self.image_size >= 2, "model.image_size", "must be >= 2")
            check(self.channels in (1, 3), "model.channels", "must be 1 or 3")
            check(self.latent_dim >= 1 and self.hidden >= 1, "model.latent_dim", "latent_dim and hidden must be >= 1")
            check(self.num_classes == 0, "model.num_classes", "the reference VAE is unconditional (0)")
            check(self.ex_post_components >= 1, "model.ex_post_components", "must be >= 1")

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.latent_dim, self.num_classes, self.channels = cfg.latent_dim, 0, cfg.channels
        self.likelihood, self.variational = "bernoulli", True
        self.ex_post_components = cfg.ex_post_components
        self.shape = (cfg.channels, cfg.image_size, cfg.image_size)
        d = cfg.channels * cfg.image_size**2
        self.fc1, self.fc21 = nn.Linear(d, cfg.hidden), nn.Linear(cfg.hidden, cfg.latent_dim)
        self.fc22 = nn.Linear(cfg.hidden, cfg.latent_dim)
        self.fc3, self.fc4 = nn.Linear(cfg.latent_dim, cfg.hidden), nn.Linear(cfg.hidden, d)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        h = torch.relu(self.fc1(x.flatten(1)))
        return self.fc21(h), self.fc22(h).clamp(-12, 8)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None, embedding: torch.Tensor | None = None):
        return self.fc4(torch.relu(self.fc3(z))).view(len(z), *self.shape)


def prior_latents(n: int, dim: int, seed: int) -> torch.Tensor:
    """``n`` latents from the prior N(0, I), drawn from ``seed`` (the same for ``convgen sample`` and validation)."""
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def decode_means(net: AutoencoderBase, z: torch.Tensor, labels: torch.Tensor | None = None,
                 embedding: torch.Tensor | None = None, batch_size: int = 500,
                 device: torch.device | str = "cpu") -> torch.Tensor:  # fmt: skip
    """Decoder means in [0, 1] (CPU float32) of latents ``z`` (class ``labels`` or class ``embedding`` rows for a
    conditional model), ``batch_size`` at a time: the sampler of ``convgen sample`` and of a VAE run's validation."""
    out = []
    for i in range(0, len(z), batch_size):
        zi = z[i : i + batch_size].to(device)
        yi = None if labels is None else labels[i : i + batch_size].to(device)
        ei = None if embedding is None else embedding[i : i + batch_size].to(device)
        out.append(net.mean_image(net.decode(zi, yi, ei)).float().cpu())
    return torch.cat(out)
