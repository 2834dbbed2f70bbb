"""A learned invisible watermark: a CNN encoder that hides ``bits`` bits in a photo and a CNN decoder that reads them
back after the photo was re-encoded, resized, cropped, blurred, noised or re-coloured (HiDDeN, Zhu et al. 2018;
StegaStamp, Tancik et al. 2020).

Both networks work at one small working resolution (``work_size``), whatever the photo's size:

* **embed**: the photo is downscaled to ``work_size`` x ``work_size``; the encoder turns it and the bits (a spatial
  carrier made from the bits, StegaStamp-style, mixed with the photo's features) into a residual, which is
  upsampled to the photo's size and scaled to a fixed energy: the marked photo is exactly ``psnr`` dB from the
  original before 8-bit rounding and clipping (:func:`scale_to_psnr`). The mark is therefore low-frequency at full
  resolution, which is what survives JPEG, downscaling and noise.
* **decode**: any image (a crop, a resized copy) is resized to ``work_size`` x ``work_size``, normalised per
  image and channel (so brightness and contrast changes do not matter), and a strided CNN ending in a dense layer
  over its 16 x 16 feature map gives one logit per bit (StegaStamp's decoder is dense too). Crops and rescaling
  are learned from the attacks. (A decoder with global average pooling, as in HiDDeN, with the carrier tiled so the
  mark is the same everywhere, stayed near 70% bit accuracy on unattacked 20 dB marks after 800 steps; the dense
  one reads them all after 50.)

The error-correcting code, the payload format and the detection test live in :mod:`convgen.pipelines.watermark`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from convgen.registry import MODELS
from convgen.schema import check


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a B x C x H x W batch to ``size`` (antialiased when it shrinks)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def scale_to_psnr(residual: torch.Tensor, psnr: float) -> torch.Tensor:
    """``residual`` (B x C x H x W) scaled per image so that adding it to a [0, 1] image changes it by exactly
    ``psnr`` dB (root mean square 10^(-psnr/20))."""
    rms = residual.square().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12).sqrt()
    return residual * (10 ** (-psnr / 20) / rms)


#: the zooms the decoder tries (:meth:`Watermarker.decode_zooms`): a picture read as it is, and as the centre crop
#: of 1/zoom^2 of a larger one (crops down to 25% of the area)
ZOOMS = (1.0, 2**0.25, 2**0.5, 2**0.75, 2.0)
#: each zoom's reading averages these small changes of it (right payloads after a centre crop to 50% on 80 test
#: photos: 67 -> 68-69, within noise; a wider +-6% jitter: 68)
JITTER = (0.97, 1.0, 1.03)


def uncrop(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """The picture in the middle of a canvas ``zoom`` times its size, the rest filled with its mean colour: where
    a centre crop of 1/zoom^2 of the area sat in its original."""
    if zoom <= 1:
        return x
    h, w = x.shape[-2:]
    ph, pw = round(h * (zoom - 1) / 2), round(w * (zoom - 1) / 2)
    fill = x.mean(dim=(2, 3), keepdim=True)
    return F.pad(x - fill, (pw, pw, ph, ph)) + fill


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@MODELS.register("watermark")
class Watermarker(nn.Module):
    """Encoder + decoder of a ``bits``-bit invisible watermark (see the module docstring)."""

    @dataclass
    class Config:
        bits: int = 64  # what the networks carry (the payload and its error-correcting redundancy)
        work_size: int = 64  # the working resolution of both networks
        width: int = 32  # the encoder's channels and the decoder's first stage's (doubled per stride)
        carrier_size: int = 16  # the side of the bits' spatial carrier (upsampled to work_size)

        def __post_init__(self) -> None:
            check(1 <= self.bits <= 1024, "model.bits", "must be in 1..1024")
            check(self.work_size >= 32 and self.work_size % 4 == 0, "model.work_size", "a multiple of 4, >= 32")
            check(self.width >= 4, "model.width", "must be >= 4")
            check(2 <= self.carrier_size <= self.work_size, "model.carrier_size", "must be in 2..model.work_size")

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        w, c, s = cfg.width, 16, cfg.work_size // 4
        self.image_branch = nn.Sequential(_block(3, w), _block(w, w))
        self.carrier = nn.Linear(cfg.bits, c * cfg.carrier_size**2)
        self.carrier_conv = _block(c, w)
        self.mix = nn.Sequential(_block(2 * w + 3, w), _block(w, w), nn.Conv2d(w, 3, 1))
        self.direct = nn.Conv2d(w, 3, 1)  # the carrier's own path to the residual: decodable from the first step
        nn.init.zeros_(self.mix[-1].weight)  # the photo's say in the mark starts at nothing
        nn.init.zeros_(self.mix[-1].bias)
        self.decoder = nn.Sequential(
            _block(3, w), _block(w, w), _block(w, 2 * w, 2), _block(2 * w, 2 * w), _block(2 * w, 4 * w, 2),
            _block(4 * w, 4 * w), nn.Conv2d(4 * w, c, 1),
        )  # fmt: skip
        self.head = nn.Linear(c * s * s, cfg.bits)

    @property
    def work(self) -> tuple[int, int]:
        return (self.cfg.work_size, self.cfg.work_size)

    def residual(self, images: torch.Tensor, bits: torch.Tensor, psnr: float) -> torch.Tensor:
        """The mark to add to ``images`` (B x 3 x H x W in [0, 1]) for ``bits`` (B x bits of 0/1): same size as the
        images, scaled to ``psnr`` dB."""
        s = self.cfg.carrier_size
        x = resize(images, self.work) * 2 - 1
        carrier = self.carrier(bits.float() * 2 - 1).view(len(bits), -1, s, s)
        carrier = self.carrier_conv(F.interpolate(carrier, size=self.work, mode="bilinear", align_corners=False))
        r = self.direct(carrier) + self.mix(torch.cat([self.image_branch(x), carrier, x], dim=1))
        return scale_to_psnr(resize(r, tuple(images.shape[-2:])), psnr)

    def embed(self, images: torch.Tensor, bits: torch.Tensor, psnr: float) -> torch.Tensor:
        """Marked images (not clipped: the caller rounds and clips to its pixel format)."""
        return images + self.residual(images, bits, psnr)

    def decode(self, images: torch.Tensor) -> torch.Tensor:
        """One logit per bit (B x bits; > 0 reads as 1) for images of any size (B x 3 x H x W in [0, 1])."""
        x = resize(images, self.work)
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = x.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
        return self.head(self.decoder((x - mean) / std).flatten(1))

    def decode_zooms(self, images: torch.Tensor, zooms: tuple[float, ...] = ZOOMS,
                     jitter: tuple[float, ...] = JITTER) -> torch.Tensor:  # fmt: skip
        """Logits for each picture read at each zoom (B x len(zooms) x bits): as it is, and put back (:func:`uncrop`)
        where a centre crop of 1/zoom^2 of the area would have come from; each reading is the mean of the logits at
        ``zoom x jitter`` (a crop is never exactly where a zoom puts it back; zoom 1, the picture as it is, is read
        as it is)."""
        views = torch.cat([resize(uncrop(images[i : i + 1], z * j if z > 1 else 1.0), self.work)
                           for i in range(len(images)) for z in zooms for j in jitter])  # fmt: skip
        return self.decode(views).view(len(images), len(zooms), len(jitter), -1).mean(dim=2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(images)

