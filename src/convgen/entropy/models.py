"""Differentiable entropy models for training (Ballé et al. 2017, 2018; the layout of CompressAI's
``entropy_models.py``): likelihoods of noisy or rounded latents, and the quantiles that bound the coding tables.

- :class:`EntropyBottleneck`: a learned, per-channel, non-parametric density (a monotone cumulative built from
  small matrices), for latents with no side information (the factorized prior, the hyper-latent ``z``).
- :func:`gaussian_likelihood`: a zero-mean Gaussian with a given scale, integrated over each quantisation bin
  (the scale-hyperprior's conditional model of ``y``); :func:`scale_table` is the fixed set of scales it is
  coded with.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LIKELIHOOD_BOUND = 1e-9
SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64


def scale_table() -> torch.Tensor:
    """The 64 log-spaced scales (0.11 .. 256) the Gaussian conditional is coded with (CompressAI's table)."""
    return torch.exp(torch.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS, dtype=torch.float64))


def quantize(x: torch.Tensor, mode: str, offset: torch.Tensor | float = 0.0) -> torch.Tensor:
    """``noise``: x + U(-0.5, 0.5) (the training proxy); ``ste``: rounding with a straight-through gradient;
    ``round``: rounding. Rounding is of ``x - offset`` (the bottleneck's medians), added back."""
    if mode == "noise":
        return x + torch.empty_like(x).uniform_(-0.5, 0.5)
    rounded = torch.round(x - offset) + offset
    return x + (rounded - x).detach() if mode == "ste" else rounded


def _lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    """max(x, bound), with the gradient passed where it pushes x back above the bound (CompressAI's LowerBound)."""
    return x + (torch.clamp_min(x, bound) - x).detach()


def gaussian_likelihood(y_hat: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """P(y_hat) for a zero-mean Gaussian of ``scales`` integrated over [y_hat - 0.5, y_hat + 0.5]."""
    s = _lower_bound(scales, SCALE_MIN)
    v = y_hat.abs()  # symmetric: evaluate in the lower tail, where the difference of CDFs is accurate
    upper = 0.5 * torch.erfc(-(0.5 - v) / (s * math.sqrt(2)))
    lower = 0.5 * torch.erfc(-(-0.5 - v) / (s * math.sqrt(2)))
    return _lower_bound(upper - lower, LIKELIHOOD_BOUND)


class EntropyBottleneck(nn.Module):
    """A per-channel learned density of ``channels`` latents (filters 3-3-3-3 as in Ballé et al. 2018).

    ``quantiles`` (channels x 1 x 3: lower tail, median, upper tail) are fitted by :meth:`aux_loss`; symbols
    are ``round(z - median)`` and the coding tables span the tails (:mod:`convgen.entropy.tables`).
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3, 3), init_scale: float = 10.0,
                 tail_mass: float = 1e-9) -> None:  # fmt: skip
        super().__init__()
        self.channels, self.tail_mass = channels, tail_mass
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices, self.biases, self.factors = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, dims[i + 1], 1).uniform_(-0.5, 0.5)))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))
        target = math.log(2 / tail_mass - 1)
        self.quantiles = nn.Parameter(torch.tensor([-init_scale, 0.0, init_scale]).repeat(channels, 1, 1))
        self.register_buffer("target", torch.tensor([-target, 0.0, target]), persistent=False)

    def logits_cumulative(self, x: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """Logit of the cumulative at ``x`` (channels x 1 x N); ``detach``: no gradient to the density."""
        d = (lambda t: t.detach()) if detach else (lambda t: t)  # noqa: E731
        for i, matrix in enumerate(self.matrices):
            x = torch.matmul(F.softplus(d(matrix)), x) + d(self.biases[i])
            if i < len(self.factors):
                x = x + torch.tanh(d(self.factors[i])) * torch.tanh(x)
        return x

    @property
    def medians(self) -> torch.Tensor:
        return self.quantiles[:, 0, 1].detach()

    def aux_loss(self) -> torch.Tensor:
        """Moves ``quantiles`` to the density's tails and median (its own optimiser; the density is detached)."""
        logits = self.logits_cumulative(self.quantiles, detach=True)
        return (logits - self.target).abs().sum()

    @torch.no_grad()
    def fit_quantiles(self, lo: float = -1e4, hi: float = 1e4, iters: int = 64) -> None:
        """Set ``quantiles`` to the density's tails and median exactly, by bisection on the monotone cumulative
        (the auxiliary loss gets there only slowly); run before the coding tables are built."""
        target = self.target.view(1, 1, 3).expand(self.channels, 1, 3).to(self.quantiles)
        low, high = torch.full_like(target, lo), torch.full_like(target, hi)
        for _ in range(iters):
            mid = (low + high) / 2
            above = self.logits_cumulative(mid) > target
            high, low = torch.where(above, mid, high), torch.where(above, low, mid)
        self.quantiles.copy_((low + high) / 2)

    def likelihood(self, z_hat: torch.Tensor) -> torch.Tensor:
        """P(z_hat) over [z_hat - 0.5, z_hat + 0.5] for a B x C x H x W tensor."""
        b, c, h, w = z_hat.shape
        v = z_hat.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower, upper = self.logits_cumulative(v - 0.5), self.logits_cumulative(v + 0.5)
        sign = -torch.sign(lower + upper).detach()  # evaluate in the tail where the sigmoid difference is accurate
        p = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        return _lower_bound(p, LIKELIHOOD_BOUND).reshape(c, b, h, w).permute(1, 0, 2, 3)

    def forward(self, z: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_hat, likelihoods) with ``mode`` as in :func:`quantize` (offsets: the medians)."""
        z_hat = quantize(z, mode, self.medians.view(1, -1, 1, 1))
        return z_hat, self.likelihood(z_hat)
