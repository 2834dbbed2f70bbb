"""Camera noise: what a real photo's noise looks like after the camera has processed it (``kind: camera``).

"Unprocessing" (Brooks et al., CVPR 2019) in reverse and forward again, on sRGB photos in [0, 1]:

1. unprocess to linear camera RGB: inverse tone curve (smoothstep), inverse gamma (2.2), inverse colour correction
   (a random mix of real cameras' matrices) and inverse white balance / brightness gains (highlights kept);
2. the sensor: a Bayer mosaic (RGGB) of the linear image with signal-dependent Poisson-Gaussian noise, variance
   ``shot * x + read``; ``shot`` log-uniform over the range sensors show from low ISO to ISO 12800 and ``read``
   from it by Brooks et al.'s fitted line (``log read = 2.18 log shot + 1.2 + N(0, 0.26)``);
3. demosaicking (bilinear, with probability ``mosaic``; otherwise per-pixel noise): noise correlated across
   neighbouring pixels and across channels;
4. the camera's own noise reduction (a mild blur of the noise, ``smoothing``) and processing back to sRGB with the
   same gains, matrix, gamma and tone curve, clipped to [0, 1];
5. JPEG at a random quality in ``jpeg`` with probability ``jpeg_probability``.

The clean target is the photo through the same pipeline without noise (equal to the photo but for clipped
highlights), so a network trained on it changes nothing but the noise. A share ``clean_probability`` of training
images is left noise-free, so a blind denoiser learns to leave a clean image alone. The conditioning map is the
local noise level (the standard deviation of the noise that was added, smoothed), what an estimation branch
(CBDNet) is trained to predict. The statistics are tested against the real pairs of ``../shared/data/realnoise``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from convgen.data.degradations.base import Degradation
from convgen.errors import ConvgenError
from convgen.io.colour import rgb_to_ycbcr, ycbcr_to_rgb
from convgen.registry import DEGRADATIONS
from convgen.schema import check

#: XYZ -> camera matrices of four cameras (Brooks et al.'s set: Canon EOS 5D Mark III, Canon EOS 5D Mark II,
#: Canon EOS-1Ds Mark III, Nikon D700; as Adobe DNG "ColorMatrix2" values)
XYZ2CAMS = torch.tensor([
    [[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469], [-0.0703, 0.2188, 0.6406]],
    [[0.4913, -0.0541, -0.0202], [-0.6130, 1.3513, 0.2906], [-0.1564, 0.2151, 0.7183]],
    [[0.8380, -0.2630, -0.0639], [-0.2887, 1.0725, 0.2496], [-0.0627, 0.1427, 0.5438]],
    [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.0970, 0.1581, 0.5181]],
])  # fmt: skip
RGB2XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])  # fmt: skip


@dataclass
class CameraConfig:
    shot: list[float] = field(default_factory=lambda: [0.0001, 0.01])  # shot-noise gain on linear [0, 1]: ISO range
    mosaic: float = 0.9  # probability of a Bayer mosaic + demosaic (else per-pixel noise)
    smoothing: list[float] = field(default_factory=lambda: [0.0, 0.8])  # in-camera noise reduction: blur sigma (px)
    chroma: list[float] = field(default_factory=lambda: [0.15, 0.8])  # share of the colour noise the camera keeps
    jpeg: list[int] = field(default_factory=lambda: [70, 100])  # JPEG quality range
    jpeg_probability: float = 0.5
    clean_probability: float = 0.05  # training images left noise-free

    def __post_init__(self) -> None:
        w = "task.degradation"
        check(len(self.shot) == 2 and 0 < self.shot[0] <= self.shot[1] <= 1, f"{w}.shot", "must be [lo, hi] in (0, 1]")
        check(len(self.smoothing) == 2 and 0 <= self.smoothing[0] <= self.smoothing[1] <= 5, f"{w}.smoothing",
              "must be [lo, hi] in [0, 5]")  # fmt: skip
        check(len(self.chroma) == 2 and 0 <= self.chroma[0] <= self.chroma[1] <= 1, f"{w}.chroma",
              "must be [lo, hi] in [0, 1]")  # fmt: skip
        check(len(self.jpeg) == 2 and 1 <= self.jpeg[0] <= self.jpeg[1] <= 100, f"{w}.jpeg",
              "must be [lo, hi] in 1..100")  # fmt: skip
        for key in ("mosaic", "jpeg_probability", "clean_probability"):
            check(0 <= getattr(self, key) <= 1, f"{w}.{key}", "must be in [0, 1]")


# -- the camera pipeline, forward and inverse (B x 3 x H x W tensors) --------------------------------------------
def smoothstep(x: torch.Tensor) -> torch.Tensor:
    return 3 * x**2 - 2 * x**3


def inverse_smoothstep(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0, 1)
    return 0.5 - torch.sin(torch.asin(1 - 2 * x) / 3)


def _mix(matrices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (weights[:, :, None, None] * matrices[None]).sum(1) / weights.sum(1)[:, None, None]


def camera_matrices(b: int, gen: torch.Generator) -> torch.Tensor:
    """B x 3 x 3 sRGB -> camera matrices: a random mix of the cameras', rows normalised to 1 (white stays white)."""
    xyz2cam = _mix(XYZ2CAMS, torch.rand(b, len(XYZ2CAMS), generator=gen) + 1e-3)
    rgb2cam = xyz2cam @ RGB2XYZ
    return rgb2cam / rgb2cam.sum(-1, keepdim=True)


