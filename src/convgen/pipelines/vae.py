"""Saved (variational) autoencoders: sampling through the Sampler API, reconstruction, held-out likelihoods.

``convgen.load("mnist-vae")`` returns a :class:`VAEPipeline`. Samples and reconstructions are decoder means.
:meth:`VAEPipeline.likelihood` estimates the negative ELBO and the importance-weighted NLL (Burda et al. 2016)
of held-out images with ``k`` posterior samples each; the IWAE estimate is computed from the same samples as
the ELBO estimate and is never above it.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from convgen.errors import ConvgenError, ImageError
from convgen.io.images import read_image, resolve_inputs
from convgen.losses.likelihood import EVAL_BINARIZE_SEED, binarize, bits_per_dim, iwae_nll, log_weights
from convgen.pipelines.restore import RestorePipeline, as_float_image
from convgen.pipelines.sample import Sampler, lerp, slerp
from convgen.registry import PIPELINES


@PIPELINES.register("vae")
class VAEPipeline(Sampler, RestorePipeline):
    networks = ("vae",)
    restores = ("reconstruct",)
    verb_help = {"reconstruct": "encode and decode images with an autoencoder (the decoder's mean)"}

    @property
    def net(self) -> torch.nn.Module:
        return self.models["vae"]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        m = self.cfg.model
        return m.channels, m.image_size, m.image_size

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None, embedding=None, batch_size: int = 500):
        """Decoder means in [0, 1] (CPU float32) for latents ``z``."""
        out = []
        for i in range(0, len(z), batch_size):
            zi = z[i : i + batch_size].to(self.device)
            yi = None if labels is None else labels[i : i + batch_size].to(self.device)
            ei = None if embedding is None else embedding[i : i + batch_size].to(self.device)
            out.append(self.net.mean_image(self.net.decode(zi, yi, ei)).cpu())
        return torch.cat(out)

    def latents(self, n: int, seed: int) -> torch.Tensor:
        return torch.randn(n, self.net.latent_dim, generator=torch.Generator().manual_seed(seed))

    def select_networks(self, saved) -> tuple[str, ...]:
        return ("vae", "gmm") if saved.has("gmm") else ("vae",)

    @property
    def default_sampler(self) -> str:
        """The model's ``meta.json`` ``inference.sampler`` (set for zoo models whose card was measured with it),
        else ``prior``."""
        return str(self.meta.get("inference", {}).get("sampler", "prior"))

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
            raise ConvgenError("this autoencoder is class-conditional: give the images' `classes`")
        y = torch.as_tensor([self.class_index(c) for c in labels] if not torch.is_tensor(labels) else labels)
        if len(y) != n:
            raise ConvgenError(f"{len(y)} classes for {n} images")
        return y.long()

    @torch.no_grad()
    def restore(self, image: np.ndarray, mask=None, name: str = "image", label=None, **options) -> np.ndarray:
        """The reconstruction (decoder mean of the posterior mean) of one H x W (x C) image."""
        x = self.prepare(image, name)
        y = self._labels(None if label is None else [label], 1)
        mu, _ = self.net.encode(x.to(self.device), None if y is None else y.to(self.device))
        out = self.net.mean_image(self.net.decode(mu, None if y is None else y.to(self.device)))
        out = out[0].permute(1, 2, 0).cpu().numpy()
        return out

    reconstruct = restore

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
