"""DCGAN generator and discriminator (Radford et al. 2016), unconditional or class-conditional.

The layout follows pytorch/examples' ``dcgan/main.py`` exactly at 64 px (ConvTranspose 4x4 stride 2 + BatchNorm +
ReLU up to a Tanh output; Conv 4x4 stride 2 + BatchNorm + LeakyReLU(0.2) down to one logit), so the ``reference``
preset is that recipe. Other sizes keep the pattern: the first generator layer makes a ``base`` x ``base`` map
(4 px, or 7 px for 28 px MNIST) and every later layer doubles it.

Conditioning (``num_classes > 0``): the generator concatenates a learned class embedding to ``z``; the
discriminator uses a projection head (Miyato & Koyama 2018) or concatenates one-hot class maps to its input.
Self-conditioning (``clusters > 0``, Liu et al. 2020): the same machinery, conditioned on unsupervised k-means
clusters of the training images instead of labels. Such a generator picks its own cluster from its latent
(``u = Phi(z[0])`` through the clusters' cumulative training frequencies), so from outside it is an unconditional
generator of ``z``. Images are B x C x H x W in [-1, 1].

``arch: sngan`` is the "standard CNN" of Miyato et al. 2018 (Table 3; StudioGAN's DCGAN for CIFAR-10): the
generator ends with a 3x3 convolution at full resolution after its last upsampling, and the discriminator puts a
3x3 convolution before every 4x4 stride-2 one (widths 64, 64, 128, 128, 256, 256, 512 at ``ndf`` 64), with
LeakyReLU(0.1), then one dense logit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from convgen.registry import MODELS
from convgen.schema import check


def layout(image_size: int) -> tuple[int, int]:
    """(base size, number of 2x up/down-sampling layers) for an image size of base * 2**n."""
    for base in (4, 7):
        n = math.log2(image_size / base) if image_size >= base else -1
        if n >= 1 and n == int(n):
            return base, int(n)
    raise ValueError(image_size)


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "instance":
        return nn.InstanceNorm2d(ch, affine=True)
    return nn.Identity()


def dcgan_init(module: nn.Module) -> None:
    """pytorch/examples' ``weights_init``: conv weights N(0, 0.02), BatchNorm weight N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02 if m.embedding_dim > 1 else 1.0)


