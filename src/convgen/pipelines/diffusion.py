"""Diffusion models: sampling (DDIM or ancestral, classifier-free guidance), DDIM latent interpolation, and
restoration by reverse diffusion: ``inpaint`` (RePaint-style conditioning on the known pixels, with resampling)
and ``denoise`` (the reverse process entered at the step whose noise level is the input's).

``convgen.load("mnist-ddpm")`` returns a :class:`DiffusionPipeline`; it uses the EMA U-Net. Its default sampler is
the model's ``meta.json`` ``inference`` section (steps, guidance, eta: what its card was measured with), its
default RePaint settings the ``repaint`` section. A distilled student (``mnist-ddpm-fast``) takes the guidance
scale as an input (one network pass per step at any scale) and samples on its own grid of timesteps
(``meta.json`` ``distilled``) at its own step count; at other counts it runs on the even DDIM grid.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from convgen.classical.noise import estimate_sigma as wavelet_sigma
from convgen.diffusion import NoiseSchedule, ddim_sample, denoise_from, guided_predictor, repaint_sample
from convgen.diffusion.samplers import (
    ImageNoise,
    generate,
    image_seeds,
    known_pixel_errors,
    repaint_cost,
    step_grid,
    to_unit,
)
from convgen.errors import ConvgenError, ImageError
from convgen.io.images import convert_channels
from convgen.options import Options, option
from convgen.pipelines.base import check_batch_size
from convgen.pipelines.restore import RestorePipeline, as_float_image
from convgen.pipelines.sample import Sampler, lerp, slerp
from convgen.registry import PIPELINES

MAX_SIDE = 256  # the U-Net attends over every pixel at 1/4 scale: memory grows with the fourth power of the side
MAX_T = 100_000  # the most timesteps a schedule has (the task's limit); a model's own T narrows it (limits)
SEED = {"lo": -(2**63), "hi": 2**63 - 1}


def _guidance(what: str) -> float | None:
    return option(None, f"classifier-free guidance scale{what}: 0 = unconditional, 1 = plain conditional "
                  "(conditional models; default: the model's)", lo=0, hi=100)  # fmt: skip


@dataclass
class DiffusionSampleOptions(Options):
    steps: int | None = option(None, "DDIM steps (default: the model's)", lo=1, hi=MAX_T)
    guidance: float | None = _guidance("")
    eta: float | None = option(None, "DDIM eta: 0 = deterministic, 1 with --steps T = DDPM ancestral (default: the "
                               "model's)", lo=0, hi=1)  # fmt: skip


@dataclass
class DiffusionWalkOptions(Options):
    guidance: float | None = _guidance(" of every frame")


@dataclass
class _Conditioning(Options):
    seed: int = option(0, "the noise seed (the same seed gives the same result)", **SEED)
    label: str | None = option(None, "condition on this class (name or index; default: the unconditional model)")


#: RePaint's settings where a model's meta.json names none (what mnist-ddpm's card was measured with)
REPAINT_DEFAULTS = {"steps": 25, "jump": 5, "resample": 4, "infer_label": False}


@dataclass
class RepaintOptions(_Conditioning):
    steps: int | None = option(None, "reverse-process steps on the model's grid (default: the model's)", lo=1, hi=MAX_T)
    jump: int | None = option(None, "RePaint jump length, levels it goes back up (default: the model's)", lo=1,
                              hi=MAX_T)  # fmt: skip
    resample: int | None = option(None, "RePaint resamplings per jump, 1 = none (default: the model's)", lo=1,
                                  hi=MAX_T)  # fmt: skip
    infer_label: bool | None = option(None, "conditional models without a label: fill once per class and keep the "
                                      "fill whose class best explains the known pixels (10x the work; default: the "
                                      "model's)")  # fmt: skip

    def check(self) -> None:
        if None in (self.steps, self.jump, self.resample):  # inpaint_batch checks again with the model's defaults in
            return
        if self.resample > 1 and self.jump >= self.steps:
            raise ConvgenError(f"`jump` {self.jump} must be smaller than `steps` {self.steps} for `resample` "
                               f"{self.resample} to do anything (lower `jump`, or set `resample` 1)")  # fmt: skip


@dataclass
class DiffusionDenoiseOptions(_Conditioning):
    sigma: float | None = option(None, "noise standard deviation on the 0-255 scale (default: estimated from the "
                                 "image)", gt=0, hi=255)  # fmt: skip
    steps: int | None = option(None, "DDIM steps from the noise level down (default: the model's)", lo=1, hi=MAX_T)


#: images per network batch: on a CPU the time per image grows with the batch (cache), 2x from 64 to 1,000
NET_BATCH = 32


@PIPELINES.register("diffusion")
class DiffusionPipeline(Sampler, RestorePipeline):
    """A trained diffusion U-Net (the EMA weights when saved)."""

    restores = ("inpaint", "denoise")
    restore_options = {"inpaint": RepaintOptions, "denoise": DiffusionDenoiseOptions}
    sample_options = DiffusionSampleOptions
    walk_options = DiffusionWalkOptions
    verb_help = {
        "inpaint": "fill missing regions given by --mask (255 = missing) by reverse diffusion (RePaint)",
        "denoise": "remove noise of level --sigma (0-255; estimated when not given) by entering the reverse process "
        "at that noise level",
    }

    def select_networks(self, saved) -> tuple[str, ...]:
        return ("unet_ema",) if saved.has("unet_ema") else ("unet",)

    @property
    def net(self) -> torch.nn.Module:
        return self.models[self.networks[0]]

    @functools.cached_property
    def schedule(self) -> NoiseSchedule:
        return NoiseSchedule.make(self.cfg.task.schedule, self.cfg.task.timesteps)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        m = self.cfg.model
        return m.channels, m.image_size, m.image_size

    @property
    def defaults(self) -> dict[str, float]:
        """The default sampler: ``meta.json`` ``inference`` (steps, guidance, eta), else the training config's."""
        t = self.cfg.task
        return {"steps": t.sample_steps, "guidance": t.guidance, "eta": t.eta, **self.meta.get("inference", {})}

    @property
    def repaint_defaults(self) -> dict[str, Any]:
        """RePaint's steps, jump and resamplings: ``meta.json`` ``repaint``, else :data:`REPAINT_DEFAULTS`."""
        return {**REPAINT_DEFAULTS, **self.meta.get("repaint", {})}

    @property
    def folded(self) -> bool:
        """A guidance-distilled student: the guidance scale is a network input (one pass per step)."""
        return bool(getattr(self.cfg.model, "guidance_input", False))

    def grid(self, steps: int) -> list[int]:
        """The timesteps of a ``steps``-step sampler: a distilled model's own grid at its own count, else the even
        DDIM grid."""
        return step_grid(self.schedule.T, steps, self.meta.get("distilled", {}).get("timesteps"))

    # -- the network ----------------------------------------------------------------------------------------------
    def _net(
        self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None, guidance: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x.to(self.device).contiguous(memory_format=torch.channels_last)
        y = None if labels is None else labels.to(self.device)
        if self.folded:
            return self.net(x, t.to(self.device), y, guidance)
        return self.net(x, t.to(self.device), y)

    def predictor(self, labels: torch.Tensor | None, guidance: float):
        null = self.num_classes if self.num_classes else None
        return guided_predictor(self._net, self.schedule, self.cfg.task.prediction, labels, guidance, null,
                                folded=self.folded)  # fmt: skip

    def limits(self, declared) -> dict[str, dict]:
        """Steps, jumps and resamplings up to the model's own number of timesteps."""
        return {k: {"hi": self.schedule.T} for k in ("steps", "jump", "resample")}

    def option_defaults(self, declared) -> dict[str, float]:
        d = self.defaults
        if declared is DiffusionSampleOptions:
            return dict(d)
        if declared is DiffusionWalkOptions:
            return {"guidance": d["guidance"]}
        if declared is RepaintOptions:
            return self.repaint_defaults
        return {"steps": d["steps"]} if declared is DiffusionDenoiseOptions else {}

    def sampler_options(self, steps=None, guidance=None, eta=None) -> tuple[int, float, float]:
        """(steps, guidance, eta) with the model's defaults filled in (the values were checked against
        :class:`DiffusionSampleOptions`)."""
        if guidance is not None and not self.num_classes:
            raise ConvgenError(f"{self.name} is an unconditional model; `guidance` needs a conditional one")
        d = self.defaults
        steps = int(d["steps"] if steps is None else steps)
        guidance = float(d["guidance"] if guidance is None else guidance)
        eta = float(d["eta"] if eta is None else eta)
        return steps, guidance, eta

    # -- sampling -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_images(self, n, seed, labels, batch_size, steps=None, guidance=None, eta=None):
        """DDIM with ``steps`` steps (``steps`` = T with ``eta`` = 1 is DDPM's ancestral sampler), guidance scale
        ``guidance``; defaults: :attr:`defaults`. Image ``i`` has its own noise generator from (seed, i)."""
        steps, guidance, eta = self.sampler_options(steps, guidance, eta)
        null = self.num_classes if self.num_classes else None
        with tqdm(total=n * steps, desc="sample", unit="img-step", file=sys.stderr, disable=n * steps < 2000) as bar:
            return generate(self._net, self.schedule, self.cfg.task.prediction, self.image_shape, n, seed, labels,
                            steps, guidance, eta, min(batch_size, NET_BATCH), null, self.device, progress=bar,
                            timesteps=self.grid(steps), folded=self.folded)  # fmt: skip

    @torch.no_grad()
    def walk(self, steps, rows, seed, mode, classes, label, guidance=None):
        """DDIM latent interpolation (Song et al. 2021): deterministic DDIM (eta 0) from noise images interpolated
        between two draws; with ``classes`` (A, B), one noise image and the conditional prediction blended from
        class A's to class B's (guidance applied to the blend)."""
        n_steps, guidance, _ = self.sampler_options(guidance=guidance)
        t = torch.linspace(0, 1, steps)
        ends = ImageNoise(image_seeds(seed, 0, 2 * rows)).initial(self.image_shape)
        flat = ends.reshape(2 * rows, -1)
        if classes is not None:
            x = flat[:rows].repeat_interleave(steps, 0).reshape(rows * steps, *self.image_shape)
            w = t.repeat(rows).to(self.device)[:, None, None, None]
            a, b = (torch.full((rows * steps,), c) for c in classes)
            null = torch.full((rows * steps,), self.num_classes)

            def predict(xt: torch.Tensor, step: int):
                tb = torch.full((len(xt),), step, dtype=torch.long)
                if self.folded:  # blending the guided outputs is the same blend, guided
                    scale = torch.full((len(xt),), guidance)
                    out = (1 - w) * self._net(xt, tb, a, scale) + w * self._net(xt, tb, b, scale)
                    return self.schedule.split(self.cfg.task.prediction, xt, out.float(), tb)
                out = (1 - w) * self._net(xt, tb, a) + w * self._net(xt, tb, b)
                if guidance != 1:
                    uncond = self._net(xt, tb, null)
                    out = uncond + guidance * (out - uncond)
                return self.schedule.split(self.cfg.task.prediction, xt, out.float(), tb)

        else:
            f = slerp if mode == "slerp" else lerp
            x = f(flat[:rows], flat[rows:], t).transpose(0, 1).reshape(rows * steps, *self.image_shape)
            labels = None
            if self.num_classes:
                per_row = torch.full((rows,), label) if label is not None else torch.arange(rows) % self.num_classes
                labels = per_row.repeat_interleave(steps)
            predict = self.predictor(labels, guidance)
        total = len(x) * n_steps
        with tqdm(total=total, desc="interpolate", unit="img-step", file=sys.stderr, disable=total < 2000) as bar:
            x = ddim_sample(predict, x.to(self.device), self.schedule, n_steps, 0.0, None, self.grid(n_steps), bar)
        return to_unit(x)

    # -- restoration ----------------------------------------------------------------------------------------------
    def prepare(self, image: np.ndarray, name: str = "image") -> torch.Tensor:
        """One H x W (x C) image in [0, 1] as a 1 x C x H x W tensor in [0, 1], its channels and size checked."""
        arr = convert_channels(as_float_image(image, name), self.image_shape[0], name)
        h, w = arr.shape[:2]
        if max(h, w) > MAX_SIDE or min(h, w) < 4:
            raise ImageError(f"{name}: {w}x{h} pixels; a diffusion model restores images of 4 to {MAX_SIDE} px a side")
        return torch.from_numpy(arr).permute(2, 0, 1)[None]

    @torch.no_grad()
    def restore_image(self, image, mask=None, name="image", verb="inpaint", **options) -> np.ndarray:
        """Inpaint (``mask`` given: True/1 = missing) or denoise one H x W (x C) image in [0, 1]; returns float32
        H x W x C. Inpainting keeps every known pixel exactly; ``label`` conditions on a class (default: none,
        the unconditional model). Deterministic for a given ``seed``."""
        return self.restore_batch([image], [mask], [name], verb, **options)[0]

    file_batch = 64  # restore_files runs up to this many same-size files as one batch

    @torch.no_grad()
    def restore_batch(self, images, masks, names, verb, **options) -> list[np.ndarray]:
        """Same-size files (and, for blind denoising, the same estimated sigma) as one batch; every file draws the
        noise a single :meth:`restore` call would, so batching does not change its result. The options were
        checked by the caller (:meth:`restore`, :meth:`restore_files`)."""
        sigma = options.get("sigma")
        seed, steps, label = options.get("seed", 0), options.get("steps"), options.get("label")
        jump, resample, infer = options.get("jump"), options.get("resample"), options.get("infer_label")
        xs = [self.prepare(a, n) for a, n in zip(images, names, strict=True)]
        sigmas = [sigma if sigma is not None or verb == "inpaint" else estimate_sigma(a) for a in images]
        groups: dict[tuple, list[int]] = {}
        for i, (x, s) in enumerate(zip(xs, sigmas, strict=True)):
            groups.setdefault((tuple(x.shape), s), []).append(i)
        out: list[np.ndarray | None] = [None] * len(xs)
        for (_, s), idx in groups.items():
            x = torch.cat([xs[i] for i in idx])
            labels = None if label is None else [label] * len(idx)
            if verb == "inpaint":
                m = torch.stack([torch.from_numpy(np.asarray(masks[i], np.float32))[None] for i in idx])
                if m.shape[-2:] != x.shape[-2:]:
                    raise ImageError(f"{names[idx[0]]}: the mask is not the image's size")
                res = self.inpaint_batch(x, m, seed, steps, jump, resample, labels, same_noise=True, infer_label=infer)
            else:
                res = self.denoise_batch(x, s, seed, steps, labels)
            for j, i in enumerate(idx):
                out[i] = res[j].permute(1, 2, 0).numpy()
        return out

    def _restore_labels(self, labels, n: int) -> torch.Tensor | None:
        if labels is None:
            return None
        y = torch.tensor([self.class_index(c) for c in labels])
        if len(y) != n:
            raise ConvgenError(f"{len(y)} labels for {n} images")
        return y

    def _batches(self, n: int, batch_size: int, cost: int, desc: str):
        check_batch_size(batch_size)
        bar = tqdm(total=n * cost, desc=desc, unit="img-step", file=sys.stderr, disable=n * cost < 5000)
        return range(0, n, batch_size), bar

    @torch.no_grad()
    def inpaint_batch(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        seed: int = 0,
        steps: int | None = None,
        jump: int | None = None,
        resample: int | None = None,
        labels=None,
        batch_size: int = NET_BATCH,
        same_noise: bool = False,
        infer_label: bool | None = None,
    ) -> torch.Tensor:
        """Fill a B x C x H x W batch in [0, 1] where ``masks`` (B x 1 x H x W) is 1, by RePaint on the DDIM grid
        (defaults: :class:`RepaintOptions`); known pixels are returned exactly. Without ``labels`` the
        unconditional model fills (guidance 0); with them, the conditional one. Image ``i`` draws its noise from
        (seed, i); with ``same_noise`` every image draws image 0's (as one image restored alone does)."""
        given = {k: v for k, v in (("steps", steps), ("jump", jump), ("resample", resample),
                                   ("infer_label", infer_label)) if v is not None}  # fmt: skip
        checked = self.checked(RepaintOptions, {**self.repaint_defaults, **given, "seed": seed}, "inpaint")
        opts = {k: checked[k] for k in REPAINT_DEFAULTS}
        infer = opts.pop("infer_label") and labels is None and bool(self.num_classes)
        y = self._restore_labels(labels, len(images))
        images = images.float()
        masks = masks.float().expand(len(images), 1, *images.shape[-2:])
        fills = self.num_classes if infer else 1
        starts, bar = self._batches(len(images), batch_size, fills * repaint_cost(**opts), "inpaint")
        out = []
        for i in starts:
            x, m = images[i : i + batch_size], masks[i : i + batch_size]
            seeds = image_seeds(seed, 0, 1) * len(x) if same_noise else image_seeds(seed, i, len(x))
            keep = (1 - m).to(self.device)
            known = (x * 2 - 1).to(self.device)

            def fill(yi: torch.Tensor | None, seeds=seeds, keep=keep, known=known) -> torch.Tensor:
                return repaint_sample(self.predictor(yi, 0.0 if yi is None else 1.0), known, keep, self.schedule,
                                      ImageNoise(seeds), progress=bar, timesteps=self.grid(opts["steps"]),
                                      **opts)  # fmt: skip

            if infer:  # one fill per class; keep the one whose class best explains the known pixels
                every = torch.stack([fill(torch.full((len(x),), c)) for c in range(self.num_classes)])
                errors = self._known_pixel_errors(every, keep, seeds)
                filled = every[errors.argmin(0), torch.arange(len(x))]
            else:
                filled = fill(None if y is None else y[i : i + batch_size])
            out.append(torch.where(m.bool(), to_unit(filled), x))
        bar.close()
        return torch.cat(out)

    def _known_pixel_errors(self, fills: torch.Tensor, keep: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """K x B errors of :func:`~convgen.diffusion.samplers.known_pixel_errors` at ten levels (5% .. 95% of T),
        the conditional model's noise prediction, noise drawn from the images' own seeds (shifted)."""
        T = self.schedule.T
        levels = sorted({min(T - 1, int(T * (0.05 + 0.1 * i))) for i in range(10)})

        def conditional(labels: torch.Tensor):  # guidance 1: the plain conditional model; eps not re-clipped
            return guided_predictor(self._net, self.schedule, self.cfg.task.prediction, labels, 1.0,
                                    self.num_classes, clip=False, folded=self.folded)  # fmt: skip

        noise = ImageNoise([s + 1 for s in seeds])
        return known_pixel_errors(conditional, fills, keep, self.schedule, levels, noise)

    @torch.no_grad()
    def denoise_batch(
        self, images: torch.Tensor, sigma: float, seed: int = 0, steps: int | None = None, labels=None,
        batch_size: int = NET_BATCH,
    ) -> torch.Tensor:  # fmt: skip
        """Denoise a B x C x H x W batch in [0, 1] with noise of standard deviation ``sigma`` (0-255 scale):
        deterministic DDIM from the timestep whose noise level is ``sigma`` (``steps``: at most the model's
        default)."""
        self.checked(DiffusionDenoiseOptions, {"sigma": sigma, "steps": steps, "seed": seed}, "denoise")
        y = self._restore_labels(labels, len(images))
        steps = int(self.defaults["steps"] if steps is None else steps)
        starts, bar = self._batches(len(images), batch_size, steps, "denoise")
        out = []
        for i in starts:
            x = images[i : i + batch_size].float()
            yi = None if y is None else y[i : i + batch_size]
            predict = self.predictor(yi, 0.0 if yi is None else 1.0)
            den = denoise_from(predict, (x * 2 - 1).to(self.device), self.schedule, 2 * sigma / 255, steps, bar)
            out.append(to_unit(den))
        bar.close()
        return torch.cat(out)

    def inpaint(self, image: np.ndarray, mask: np.ndarray, **options) -> np.ndarray:
        return self.restore(image, mask, verb="inpaint", **options)

    def denoise(self, image: np.ndarray, sigma: float | None = None, **options) -> np.ndarray:
        return self.restore(image, verb="denoise", sigma=sigma, **options)


def estimate_sigma(image: np.ndarray) -> float:
    """The noise level (0-255 scale) of an image in [0, 1] by the wavelet median-absolute-deviation estimate
    (:func:`convgen.classical.noise.estimate_sigma`, scikit-image's, without needing scikit-image)."""
    return max(255 * wavelet_sigma(image), 0.5)
