"""Bicubic down-sampling (x2, x3, x4): the network sees the bicubic re-upsampled image, as in VDSR / DnCNN-3."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from convgen.data.degradations.base import Degradation
from convgen.registry import DEGRADATIONS
from convgen.schema import check


def bicubic_downscale(x: torch.Tensor, scale: int) -> torch.Tensor:
    """B x C x H x W -> antialiased bicubic down-sampling to (H // scale) x (W // scale) (like MATLAB's imresize)."""
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)


def shrink_8bit(clean: np.ndarray, scale: int) -> np.ndarray:
    """The super-resolution benchmark's low-resolution input for an H x W x C float image: antialiased bicubic
    down-sampling (:func:`bicubic_downscale`), quantised to 8 bits as a saved small PNG would be."""
    x = torch.from_numpy(np.ascontiguousarray(clean, np.float32)).permute(2, 0, 1)[None]
    low = bicubic_downscale(x, scale)[0].permute(1, 2, 0).numpy()
    return np.round(np.clip(low, 0, 1) * 255) / 255


def bicubic_degrade(x: torch.Tensor, scale: int) -> torch.Tensor:
    """B x C x H x W -> bicubic down-sampled by ``scale`` (antialiased) and bicubic re-upsampled to H x W."""
    return F.interpolate(bicubic_downscale(x, scale), size=x.shape[-2:], mode="bicubic", align_corners=False)


@dataclass
class SuperresConfig:
    scale: int = 2  # superres factor

    def __post_init__(self) -> None:
        check(self.scale in (2, 3, 4), "task.degradation.scale", "must be 2, 3 or 4")


@DEGRADATIONS.register("superres")
class Superres(Degradation):
    verb = "superres"
    Config = SuperresConfig

    def batch(self, clean, gen):
        return bicubic_degrade(clean, self.cfg.scale), None

    def protocol(self, clean, index, sigma=None):
        x = torch.from_numpy(np.ascontiguousarray(clean)).permute(2, 0, 1)[None]
        return bicubic_degrade(x, self.cfg.scale)[0].permute(1, 2, 0).numpy(), None

    def network_input(self, x, mask, level):
        """A low-resolution image, bicubic up-sampled by the scale (the network refines that)."""
        return F.interpolate(x, scale_factor=self.cfg.scale, mode="bicubic", align_corners=False), None