def _apply(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("bij,bjhw->bihw", matrix, x)


@dataclass
class Camera:
    """One batch's cameras: colour matrices and white balance / brightness gains (B x 3)."""

    rgb2cam: torch.Tensor
    gains: torch.Tensor

    @classmethod
    def draw(cls, b: int, gen: torch.Generator) -> Camera:
        u = torch.rand(b, 3, generator=gen)
        rgb_gain = 1 / (0.8 + 0.1 * torch.randn(b, generator=gen)).clamp(0.5, 1.2)
        red, blue = 1.9 + 0.5 * u[:, 0], 1.5 + 0.4 * u[:, 1]
        gains = torch.stack([red, torch.ones(b), blue], 1) * rgb_gain[:, None]
        return cls(camera_matrices(b, gen), gains)

    def unprocess(self, srgb: torch.Tensor) -> torch.Tensor:
        """sRGB in [0, 1] -> linear camera RGB before white balance."""
        linear = inverse_smoothstep(srgb).clamp_min(1e-8) ** 2.2
        cam = _apply(self.rgb2cam, linear)
        gray = cam.mean(1, keepdim=True)  # highlights: keep saturated pixels from going above white (Brooks et al.)
        inv = 1 / self.gains[:, :, None, None]
        mask = ((gray - 0.9).clamp_min(0) / 0.1) ** 2
        safe = torch.maximum(inv, (1 - mask) * inv + mask * 1.0)
        return (cam * safe).clamp(0, 1)

    def process(self, raw: torch.Tensor) -> torch.Tensor:
        """Linear camera RGB (after demosaicking) -> sRGB in [0, 1]."""
        balanced = raw * self.gains[:, :, None, None]
        linear = _apply(torch.linalg.inv(self.rgb2cam), balanced).clamp(0, 1)
        return smoothstep(linear.clamp_min(1e-8) ** (1 / 2.2)).clamp(0, 1)


def bayer_mask(h: int, w: int) -> torch.Tensor:
    """1 x 3 x H x W: which colour each photosite of an RGGB mosaic sees."""
    m = torch.zeros(1, 3, h, w)
    m[:, 0, 0::2, 0::2] = 1
    m[:, 1, 0::2, 1::2] = 1
    m[:, 1, 1::2, 0::2] = 1
    m[:, 2, 1::2, 1::2] = 1
    return m


_BILINEAR = {
    "rb": torch.tensor([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]]),
    "g": torch.tensor([[0.0, 0.25, 0.0], [0.25, 1.0, 0.25], [0.0, 0.25, 0.0]]),
}


def demosaic(mosaic: torch.Tensor) -> torch.Tensor:
    """Bilinear demosaicking of B x 3 x H x W planes that are zero where a colour was not sensed (RGGB)."""
    k = torch.stack([_BILINEAR["rb"], _BILINEAR["g"], _BILINEAR["rb"]])[:, None].to(mosaic)
    padded = F.pad(mosaic, (1, 1, 1, 1), mode="reflect")
    return F.conv2d(padded, k, groups=3)


def reduce_chroma(noise: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Scale the colour (Cb, Cr) part of each image's noise by ``keep`` (B): what cameras' chroma noise reduction
    does, leaving mostly luminance noise, correlated across the R, G and B channels."""
    ycc = rgb_to_ycbcr(noise)
    scale = torch.stack([torch.ones_like(keep), keep, keep], 1)[:, :, None, None]
    return ycbcr_to_rgb(ycc * scale)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of a batch with its own Gaussian (``sigma`` B, in px; 0 = unchanged)."""
    radius = max(1, int(math.ceil(3 * float(sigma.max())))) if float(sigma.max()) > 0 else 0
    if radius == 0:
        return x
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    s = sigma.clamp_min(1e-3)[:, None]
    k1 = torch.exp(-(t[None] ** 2) / (2 * s**2))
    k1 = torch.where(sigma[:, None] > 0, k1, (t[None] == 0).to(x.dtype))
    k1 = k1 / k1.sum(1, keepdim=True)  # B x K
    b, c, h, w = x.shape
    flat = x.reshape(1, b * c, h, w)
    kx = k1.repeat_interleave(c, 0)[:, None, None, :]
    ky = k1.repeat_interleave(c, 0)[:, None, :, None]
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kx, groups=b * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), ky, groups=b * c)
    return flat.reshape(b, c, h, w)


