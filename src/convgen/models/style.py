"""The feed-forward style transformation network of Johnson, Alahi & Fei-Fei (2016), as in pytorch/examples
``fast_neural_style``: reflection-padded convolutions with instance norm, two stride-2 down convolutions,
residual blocks, nearest-neighbour upsampling followed by a convolution (no transposed-convolution checkerboard),
and a final 9 x 9 convolution. ``width`` sets the first layer's channels (32 in the paper; the zoo uses 16 so a
512 x 512 photo takes well under a second on two CPU cores); the output is squashed to [0, 1] by a sigmoid.
Any input of at least 2 x 2 works: sides are padded by reflection to a multiple of 4 (and to at least 16, so the
9 x 9 reflection padding fits) and cropped back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from convgen.registry import MODELS
from convgen.schema import check

MIN_SIDE = 16


class ConvLayer(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, norm: bool = True, act: bool = True):
        layers: list[nn.Module] = [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride)]
        if norm:
            layers.append(nn.InstanceNorm2d(cout, affine=True))
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvLayer(channels, channels, 3), ConvLayer(channels, channels, 3, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpsampleConv(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvLayer(cin, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


@MODELS.register("style-transform")
class TransformNet(nn.Module):
    @dataclass
    class Config:
        width: int = 32
        residual_blocks: int = 5

        def __post_init__(self) -> None:
            check(self.width >= 4, "model.width", "must be >= 4")
            check(self.residual_blocks >= 0, "model.residual_blocks", "must be >= 0")

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__()
        cfg = cfg or self.Config()
        w = cfg.width
        self.down = nn.Sequential(ConvLayer(3, w, 9), ConvLayer(w, 2 * w, 3, 2), ConvLayer(2 * w, 4 * w, 3, 2))
        self.res = nn.Sequential(*[ResidualBlock(4 * w) for _ in range(cfg.residual_blocks)])
        self.up = nn.Sequential(UpsampleConv(4 * w, 2 * w), UpsampleConv(2 * w, w),
                                ConvLayer(w, 3, 9, norm=False, act=False))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] (B x 3 x H x W, any H, W >= 2) -> the stylised image in [0, 1], same size."""
        h, w = x.shape[-2:]
        ph, pw = max(MIN_SIDE, -(-h // 4) * 4) - h, max(MIN_SIDE, -(-w // 4) * 4) - w
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        y = torch.sigmoid(self.up(self.res(self.down(x))))
        return y[..., :h, :w]
