"""Missing regions: binary masks (1 = missing) of random boxes, free-form strokes (DeepFill v2 style) or both, with
a requested coverage (:func:`random_mask`), or read from mask files. Training patches can take a window of a mask
drawn for a whole photo (``mask_frame``, :func:`framed_mask`), so that their holes are as large as on a photo rather
than scaled to the patch. The holes are zeroed, or pre-filled by a classical method (:mod:`convgen.classical.fills`:
OpenCV Telea, Telea smoothed by depth in the hole, or the GMRF conditional mean), so that a network only has to
improve on the classical fill (:func:`mask_out`; training, validation and ``convgen restore inpaint`` all go
through it). The conditioning map is the mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from convgen.classical.fills import gmrf_fill, telea_fill
from convgen.data.degradations.base import Degradation
from convgen.errors import ConfigError, ConvgenError
from convgen.registry import DEGRADATIONS
from convgen.schema import check


@dataclass
class InpaintConfig:
    mask: Literal["boxes", "strokes", "mixed"] = "mixed"
    coverage: list[float] = field(default_factory=lambda: [0.05, 0.5])  # fraction of missing pixels, range
    # training masks: drawn for a frame of this H x W (e.g. the photos' size), a patch-sized window cut from it, so
    # holes have the sizes they have on whole photos; null = drawn for the patch itself
    mask_frame: list[int] | None = None
    prefill: Literal["zero", "telea", "telea-smooth", "gmrf"] = "zero"  # what an inpainting input's holes hold
    smooth_scale: float = 1.0  # telea-smooth: blur std per pixel of depth in the hole
    bilaplacian: float = 1.0  # gmrf: weight of the L @ L term of the prior's precision (0 = harmonic fill)

    def __post_init__(self) -> None:
        where = "task.degradation"
        ok = len(self.coverage) == 2 and 0 < self.coverage[0] <= self.coverage[1] < 1
        check(ok, f"{where}.coverage", "must be [lo, hi] with 0 < lo <= hi < 1")
        check(self.smooth_scale > 0, f"{where}.smooth_scale", "must be > 0")
        check(self.bilaplacian >= 0, f"{where}.bilaplacian", "must be >= 0")
        ok = self.mask_frame is None or (len(self.mask_frame) == 2 and min(self.mask_frame) >= 8)
        check(ok, f"{where}.mask_frame", "must be [height, width] >= 8, or null")


def random_mask(height: int, width: int, coverage: float, kind: str = "mixed", seed: int | np.random.Generator = 0):
    """A boolean H x W mask (True = missing) of boxes and/or free-form strokes covering ~``coverage`` of the image.

    Shapes are added until the coverage is reached; each new shape is sized from the area still missing, so the
    result overshoots the requested coverage by at most 1 % of the image.
    """
    import cv2

    if not 0 < coverage < 1:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    target = coverage * height * width
    slack = 0.01 * height * width  # a shape that overshoots the target by more than this is redrawn smaller
    shrink = 1.0
    for _ in range(10_000):
        covered = int(mask.sum())
        if covered >= target:
            break
        remaining = target - covered
        before = mask.copy()
        shape = kind if kind != "mixed" else ("boxes" if rng.random() < 0.5 else "strokes")
        if shape == "boxes":
            side = max(2.0, math.sqrt(remaining) * rng.uniform(0.5, 1.2) * shrink)
            bh = int(np.clip(side * rng.uniform(0.6, 1.6), 2, height))
            bw = int(np.clip(side * side / bh, 2, width))
            y, x = int(rng.integers(0, height - bh + 1)), int(rng.integers(0, width - bw + 1))
            mask[y : y + bh, x : x + bw] = 1
        else:
            # a DeepFill v2 style stroke: a few connected segments of one brush width
            scale = min(height, width)
            brush = int(np.clip(rng.uniform(0.03, 0.08) * scale * shrink, 2, max(2.0, math.sqrt(remaining) / 2)))
            budget = remaining / brush  # stroke length that would cover the remaining area
            y, x = float(rng.integers(0, height)), float(rng.integers(0, width))
            for _ in range(int(rng.integers(1, 6))):
                angle = rng.uniform(0, 2 * math.pi)
                length = min(rng.uniform(0.1, 0.4) * scale * shrink, max(budget, brush))
                ny = float(np.clip(y + length * math.sin(angle), 0, height - 1))
                nx = float(np.clip(x + length * math.cos(angle), 0, width - 1))
                cv2.line(mask, (int(x), int(y)), (int(nx), int(ny)), 1, brush)
                budget -= length
                y, x = ny, nx
                if budget <= 0:
                    break
        if mask.sum() > target + slack:
            mask, shrink = before, shrink * 0.7
    return mask.astype(bool)


def framed_mask(
    height: int, width: int, frame: list[int], coverage: list[float], kind: str, rng: np.random.Generator
) -> np.ndarray:
    """A height x width window of a :func:`random_mask` drawn for a larger ``frame`` (H, W; either orientation),
    so that a training patch has holes of the sizes they have on a whole photo. Coverage is drawn from the
    ``coverage`` range for the frame; a window with less than half its lower end missing is drawn again."""
    fh, fw = (frame[0], frame[1]) if rng.random() < 0.5 else (frame[1], frame[0])
    fh, fw = max(fh, height), max(fw, width)
    for _ in range(20):
        full = random_mask(fh, fw, rng.uniform(*coverage), kind, rng)
        y, x = int(rng.integers(0, fh - height + 1)), int(rng.integers(0, fw - width + 1))
        window = full[y : y + height, x : x + width]
        if window.mean() >= coverage[0] / 2:
            break
    return window


def mask_out(clean: torch.Tensor, masks: torch.Tensor, cfg: InpaintConfig) -> torch.Tensor:
    """The inpainting network's input: ``clean`` (B x C x H x W) with the ``masks`` (B x 1 x H x W, 1 = missing)
    pixels zeroed, pre-filled by Telea (``cfg.prefill: telea``), by Telea smoothed by depth in the hole
    (``telea-smooth``, :func:`smooth_by_depth` with ``cfg.smooth_scale``) or by the conditional mean of a Gaussian
    Markov random field (``gmrf``, :func:`gmrf_fill` with ``cfg.bilaplacian``)."""
    x = clean * (1 - masks)
    if cfg.prefill == "zero":
        return x
    if cfg.prefill == "gmrf":  # image by image, in place (bounded memory on large images)
        for img, m in zip(x, masks, strict=True):
            filled = gmrf_fill(img.permute(1, 2, 0).numpy(), m[0].numpy(), cfg.bilaplacian)
            img.copy_(torch.from_numpy(filled).permute(2, 0, 1))
        return x
    return telea_fill(x, masks, smooth=cfg.smooth_scale if cfg.prefill == "telea-smooth" else 0.0)


@DEGRADATIONS.register("inpaint")
class Inpaint(Degradation):
    verb = "inpaint"
    has_mask = True
    Config = InpaintConfig

    def check_model(self, model_cfg) -> None:
        if not getattr(model_cfg, "cond_channels", 0):
            raise ConfigError("inpainting needs the mask as input: set model.cond_channels: 1")
        if getattr(model_cfg, "residual", False):
            raise ConfigError("inpainting predicts the image, not a residual: set model.residual: false")

    def batch(self, clean, gen):
        b, _, h, w = clean.shape
        cfg, masks = self.cfg, []
        for _ in range(b):
            seed = int(torch.randint(0, 2**62, (1,), generator=gen))
            rng = np.random.default_rng(seed)
            if cfg.mask_frame is None:
                masks.append(random_mask(h, w, rng.uniform(*cfg.coverage), cfg.mask, rng))
            else:
                masks.append(framed_mask(h, w, cfg.mask_frame, cfg.coverage, cfg.mask, rng))
        m = torch.from_numpy(np.stack(masks)).unsqueeze(1).float()
        return mask_out(clean, m, cfg), m

    def protocol(self, clean, index, sigma=None):
        """A mask seeded with ``index`` at the middle of the coverage range (a window of a whole-photo mask when
        the image is a crop of a ``mask_frame`` photo, as in training)."""
        cfg = self.cfg
        cov = float(np.mean(cfg.coverage))
        h, w = clean.shape[:2]
        if cfg.mask_frame is None or (max(h, w), min(h, w)) == (max(cfg.mask_frame), min(cfg.mask_frame)):
            m = random_mask(h, w, cov, cfg.mask, index)
        else:
            m = framed_mask(h, w, cfg.mask_frame, [cov, cov], cfg.mask, np.random.default_rng(index))
        m = m[..., None].astype(np.float32)
        x = mask_out(
            torch.from_numpy(np.ascontiguousarray(clean, np.float32)).permute(2, 0, 1)[None],
            torch.from_numpy(m).permute(2, 0, 1)[None],
            cfg,
        )
        return x[0].permute(1, 2, 0).numpy(), m

    def loss_weight(self, cond, hole_weight):
        return 1.0 + hole_weight * cond

    def network_input(self, x, mask, level):
        if mask is None:
            raise ConvgenError("inpainting needs a `mask`: 255 = missing, 0 = known")
        m = mask.reshape(1, 1, *x.shape[-2:]).to(x.dtype)
        return mask_out(x, m, self.cfg), m  # the whole image's classical pre-fill, before any tiling

    def finish(self, x_in, out, cond):
        return x_in * (1 - cond) + out * cond  # the known pixels as they were
