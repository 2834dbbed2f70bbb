"""Perceptual losses over a frozen feature network (:mod:`convgen.models.backbones.vgg`): content (feature
mean squared error, Gatys et al. 2016), style (Gram matrices, Gatys et al. 2015), and total variation.

Gram matrices are normalised by the number of positions and channels, so a layer's style loss does not depend on
the image size and images of different sizes (a 512 px photo, a 1024 px painting) compare directly. Style targets
of several paintings mix their Grams with the given weights. A multi-scale style loss (``scales``) also compares
the image downscaled by each factor with the painting downscaled by the same factor, so brush strokes larger than
the feature network's receptive field count too (the pyramid of Grams of Snelgrove 2017 / Wang et al. 2017).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from convgen.registry import LOSSES

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYERS = ("relu4_2",)


def gram(f: torch.Tensor) -> torch.Tensor:
    """B x C x H x W -> B x C x C, ``F F^T / (C H W)``."""
    b, c, h, w = f.shape
    f = f.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels (anisotropic TV^2), per batch."""
    return (x[..., 1:, :] - x[..., :-1, :]).square().mean() + (x[..., :, 1:] - x[..., :, :-1]).square().mean()


@dataclass
class LossWeights:
    content: float = 1.0
    style: float = 1.0
    tv: float = 0.0


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
                 layer_scale: bool = True, scales: Sequence[float] = (1.0,)) -> None:  # fmt: skip
        super().__init__()
        per_scale = [style_grams] if isinstance(style_grams, dict) else list(style_grams)
        if len(per_scale) != len(scales) or not all(0 < s <= 1 for s in scales):
            raise ValueError("give one set of style Grams per scale, each scale in (0, 1]")
        self.net = net
        self.scales = tuple(float(s) for s in scales)
        self.style_layers = tuple(per_scale[0])
        self.content_layers = tuple(content_layers)
        self.weights = weights or LossWeights()
        self.grams = [{k: v.detach() for k, v in g.items()} for g in per_scale]
        self.layer_weights = [{k: (1.0 / v.square().sum().clamp_min(1e-12).item() if layer_scale else 1.0)
                       for k, v in g.items()} for g in self.grams]  # fmt: skip

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
                      mix: Sequence[float] | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
        """Per-layer target Grams of one or more style images (each 1 x 3 x H x W), mixed by ``mix``."""
        mix = [1.0 / len(styles)] * len(styles) if mix is None else [m / sum(mix) for m in mix]
        out: dict[str, torch.Tensor] = {}
        for s, m in zip(styles, mix, strict=True):
            feats = net(s, tuple(layers))
            for k in layers:
                out[k] = out.get(k, 0) + m * gram(feats[k])[0]
        return out

    @classmethod
    def multiscale_targets(cls, net: nn.Module, styles: Sequence[torch.Tensor], scales: Sequence[float],
                           layers: Sequence[str] = STYLE_LAYERS, mix: Sequence[float] | None = None,
                           ) -> list[dict[str, torch.Tensor]]:  # fmt: skip
        """:meth:`style_targets` of the style images downscaled by each of ``scales``."""
        return [cls.style_targets(net, [cls.downscale(s, f) for s in styles], layers, mix) for f in scales]

    def content_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {k: v.detach() for k, v in self.net(x, self.content_layers).items()}

    def forward(self, x: torch.Tensor, content: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """Loss parts of ``x`` (B x 3 x H x W in [0, 1]) against the style targets and ``content`` features (from
        :meth:`content_features`, per image; None: no content term). Returns ``total``, ``style``, ``content``,
        ``tv`` (unweighted parts, mean over the batch)."""
        layers = tuple(dict.fromkeys(self.style_layers + (self.content_layers if content is not None else ())))
        feats = self.net(x, layers)
        style = x.new_zeros(())
        for factor, grams, weight in zip(self.scales, self.grams, self.layer_weights, strict=True):
            f = feats if factor == 1 else self.net(self.downscale(x, factor), self.style_layers)
            style = style + sum(weight[k] * (gram(f[k]) - grams[k]).square().sum((1, 2)).mean()
                                for k in self.style_layers) / len(self.style_layers)  # fmt: skip
        style = style / len(self.scales)
        zero = x.new_zeros(())
        cont = zero
        if content is not None:  # relative squared error, so layers of any scale compare
            rel = [(feats[k] - content[k]).square().mean() / content[k].square().mean().clamp_min(1e-12)
                   for k in self.content_layers]  # fmt: skip
            cont = sum(rel) / len(rel)
        tv = total_variation(x) if self.weights.tv else zero
        w = self.weights
        total = w.style * style + w.content * cont + w.tv * tv
        return {"total": total, "style": style, "content": cont, "tv": tv}