def jpeg_round_trip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """One 3 x H x W image in [0, 1] through 8-bit JPEG at ``quality`` (4:2:0, as cameras save)."""
    from PIL import Image

    arr = (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32) / 255
    return torch.from_numpy(out).permute(2, 0, 1)


def noise_level_map(noisy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """B x 1 x H x W: the local standard deviation of the noise that was added (7 px Gaussian window, mean of the
    channels), on the [0, 1] scale: what a noise-estimation branch learns to predict."""
    var = (noisy - clean).square().mean(1, keepdim=True)
    b = var.shape[0]
    return gaussian_blur(var, torch.full((b,), 2.0)).clamp_min(0).sqrt()


@DEGRADATIONS.register("camera")
class CameraNoise(Degradation):
    verb = "denoise"
    is_noise = True
    Config = CameraConfig

    def degrade(self, clean: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(noisy, target) for a B x 3 x H x W batch of sRGB photos in [0, 1]; the target is the photo through the
        same camera without noise."""
        if clean.shape[1] != 3:
            raise ConvgenError("camera noise is for colour (RGB) images")
        cfg = self.cfg
        b, _, h, w = clean.shape
        cam = Camera.draw(b, gen)
        raw = cam.unprocess(clean.float())
        target = cam.process(raw)
        log_lo, log_hi = math.log(cfg.shot[0]), math.log(cfg.shot[1])
        log_shot = log_lo + (log_hi - log_lo) * torch.rand(b, generator=gen)
        log_read = 2.18 * log_shot + 1.20 + 0.26 * torch.randn(b, generator=gen)
        shot, read = log_shot.exp()[:, None, None, None], log_read.exp()[:, None, None, None]
        mosaicked = (torch.rand(b, generator=gen) < cfg.mosaic)[:, None, None, None]
        bayer = bayer_mask(h, w)
        sensed = torch.where(mosaicked, raw * bayer, raw)
        noise = torch.randn(raw.shape, generator=gen) * (shot * sensed.clamp_min(0) + read).sqrt()
        noisy_raw = sensed + torch.where(mosaicked, noise * bayer, noise)
        noisy_raw = torch.where(mosaicked, demosaic(noisy_raw), noisy_raw)
        clean_raw = torch.where(mosaicked, demosaic(raw * bayer), raw)  # what the camera's demosaicking gives
        lo, hi = cfg.smoothing
        blur = lo + (hi - lo) * torch.rand(b, generator=gen)
        noisy_raw = clean_raw + gaussian_blur(noisy_raw - clean_raw, blur)
        noise = cam.process(noisy_raw) - cam.process(clean_raw)  # demosaicking's own blur is not noise to remove
        lo, hi = cfg.chroma
        noisy = target + reduce_chroma(noise, lo + (hi - lo) * torch.rand(b, generator=gen))
        jpeg = torch.rand(b, generator=gen) < cfg.jpeg_probability
        qualities = torch.randint(cfg.jpeg[0], cfg.jpeg[1] + 1, (b,), generator=gen)
        out = noisy.clamp(0, 1)
        for i in range(b):
            if jpeg[i]:
                out[i] = jpeg_round_trip(out[i], int(qualities[i]))
        keep = (torch.rand(b, generator=gen) < cfg.clean_probability)[:, None, None, None]
        return torch.where(keep, target, out), target

    def batch(self, clean, gen):
        noisy, target = self.degrade(clean, gen)
        clean.copy_(target)  # the task regresses the batch it passed in: the photo through the noise-free camera
        return noisy, noise_level_map(noisy, target)

    def protocol(self, clean, index, sigma=None):
        """A deterministic camera degradation of validation image ``index`` (seeded by the index)."""
        x = torch.from_numpy(np.ascontiguousarray(clean, np.float32)).permute(2, 0, 1)[None]
        noisy, target = self.degrade(x, torch.Generator().manual_seed(10_000 + index))
        level = noise_level_map(noisy, target)[0].permute(1, 2, 0).numpy()
        return noisy[0].permute(1, 2, 0).numpy(), level

    def level(self, sigma: float | None, takes_level: bool) -> float | None:
        if sigma is not None:
            raise ConvgenError("this model estimates the camera noise itself; it takes `strength`, not `sigma`")
        return None
