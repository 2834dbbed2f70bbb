"""A configurable CNN image classifier: stages of conv/BatchNorm/activation, pooling, fully connected head.

Inputs are B x C x H x W floats in [0, 1]; the network normalises them itself (``input_mean``/``input_std``),
so a saved model needs no outside preprocessing knowledge. ``features()`` returns the penultimate activations,
used as a domain feature space for generation metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from convgen.models.blocks import ACTIVATIONS, ConvBNAct, activation, pool
from convgen.registry import MODELS
from convgen.schema import check


def check_normalisation(in_channels: int, mean: list[float], std: list[float]) -> None:
    """The input normalisation a classifier stores: one mean and one positive std per input channel."""
    ok = len(mean) == in_channels and len(std) == in_channels
    check(ok, "model.input_mean", "input_mean and input_std need one value per input channel")
    check(all(s > 0 for s in std), "model.input_std", "must be > 0")


@MODELS.register("cnn-classifier")
class CNNClassifier(nn.Module):
    @dataclass
    class Config:
        in_channels: int = 1
        image_size: int = 28
        num_classes: int = 10
        stages: list[list[int]] = field(default_factory=lambda: [[32, 32], [64, 64], [128]])  # conv widths
        kernel_size: int = 3
        batchnorm: bool = True
        activation: str = "relu"
        pooling: Literal["max", "avg"] = "max"  # 2x2 pooling after each stage
        global_pool: bool = False  # average over space before the head (else flatten)
        hidden: list[int] = field(default_factory=lambda: [128])  # fully connected layers before the output
        dropout: float = 0.3
        input_mean: list[float] = field(default_factory=lambda: [0.1307])
        input_std: list[float] = field(default_factory=lambda: [0.3081])

        def __post_init__(self) -> None:
            check(self.in_channels in (1, 3), "model.in_channels", "must be 1 or 3")
            check(self.num_classes >= 2, "model.num_classes", "must be >= 2")
            check(
                len(self.stages) >= 1 and all(len(s) >= 1 and min(s) >= 1 for s in self.stages),
                "model.stages",
                "a non-empty list of non-empty lists of positive widths",
            )
            check(self.image_size >= 2 ** len(self.stages), "model.image_size", "too small for the number of stages")
            check(self.kernel_size % 2 == 1, "model.kernel_size", "must be odd")
            check(self.activation in ACTIVATIONS, "model.activation", f"one of {', '.join(ACTIVATIONS)}")
            check(0 <= self.dropout < 1, "model.dropout", "must be in [0, 1)")
            check_normalisation(self.in_channels, self.input_mean, self.input_std)

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        ch = cfg.in_channels
        for widths in cfg.stages:
            for w in widths:
                layers.append(ConvBNAct(ch, w, cfg.kernel_size, batchnorm=cfg.batchnorm, act=cfg.activation))
                ch = w
            layers.append(pool(cfg.pooling))
        self.body = nn.Sequential(*layers)
        side = cfg.image_size // 2 ** len(cfg.stages)
        flat = ch if cfg.global_pool else ch * side * side
        head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1) if cfg.global_pool else nn.Identity(), nn.Flatten()]
        for h in cfg.hidden:
            head += [nn.Dropout(cfg.dropout), nn.Linear(flat, h), activation(cfg.activation)]
            flat = h
        self.head = nn.Sequential(*head)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(flat, cfg.num_classes)
        self.feature_dim = flat
        self.register_buffer("mean", torch.tensor(cfg.input_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.input_std).view(1, -1, 1, 1), persistent=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (B x feature_dim) for inputs in [0, 1]."""
        return self.head(self.body((x - self.mean) / self.std))

    def logits_from_features(self, f: torch.Tensor) -> torch.Tensor:
        """Eval-mode logits of :meth:`features` output."""
        return self.fc(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))


class _FrozenScaleBN(nn.BatchNorm2d):
    """BatchNorm with a fixed scale of 1 (only the bias learns) and fast-moving statistics."""

    def __init__(self, channels: int, momentum: float) -> None:
        super().__init__(channels, eps=1e-12, momentum=momentum)
        self.weight.requires_grad_(False)


