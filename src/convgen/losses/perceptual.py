"""Perceptual losses over a frozen feature network (:mod:`convgen.models.backbones.vgg`): content (feature
mean squared error, Gatys et al. 2016), style (Gram matrices, Gatys et al. 2015), and total variation.

Gram matrices are normalised by the number of positions and channels, so a layer's style loss does not depend on
the image size and images of different sizes (a 512 px photo, a 1024 px painting) compare directly. Style targets
of several paintings mix their Grams with the given weights. A multi-scale style loss (``scales``) also compares
the image downscaled by each factor with the painting downscaled by the same factor, so brush strokes larger than
the feature network's receptive field count too (the pyramid of Grams of Snelgrove 2017 / Wang et al. 2017).

``statistic="sliced"`` replaces the Grams by the sliced Wasserstein distance between the feature distributions
(Heitz et al. 2021): each layer's features are projected on fresh random unit directions at every call and the
sorted projections compared with the painting's (a fixed random sample of its feature vectors, resampled to the
same quantiles). A Gram matrix only matches second moments, so a network can satisfy it with the same pattern
everywhere; the full distribution also asks for the painting's share of flat, unpainted areas and of strong strokes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from convgen.io.colour import luma
from convgen.registry import LOSSES

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYERS = ("relu4_2",)


def gram(f: torch.Tensor) -> torch.Tensor:
    """B x C x H x W -> B x C x C, ``F F^T / (C H W)``."""
    b, c, h, w = f.shape
    f = f.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


STATISTICS = ("gram", "sliced")
SLICED_SAMPLES = 16384  # feature vectors kept per painting, layer and scale as the sliced target
SLICED_PROJECTIONS = 128  # random directions per layer and call (at most the channel count)


def sliced_wasserstein(f: torch.Tensor, target: torch.Tensor, n_proj: int | None = None) -> torch.Tensor:
    """Squared sliced 2-Wasserstein distance between each image's feature vectors (B x C x H x W) and ``target``
    (N x C samples), over ``n_proj`` (default min(C, 128)) random unit directions drawn from the global generator;
    mean over the batch and the directions."""
    b, c, h, w = f.shape
    d = torch.randn(c, n_proj or min(c, SLICED_PROJECTIONS), device=f.device, dtype=f.dtype)
    d = d / d.norm(dim=0, keepdim=True)
    return sorted_distance(d.T @ f.reshape(b, c, h * w), d.T @ target.to(f.dtype).T)


def sorted_distance(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean squared 1-D Wasserstein-2 distance between each row of ``x`` (B x P x N values) and the same row of
    ``t`` (P x M values; resampled to N quantiles when M != N)."""
    x, t = x.sort(dim=-1).values, t.sort(dim=-1).values  # sorted along the last, contiguous dim
    if t.shape[-1] != x.shape[-1]:
        t = nn.functional.interpolate(t[None], size=x.shape[-1], mode="linear", align_corners=False)[0]
    return (x - t[None]).square().mean()


def check_statistic(statistic: str) -> None:
    if statistic not in STATISTICS:
        raise ValueError(f"style statistic {statistic!r}: use one of {', '.join(STATISTICS)}")


def normalised_mix(mix: Sequence[float] | None, n: int) -> list[float]:
    """The weights of ``n`` paintings summing to 1 (None: equal)."""
    return [1.0 / n] * n if mix is None else [m / sum(mix) for m in mix]


def mixed_sample(samples: Sequence[torch.Tensor], mix: Sequence[float], cap: int = SLICED_SAMPLES) -> torch.Tensor:
    """Rows drawn (a fixed random choice, none twice) from each N_i x C matrix in proportion to ``mix`` (summing to
    1), at most ``cap`` in all and none beyond a matrix's own rows."""
    gen = torch.Generator().manual_seed(0)
    total = min([cap] + [len(v) / m for v, m in zip(samples, mix, strict=True) if m > 0])
    picks = []
    for v, m in zip(samples, mix, strict=True):
        n = min(len(v), round(m * total))
        if n:
            picks.append(v[torch.randperm(len(v), generator=gen)[:n].to(v.device)])
    return torch.cat(picks)


GRADIENT_DIRECTIONS = 8  # orientations of the directional derivatives, over 0 .. pi
GRADIENT_KNEE = 0.01  # asinh(d / knee): linear below 1% of the range, logarithmic above


