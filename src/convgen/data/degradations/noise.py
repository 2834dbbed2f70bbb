"""Noise: additive white Gaussian noise by the benchmark protocol, and Poisson-Gaussian (shot + read) noise.

The protocol (../shared/BENCHMARKS.md, the DnCNN/KAIR protocol): ``noisy = clean + rng.standard_normal(clean.shape)
* sigma / 255`` with ``rng = numpy.random.default_rng(seed)``, not clipped, not quantised (:func:`gaussian_noise`).
Training draws sigma per image from a fixed value or a blind range. The conditioning map is the noise level
sigma/255 (what a noise-map model such as FFDNet takes; blind models ignore it).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import numpy as np
import torch

from convgen.data.degradations.base import Degradation
from convgen.errors import ConvgenError
from convgen.registry import DEGRADATIONS
from convgen.schema import check


def gaussian_noise(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """The protocol's noisy image: ``clean + default_rng(seed).standard_normal(clean.shape) * sigma / 255``."""
    rng = np.random.default_rng(seed)
    return clean + rng.standard_normal(clean.shape) * sigma / 255.0


def uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


@dataclass
class NoiseConfig:
    sigma: float | None = 25.0  # Gaussian noise std on the 0-255 scale (fixed); null with sigma_range = blind
    sigma_range: list[float] | None = None  # blind training: sigma uniform in [lo, hi] per image

    def __post_init__(self) -> None:
        where = "task.degradation"
        ok = (self.sigma is None) != (self.sigma_range is None)
        check(ok, f"{where}.sigma", "set exactly one of sigma (fixed) and sigma_range (blind)")
        check(self.sigma is None or 0 <= self.sigma <= 255, f"{where}.sigma", "must be in [0, 255]")
        if self.sigma_range is not None:
            ok = len(self.sigma_range) == 2 and 0 <= self.sigma_range[0] <= self.sigma_range[1] <= 255
            check(ok, f"{where}.sigma_range", "must be [lo, hi] with 0 <= lo <= hi <= 255")

    @property
    def blind(self) -> bool:
        return self.sigma_range is not None

    @property
    def max_sigma(self) -> float:
        return float(self.sigma_range[1] if self.sigma_range is not None else self.sigma or 0.0)


@DEGRADATIONS.register("noise")
class GaussianNoise(Degradation):
    verb = "denoise"
    is_noise = True
    Config = NoiseConfig

    def sigmas(self, gen: torch.Generator, n: int) -> torch.Tensor:
        """Per-image noise std on the [0, 1] scale, n x 1 x 1 x 1: fixed, or uniform in the blind range."""
        cfg = self.cfg
        sigma = torch.full((n,), float(cfg.sigma)) if cfg.sigma is not None else uniform(gen, n, *cfg.sigma_range)
        return sigma.view(n, 1, 1, 1) / 255.0

    def batch(self, clean, gen):
        b, _, h, w = clean.shape
        sigma = self.sigmas(gen, b)
        noise = torch.randn(clean.shape, generator=gen)
        return clean + noise * sigma, sigma.expand(b, 1, h, w)

    def protocol(self, clean, index, sigma=None):
        """Noise at ``sigma`` (default: the config's fixed sigma, else 25) seeded with ``index``."""
        s = float(sigma if sigma is not None else (self.cfg.sigma if self.cfg.sigma is not None else 25.0))
        return gaussian_noise(clean, s, index).astype(np.float32), np.full(clean.shape[:2] + (1,), s / 255, np.float32)

    def eval_levels(self, sigmas):
        return list(sigmas)

    def level(self, sigma: float | None, takes_level: bool) -> float | None:
        """Check a requested noise level (warn if a fixed-level model gets another one); the level a noise-map
        network is fed (None for a blind network)."""
        if sigma is not None and not 0 <= sigma <= 255:
            raise ConvgenError(f"`sigma` {sigma} is outside [0, 255]")
        fixed = self.cfg.sigma
        if fixed is not None and sigma is not None and abs(sigma - fixed) > 1e-6:
            print(
                f"convgen: warning: this model was trained for sigma {fixed:g} only; "
                f"it will under- or over-smooth at sigma {sigma:g}",
                file=sys.stderr,
            )
        if not takes_level:
            return None
        level = sigma if sigma is not None else fixed
        if level is None:
            raise ConvgenError("this denoiser takes the noise level as input: give `sigma`")
        return float(level)

    def network_input(self, x, mask, level):
        return x, None if level is None else torch.full((1, 1, *x.shape[-2:]), level / 255.0)


@dataclass
class PoissonGaussianConfig(NoiseConfig):
    peak: list[float] = field(default_factory=lambda: [10.0, 200.0])  # photons at white: a range, log-uniform

    def __post_init__(self) -> None:
        super().__post_init__()
        ok = len(self.peak) == 2 and 0 < self.peak[0] <= self.peak[1]
        check(ok, "task.degradation.peak", "must be [lo, hi] > 0")


@DEGRADATIONS.register("poisson-gaussian")
class PoissonGaussian(GaussianNoise):
    """Photon shot noise plus read noise: ``clean * peak ~ Poisson``, divided by ``peak``, plus Gaussian noise.
    Validated and restored like Gaussian noise (the protocol)."""

    Config = PoissonGaussianConfig

    def batch(self, clean, gen):
        b, _, h, w = clean.shape
        peak = torch.exp(uniform(gen, b, math.log(self.cfg.peak[0]), math.log(self.cfg.peak[1]))).view(b, 1, 1, 1)
        shot = torch.poisson(clean.clamp(0, 1) * peak, generator=gen) / peak
        sigma = self.sigmas(gen, b)
        noisy = shot + torch.randn(clean.shape, generator=gen) * sigma
        level = torch.sqrt(clean.clamp(0, 1).mean((1, 2, 3), keepdim=True) / peak + sigma**2)  # effective std
        return noisy, level.expand(b, 1, h, w)
