"""Learned image codecs: the factorized-prior model (Ballé et al. 2017) and the scale-hyperprior model (Ballé et
al. 2018), with GDN / inverse GDN transforms, as one network with a switch (``hyperprior``).

Several rate points share one network through gain units (Cui et al. 2021): quality ``q`` scales the latent
channel-wise by ``gain[q]`` before quantisation and by ``inverse_gain[q]`` after, and training draws a quality per
image with its own rate-distortion weight. Gray images are coded as three equal channels (the training batches
include gray photos), so one network serves gray and RGB. Entropy coding is in :mod:`convgen.entropy`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from convgen.entropy.models import EntropyBottleneck, gaussian_likelihood, quantize
from convgen.registry import MODELS
from convgen.schema import check


class GDN(nn.Module):
    """Generalized divisive normalization y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2) (inverse: times the
    root). ``beta`` and ``gamma`` stay positive through a squared, floored reparametrisation."""

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1) -> None:
        super().__init__()
        self.inverse, self.beta_min = inverse, beta_min
        self.pedestal = 2.0**-36
        self.beta = nn.Parameter(torch.sqrt(torch.ones(channels) + self.pedestal))
        self.gamma = nn.Parameter(torch.sqrt(gamma_init * torch.eye(channels) + self.pedestal))

    def _positive(self, p: torch.Tensor, floor: float) -> torch.Tensor:
        bound = math.sqrt(floor + self.pedestal)
        p = p + (torch.clamp_min(p, bound) - p).detach()
        return p * p - self.pedestal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta, gamma = self._positive(self.beta, self.beta_min), self._positive(self.gamma, 0.0)
        norm = F.conv2d(x * x, gamma[:, :, None, None], beta)
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)


def _conv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2)


def _deconv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, k, stride, k // 2, output_padding=stride - 1)


@MODELS.register("codec")
class ImageCodec(nn.Module):
    """Analysis g_a (4 stride-2 5x5 convolutions with GDN: 16x down), synthesis g_s (the mirror with inverse
    GDN); with ``hyperprior``, h_a (|y| -> z, 4x down more) and h_s (z -> the scale of every y)."""

    @dataclass
    class Config:
        channels: int = 3  # network input; gray images are coded as three equal channels
        width: int = 64  # N: channels of the transforms
        latent: int = 96  # M: channels of y
        hyper_width: int = 64  # channels of z and of the hyper transforms
        hyperprior: bool = True  # false: the factorized-prior model (Ballé et al. 2017)
        lambdas: list[float] = field(default_factory=lambda: [0.0018, 0.0035, 0.0067, 0.0130, 0.0250])

        def __post_init__(self) -> None:
            check(self.channels == 3, "model.channels", "must be 3 (gray images are coded as three equal channels)")
            check(min(self.width, self.latent, self.hyper_width) >= 1, "model.width", "widths must be >= 1")
            check(len(self.lambdas) >= 1 and all(v > 0 for v in self.lambdas), "model.lambdas", "must be > 0")
            check(list(self.lambdas) == sorted(self.lambdas), "model.lambdas", "must rise with the quality")

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        n, m, h = cfg.width, cfg.latent, cfg.hyper_width
        self.hyperprior, self.latent = cfg.hyperprior, m
        self.register_buffer("lambdas", torch.tensor(cfg.lambdas), persistent=False)
        self.g_a = nn.Sequential(
            _conv(cfg.channels, n), GDN(n), _conv(n, n), GDN(n), _conv(n, n), GDN(n), _conv(n, m)
        )
        self.g_s = nn.Sequential(
            _deconv(m, n), GDN(n, True), _deconv(n, n), GDN(n, True), _deconv(n, n), GDN(n, True),
            _deconv(n, cfg.channels),
        )  # fmt: skip
        k = len(cfg.lambdas)
        log_gain = torch.linspace(math.log(0.5), math.log(2.0), k)[:, None].repeat(1, m)
        self.log_gain = nn.Parameter(log_gain)
        self.log_inverse_gain = nn.Parameter(-log_gain.clone())
        if cfg.hyperprior:
            self.h_a = nn.Sequential(_conv(m, h, 3, 1), nn.ReLU(), _conv(h, h), nn.ReLU(), _conv(h, h))
            self.h_s = nn.Sequential(_deconv(h, h), nn.ReLU(), _deconv(h, h), nn.ReLU(), _conv(h, m, 3, 1), nn.ReLU())
        self.entropy_bottleneck = EntropyBottleneck(h if cfg.hyperprior else m)

    @property
    def qualities(self) -> int:
        return self.log_gain.shape[0]

    @property
    def stride(self) -> int:
        """Images are padded to a multiple of this."""
        return 64 if self.hyperprior else 16

    def gains(self, quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gain, inverse gain) for 0-based qualities (B,), shaped B x M x 1 x 1."""
        return self.log_gain[quality].exp()[..., None, None], self.log_inverse_gain[quality].exp()[..., None, None]

    def analysis(self, x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        """The gained latent y * gain[q] of an image in [0, 1] (centred to [-0.5, 0.5])."""
        return self.g_a(x - 0.5) * self.gains(quality)[0]

    def synthesis(self, y_hat: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        return self.g_s(y_hat * self.gains(quality)[1]) + 0.5

    def forward(self, x: torch.Tensor, quality: torch.Tensor, mode: str = "noise") -> dict[str, torch.Tensor]:
        """The reconstruction and the latents' likelihoods. ``noise`` (training): the rate from noise-perturbed
        latents, the reconstruction from rounded ones with a straight-through gradient; ``round`` (validation):
        both from the rounded latents, what coding gives (rate estimated from the continuous model rather than the
        integer tables)."""
        rec = "ste" if mode == "noise" else "round"
        y = self.analysis(x, quality)
        eb = self.entropy_bottleneck
        if not self.hyperprior:
            _, lik_y = eb(y, mode)
            y_hat = quantize(y, rec, eb.medians.view(1, -1, 1, 1))
            return {"x_hat": self.synthesis(y_hat, quality), "likelihoods": [lik_y]}
        z_tilde, lik_z = eb(self.h_a(y.abs()), mode)
        lik_y = gaussian_likelihood(quantize(y, mode), self.h_s(z_tilde))
        return {"x_hat": self.synthesis(quantize(y, rec), quality), "likelihoods": [lik_y, lik_z]}

    def estimate(self, x: torch.Tensor, quality: torch.Tensor) -> dict[str, torch.Tensor]:
        """The validation pass: :meth:`forward` with rounded latents."""
        return self.forward(x, quality, "round")

    def aux_loss(self) -> torch.Tensor:
        return self.entropy_bottleneck.aux_loss()