def gradient_field(x: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W in [0, 1] -> B x 8 x (H-2)(W-2): the luminance's Sobel derivative along 8 orientations,
    compressed by ``asinh(d / 0.01)`` so flat areas (|d| << 0.01) and strokes of every strength count alike."""
    y = luma(x)
    sobel = x.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
    g = nn.functional.conv2d(y, torch.stack([sobel, sobel.T])[:, None])  # B x 2 (d/dx, d/dy) x H-2 x W-2
    th = torch.arange(GRADIENT_DIRECTIONS, device=x.device, dtype=x.dtype) * (math.pi / GRADIENT_DIRECTIONS)
    d = torch.einsum("kc,bchw->bkhw", torch.stack([th.cos(), th.sin()], 1), g)
    return torch.asinh(d / GRADIENT_KNEE).flatten(2)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels (anisotropic TV^2), per batch."""
    return (x[..., 1:, :] - x[..., :-1, :]).square().mean() + (x[..., :, 1:] - x[..., :, :-1]).square().mean()


@dataclass
class LossWeights:
    content: float = 1.0
    style: float = 1.0
    tv: float = 0.0
    gradient: float = 0.0


@LOSSES.register("perceptual")
class PerceptualLoss(nn.Module):
    """Content + style + TV loss of images against fixed targets (family ``perceptual``: what a ``style`` task
    trains with, its weights and layers from the task's config).

    ``style_grams`` are per-layer C x C targets (from :meth:`style_targets`); ``layer_scale`` divides each style
    layer's loss by the squared norm of its target Gram, so every layer counts alike whatever the feature
    network's scale (the default; Gatys et al. tune per-layer weights by hand for the ImageNet VGG instead).
    """

    family = "perceptual"

    @dataclass
    class Config:
        content_weight: float = 1.0
        style_weight: float = 1.0
        tv_weight: float = 0.0
        content_layers: tuple[str, ...] = CONTENT_LAYERS
        style_layers: tuple[str, ...] = STYLE_LAYERS

    def __init__(self, net: nn.Module, style_grams: dict[str, torch.Tensor] | Sequence[dict[str, torch.Tensor]],
                 content_layers: Sequence[str] = CONTENT_LAYERS, weights: LossWeights | None = None,
                 layer_scale: bool = True, scales: Sequence[float] = (1.0,),
                 statistic: str = "gram", gradients: Sequence[torch.Tensor] | None = None) -> None:  # fmt: skip
        super().__init__()
        per_scale = [style_grams] if isinstance(style_grams, dict) else list(style_grams)
        if len(per_scale) != len(scales) or not all(0 < s <= 1 for s in scales):
            raise ValueError("give one set of style Grams per scale, each scale in (0, 1]")
        check_statistic(statistic)
        self.statistic = statistic
        self.net = net
        self.scales = tuple(float(s) for s in scales)
        self.style_layers = tuple(per_scale[0])
        self.content_layers = tuple(content_layers)
        self.weights = weights or LossWeights()
        self.grams = [{k: v.detach() for k, v in g.items()} for g in per_scale]
        # a Gram's squared norm, or the feature samples' mean variance (a random unit projection's expected variance)
        size = (lambda v: v.square().sum()) if statistic == "gram" else (lambda v: v.var(0).mean())
        self.layer_weights = [{k: (1.0 / size(v).clamp_min(1e-12).item() if layer_scale else 1.0)
                               for k, v in g.items()} for g in self.grams]  # fmt: skip
        if gradients is not None and len(gradients) != len(scales):
            raise ValueError("give one gradient target per scale")
        self.gradients = None if gradients is None else [g.detach() for g in gradients]
        # each scale's gradient term relative to the painting's spread there (its derivatives' mean variance)
        self.gradient_weights = [] if gradients is None else [
            1.0 / g.var(1).mean().clamp_min(1e-12).item() for g in self.gradients]  # fmt: skip

    @staticmethod
    def downscale(x: torch.Tensor, factor: float) -> torch.Tensor:
        """``x`` resized by ``factor`` (antialiased bilinear; 1 returns ``x``)."""
        if factor == 1:
            return x
        size = (max(1, round(x.shape[-2] * factor)), max(1, round(x.shape[-1] * factor)))
        return nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)

    @staticmethod
    @torch.no_grad()
    def style_targets(net: nn.Module, styles: Sequence[torch.Tensor], layers: Sequence[str] = STYLE_LAYERS,
                      mix: Sequence[float] | None = None,
                      statistic: str = "gram") -> dict[str, torch.Tensor]:  # fmt: skip
        """Per-layer targets of one or more style images (each 1 x 3 x H x W), mixed by ``mix``: C x C Grams, or
        for ``statistic="sliced"`` N x C feature vectors (at most :data:`SLICED_SAMPLES`, a fixed random sample,
        each painting's share in proportion to its weight)."""
        check_statistic(statistic)
        mix = normalised_mix(mix, len(styles))
        feats = [net(s, tuple(layers)) for s in styles]
        if statistic == "gram":
            return {k: sum(m * gram(f[k])[0] for f, m in zip(feats, mix, strict=True)) for k in layers}
        return {k: mixed_sample([f[k][0].flatten(1).T for f in feats], mix) for k in layers}

    @classmethod
    def multiscale_targets(cls, net: nn.Module, styles: Sequence[torch.Tensor], scales: Sequence[float],
                           layers: Sequence[str] = STYLE_LAYERS, mix: Sequence[float] | None = None,
                           statistic: str = "gram") -> list[dict[str, torch.Tensor]]:  # fmt: skip
        """:meth:`style_targets` of the style images downscaled by each of ``scales``."""
        return [cls.style_targets(net, [cls.downscale(s, f) for s in styles], layers, mix, statistic)
                for f in scales]  # fmt: skip

    @classmethod
    @torch.no_grad()
    def gradient_targets(cls, styles: Sequence[torch.Tensor], scales: Sequence[float],
                         mix: Sequence[float] | None = None) -> list[torch.Tensor]:  # fmt: skip
        """Per scale, the paintings' compressed directional derivatives (:func:`gradient_field`) as 8 x N samples
        (mixed by ``mix`` as the sliced targets are): what the ``gradient`` term matches the output's against."""
        mix = normalised_mix(mix, len(styles))
        return [mixed_sample([gradient_field(cls.downscale(s, f))[0].T for s in styles], mix).T.contiguous()
                for f in scales]  # fmt: skip

    def style_distance(self, f: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """One layer's style loss of features ``f`` (B x C x H x W) against its target, mean over the batch."""
        if self.statistic == "sliced":
            return sliced_wasserstein(f, target)
        return (gram(f) - target).square().sum((1, 2)).mean()

    def content_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {k: v.detach() for k, v in self.net(x, self.content_layers).items()}

    def forward(self, x: torch.Tensor, content: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """Loss parts of ``x`` (B x 3 x H x W in [0, 1]) against the style targets and ``content`` features (from
        :meth:`content_features`, per image; None: no content term). Returns ``total``, ``style``, ``content``,
        ``tv`` (unweighted parts, mean over the batch)."""
        layers = tuple(dict.fromkeys(self.style_layers + (self.content_layers if content is not None else ())))
        feats = self.net(x, layers)
        style, grad = x.new_zeros(()), x.new_zeros(())
        for i, (factor, grams, weight) in enumerate(zip(self.scales, self.grams, self.layer_weights, strict=True)):
            xs = self.downscale(x, factor)
            f = feats if factor == 1 else self.net(xs, self.style_layers)
            style = style + sum(weight[k] * self.style_distance(f[k], grams[k])
                                for k in self.style_layers) / len(self.style_layers)  # fmt: skip
            if self.gradients is not None and self.weights.gradient:
                grad = grad + self.gradient_weights[i] * sorted_distance(gradient_field(xs), self.gradients[i])
        grad = grad / len(self.scales)
        style = style / len(self.scales)
        zero = x.new_zeros(())
        cont = zero
        if content is not None:  # relative squared error, so layers of any scale compare
            rel = [(feats[k] - content[k]).square().mean() / content[k].square().mean().clamp_min(1e-12)
                   for k in self.content_layers]  # fmt: skip
            cont = sum(rel) / len(rel)
        tv = total_variation(x) if self.weights.tv else zero
        w = self.weights
        total = w.style * style + w.content * cont + w.tv * tv + w.gradient * grad
        return {"total": total, "style": style, "content": cont, "tv": tv, "gradient": grad}
