"""Image-to-image pipelines: ``convgen.load("denoise-gray-s25").restore(noisy)`` and ``convgen restore VERB``.

:class:`RestorePipeline` is what every restorer shares: the verbs it serves (``restores``), file and folder
handling with the output naming rules of ../shared/BENCHMARKS.md, masks matched by file name, and the checks. A
family implements :meth:`RestorePipeline.restore` on one image. :class:`RestorationPipeline` serves the trained
restoration networks (denoise, inpaint, superres, dejpeg) through their degradation's inference rules
(:mod:`convgen.data.degradations`), in tiles and with an optional self-ensemble (:mod:`convgen.pipelines.tiling`).
The ``convgen restore`` command lists every verb of every registered pipeline, so a new family (a diffusion
model serving ``inpaint``, a plugin with a verb of its own) needs no edit to the CLI.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convgen.data.degradations import Degradation, make_degradation
from convgen.errors import ConvgenError, ImageError
from convgen.io.images import (
    IMAGE_SUFFIXES,
    convert_channels,
    probe_image,
    read_image,
    read_mask,
    resolve_inputs,
    stored_ndim,
)
from convgen.io.images import write_image as _write_image
from convgen.options import Options, option
from convgen.pipelines.base import Pipeline, check_distinct_targets
from convgen.pipelines.guard import CORRELATED, sure_blend
from convgen.pipelines.tiling import check_tiling, run_tiled
from convgen.registry import PIPELINES

LOSSLESS = (".png", ".npy", ".tif", ".tiff", ".bmp")


def as_float_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """An H x W or H x W x C array as a writable float32 H x W x C copy (never a view of the caller's data)."""
    arr = np.array(image, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ImageError(f"{name}: expected an H x W or H x W x C image, got shape {arr.shape}")
    return arr


@dataclass
class RestoreOptions(Options):
    """What every restorer that runs a network over a whole image shares: tiles for large images, the geometric
    self-ensemble, and clipping. Declared once; a verb's own options extend it."""

    tile: int | None = option(512, "tile size in pixels for large images (0 or none = no tiling)", lo=0)
    overlap: int = option(64, "tile overlap in pixels", lo=0)
    ensemble: int | None = option(None, "average the model over this many flips/rotations: 1, 2, 4 or 8 (x time; "
                                  "default: the model's own setting)", lo=1, hi=8)  # fmt: skip
    clip: bool = option(True, "clip the result to [0, 1] (--no-clip keeps the network's values in .npy outputs)")

    def check(self) -> None:
        check_tiling(self.tile or None, self.overlap)
        if self.ensemble is not None and self.ensemble not in (1, 2, 4, 8):
            raise ConvgenError(f"`ensemble` {self.ensemble}: must be 1, 2, 4 or 8")


@dataclass
class DenoiseOptions(RestoreOptions):
    sigma: float | None = option(None, "noise standard deviation on the 0-255 scale (for non-blind models)", gt=0,
                                 hi=255)  # fmt: skip
    strength: float = option(1.0, "0 = leave the image as it is, 1 = the model's result, above 1 stronger (the "
                             "change the model makes, scaled)", lo=0, hi=4)  # fmt: skip
    guard: bool = option(True, "never worse than the input: where Stein's risk estimate says the result would be "
                         "worse than the noisy picture (a painting, line art, a clean photo), blend it back towards "
                         "the input")  # fmt: skip


class RestorePipeline(Pipeline):
    """Base of every image-to-image pipeline. ``restores`` lists the ``convgen restore`` verbs the family can
    serve, ``verb_help`` a one-line description of each for ``--help``, ``restore_options`` the options each verb
    takes (an :class:`~convgen.options.Options` dataclass; the command's flags, the web form and the checks come
    from it); :attr:`verbs` is what one model serves. A family implements :meth:`restore_image`, which receives the
    checked options as keywords."""

    restores: tuple[str, ...] = ()
    verb_help: dict[str, str] = {}
    restore_options: dict[str, type[Options]] = {}
    takes_mask: tuple[str, ...] = ("inpaint",)  # verbs whose inputs come with a mask

    @property
    def verbs(self) -> tuple[str, ...]:
        return self.restores

    def check_verb(self, verb: str, name: str) -> None:
        """Refuse to run this model for another verb (e.g. a denoiser asked to inpaint)."""
        if verb not in self.verbs:
            kind = "/".join(self.verbs) or "restoration"
            raise ConvgenError(f"{name} is {_article(kind)} {kind} model, not {_article(verb)} {verb} model")

    def default_verb(self, mask: Any = None) -> str:
        return "inpaint" if mask is not None and "inpaint" in self.verbs else self.verbs[0]

    def check_options(self, verb: str, mask: Any = None, **options) -> dict[str, Any]:
        """The options of ``verb`` checked against its declaration (defaults filled in), before any file is
        read; a mask is refused for verbs that take none and required for those that do."""
        self.check_verb(verb, self.name)
        if mask is not None and verb not in self.takes_mask:
            raise ConvgenError(f"`mask` is for inpainting, not {verb}")
        if mask is None and verb in self.takes_mask:
            raise ConvgenError(f"{verb} needs a `mask` (a mask file, or a folder of masks named like the inputs)")
        return self.checked(self.restore_options.get(verb, Options), options, verb)

    def restore(self, image: np.ndarray, mask: np.ndarray | None = None, name: str = "image",
                verb: str | None = None, **options) -> np.ndarray:  # fmt: skip
        """Restore one H x W (x C) float image (``verb``: default the model's, or inpaint with a ``mask``);
        returns float32 H x W x C. ``options`` are checked against the verb's declaration."""
        verb = verb or self.default_verb(mask)
        checked = self.check_options(verb, mask, **options)
        return self.restore_image(image, mask=mask, name=name, verb=verb, **checked)

    def restore_image(self, image: np.ndarray, mask: np.ndarray | None, name: str, verb: str,
                      **options) -> np.ndarray:  # fmt: skip
        """The family's work on one image; ``options`` are the checked fields of ``restore_options[verb]``. (A
        family written before the options were declared overrides :meth:`restore` itself; it is called here.)"""
        if type(self).restore is not RestorePipeline.restore:
            return self.restore(image, mask=mask, name=name, **options)
        raise NotImplementedError(f"{type(self).__name__} implements neither restore_image nor restore")

    def restore_files(
        self,
        inputs: str | Path,
        output: str | Path,
        mask: str | Path | None = None,
        overwrite: bool = False,
        verb: str | None = None,
        provenance: bool = True,
        **options,
    ) -> list[Path]:
        """Restore a file or every image of a folder; outputs keep the input file names (see :func:`plan_outputs`)
        and a ``.npy`` input's shape (H x W stays H x W). ``options`` are checked against the verb's declaration.
        Outputs record how they were made (XMP + C2PA, :attr:`provenance_kinds`) unless ``provenance`` is False."""
        verb = verb or self.default_verb(mask)
        record = self.provenance(verb, self.provenance_kinds.get(verb, "enhanced")) if provenance else None
        checked = self.check_options(verb, mask, **options)
        from tqdm import tqdm

        files = resolve_inputs(inputs)
        targets = plan_outputs(files, Path(inputs), Path(output), overwrite)
        masks = match_masks(files, Path(mask)) if mask is not None else [None] * len(files)
        for f in files:  # every input is checked before anything is written
            probe_image(f)
        written: list[Path] = []
        bar = tqdm(total=len(files), desc=verb, unit="img", file=sys.stderr, disable=len(files) < 5)
        jobs = list(zip(files, targets, masks, strict=True))
        for start in range(0, len(jobs), self.file_batch):
            group = jobs[start : start + self.file_batch]
            try:
                arrays = [read_image(f) for f, _, _ in group]
                mks = [None if m is None else read_mask(m, a.shape[:2]).astype(np.float32)
                       for (_, _, m), a in zip(group, arrays, strict=True)]  # fmt: skip
                outs = self.restore_batch(arrays, mks, [str(f) for f, _, _ in group], verb, **checked)
            except ConvgenError as e:
                if not written:
                    raise
                raise type(e)(f"{e.template} (stopped there: {len(written)} of {len(files)} outputs written, "
                              f"{written[0].name} to {written[-1].name})") from None  # fmt: skip
            for (f, target, _), out in zip(group, outs, strict=True):
                if stored_ndim(f) == 2 and out.shape[-1] == 1:
                    out = out[..., 0]
                written.append(_write_image(target, out, provenance=record))
                bar.update(1)
        bar.close()
        warn_lossy(files, written)
        return written

    #: files :meth:`restore_files` reads and restores together (a family that batches sets more)
    file_batch: int = 1
    #: the provenance record per verb: restored photos are "enhanced", inpainted ones a "composite" of the photo and
    #: generated regions (IPTC compositeWithTrainedAlgorithmicMedia); a family whose outputs are wholly the
    #: model's says "generated"
    provenance_kinds: dict[str, str] = {"inpaint": "composite"}

    def restore_batch(self, images: list[np.ndarray], masks: list[np.ndarray | None], names: list[str], verb: str,
                      **options) -> list[np.ndarray]:  # fmt: skip
        """:meth:`restore_image` of several images with checked options (a family may run them as one batch; the
        results must be the same)."""
        return [self.restore_image(a, mask=m, name=n, verb=verb, **options)
                for a, m, n in zip(images, masks, names, strict=True)]  # fmt: skip


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


@PIPELINES.register("restoration")
class RestorationPipeline(RestorePipeline):
    """A trained restoration network: the verb of its degradation (``task.degradation.kind``)."""

    networks = ("restorer",)
    restores = ("denoise", "inpaint", "superres", "dejpeg")
    restore_options = {"denoise": DenoiseOptions, "inpaint": RestoreOptions, "superres": RestoreOptions,
                       "dejpeg": RestoreOptions}  # fmt: skip
    verb_help = {
        "denoise": "remove noise (--sigma: the noise level on the 0-255 scale, for non-blind models)",
        "inpaint": "fill missing regions given by --mask (255 = missing, 0 = known)",
        "superres": "bicubic-degraded super-resolution by the model's scale",
        "dejpeg": "remove JPEG compression artifacts",
    }

    @property
    def net(self) -> torch.nn.Module:
        return self.models["restorer"]

    @property
    def degradation(self) -> Degradation:
        return make_degradation(self.cfg.task.degradation)

    @property
    def verb(self) -> str:
        return self.degradation.verb

    @property
    def verbs(self) -> tuple[str, ...]:
        return (self.verb,)

    @property
    def channels(self) -> int:
        return self.cfg.model.channels

    @property
    def default_ensemble(self) -> int:
        """How many flips/rotations :meth:`restore` averages when not told: the model's ``meta.json``
        ``inference.ensemble`` (set for zoo models whose card was measured with it), else 1."""
        return int(self.meta.get("inference", {}).get("ensemble", 1))

    def option_defaults(self, declared) -> dict[str, Any]:
        return {"ensemble": self.default_ensemble} if issubclass(declared, RestoreOptions) else {}

    def _network(self, x: torch.Tensor, cond: torch.Tensor | None, **kw) -> torch.Tensor:
        return self.net(x.to(self.device), None if cond is None else cond.to(self.device), **kw)

    def _guarded(self, network, x, cond, out, sigma, tile, overlap) -> torch.Tensor:
        """``out`` held back towards ``x`` where the SURE estimate for the noise level (``sigma``, or read from
        the picture) says it is worse than the input; the divergence pass runs the model once, without the
        ensemble."""
        from convgen.classical.noise import estimate_noise_level

        if sigma is not None:
            level = sigma / 255
        else:
            level = estimate_noise_level(x[0].permute(1, 2, 0).numpy())
            if hasattr(self.net, "estimate") and level * 255 >= 0.05:  # a model that reads the noise itself
                h, w = x.shape[-2:]
                crop = x[..., max(0, h // 2 - 512) : h // 2 + 512, max(0, w // 2 - 512) : w // 2 + 512]  # memory
                with torch.no_grad():
                    own = float(self.net.estimate(crop.to(self.device)).mean())
                level = own if own >= CORRELATED * level else level

        def denoise(y: torch.Tensor) -> torch.Tensor:
            return run_tiled(network, y, cond, tile, overlap, 1)

        return sure_blend(denoise, x, out, level)[0]

    def restore_image(self, image: np.ndarray, mask: np.ndarray | None = None, name: str = "image",
                      verb: str = "", sigma: float | None = None, tile: int | None = 512, overlap: int = 64,
                      ensemble: int | None = None, clip: bool = True, strength: float = 1.0,
                      guard: bool = False) -> np.ndarray:  # fmt: skip
        """Restore one H x W (x C) float image; returns float32 H x W x C (x scale for super-resolution).

        ``ensemble`` (1, 2, 4 or 8; default :attr:`default_ensemble`) averages the model over that many
        flips/rotations of the input. A gray image given to a colour model is run as RGB and returned as gray
        (the mean of the channels). Denoising: ``strength`` scales the change the model makes (0: the input
        itself); ``guard`` blends the result back towards the input where it would be worse than it
        (:mod:`convgen.pipelines.guard`)."""
        ensemble = self.default_ensemble if ensemble is None else ensemble
        arr = as_float_image(image, name)
        gray_in = arr.shape[-1] == 1
        arr = convert_channels(arr, self.channels, name)
        x = torch.from_numpy(arr).permute(2, 0, 1)[None]
        deg = self.degradation
        level = deg.level(sigma, bool(self.net.cond_channels)) if deg.is_noise else None
        m = None if mask is None else torch.from_numpy(np.array(mask, np.float32))
        x, cond = deg.network_input(x, m, level)
        own_strength = hasattr(self.net, "estimate")  # a noise-estimating model scales its own noise map
        network = functools.partial(self._network, strength=strength) if own_strength else self._network
        if deg.is_noise and strength == 0:
            out = x.clone()
        else:
            out = deg.finish(x, run_tiled(network, x, cond, tile or None, overlap, ensemble), cond)
            if deg.is_noise and guard:
                out = self._guarded(network, x, cond, out, sigma, tile or None, overlap)
            if deg.is_noise and strength != 1 and not own_strength:
                out = x + strength * (out - x)
        if clip:
            out = out.clamp(0, 1)
        if gray_in and self.channels == 3:
            out = out.mean(1, keepdim=True)
        return out[0].permute(1, 2, 0).numpy()


def plan_outputs(files: Sequence[Path], inputs: Path, output: Path, overwrite: bool) -> list[Path]:
    """Output paths: for a folder, ``output/<input name>`` (lossy JPEG/WebP inputs become ``<stem>.png``); for a
    file, ``output`` itself (or ``output/<name>`` if ``output`` is an existing folder). Existing files are an error
    unless ``overwrite``: nothing is replaced without asking."""

    def name(f: Path) -> str:
        return f.name if f.suffix.lower() in LOSSLESS else f.stem + ".png"

    if inputs.is_dir():
        if output.exists() and not output.is_dir():
            raise ConvgenError(f"{output} is a file; the input is a folder, so `output` must be a folder")
        targets = [output / name(f) for f in files]
    elif output.is_dir():
        targets = [output / name(files[0])]
    else:
        if output.suffix.lower() not in IMAGE_SUFFIXES + (".npy",):
            raise ConvgenError(f"{output}: unknown output format (use .png, .tif or .npy)")
        targets = [output]
    check_distinct_targets(files, targets)
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise ConvgenError(
            f"{existing[0]} already exists ({len(existing)} output(s) would be replaced); pass `overwrite`"
        )
    return targets


def warn_lossy(files: Sequence[Path], written: Sequence[Path]) -> None:
    """After a job: say when a ``.npy`` float input was written as an 8-bit image (never before an error)."""
    if any(f.suffix.lower() == ".npy" and t.suffix.lower() != ".npy" for f, t in zip(files, written, strict=False)):
        print("convgen: warning: a .npy input written as an 8-bit image loses precision", file=sys.stderr)


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
