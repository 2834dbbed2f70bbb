"""Noise schedules of the forward process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) and its closed forms.

Two schedules: ``linear`` (Ho et al. 2020: beta from 1e-4 to 0.02 over 1,000 steps, rescaled for other lengths)
and ``cosine`` (Nichol & Dhariwal 2021: abar_t = f(t) / f(0), f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2),
betas clipped at 0.999). Everything is computed in float64 and indexed by integer timesteps 0 .. T-1; index
``-1`` stands for "no noise" (abar = 1) so a sampler's last step needs no special case.

Three parameterisations of the network's output are supported: ``eps`` (the noise), ``v`` (Salimans & Ho 2022:
v = sqrt(abar) eps - sqrt(1 - abar) x_0) and ``x0``; :meth:`NoiseSchedule.split` turns any of them into the
(x_0, eps) pair the samplers use.
"""

from __future__ import annotations

import math

import torch

PARAMETERIZATIONS = ("eps", "v", "x0")


class NoiseSchedule:
    """``betas`` (T, float64) and everything derived from them."""

    def __init__(self, betas: torch.Tensor) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or len(betas) < 1 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must be a non-empty 1-D tensor with values in (0, 1)")
        self.betas = betas
        self.T = len(betas)
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        # abar at t-1 (1 before the first step): the posterior q(x_{t-1} | x_t, x_0) needs it
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        ab, ab_prev = self.alphas_cumprod, self.alphas_cumprod_prev
        self.posterior_variance = betas * (1 - ab_prev) / (1 - ab)
        self.posterior_mean_coef_x0 = betas * ab_prev.sqrt() / (1 - ab)
        self.posterior_mean_coef_xt = (1 - ab_prev) * self.alphas.sqrt() / (1 - ab)

    @classmethod
    def make(cls, kind: str, steps: int = 1000) -> NoiseSchedule:
        if steps < 1:
            raise ValueError(f"a schedule needs >= 1 steps, got {steps}")
        if kind == "linear":
            scale = 1000 / steps
            return cls(torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64))
        if kind == "cosine":
            s = 0.008
            t = torch.arange(steps + 1, dtype=torch.float64) / steps
            f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
            abar = f / f[0]
            return cls((1 - abar[1:] / abar[:-1]).clamp(max=0.999))
        raise ValueError(f"unknown schedule {kind!r} (linear or cosine)")

    # -- per-timestep values ------------------------------------------------------------------------------------
    def abar(self, t: torch.Tensor | int) -> torch.Tensor:
        """abar at integer timesteps ``t`` (float64); ``t = -1`` gives 1."""
        t = torch.as_tensor(t, dtype=torch.long)
        one = torch.ones((), dtype=torch.float64)
        return torch.where(t < 0, one, self.alphas_cumprod[t.clamp(min=0)])

    def sigma(self, t: torch.Tensor | int) -> torch.Tensor:
        """The noise-to-signal ratio sqrt((1 - abar) / abar) of x_t / sqrt(abar): the noise level of x_0 + sigma n."""
        ab = self.abar(t)
        return ((1 - ab) / ab).sqrt()

    def timestep_for_sigma(self, sigma: float) -> int:
        """The timestep whose :meth:`sigma` is nearest ``sigma`` (on a log scale): where a noisy image x_0 + sigma n
        enters the reverse process (scaled by sqrt(abar))."""
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        s = self.sigma(torch.arange(self.T))
        return int((s.log() - math.log(sigma)).abs().argmin())

    @staticmethod
    def _b(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Per-sample float64 values shaped to broadcast over a B x C x H x W batch, in its dtype and device."""
        v = v.reshape(-1, *([1] * (like.ndim - 1))) if v.ndim else v
        return v.to(device=like.device, dtype=like.dtype)

    # -- forward process and posterior --------------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
        ab = self.abar(t)
        return self._b(ab.sqrt(), x0) * x0 + self._b((1 - ab).sqrt(), x0) * noise

    def q_jump(self, x: torch.Tensor, t_from: int, t_to: int, noise: torch.Tensor) -> torch.Tensor:
        """A sample of q(x_{t_to} | x_{t_from}) for t_to > t_from (the forward process run on from x_{t_from})."""
        ratio = self.abar(t_to) / self.abar(t_from)
        return float(ratio.sqrt()) * x + float((1 - ratio).sqrt()) * noise

    def posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) (variance per sample, broadcastable)."""
        t = torch.as_tensor(t, dtype=torch.long)
        mean = self._b(self.posterior_mean_coef_x0[t], x0) * x0 + self._b(self.posterior_mean_coef_xt[t], xt) * xt
        return mean, self._b(self.posterior_variance[t], xt)

    # -- parameterisations ----------------------------------------------------------------------------------------
    def target(self, kind: str, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What a network of parameterisation ``kind`` is trained to output for (x_0, noise) at t."""
        if kind == "eps":
            return noise
        if kind == "x0":
            return x0
        if kind == "v":
            ab = self.abar(t)
            return self._b(ab.sqrt(), x0) * noise - self._b((1 - ab).sqrt(), x0) * x0
        raise ValueError(f"unknown parameterization {kind!r} ({', '.join(PARAMETERIZATIONS)})")

    def split(
        self, kind: str, xt: torch.Tensor, out: torch.Tensor, t: torch.Tensor, clip: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_0, eps) implied by a network output ``out`` of parameterisation ``kind`` at x_t; with ``clip`` the
        x_0 estimate is clamped to the data range [-1, 1] and eps recomputed from it (Ho et al.'s clipping)."""
        ab = self.abar(t)
        a, s = self._b(ab.sqrt(), xt), self._b((1 - ab).sqrt(), xt)
        if kind == "eps":
            x0 = (xt - s * out) / a
        elif kind == "v":
            x0 = a * xt - s * out
        elif kind == "x0":
            x0 = out
        else:
            raise ValueError(f"unknown parameterization {kind!r} ({', '.join(PARAMETERIZATIONS)})")
        if clip:
            x0 = x0.clamp(-1, 1)
        eps = (xt - a * x0) / s
        return x0, eps
