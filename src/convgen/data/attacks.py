"""What happens to a picture after it leaves convgen: re-encoding, resizing, cropping, blur, noise, colour changes.

Each attack maps one 1 x 3 x H x W image in [0, 1] to another (of any size) and is differentiable in the image, so
a watermark can be trained through it (HiDDeN's "noise layer"); real JPEG goes through OpenCV's codec with a
straight-through gradient. :func:`random_attack` draws a chain of them for training; :data:`BENCHMARK` lists the
fixed attacks that ``benchmarks/watermark.py`` and the watermark task's validation measure.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from convgen.data.degradations.jpeg import jpeg as _jpeg_numpy
from convgen.data.transforms import resize
from convgen.io.colour import luma
from convgen.models.watermark import uncrop

Attack = Callable[[torch.Tensor], torch.Tensor]


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Real JPEG at ``quality`` (OpenCV), with a straight-through gradient."""
    coded = torch.from_numpy(_jpeg_numpy(x[0].detach().permute(1, 2, 0).cpu().numpy(), quality)).permute(2, 0, 1)
    return x + (coded[None].to(x) - x).detach()


def rescale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Resize both sides by ``factor`` (bilinear, antialiased when shrinking)."""
    h, w = x.shape[-2:]
    return resize(x, (max(8, round(h * factor)), max(8, round(w * factor))))


def crop(x: torch.Tensor, area: float, aspect: float = 1.0, cx: float = 0.5, cy: float = 0.5) -> torch.Tensor:
    """A crop of ``area`` of the picture (a fraction), of relative aspect ``aspect`` (its width/height over the
    picture's), centred at (``cx``, ``cy``) as far as it fits."""
    h, w = x.shape[-2:]
    ch = min(h, max(8, round(h * math.sqrt(area / aspect))))
    cw = min(w, max(8, round(w * math.sqrt(area * aspect))))
    top = min(max(0, round(cy * h - ch / 2)), h - ch)
    left = min(max(0, round(cx * w - cw / 2)), w - cw)
    return x[..., top : top + ch, left : left + cw]


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of standard deviation ``sigma`` pixels (reflect-padded)."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(x.shape[1], 1, 1, 1)
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k, groups=x.shape[1])
    return F.conv2d(x, k.transpose(-1, -2), groups=x.shape[1])


def noise(x: torch.Tensor, sigma: float, gen: torch.Generator | None = None) -> torch.Tensor:
    """Additive Gaussian noise of ``sigma`` on the 0-255 scale."""
    return x + torch.randn(x.shape, generator=gen).to(x) * (sigma / 255)


def brightness(x: torch.Tensor, factor: float) -> torch.Tensor:
    """All pixel values times ``factor`` (+20% brightness: 1.2), clipped to [0, 1]."""
    return (x * factor).clamp(0, 1)


def contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Deviations from the mean grey level times ``factor``, clipped."""
    mean = (x.mean(dim=1, keepdim=True)).mean(dim=(2, 3), keepdim=True)
    return (mean + (x - mean) * factor).clamp(0, 1)


def saturation(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Deviations from each pixel's grey level times ``factor``, clipped."""
    grey = luma(x)
    return (grey + (x - grey) * factor).clamp(0, 1)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """8-bit rounding and clipping (what saving as PNG does), straight-through."""
    return x + ((x.clamp(0, 1) * 255).round() / 255 - x).detach()


