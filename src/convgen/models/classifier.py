"""A configurable CNN image classifier: stages of conv/BatchNorm/activation, pooling, fully connected head.

Inputs are B x C x H x W floats in [0, 1]; the network normalises them itself (``input_mean``/``input_std``),
so a saved model needs no outside preprocessing knowledge. ``features()`` returns the penultimate activations,
used as a domain feature space for generation metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from convgen.models.blocks import ACTIVATIONS, ConvBNAct, activation, pool
from convgen.registry import MODELS
from convgen.schema import check


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
            check(
                len(self.input_mean) == self.in_channels and len(self.input_std) == self.in_channels,
                "model.input_mean",
                "input_mean and input_std need one value per input channel",
            )
            check(all(s > 0 for s in self.input_std), "model.input_std", "must be > 0")

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))