class _ConvGroup(nn.Module):
    """conv -> 2x2 max-pool -> BN -> GELU -> conv -> BN -> GELU (identity-initialised convolutions)."""

    def __init__(self, in_ch: int, out_ch: int, momentum: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.norm1 = _FrozenScaleBN(out_ch, momentum)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = _FrozenScaleBN(out_ch, momentum)
        for conv in (self.conv1, self.conv2):  # an implicit residual: the first filters start as the identity
            nn.init.dirac_(conv.weight.data[: conv.weight.shape[1]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


@MODELS.register("whitened-convnet")
class WhitenedConvNet(nn.Module):
    """A fast small-image classifier in the spirit of hlb-cifar10 / airbench (Jordan 2024).

    A frozen 2 x 2 whitening convolution (the eigenvectors of the training patches' covariance, both signs, set
    by :meth:`init_from_data`), three conv groups of widths ``widths``, global max-pooling and a bias-free linear
    head scaled by ``head_scale``. In eval mode the logits are averaged over test-time views (``tta``: the image
    and its mirror, plus 1-pixel translations); :meth:`features` is always the single plain view.
    """

    @dataclass
    class Config:
        in_channels: int = 3
        image_size: int = 32
        num_classes: int = 10
        widths: list[int] = field(default_factory=lambda: [64, 256, 256])
        whiten_kernel: int = 2
        bn_momentum: float = 0.1  # PyTorch convention: the weight of the new batch in the running statistics
        head_scale: float = 1 / 9
        tta: Literal["none", "flip", "flip-translate"] = "flip-translate"
        input_mean: list[float] = field(default_factory=lambda: [0.4914, 0.4822, 0.4465])
        input_std: list[float] = field(default_factory=lambda: [0.2470, 0.2435, 0.2616])

        def __post_init__(self) -> None:
            check(self.in_channels in (1, 3), "model.in_channels", "must be 1 or 3")
            check(self.num_classes >= 2, "model.num_classes", "must be >= 2")
            check(len(self.widths) == 3 and min(self.widths) >= 1, "model.widths", "three positive widths")
            check(self.whiten_kernel in (1, 2, 3), "model.whiten_kernel", "must be 1, 2 or 3")
            check(self.image_size >= 16, "model.image_size", "must be >= 16 (three 2x poolings)")
            check(0 < self.bn_momentum <= 1, "model.bn_momentum", "must be in (0, 1]")
            check(self.head_scale > 0, "model.head_scale", "must be > 0")
            check_normalisation(self.in_channels, self.input_mean, self.input_std)

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        k = cfg.whiten_kernel
        self.whiten = nn.Conv2d(cfg.in_channels, 2 * cfg.in_channels * k * k, k, bias=True)
        self.whiten.weight.requires_grad_(False)
        nn.init.zeros_(self.whiten.bias)
        chans = [self.whiten.out_channels, *cfg.widths]
        pairs = zip(chans[:-1], chans[1:], strict=True)
        self.groups = nn.Sequential(*(_ConvGroup(a, b, cfg.bn_momentum) for a, b in pairs))
        self.fc = nn.Linear(cfg.widths[-1], cfg.num_classes, bias=False)
        self.feature_dim = cfg.widths[-1]
        self.register_buffer("mean", torch.tensor(cfg.input_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.input_std).view(1, -1, 1, 1), persistent=False)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the whitening filters from training images (B x C x H x W in [0, 1]): the covariance of all k x k
        patches, its eigenvectors scaled by 1/sqrt(eigenvalue + eps), each with both signs."""
        x = (images.float() - self.mean) / self.std
        k = self.cfg.whiten_kernel
        c = x.shape[1]
        patches = x.unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k).double()
        cov = patches.T @ patches / len(patches)
        values, vectors = torch.linalg.eigh(cov)
        filters = (vectors.T / torch.sqrt(values.clamp_min(0) + eps)[:, None]).flip(0).reshape(-1, c, k, k)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).float())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally max-pooled last-group activations (B x widths[-1]) for one view of inputs in [0, 1]."""
        h = self.groups(F.gelu(self.whiten((x - self.mean) / self.std)))
        return torch.amax(h, dim=(2, 3))

    def logits_from_features(self, f: torch.Tensor) -> torch.Tensor:
        """Logits of :meth:`features` output (one view, no test-time augmentation)."""
        return self.fc(f) * self.cfg.head_scale

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.cfg.tta == "none":
            return self._logits(x)
        plain = (self._logits(x) + self._logits(x.flip(-1))) / 2
        if self.cfg.tta == "flip":
            return plain
        # one pixel up-left and down-right (reflect-padded), each with its mirror: half the weight together
        pad, (h, w) = F.pad(x, (1, 1, 1, 1), mode="reflect"), x.shape[-2:]
        shifted = [pad[..., d : d + h, d : d + w] for d in (0, 2)]
        moved = sum(self._logits(v) + self._logits(v.flip(-1)) for v in shifted) / 4
        return (plain + moved) / 2