#: the fixed attacks of the benchmark and of validation (name -> attack on one image; noise is seeded per call)
BENCHMARK: dict[str, Attack] = {
    "none": lambda x: x,
    "jpeg50": lambda x: jpeg(x, 50),
    "jpeg75": lambda x: jpeg(x, 75),
    "resize0.5": lambda x: rescale(x, 0.5),
    "resize2": lambda x: rescale(x, 2.0),
    "crop50": lambda x: crop(x, 0.5),
    "crop25": lambda x: crop(x, 0.25),
    "blur1": lambda x: blur(x, 1.0),
    "noise5": lambda x: noise(x, 5.0, torch.Generator().manual_seed(0)),
    "brightness+20": lambda x: brightness(x, 1.2),
    "contrast0.7": lambda x: contrast(x, 0.7),
    "saturation0.5": lambda x: saturation(x, 0.5),
    "resize0.75+jpeg75": lambda x: jpeg(rescale(x, 0.75), 75),
}
#: the attacks the issue's acceptance names (a subset of BENCHMARK)
REQUIRED = ["jpeg50", "resize0.5", "crop50", "noise5", "brightness+20", "resize0.75+jpeg75"]


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def random_attack(x: torch.Tensor, gen: torch.Generator, strength: float = 1.0,
                  crop_share: float = 0.0) -> torch.Tensor:  # fmt: skip
    """A random chain of attacks on one image (1 x 3 x H x W), for training: one to three of a crop near the centre
    (down to 25% of the area; as it is, or put back on a canvas of about its original size, as the detector does),
    resize, blur, noise and colour changes, then 8-bit rounding, then JPEG half the time. ``strength`` in [0, 1]
    scales every attack's range (a curriculum: 0 is only rounding). With probability ``crop_share`` the chain starts
    with a centre crop of 30-80% of the area (half the time put back on its canvas) before the random ones."""
    s = max(0.0, min(1.0, strength))
    if s == 0:
        return quantize(x)
    kinds = ["crop", "uncrop", "resize", "blur", "noise", "colour", "none"]
    zoom = 1.0
    if crop_share and float(torch.rand((), generator=gen)) < crop_share:
        area = _uniform(gen, 0.3, 0.8)
        x = crop(x, area, 1.0, 0.5 + _uniform(gen, -0.03, 0.03), 0.5 + _uniform(gen, -0.03, 0.03))
        if float(torch.rand((), generator=gen)) < 0.5:
            zoom = math.sqrt(1 / area) * math.exp(_uniform(gen, -0.03, 0.03))
    picks = torch.randint(0, len(kinds), (int(torch.randint(1, 4, (), generator=gen)),), generator=gen).tolist()
    for k in sorted(set(picks)):
        kind = kinds[k]
        if kind in ("crop", "uncrop"):  # near the centre: a dense decoder cannot follow a crop anywhere
            area = _uniform(gen, 1 - 0.75 * s, 1.0)  # down to 25% of the picture
            x = crop(x, area, math.exp(_uniform(gen, -0.2, 0.2) * s), 0.5 + _uniform(gen, -0.08, 0.08) * s,
                     0.5 + _uniform(gen, -0.08, 0.08) * s)  # fmt: skip
            if kind == "uncrop":  # the detector's guess at the lost border (a little off), after the rest
                zoom = math.sqrt(1 / area) * math.exp(_uniform(gen, -0.06, 0.06) * s)
        elif kind == "resize":
            x = rescale(x, math.exp(_uniform(gen, math.log(0.4), math.log(2.0)) * s))
        elif kind == "blur":
            x = blur(x, _uniform(gen, 0.3, 0.3 + 1.7 * s))
        elif kind == "noise":
            x = noise(x, _uniform(gen, 0.0, 12.0 * s), gen)
        elif kind == "colour":
            x = brightness(x, math.exp(_uniform(gen, -0.35, 0.35) * s))
            x = contrast(x, math.exp(_uniform(gen, -0.4, 0.4) * s))
            x = saturation(x, math.exp(_uniform(gen, -0.7, 0.5) * s))
    x = quantize(x)
    if float(torch.rand((), generator=gen)) < 0.5:
        x = jpeg(x, int(round(_uniform(gen, 95 - 65 * s, 95))))
    return uncrop(x, zoom)


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """One 1 x 3 x H x W image as H x W x 3 float32."""
    return x[0].detach().permute(1, 2, 0).cpu().numpy().astype(np.float32)
