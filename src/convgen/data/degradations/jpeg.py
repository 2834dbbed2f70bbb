"""JPEG compression artifacts (OpenCV's encoder at a quality drawn from a range)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from convgen.data.degradations.base import Degradation
from convgen.registry import DEGRADATIONS
from convgen.schema import check


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode an H x W (x C) float image with OpenCV's JPEG codec; returns float in [0, 1]."""
    import cv2

    pixels = (np.clip(image, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[-1] == 3:
        pixels = pixels[..., ::-1]  # OpenCV is BGR
    ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if out.ndim == 3:
        out = out[..., ::-1]
    return out.reshape(image.shape).astype(np.float32) / 255.0


@dataclass
class JpegConfig:
    quality: list[int] = field(default_factory=lambda: [10, 50])  # JPEG quality range

    def __post_init__(self) -> None:
        ok = len(self.quality) == 2 and 1 <= self.quality[0] <= self.quality[1] <= 100
        check(ok, "task.degradation.quality", "must be [lo, hi] within 1..100")


@DEGRADATIONS.register("jpeg")
class Jpeg(Degradation):
    verb = "dejpeg"
    Config = JpegConfig

    def batch(self, clean, gen):
        q = torch.randint(self.cfg.quality[0], self.cfg.quality[1] + 1, (clean.shape[0],), generator=gen).tolist()
        pairs = zip(clean, q, strict=True)
        out = [torch.from_numpy(jpeg(img.permute(1, 2, 0).numpy(), qi)).permute(2, 0, 1) for img, qi in pairs]
        return torch.stack(out), None

    def protocol(self, clean, index, sigma=None):
        return jpeg(clean, int(round(float(np.mean(self.cfg.quality))))), None
