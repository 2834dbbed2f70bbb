"""Running restoration models: ``convgen.load("denoise-gray-s25").restore(noisy)`` and ``convgen restore``.

Large images run tiled: overlapping tiles are restored one at a time and blended with weights that are zero near
a tile's inner edges (where the network sees padding instead of image) and ramp up to one, so memory stays bounded
and the result matches untiled inference away from the seams.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from convgen.data.degrade import mask_out
from convgen.data.transforms import dihedral
from convgen.errors import ConvgenError, ImageError
from convgen.io.images import IMAGE_SUFFIXES, convert_channels, read_image, read_mask, resolve_inputs, write_image
from convgen.pipelines import Pipeline

LOSSLESS = (".png", ".npy", ".tif", ".tiff", ".bmp")


def _ramp(n: int, taper_start: bool, taper_end: bool, overlap: int) -> torch.Tensor:
    """1-D blending weights: 0 for the first overlap/4 pixels of a tapered side, then a linear ramp to 1."""
    w = torch.ones(n)
    if overlap < 2:
        return w
    margin, length = overlap // 4, max(1, overlap // 2)
    t = torch.arange(n, dtype=torch.float32)
    if taper_start:
        w = torch.minimum(w, ((t - margin + 1) / length).clamp(0, 1))
    if taper_end:
        w = torch.minimum(w, ((n - t - margin) / length).clamp(0, 1))
    return w


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    return [*starts, size - tile]


class RestorationPipeline(Pipeline):
    networks = ("restorer",)

    @property
    def net(self) -> torch.nn.Module:
        return self.models["restorer"]

    @property
    def degradation(self):
        return self.cfg.task.degradation

    @property
    def verb(self) -> str:
        return self.degradation.verb

    @property
    def channels(self) -> int:
        return self.cfg.model.channels

    def check_verb(self, verb: str, name: str) -> None:
        """Refuse to run this model for another restoration verb (e.g. a denoiser asked to inpaint)."""
        if self.verb != verb:
            raise ConvgenError(f"{name} is a {self.verb} model, not a {verb} model")

    def _noise_level(self, sigma: float | None) -> float | None:
        """Check ``sigma`` (warn if a fixed-level model gets another one); the level a noise-map model is fed."""
        deg = self.degradation
        if sigma is not None and not 0 <= sigma <= 255:
            raise ConvgenError(f"--sigma {sigma} is outside [0, 255]")
        if deg.sigma is not None and sigma is not None and abs(sigma - deg.sigma) > 1e-6:
            print(
                f"convgen: warning: this model was trained for sigma {deg.sigma:g} only; "
                f"it will under- or over-smooth at sigma {sigma:g}",
                file=sys.stderr,
            )
        if not self.net.cond_channels:
            return None
        level = sigma if sigma is not None else deg.sigma
        if level is None:
            raise ConvgenError("this denoiser takes the noise level as input: pass --sigma")
        return float(level)

    @property
    def default_ensemble(self) -> int:
        """How many flips/rotations :meth:`restore` averages when not told: the model's ``meta.json``
        ``inference.ensemble`` (set for zoo models whose card was measured with it), else 1."""
        return int(self.meta.get("inference", {}).get("ensemble", 1))

    @torch.no_grad()
    def _run(self, x: torch.Tensor, cond: torch.Tensor | None, ensemble: int = 1) -> torch.Tensor:
        """The network on one tile; with ``ensemble`` > 1, the mean over that many of the 8 flips/rotations
        (geometric self-ensemble, as in EDSR+ and the DnCNN/FFDNet papers: ~0.1 dB for ``ensemble``x time)."""
        acc = None
        for k in range(ensemble):
            xt, ct = dihedral(x, k), None if cond is None else dihedral(cond, k)
            out = self.net(xt.to(self.device), None if ct is None else ct.to(self.device))
            out = dihedral(out.float().cpu(), k, inverse=True)
            acc = out if acc is None else acc + out
        return acc / ensemble

    @torch.no_grad()
    def run_tiled(
        self, x: torch.Tensor, cond: torch.Tensor | None, tile: int | None, overlap: int, ensemble: int = 1
    ) -> torch.Tensor:
        """Restore a 1 x C x H x W tensor, in overlapping ``tile`` x ``tile`` tiles when it is larger than that."""
        _, c, h, w = x.shape
        if tile is None or (h <= tile and w <= tile):
            return self._run(x, cond, ensemble)
        if overlap >= tile:
            raise ConvgenError(f"--overlap {overlap} must be smaller than --tile {tile}")
        ys, xs = _starts(h, tile, overlap), _starts(w, tile, overlap)
        out = torch.zeros(c, h, w)
        total = torch.zeros(1, h, w)
        with tqdm(total=len(ys) * len(xs), desc="tiles", unit="tile", file=sys.stderr, leave=False) as bar:
            for y0 in ys:
                th = min(tile, h - y0)
                wy = _ramp(th, y0 > 0, y0 + th < h, overlap)
                for x0 in xs:
                    tw = min(tile, w - x0)
                    wx = _ramp(tw, x0 > 0, x0 + tw < w, overlap)
                    sl = (..., slice(y0, y0 + th), slice(x0, x0 + tw))
                    piece = self._run(x[sl], None if cond is None else cond[sl], ensemble)[0]
                    weight = wy[:, None] * wx[None, :]
                    out[sl] += piece * weight
                    total[sl] += weight
                    bar.update(1)
        return (out / total)[None]

    def restore(
        self,
        image: np.ndarray,
        sigma: float | None = None,
        mask: np.ndarray | None = None,
        tile: int | None = 512,
        overlap: int = 64,
        clip: bool = True,
        name: str = "image",
        ensemble: int | None = None,
    ) -> np.ndarray:
        """Restore one H x W (x C) float image; returns float32 H x W x C (x scale for super-resolution).

        ``ensemble`` (1, 2, 4 or 8; default :attr:`default_ensemble`) averages the model over that many
        flips/rotations of the input. A gray image given to a colour model is run as RGB and returned as gray
        (the mean of the channels)."""
        ensemble = self.default_ensemble if ensemble is None else ensemble
        if ensemble not in (1, 2, 4, 8):
            raise ConvgenError(f"--ensemble {ensemble}: must be 1, 2, 4 or 8")
        arr = np.asarray(image, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3:
            raise ImageError(f"expected an H x W or H x W x C image, got shape {arr.shape}")
        gray_in = arr.shape[-1] == 1
        arr = convert_channels(arr, self.channels, name)
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None]
        kind = self.degradation.kind
        cond = None
        if kind == "superres":
            s = self.degradation.scale
            x = F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)
        if kind == "inpaint":
            if mask is None:
                raise ConvgenError("inpainting needs a mask (--mask): 255 = missing, 0 = known")
            m = torch.from_numpy(np.asarray(mask, np.float32)).reshape(1, 1, *arr.shape[:2])
            x = mask_out(x, m, self.degradation)  # the whole image's classical pre-fill, before any tiling
            cond = m
        elif self.degradation.is_noise:
            level = self._noise_level(sigma)
            if level is not None:
                cond = torch.full((1, 1, *x.shape[-2:]), level / 255.0)
        out = self.run_tiled(x, cond, tile, overlap, ensemble)
        if kind == "inpaint":
            out = x * (1 - cond) + out * cond
        if clip:
            out = out.clamp(0, 1)
        if gray_in and self.channels == 3:
            out = out.mean(1, keepdim=True)
        return out[0].permute(1, 2, 0).numpy()

    def restore_files(
        self,
        inputs: str | Path,
        output: str | Path,
        sigma: float | None = None,
        mask: str | Path | None = None,
        tile: int | None = 512,
        overlap: int = 64,
        overwrite: bool = False,
        ensemble: int | None = None,
    ) -> list[Path]:
        """Restore a file or every image of a folder; outputs keep the input file names (see :func:`plan_outputs`)."""
        files = resolve_inputs(inputs)
        targets = plan_outputs(files, Path(inputs), Path(output), overwrite)
        masks = match_masks(files, Path(mask)) if mask is not None else [None] * len(files)
        if self.degradation.kind == "inpaint" and mask is None:
            raise ConvgenError("inpainting needs --mask (a mask file, or a folder of masks named like the inputs)")
        written = []
        bar = tqdm(total=len(files), desc=self.verb, unit="img", file=sys.stderr, disable=len(files) < 5)
        for f, target, m in zip(files, targets, masks, strict=True):
            arr = read_image(f)
            mk = read_mask(m, arr.shape[:2]).astype(np.float32) if m is not None else None
            written.append(
                write_image(target, self.restore(arr, sigma, mk, tile, overlap, name=str(f), ensemble=ensemble))
            )
            bar.update(1)
        bar.close()
        return written


def plan_outputs(files: Sequence[Path], inputs: Path, output: Path, overwrite: bool) -> list[Path]:
    """Output paths: for a folder, ``output/<input name>`` (lossy JPEG/WebP inputs become ``<stem>.png``); for a
    file, ``output`` itself (or ``output/<name>`` if ``output`` is an existing folder). Existing files are an error
    unless ``overwrite``: nothing is replaced without asking."""

    def name(f: Path) -> str:
        return f.name if f.suffix.lower() in LOSSLESS else f.stem + ".png"

    if inputs.is_dir():
        if output.exists() and not output.is_dir():
            raise ConvgenError(f"{output} is a file; the input is a folder, so --output must be a folder")
        targets = [output / name(f) for f in files]
    elif output.is_dir():
        targets = [output / name(files[0])]
    else:
        if output.suffix.lower() not in IMAGE_SUFFIXES + (".npy",):
            raise ConvgenError(f"{output}: unknown output format (use .png, .tif or .npy)")
        targets = [output]
    if files[0].suffix.lower() == ".npy" and targets[0].suffix.lower() != ".npy" and not inputs.is_dir():
        print("convgen: warning: a .npy input written as an 8-bit image loses precision", file=sys.stderr)
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise ConvgenError(
            f"{existing[0]} already exists ({len(existing)} output(s) would be replaced); pass --overwrite"
        )
    return targets


def match_masks(files: Sequence[Path], mask: Path) -> list[Path]:
    """One mask per input: the mask file itself, or the file in a mask folder with the input's name (or stem)."""
    if mask.is_file():
        return [mask] * len(files)
    if not mask.is_dir():
        raise ImageError(f"{mask}: mask file or folder not found")
    by_stem = {p.stem: p for p in sorted(mask.iterdir()) if p.is_file()}
    out = []
    for f in files:
        m = mask / f.name if (mask / f.name).is_file() else by_stem.get(f.stem)
        if m is None:
            raise ImageError(f"{mask}: no mask named like {f.name}")
        out.append(m)
    return out
