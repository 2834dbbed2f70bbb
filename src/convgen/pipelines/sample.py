"""Sampling from a trained generator, and controllable generation: classes, latent and class interpolation.

:class:`Sampler` is the one API every generator family serves (GANs now; VAEs and diffusion models subclass it
too): ``sample(n, seed, classes=...)``, ``sample_per_class(k, seed)``, ``interpolate(...)`` and ``save_samples``.
A family implements :meth:`Sampler.generate_images` (and :meth:`Sampler.walk` for interpolation); the checks,
class handling, file naming and seeding rules live here once. Image ``i`` of a seed is the same whatever the
batch size or device batching.

``convgen.load("mnist-dcgan")`` returns a :class:`GANSampler`; it uses the EMA generator when the model has one.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from convgen.errors import ConvgenError
from convgen.io.images import write_image
from convgen.models.gan import generate, latents, truncate
from convgen.options import Options, option
from convgen.pipelines.base import CallNet, Explainable, Pipeline, check_batch_size, check_target
from convgen.registry import PIPELINES


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of ``a`` and ``b`` at fractions ``t`` (shape T) -> T x B x D."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(-1).clamp(-1 + 1e-7, 1 - 1e-7))  # B
    so = torch.sin(omega)
    t = t[:, None, None]
    out = (torch.sin((1 - t) * omega[None, :, None]) * a + torch.sin(t * omega[None, :, None]) * b) / so[None, :, None]
    near = (omega < 1e-4)[None, :, None]
    return torch.where(near, (1 - t) * a + t * b, out)


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t = t[:, None, None]
    return (1 - t) * a + t * b


def _check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConvgenError(f"{out} already exists and is not an empty directory; choose another `out`")


class Sampler(Pipeline):
    """Generators of every family: unconditional, or conditional on ``num_classes`` classes.

    A family declares the options of its sampler (``sample_options``) and of its interpolation (``walk_options``)
    as :class:`~convgen.options.Options` dataclasses; ``convgen sample`` / ``convgen interpolate`` flags, the web
    app's form fields and the checks of :meth:`sample` come from them, and the checked values reach
    :meth:`generate_images` / :meth:`walk` as keyword arguments."""

    sample_options: type[Options] = Options
    walk_options: type[Options] = Options

    @property
    def num_classes(self) -> int:
        return int(getattr(self.cfg.model, "num_classes", 0))

    def class_index(self, name: str | int) -> int:
        """A class given by index or by name."""
        if not self.num_classes:
            raise ConvgenError(f"{self.model_dir} is an unconditional model; it cannot generate a chosen class")
        names = self.class_names
        if str(name) in names:
            return names.index(str(name))
        try:
            idx = int(name)
        except ValueError:
            raise ConvgenError(f"unknown class {name!r} (classes: {', '.join(names)})") from None
        if not 0 <= idx < self.num_classes:
            raise ConvgenError(f"class {idx} is out of range (0..{self.num_classes - 1})")
        return idx

    def generate_images(
        self, n: int, seed: int, labels: torch.Tensor | None, batch_size: int, **options
    ) -> torch.Tensor:
        """``n`` images in [0, 1] (CPU float32, B x C x H x W) from ``seed``, image ``i`` of class ``labels[i]``;
        ``options``: the checked fields of :attr:`sample_options` (e.g. a VAE's ``sampler``)."""
        raise NotImplementedError

    def walk(self, steps: int, rows: int, seed: int, mode: str, classes, label, **options) -> torch.Tensor:
        """The images of :meth:`interpolate` (arguments already checked; ``options``: :attr:`walk_options`)."""
        raise NotImplementedError

    def checked_sample_options(self, options: dict) -> dict:
        """``options`` checked against :attr:`sample_options` (defaults filled in)."""
        return self.checked(self.sample_options, options, "sampling")

    def sample(
        self, n: int, seed: int = 0, classes: list[int] | None = None, batch_size: int = 500, **options
    ) -> torch.Tensor:
        """``n`` images from ``seed``; conditional models cycle through ``classes`` (default: all)."""
        _check_request(n, seed, batch_size)
        labels = None
        if self.num_classes:
            pool = torch.tensor([self.class_index(c) for c in classes] if classes else list(range(self.num_classes)))
            labels = pool[torch.arange(n) % len(pool)]
        elif classes:
            self.class_index(classes[0])  # the unconditional model's error
        return self.generate_images(n, seed, labels, batch_size, **self.checked_sample_options(options))

    def sample_per_class(self, k: int, seed: int = 0, batch_size: int = 500, **options) -> dict[int, torch.Tensor]:
        """``k`` images of every class; class ``c`` is images ``c*k .. c*k+k-1`` of the seed."""
        if not self.num_classes:
            raise ConvgenError(f"{self.model_dir} is an unconditional model; `per_class` needs a conditional one")
        if k < 1:
            raise ConvgenError(f"`per_class` must be >= 1, got {k}")
        _check_request(k * self.num_classes, seed, batch_size)
        labels = torch.arange(self.num_classes).repeat_interleave(k)
        images = self.generate_images(k * self.num_classes, seed, labels, batch_size,
                                      **self.checked_sample_options(options))  # fmt: skip
        return {c: images[c * k : (c + 1) * k] for c in range(self.num_classes)}

    def save_samples(
        self,
        out: str | Path,
        n: int | None = None,
        per_class: int | None = None,
        seed: int = 0,
        classes: list[int] | None = None,
        batch_size: int = 500,
        grid: str | Path | None = None,
        overwrite: bool = False,
        provenance: bool = True,
        **options,
    ) -> int:
        """Write ``out/00000.png ...`` (``n`` samples) or ``out/<class>/00000.png ...`` (``per_class``), and with
        ``grid`` a preview grid PNG (up to 100 samples, or 10 per class). ``out`` must be new or empty; an existing
        ``grid`` file is replaced only with ``overwrite``. Every image records that it was generated (XMP + C2PA)
        unless ``provenance`` is False."""
        from convgen.io.atomic import refuse_existing
        from convgen.viz.grid import save_grid

        out = Path(out)
        if (n is None) == (per_class is None):
            raise ConvgenError("give exactly one of `n` and `per_class`")
        if classes and per_class is not None:
            raise ConvgenError("`class` and `per_class` cannot be combined")
        self.checked_sample_options(options)  # before anything is written
        _check_out_dir(out)
        if grid is not None:
            refuse_existing([grid], overwrite)
        record = self.provenance("sample") if provenance else None
        if per_class is not None:
            groups = self.sample_per_class(per_class, seed, batch_size, **options)
            for c, images in groups.items():
                _write_all(images, out / _safe_dir(self.class_names[c]), record)
            if grid is not None:
                k = min(per_class, 10)
                save_grid(torch.cat([images[:k] for images in groups.values()]), grid, nrow=k, provenance=record)
            return per_class * len(groups)
        images = self.sample(n, seed, classes, batch_size, **options)
        _write_all(images, out, record)
        if grid is not None:
            save_grid(images[:100], grid, provenance=record)
        return n

    def interpolate(
        self,
        steps: int = 10,
        rows: int = 4,
        seed: int = 0,
        mode: str = "slerp",
        classes: tuple[int, int] | None = None,
        label: int | None = None,
        **options,
    ) -> torch.Tensor:
        """A rows x steps grid, row-major (rows * steps, C, H, W): each row walks between two latents (``mode``
        slerp or lerp) or, with ``classes`` (A, B), from class A to class B at a fixed latent. ``label`` fixes the
        class of a latent walk in a conditional model (default: row ``r`` uses class ``r``); ``options``: the
        family's :attr:`walk_options`."""
        if steps < 2:
            raise ConvgenError(f"`steps` must be >= 2, got {steps}")
        if rows < 1:
            raise ConvgenError(f"`rows` must be >= 1, got {rows}")
        if mode not in ("slerp", "lerp"):
            raise ConvgenError(f"`mode` must be slerp or lerp, got {mode!r}")
        _check_request(2 * rows * steps, seed, 1)
        if classes is not None:
            if not self.num_classes:
                raise ConvgenError("class interpolation needs a conditional model")
            classes = (self.class_index(classes[0]), self.class_index(classes[1]))
        if label is not None:
            label = self.class_index(label)
        checked = self.checked(self.walk_options, options, "interpolation")
        return self.walk(steps, rows, seed, mode, classes, label, **checked)


def _truncation(verb: str) -> float | None:
    return option(None, f"truncation trick{verb}: every latent coordinate drawn from N(0, 1) restricted to [-t, t] "
                  "(smaller: more typical pictures, less variety; 0: none; default: the model's, see its card)",
                  lo=0, hi=10)  # fmt: skip


@dataclass
class GANSampleOptions(Options):
    truncation: float | None = _truncation("")


@dataclass
class GANWalkOptions(Options):
    truncation: float | None = _truncation(" at both ends of every walk")


@PIPELINES.register("gan")
class GANSampler(Sampler):
    """A DCGAN generator (the EMA one when saved). Its default truncation is ``meta.json`` ``inference``
    ``truncation`` (none when absent)."""

    sample_options = GANSampleOptions
    walk_options = GANWalkOptions

    def select_networks(self, saved) -> tuple[str, ...]:
        return ("generator_ema",) if saved.has("generator_ema") else ("generator",)

    @property
    def generator(self) -> torch.nn.Module:
        return self.models[self.networks[0]]

    @property
    def z_dim(self) -> int:
        return self.cfg.model.z_dim

    @property
    def default_truncation(self) -> float:
        """The model's ``meta.json`` ``inference.truncation`` (set for zoo models whose card was measured with it),
        else 0 (none)."""
        return float(self.meta.get("inference", {}).get("truncation", 0))

    def option_defaults(self, declared) -> dict[str, Any]:
        return {"truncation": self.default_truncation}

    def latents(self, n: int, seed: int, truncation: float | None = None) -> torch.Tensor:
        """``n`` latents of ``seed``, truncated at ``truncation`` (None: :attr:`default_truncation`)."""
        if n < 1:
            raise ConvgenError("the number of samples must be >= 1")
        t = self.default_truncation if truncation is None else truncation
        return truncate(latents(n, self.z_dim, seed), t, keep=1 if getattr(self.generator, "clusters", 0) else 0)

    @torch.no_grad()
    def generate(
        self, z: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 500, embedding=None
    ) -> torch.Tensor:
        """Images in [0, 1] (CPU float32, B x C x H x W) for latents ``z`` (and class labels or embeddings)."""
        if self.num_classes and labels is None and embedding is None:
            raise ConvgenError("this model is class-conditional: give class labels (e.g. `per_class` or `class`)")
        labels = labels if self.num_classes else None
        with tqdm(total=len(z), desc="sample", unit="img", file=sys.stderr, disable=len(z) < 5000) as bar:
            return generate(self.generator, z, labels, embedding, batch_size, self.device, progress=bar)

    def generate_images(self, n, seed, labels, batch_size, truncation=None):
        return self.generate(self.latents(n, seed, truncation), labels, batch_size)

    def explainable(self, target: int | None = None) -> Explainable:
        """The discriminator of a GAN checkpoint (training run or checkpoint directory): CAMs of its "real" logit
        over images in [-1, 1]; a class-conditional one is explained for class ``target``."""
        from convgen.data.transforms import resize_arrays
        from convgen.io.images import read_image

        m = self.cfg.model
        if not self.saved.has("discriminator"):
            raise ConvgenError(f"{self.name} holds no discriminator (explain a GAN's training run or checkpoint)")
        if m.d_pack > 1:
            raise ConvgenError(f"this discriminator judges packs of {m.d_pack} images (PacGAN), not single images")
        if m.clusters:
            raise ConvgenError("this discriminator is conditioned on unsupervised clusters (self-conditioned GAN); "
                               "explain its generator's samples with a classifier instead")  # fmt: skip
        if m.num_classes and target is None:
            raise ConvgenError("this discriminator is class-conditional: give `target` CLASS")
        check_target(target, m.num_classes, "this discriminator")
        disc = self.saved.network("discriminator")
        labels = None if target is None else torch.tensor([target])

        def prepare(paths):
            arrays = [read_image(p, channels=m.channels) for p in paths]
            return resize_arrays(arrays, m.image_size).clamp(0, 1) * 2 - 1

        def run(x):
            return disc(x, None if labels is None else labels.expand(len(x)))

        @torch.no_grad()
        def extra(x):
            return {"realness_logits": [round(v, 4) for v in run(x).tolist()]}

        return Explainable(CallNet(disc, run), prepare, lambda logits: logits, "discriminator", extra,
                           lambda x: (x + 1) / 2)  # fmt: skip

    def walk(self, steps, rows, seed, mode, classes, label, truncation=None):
        """Latent walks; a self-conditioned model (``model.clusters``) also walks from one end's cluster embedding
        to the other's, so the row changes smoothly instead of jumping where the latent crosses into another
        cluster; with ``classes``, a walk between two class embeddings."""
        t = torch.linspace(0, 1, steps)
        z = self.latents(2 * rows, seed, truncation)

        def embedding_walk(start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
            """Row-major (rows * steps) embeddings from class/cluster ids ``start`` to ``end`` (rows each)."""
            emb = self.generator.embed.weight.detach().float().cpu()
            return lerp(emb[start], emb[end], t).transpose(0, 1).reshape(rows * steps, -1)

        if classes is not None:
            path = embedding_walk(torch.full((rows,), classes[0]), torch.full((rows,), classes[1]))
            return self.generate(z[:rows].repeat_interleave(steps, 0), embedding=path)
        f = slerp if mode == "slerp" else lerp
        zz = f(z[:rows], z[rows:], t).transpose(0, 1).reshape(rows * steps, -1)
        if getattr(self.generator, "clusters", 0):
            ends = [self.generator.cluster_of(z[i : i + rows].to(self.device)).cpu() for i in (0, rows)]
            return self.generate(zz, embedding=embedding_walk(*ends))
        labels = None
        if self.num_classes:
            per_row = torch.full((rows,), label) if label is not None else torch.arange(rows) % self.num_classes
            labels = per_row.repeat_interleave(steps)
        return self.generate(zz, labels)


MAX_SAMPLES = 10_000_000  # latents are drawn in one block per seed; more would not fit in memory


def _check_request(n: int, seed: int, batch_size: int) -> None:
    if n < 1:
        raise ConvgenError(f"the number of samples `n` must be >= 1, got {n}")
    if n > MAX_SAMPLES:
        raise ConvgenError(f"`n` {n} is more than {MAX_SAMPLES:,} samples at once; sample in several runs (seeds)")
    if not -(2**63) <= seed < 2**63:
        raise ConvgenError(f"`seed` {seed} does not fit in 64 bits")
    check_batch_size(batch_size)


def _safe_dir(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "_"


def _write_all(images: torch.Tensor, folder: Path, provenance=None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        write_image(folder / f"{i:05d}.png", img.permute(1, 2, 0).numpy(), provenance=provenance)


def save_interpolation(
    images: torch.Tensor,
    steps: int,
    strip: str | Path,
    gif: str | Path | None = None,
    overwrite: bool = False,
    provenance=None,
) -> None:
    """Write the rows x steps grid as a PNG strip and, optionally, an animated GIF that walks there and back
    (existing files only with ``overwrite``). The strip carries ``provenance`` (XMP + C2PA); a GIF holds no XMP
    and is not signed."""
    from PIL import Image

    from convgen.io.atomic import atomic_write, refuse_existing
    from convgen.io.images import to_uint8
    from convgen.viz.grid import make_grid, save_grid

    refuse_existing([strip] + ([gif] if gif is not None else []), overwrite)
    save_grid(images, strip, nrow=steps, provenance=provenance)
    if gif is None:
        return
    rows = len(images) // steps
    grid = images.reshape(rows, steps, *images.shape[1:])
    frames = []
    for j in [*range(steps), *range(steps - 2, 0, -1)]:
        frame = make_grid(grid[:, j], nrow=max(1, int(math.ceil(math.sqrt(rows)))))
        arr = to_uint8(np.asarray(frame))
        scale = max(1, 256 // max(arr.shape[0], 1))
        img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
        frames.append(img.resize((img.width * scale, img.height * scale), Image.NEAREST))
    atomic_write(
        gif, lambda p: frames[0].save(p, format="GIF", save_all=True, append_images=frames[1:], duration=90, loop=0)
    )
