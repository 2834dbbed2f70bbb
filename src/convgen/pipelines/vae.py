"""Saved (variational) autoencoders: sampling through the Sampler API, reconstruction, held-out likelihoods.

``convgen.load("mnist-vae")`` returns a :class:`VAEPipeline`. Samples and reconstructions are decoder means.
:meth:`VAEPipeline.likelihood` estimates the negative ELBO and the importance-weighted NLL (Burda et al. 2016)
of held-out images with ``k`` posterior samples each; the IWAE estimate is computed from the same samples as
the ELBO estimate and is never above it.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from convgen.errors import ConvgenError, ImageError
from convgen.io.images import read_image, resolve_inputs
from convgen.losses.likelihood import EVAL_BINARIZE_SEED, binarize, bits_per_dim, iwae_nll, log_weights
from convgen.models.autoencoders import decode_means, prior_latents
from convgen.options import Options, option
from convgen.pipelines.restore import RestorePipeline, as_float_image
from convgen.pipelines.sample import Sampler, lerp, slerp
from convgen.registry import PIPELINES


@dataclass
class VAESampleOptions(Options):
    sampler: Literal["prior", "gmm"] | None = option(None, "latents from the prior N(0, I) or from the ex-post "
                                                     "Gaussian mixture (default: the model's)")  # fmt: skip


@dataclass
class ReconstructOptions(Options):
    label: str | None = option(None, "the images' class (name or index; conditional models)")


@dataclass
class TraverseOptions(Options):
    dims: tuple[int, ...] | None = option(None, "latent dimensions, one per row (default: the 8 the encoder uses "
                                          "most)", lo=0)  # fmt: skip
    span: float = option(3.0, "each row runs from -span to +span prior standard deviations", gt=0, hi=100)
    steps: int = option(9, "values per row", lo=2, hi=100)
    seed: int = option(0, "the prior sample traversed when no input image is given", lo=-(2**63), hi=2**63 - 1)


@dataclass
class EditOptions(Options):
    steps: int = option(6, "images in the row: the reconstruction, then each step", lo=1, hi=100)
    strength: float = option(1.0, "the share of the class difference at the last step (negative: away from it)",
                             lo=-10, hi=10)  # fmt: skip


@PIPELINES.register("vae")
class VAEPipeline(Sampler, RestorePipeline):
    networks = ("vae",)
    restores = ("reconstruct",)
    restore_options = {"reconstruct": ReconstructOptions}
    provenance_kinds = {"reconstruct": "generated"}  # the decoder's picture of the code, not the input restored
    sample_options = VAESampleOptions
    traverse_options = TraverseOptions
    edit_options = EditOptions
    verb_help = {"reconstruct": "encode and decode images with an autoencoder (the decoder's mean)"}

    @property
    def net(self) -> torch.nn.Module:
        return self.models["vae"]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        m = self.cfg.model
        return m.channels, m.image_size, m.image_size

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None, embedding=None, batch_size: int = 500):
        """Decoder means in [0, 1] (CPU float32) for latents ``z``."""
        return decode_means(self.net, z, labels, embedding, batch_size, self.device)

    def latents(self, n: int, seed: int) -> torch.Tensor:
        return prior_latents(n, self.net.latent_dim, seed)

    def select_networks(self, saved) -> tuple[str, ...]:
        return ("vae", "gmm") if saved.has("gmm") else ("vae",)

    @property
    def default_sampler(self) -> str:
        """The model's ``meta.json`` ``inference.sampler`` (set for zoo models whose card was measured with it),
        else ``prior``."""
        return str(self.meta.get("inference", {}).get("sampler", "prior"))

    def option_defaults(self, declared) -> dict[str, Any]:
        return {"sampler": self.default_sampler} if declared is VAESampleOptions else {}

    def generate_images(self, n, seed, labels, batch_size, sampler: str | None = None):
        """Decoder means of latents drawn from the prior N(0, I) (``sampler="prior"``) or from the ex-post
        Gaussian mixture fitted to the training images' codes (``"gmm"``, Ghosh et al. 2020); default
        :attr:`default_sampler`."""
        sampler = self.default_sampler if sampler is None else sampler
        if not self.net.variational:
            raise ConvgenError(f"{self.model_dir} is a plain autoencoder: it has no prior to sample from")
        if sampler == "gmm":
            if "gmm" not in self.models:
                raise ConvgenError(f"{self.model_dir} has no ex-post sampler (gmm.safetensors); use `sampler` prior")
            z = self.models["gmm"].sample(n, torch.Generator().manual_seed(seed), labels)
        elif sampler == "prior":
            z = self.latents(n, seed)
        else:
            raise ConvgenError(f"`sampler` must be prior or gmm, got {sampler!r}")
        return self.decode(z, labels, batch_size=batch_size)

    def walk(self, steps, rows, seed, mode, classes, label):
        t = torch.linspace(0, 1, steps)
        z = self.latents(2 * rows, seed)
        if classes is not None:
            emb = self.net.embed.weight.detach().float().cpu()
            path = lerp(emb[[classes[0]] * rows], emb[[classes[1]] * rows], t).transpose(0, 1).reshape(rows * steps, -1)
            return self.decode(z[:rows].repeat_interleave(steps, 0), embedding=path)
        f = slerp if mode == "slerp" else lerp
        zz = f(z[:rows], z[rows:], t).transpose(0, 1).reshape(rows * steps, -1)
        labels = None
        if self.num_classes:
            per_row = torch.full((rows,), label) if label is not None else torch.arange(rows) % self.num_classes
            labels = per_row.repeat_interleave(steps)
        return self.decode(zz, labels)

    # -- images in ------------------------------------------------------------------------------------------------
    def prepare(self, image: np.ndarray, name: str = "image") -> torch.Tensor:
        """One H x W (x C) image as a 1 x C x S x S tensor; its size and channels must be the model's."""
        arr = as_float_image(image, name)
        c, h, w = self.image_shape
        if arr.shape[:2] != (h, w):
            raise ImageError(f"{name}: {arr.shape[1]}x{arr.shape[0]} pixels; this model takes {w}x{h} images")
        if arr.shape[-1] != c:
            raise ImageError(f"{name}: {arr.shape[-1]} channel(s); this model takes {c}")
        return torch.from_numpy(arr).permute(2, 0, 1)[None]

    def _labels(self, labels, n: int) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        if labels is None:
            raise ConvgenError(f"{self.name} is class-conditional: give the images' class")
        y = torch.as_tensor([self.class_index(c) for c in labels] if not torch.is_tensor(labels) else labels)
        if len(y) != n:
            raise ConvgenError(f"{len(y)} classes for {n} images")
        return y.long()

    @torch.no_grad()
    def restore_image(self, image: np.ndarray, mask=None, name: str = "image", verb: str = "reconstruct",
                      label: str | None = None) -> np.ndarray:  # fmt: skip
        """The reconstruction (decoder mean of the posterior mean) of one H x W (x C) image."""
        x = self.prepare(image, name)
        y = self._labels(None if label is None else [label], 1)
        mu, _ = self.net.encode(x.to(self.device), None if y is None else y.to(self.device))
        out = self.net.mean_image(self.net.decode(mu, None if y is None else y.to(self.device)))
        out = out[0].permute(1, 2, 0).cpu().numpy()
        return out

    def reconstruct(self, image: np.ndarray, label: str | int | None = None) -> np.ndarray:
        return self.restore(image, label=label)

    # -- latent-space tools ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def codes(self, images: torch.Tensor, labels=None, batch_size: int = 500) -> torch.Tensor:
        """Posterior means (N x latent_dim) of a B x C x H x W batch in [0, 1]."""
        y = self._labels(labels, len(images))
        out = []
        for i in range(0, len(images), batch_size):
            yi = None if y is None else y[i : i + batch_size].to(self.device)
            out.append(self.net.encode(images[i : i + batch_size].to(self.device), yi)[0].float().cpu())
        return torch.cat(out)

    def traverse(
        self,
        image: np.ndarray | None = None,
        dims: list[int] | None = None,
        span: float = 3.0,
        steps: int = 9,
        seed: int = 0,
        label=None,
    ) -> torch.Tensor:
        """A grid (len(dims) rows x ``steps``, row-major) that sets one latent dimension at a time to values from
        ``-span`` to ``+span`` (in prior standard deviations) in the code of ``image`` (or of a prior sample from
        ``seed``), the others fixed. Default ``dims``: the 8 the encoder uses most (:meth:`active_dims`)."""
        given = {"dims": None if dims is None else list(dims), "span": span, "steps": steps, "seed": seed}
        self.checked(TraverseOptions, given, "traverse")
        d = self.net.latent_dim
        dims = self.active_dims()[:8] if dims is None else list(dims)
        bad = [k for k in dims if not 0 <= k < d]
        if bad or not dims:
            raise ConvgenError(f"`dims` must be latent dimensions 0..{d - 1}, got {dims}")
        y = self._labels(None if label is None else [label], 1)
        if image is not None:
            base = self.codes(self.prepare(image), y)[0]
        else:
            base = self.latents(1, seed)[0]
        values = torch.linspace(-span, span, steps)
        z = base.repeat(len(dims) * steps, 1)
        for r, k in enumerate(dims):
            z[r * steps : (r + 1) * steps, k] = values
        return self.decode(z, None if y is None else y.repeat(len(z)))

    def active_dims(self) -> list[int]:
        """Latent dimensions, most used first: by the variance of the training codes under the ex-post mixture
        (an unused dimension's codes all sit near 0), or in order when the model has no mixture."""
        gmm = self.models.get("gmm")
        if gmm is None:
            return list(range(self.net.latent_dim))
        w = gmm.log_weights.exp()[:, None]
        var = torch.diagonal(gmm.chol @ gmm.chol.transpose(1, 2), dim1=1, dim2=2)
        total = (w * (var + gmm.means**2)).sum(0) - (w * gmm.means).sum(0) ** 2
        return total.argsort(descending=True).tolist()

    def class_means(self, images: torch.Tensor, labels: list[int]) -> dict[int, torch.Tensor]:
        """Mean posterior code of each class in a labelled set (the model itself conditions on nothing here:
        an unconditional model's codes, or a conditional model's codes given each image's class)."""
        z = self.codes(images, labels if self.num_classes else None)
        y = torch.as_tensor(labels)
        return {int(c): z[y == c].mean(0) for c in y.unique()}

    def attribute_shift(
        self, image: np.ndarray, direction: torch.Tensor, steps: int = 5, strength: float = 1.0, label=None
    ) -> torch.Tensor:
        """``steps`` decodes of the image's code moved along ``direction`` (0 .. ``strength`` of it), e.g.
        mean(class b) - mean(class a): "turn a 3 into an 8 while keeping the stroke style". The first image is the
        reconstruction; a zero direction gives the reconstruction at every step."""
        self.checked(EditOptions, {"steps": steps, "strength": strength}, "edit")
        direction = torch.as_tensor(direction, dtype=torch.float32).flatten()
        if not torch.isfinite(direction).all():
            raise ConvgenError("the direction has NaN or infinite values")
        if direction.numel() != self.net.latent_dim:
            raise ConvgenError(f"the direction has {direction.numel()} values; the latent has {self.net.latent_dim}")
        y = self._labels(None if label is None else [label], 1)
        z0 = self.codes(self.prepare(image), y)[0]
        t = torch.linspace(0, strength, steps) if steps > 1 else torch.zeros(1)
        z = z0[None] + t[:, None] * direction[None]
        return self.decode(z, None if y is None else y.repeat(len(z)))

    def latent_map(self, images: torch.Tensor, labels: list[int], out: str | Path, overwrite: bool = False) -> str:
        """A scatter plot of the codes of a labelled set, coloured by class: the latent itself when it is 2-D,
        else its first two principal components (the title says which). Returns what was plotted."""
        from convgen.io.atomic import atomic_write, refuse_existing

        refuse_existing([out], overwrite)
        z = self.codes(images, labels if self.num_classes else None).double()
        if z.shape[1] == 2:
            xy, what = z, "the 2-D latent itself"
        else:
            centred = z - z.mean(0)
            _, s, v = torch.linalg.svd(centred, full_matrices=False)
            if float((s**2).sum()) == 0:
                raise ConvgenError(f"the {len(z)} images all have the same code: there is nothing to map")
            share = float((s[:2] ** 2).sum() / (s**2).sum())
            xy, what = centred @ v[:2].T, f"a PCA projection of the {z.shape[1]}-D latent ({share:.0%} of its variance)"
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 5.5))
        points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=6, alpha=0.8)
        ax.legend(*points.legend_elements(), title="class", fontsize=7, loc="best")
        ax.set_title(f"posterior means of {len(z)} images:\n{what}", fontsize=9)
        fig.tight_layout()
        atomic_write(out, lambda p: fig.savefig(p, format="png", dpi=110))
        plt.close(fig)
        return what

    @torch.no_grad()
    def likelihood(
        self,
        images: torch.Tensor,
        k: int = 1000,
        binarization: str = "stochastic",
        seed: int = 0,
        labels=None,
        chunk: int = 1000,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Negative ELBO and IWAE NLL (nats per image), bits per dimension, for a B x C x H x W batch in [0, 1]."""
        if not self.net.variational:
            raise ConvgenError(f"{self.model_dir} is a plain autoencoder: it has no likelihood")
        if not 1 <= k <= 100_000:
            raise ConvgenError(f"`samples` {k}: must be in 1..100000")
        if binarization not in ("stochastic", "threshold", "none"):
            raise ConvgenError(f"`binarize` must be stochastic, threshold or none, got {binarization!r}")
        if (
            self.net.likelihood == "bernoulli"
            and binarization == "none"
            and not torch.all((images == 0) | (images == 1))
        ):
            raise ConvgenError("a Bernoulli model's likelihood is of binary images: give `binarize` stochastic")
        y = self._labels(labels, len(images))
        gen = torch.Generator().manual_seed(seed)
        x = binarize(images, binarization, gen)
        elbo, iwae = [], []
        group = max(1, chunk // k)  # images per forward pass; each sees min(k, chunk) samples at a time
        bar = tqdm(total=len(x) * k, desc="likelihood", unit="sample", file=sys.stderr, disable=not progress)
        for i in range(0, len(x), group):
            xi = x[i : i + group].to(self.device)
            yi = None if y is None else y[i : i + group].to(self.device)
            parts = []
            for j in range(0, k, chunk):
                parts.append(log_weights(self.net, xi, yi, min(chunk, k - j), gen)[0].double().cpu())
                bar.update(parts[-1].numel())
            log_w = torch.cat(parts)  # k x B
            elbo += (-log_w.mean(0)).tolist()
            iwae += iwae_nll(log_w).tolist()
        bar.close()
        dims = int(np.prod(x.shape[1:]))
        neg_elbo, nll = float(np.mean(elbo)), float(np.mean(iwae))
        return {
            "neg_elbo_nats": neg_elbo,
            "nll_iwae_nats": nll,
            "bits_per_dim": bits_per_dim(nll, dims),
            "bits_per_dim_elbo": bits_per_dim(neg_elbo, dims),
            "k": k,
            "n": len(x),
            "per_image": {"neg_elbo_nats": elbo, "nll_iwae_nats": iwae},
            "protocol": {
                "likelihood": self.net.likelihood,
                "binarize": binarization,
                "seed": seed,
                "estimator": "IWAE (Burda et al. 2016): -log mean_k p(x,z_k)/q(z_k|x), z_k ~ q(z|x); the negative "
                "ELBO is -mean_k log p(x,z_k)/q(z_k|x) over the same samples",
                "dims": dims,
                "nats_per_bit": math.log(2),
                "training_binarization_seed_of_validation": EVAL_BINARIZE_SEED,
            },
        }

    def likelihood_files(self, inputs: str | Path, labels: dict[str, int] | None = None, **kw) -> dict[str, Any]:
        """:meth:`likelihood` of an image file or of every image of a folder (sorted by name)."""
        files = resolve_inputs(inputs)
        x = torch.cat([self.prepare(read_image(f), str(f)) for f in files])
        missing = [f.name for f in files if labels is not None and f.name not in labels]
        if missing:
            raise ConvgenError(f"no label for {missing[0]} (and {len(missing) - 1} more) in the labels file")
        y = None if labels is None else [labels[f.name] for f in files]
        result = self.likelihood(x, labels=y, **kw)
        result["per_image"] = {
            f.name: {"neg_elbo_nats": a, "nll_iwae_nats": b}
            for f, a, b in zip(
                files, result["per_image"]["neg_elbo_nats"], result["per_image"]["nll_iwae_nats"], strict=True
            )
        }
        return result


def read_labels(path: str | Path) -> dict[str, int]:
    """``file,label`` rows (the ``labels.csv`` that ``convgen data export`` writes) as file name -> class."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise ConvgenError(f"{path}: labels file not found")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return {r["file"]: int(r["label"]) for r in rows}
    except (KeyError, ValueError, TypeError, csv.Error) as e:
        raise ConvgenError(f"{path}: expected rows of file,label ({type(e).__name__})") from None


def labelled_set(folder: str | Path | None, labels: str | Path | None,
                 prepare=None) -> tuple[torch.Tensor, list[int]]:  # fmt: skip
    """Images and labels of a folder with a ``labels.csv`` (``labels`` or ``folder/labels.csv``), each image read
    and checked by ``prepare(array, name)`` (a pipeline's :meth:`VAEPipeline.prepare`: its size and channels);
    with no folder, the 1,000 validation digits of the MNIST split bundled with convgen. Every image of the folder
    must be listed (none is dropped silently)."""
    if folder is None:
        from convgen.data.datasets import build_data
        from convgen.registry import DATASETS
        from convgen.schema import build_typed

        val = build_data(build_typed("data", {"type": "mnist", "val_count": 1000}, DATASETS)).val
        x, y = val.batch(torch.arange(len(val)))
        if prepare is not None:  # the model must take 28 x 28 gray digits
            prepare(x[0].permute(1, 2, 0).numpy(), "the bundled MNIST digits (give a labelled folder)")
        return x, y.tolist()
    table_path = Path(labels) if labels is not None else Path(folder) / "labels.csv"
    table = read_labels(table_path)
    files = resolve_inputs(folder)
    unlisted = [f.name for f in files if f.name not in table]
    if unlisted:
        raise ConvgenError(f"{folder}: {len(unlisted)} image(s) are not listed in {table_path.name} ({unlisted[0]}"
                           f"{', ...' if len(unlisted) > 1 else ''}); list them or move them out")  # fmt: skip
    if prepare is None:
        arrays = [torch.from_numpy(read_image(f)).permute(2, 0, 1)[None] for f in files]
    else:
        arrays = [prepare(read_image(f), str(f)) for f in files]
    return torch.cat(arrays), [table[f.name] for f in files]