class Generator(nn.Module):
    def __init__(self, cfg: DCGAN.Config) -> None:
        super().__init__()
        base, n_up = layout(cfg.image_size)
        self.z_dim, self.num_classes, self.clusters = cfg.z_dim, cfg.num_classes, cfg.clusters
        n_cond = cfg.num_classes or cfg.clusters
        embed = cfg.embed_dim if n_cond else 0
        self.embed = nn.Embedding(n_cond, embed) if n_cond else None
        if cfg.clusters:  # cumulative cluster frequencies (set from the training data; saved with the weights)
            self.register_buffer("cluster_cdf", torch.arange(1, cfg.clusters + 1, dtype=torch.float32) / cfg.clusters)
        sngan = cfg.arch == "sngan"  # all upsamplings hidden, then a 3x3 convolution to the image
        ch = cfg.ngf * 2 ** (n_up if sngan else n_up - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(cfg.z_dim + embed, ch, base, 1, 0, bias=cfg.g_norm == "none"),
            _norm(cfg.g_norm, ch),
            nn.ReLU(True),
        ]
        for _ in range(n_up if sngan else n_up - 1):
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=cfg.g_norm == "none"),
                _norm(cfg.g_norm, ch // 2),
                nn.ReLU(True),
            ]
            ch //= 2
        if sngan:
            layers += [nn.Conv2d(ch, cfg.channels, 3, 1, 1), nn.Tanh()]
        else:
            layers += [nn.ConvTranspose2d(ch, cfg.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        dcgan_init(self)

    def set_cluster_frequencies(self, counts: torch.Tensor) -> None:
        cdf = counts.double().cumsum(0) / counts.sum()
        self.cluster_cdf.copy_(cdf.float())
        self.cluster_cdf[-1] = 1.0

    def cluster_of(self, z: torch.Tensor) -> torch.Tensor:
        """Self-conditioned generator: the cluster each latent selects. ``Phi(z[:, 0])`` is uniform on (0, 1) for
        z ~ N(0, I), so clusters come out with their training frequencies."""
        u = 0.5 * (1 + torch.erf(z[:, 0].float() / math.sqrt(2)))
        return torch.searchsorted(self.cluster_cdf, u.contiguous(), right=True).clamp_(max=self.clusters - 1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.clusters and labels is None:
            labels = self.cluster_of(z)
        if self.embed is not None:
            if labels is None:
                raise ValueError("this generator is class-conditional: labels are required")
            z = torch.cat([z, self.embed(labels).to(z.dtype)], 1)
        return self.main(z[:, :, None, None])


class MinibatchStddev(nn.Module):
    """Minibatch standard deviation (Karras et al. 2018, ProGAN): one extra feature map holding how much the images
    of a small group differ from each other, so the discriminator can see a batch of near-identical fakes.

    Images ``i`` and ``j`` share a group when ``i % (B // g) == j % (B // g)`` (the ProGAN/StyleGAN layout); ``g`` is
    the largest divisor of the batch size ``B`` that is at most ``group_size``.
    """

    def __init__(self, group_size: int) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = next(k for k in range(min(self.group_size, b), 0, -1) if b % k == 0)
        y = x.float().reshape(g, -1, c, h, w)
        std = (y.var(0, unbiased=False) + 1e-8).sqrt().mean((1, 2, 3))  # one number per group: B // g
        std = std.to(x.dtype).repeat(g)[:, None, None, None].expand(b, 1, h, w)
        return torch.cat([x, std], 1)


class Discriminator(nn.Module):
    def __init__(self, cfg: DCGAN.Config) -> None:
        super().__init__()
        base, n_down = layout(cfg.image_size)
        self.num_classes = cfg.num_classes or cfg.clusters  # classes, or unsupervised clusters
        self.concat = self.num_classes > 0 and cfg.d_conditioning == "concat"
        sn = spectral_norm if cfg.spectral_norm else (lambda m: m)
        in_ch = cfg.channels * cfg.d_pack + (self.num_classes if self.concat else 0)
        ch = cfg.ndf
        if cfg.arch == "sngan":
            layers = self._sngan_layers(cfg, in_ch, n_down, sn)
            ch = cfg.ndf * 2**n_down
        else:
            layers = [sn(nn.Conv2d(in_ch, ch, 4, 2, 1, bias=False)), nn.LeakyReLU(0.2, True)]
            for _ in range(n_down - 1):
                layers += [
                    sn(nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=cfg.d_norm == "none")),
                    _norm(cfg.d_norm, ch * 2),
                    nn.LeakyReLU(0.2, True),
                ]
                ch *= 2
        self.main = nn.Sequential(*layers)
        self.mbstd = MinibatchStddev(cfg.d_mbstd_group) if cfg.d_mbstd_group else None
        self.head = sn(nn.Conv2d(ch + (self.mbstd is not None), 1, base, 1, 0, bias=False))
        self.project = None
        if self.num_classes and not self.concat:
            self.project = nn.Embedding(self.num_classes, ch)
            if cfg.spectral_norm:
                self.project = spectral_norm(self.project)
        dcgan_init(self)

    @staticmethod
    def _sngan_layers(cfg: DCGAN.Config, in_ch: int, n_down: int, sn) -> list[nn.Module]:
        """3x3 (ndf), then per halving 4x4 stride 2 (same width) and 3x3 (twice the width); LeakyReLU(0.1)."""
        bias = cfg.d_norm == "none"
        layers: list[nn.Module] = [sn(nn.Conv2d(in_ch, cfg.ndf, 3, 1, 1, bias=bias)), nn.LeakyReLU(0.1, True)]
        ch = cfg.ndf
        for _ in range(n_down):
            layers += [sn(nn.Conv2d(ch, ch, 4, 2, 1, bias=bias)), _norm(cfg.d_norm, ch), nn.LeakyReLU(0.1, True),
                       sn(nn.Conv2d(ch, ch * 2, 3, 1, 1, bias=bias)), _norm(cfg.d_norm, ch * 2),
                       nn.LeakyReLU(0.1, True)]  # fmt: skip
            ch *= 2
        return layers

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """One real-valued logit per image (the reference's Sigmoid lives in the loss)."""
        if self.num_classes and labels is None:
            raise ValueError("this discriminator is class-conditional: labels are required")
        if self.concat:
            onehot = torch.nn.functional.one_hot(labels, self.num_classes).to(x.dtype)
            x = torch.cat([x, onehot[:, :, None, None].expand(-1, -1, *x.shape[2:])], 1)
        h = self.main(x)
        out = self.head(h if self.mbstd is None else self.mbstd(h)).flatten(1).sum(1)
        if self.project is not None:
            out = out + (self.project(labels).to(h.dtype) * h.sum((2, 3))).sum(1)
        return out


@MODELS.register("dcgan")
class DCGAN(nn.Module):
    """Holds both networks; tasks and pipelines use ``.generator`` and ``.discriminator``."""

    @dataclass
    class Config:
        image_size: int = 64  # base * 2**n with base 4 or 7: 28, 32, 56, 64, 128, ...
        channels: int = 1
        z_dim: int = 100
        ngf: int = 64  # generator width (channels of its last hidden layer)
        ndf: int = 64  # discriminator width (channels of its first layer)
        num_classes: int = 0  # > 0: class-conditional generator and discriminator
        embed_dim: int = 32  # generator class-embedding size (conditional only)
        clusters: int = 0  # > 0: self-conditioned GAN on this many k-means clusters of the training images
        g_norm: Literal["batch", "instance", "none"] = "batch"
        d_norm: Literal["batch", "instance", "none"] = "batch"
        spectral_norm: bool = False  # on every discriminator layer
        d_conditioning: Literal["projection", "concat"] = "projection"
        d_mbstd_group: int = 0  # > 0: minibatch-stddev feature map before the discriminator head (group size)
        d_pack: int = 1  # PacGAN (Lin et al. 2018): D judges packs of this many images, stacked as channels
        arch: Literal["dcgan", "sngan"] = "dcgan"  # sngan: Miyato et al.'s standard CNN (see the module notes)

        def __post_init__(self) -> None:
            try:
                layout(self.image_size)
            except ValueError:
                check(False, "model.image_size", "must be 4 or 7 times a power of two (28, 32, 56, 64, 128, ...)")
            check(self.channels in (1, 3), "model.channels", "must be 1 or 3")
            check(self.z_dim >= 1, "model.z_dim", "must be >= 1")
            check(self.ngf >= 1 and self.ndf >= 1, "model.ngf/ndf", "must be >= 1")
            check(self.num_classes >= 0, "model.num_classes", "must be >= 0")
            check(self.clusters >= 0, "model.clusters", "must be >= 0 (0 = off)")
            check(not (self.clusters and self.num_classes), "model.clusters", "cannot be used with model.num_classes")
            check(self.embed_dim >= 1, "model.embed_dim", "must be >= 1")
            check(self.d_mbstd_group >= 0, "model.d_mbstd_group", "must be >= 0 (0 = off)")
            check(self.d_pack >= 1, "model.d_pack", "must be >= 1 (1 = no packing)")
            ok = self.d_pack == 1 or not (self.num_classes or self.clusters)
            check(ok, "model.d_pack", "packing needs an unconditional GAN (no classes or clusters)")

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.generator = Generator(cfg)
        self.discriminator = Discriminator(cfg)

    def component(self, name: str) -> nn.Module:
        """The network saved as ``<name>.safetensors``: generator, generator_ema (the EMA generator) or
        discriminator."""
        if name in ("generator", "generator_ema"):
            return self.generator
        if name == "discriminator":
            return self.discriminator
        raise KeyError(name)


def latents(n: int, z_dim: int, seed: int) -> torch.Tensor:
    """``n`` standard normal latents drawn in one block from ``seed``: latent ``i`` of a seed is the same whatever
    the batch size or device batching."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


def truncate(z: torch.Tensor, t: float, keep: int = 0) -> torch.Tensor:
    """The truncation trick (Brock et al. 2019): standard normal latents ``z`` mapped onto N(0, 1) restricted to
    [-t, t], coordinate by coordinate through the CDFs (``Phi^-1(Phi(-t) + Phi(z) (1 - 2 Phi(-t)))``), so each
    latent keeps its rank and a smaller ``t`` pulls the same seed's pictures toward the typical one. ``t`` 0: no
    truncation. The first ``keep`` coordinates stay as drawn (a self-conditioned generator picks its cluster from
    ``Phi(z[:, 0])``, whose frequencies truncation would change)."""
    if not t:
        return z
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    low = normal.cdf(torch.tensor(-float(t), dtype=torch.float64))
    u = low + normal.cdf(z[:, keep:].double()) * (1 - 2 * low)
    inner = normal.icdf(u.clamp(1e-15, 1 - 1e-15)).clamp(-t, t).to(z.dtype)
    return torch.cat([z[:, :keep], inner], 1)


@torch.no_grad()
def generate(
    generator: Generator,
    z: torch.Tensor,
    labels: torch.Tensor | None = None,
    embedding: torch.Tensor | None = None,
    batch_size: int = 500,
    device: torch.device | str | None = None,
    progress=None,
) -> torch.Tensor:
    """Images in [0, 1] (CPU float32, B x C x H x W) for latents ``z`` and class ``labels`` (conditional models)
    or class ``embedding`` vectors (walks between classes). ``progress`` is a tqdm bar to advance, or None."""
    device = device if device is not None else next(generator.parameters()).device
    out = []
    for i in range(0, len(z), batch_size):
        zi = z[i : i + batch_size].to(device)
        if embedding is not None:
            x = generator.main(torch.cat([zi, embedding[i : i + batch_size].to(device)], 1)[:, :, None, None])
        else:
            x = generator(zi, None if labels is None else labels[i : i + batch_size].to(device))
        out.append(((x.float().clamp(-1, 1) + 1) / 2).cpu())
        if progress is not None:
            progress.update(len(zi))
    return torch.cat(out)
