"""Feature extractors for generation metrics, behind a registry, with streaming extraction and a statistics cache.

* ``inception-v3`` -- the standard FID network (:mod:`convgen.models.backbones.inception`); its numbers are
  FID / KID / IS. The weights come from ``--inception-weights PATH``, ``$CONVGEN_INCEPTION_WEIGHTS``, the cache
  directory, or a checksummed download when online.
* ``mnist-classifier`` or any convgen classifier (zoo name or model directory) -- a domain feature space. Its numbers
  are labelled ``FD-mnistcls`` / ``KID-mnistcls`` / ``IS-mnistcls`` (``cifarcls`` for ``cifar10-classifier-v1``,
  ``domaincls`` for other classifiers), never bare FID. A domain metric is pinned to its weights, as FID is to
  the 2015 Inception: ``cifar10-classifier-v1`` stays the FD-cifarcls network when the zoo's ``cifar10-classifier``
  improves, so every FD-cifarcls number remains comparable.

:func:`default_extractor` picks ``mnist-classifier`` for single-channel images of at most 64 px (digits) and
``inception-v3`` otherwise; the output always names the extractor it used.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from convgen import modeldir
from convgen.data.transforms import resize_arrays
from convgen.device import pick_device
from convgen.errors import ConvgenError, ImageError
from convgen.io.fetch import cache_root
from convgen.io.images import list_images, read_image
from convgen.registry import EXTRACTORS


class FeatureExtractor:
    """``prepare`` turns decoded images into a batch; ``__call__`` returns (features N x D, class probabilities)."""

    name: str = ""
    tag: str = ""  # metric label suffix: "" for the standard InceptionV3 (FID), else e.g. "mnistcls"
    channels: int = 3  # images are read with this many channels
    resize: str = ""
    feature: str = ""
    digest: str = ""  # first 16 hex digits of the weights' SHA-256

    def prepare(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @property
    def standard(self) -> bool:
        return self.tag == ""

    def protocol(self) -> dict[str, Any]:
        label = (
            "FID / KID / IS with the standard InceptionV3 (pt_inception-2015-12-05) pool3 features"
            if self.standard
            else f"FD-{self.tag} / KID-{self.tag} / IS-{self.tag}: computed in the {self.name} feature space, "
            "not InceptionV3"
        )
        return {
            "extractor": self.name,
            "extractor_sha256_16": self.digest,
            "feature": self.feature,
            "fid_is_standard": self.standard,
            "label": label,
            "resize": self.resize,
        }


DOMAIN_TAGS = {"mnist-classifier": "mnistcls", "cifar10-classifier-v1": "cifarcls"}  # metric labels: FD-<tag>


class ClassifierExtractor(FeatureExtractor):
    """The penultimate features of a convgen classifier (a zoo name or a model directory): a domain feature
    space, e.g. ``mnist-classifier`` for digits (metrics labelled FD-mnistcls, not FID)."""

    def __init__(self, name_or_path: str, device: str = "cpu", role: str = "a classifier (feature extractor)") -> None:
        saved = modeldir.open_model(name_or_path)
        if saved.task != "classification":
            raise ConvgenError(f"{name_or_path} is a {saved.task} model, not {role}")
        self.device = pick_device(device)
        self.net = saved.network("classifier", self.device)
        self.model_dir = saved.path
        self.name = saved.path.name if saved.path.parent.name == "zoo" else str(saved.path)
        self.tag = DOMAIN_TAGS.get(self.name, "domaincls")
        self.channels = saved.cfg.model.in_channels
        self.image_size = size = saved.cfg.model.image_size
        self.resize = f"bilinear antialiased to {size}x{size}, {self.channels} channel(s)"
        self.feature = "penultimate layer"
        self.class_names = [str(c) for c in saved.meta.get("class_names", [])]
        weights = sorted(saved.path.glob("*.safetensors"))
        self.digest = hashlib.sha256(b"".join(p.read_bytes() for p in weights)).hexdigest()[:16]

    def prepare(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        return resize_arrays(images, self.image_size).clamp(0, 1)

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.net.features(batch.to(self.device))
        return f.float().cpu(), torch.softmax(self.net.logits_from_features(f).float(), 1).cpu()


class InceptionExtractor(FeatureExtractor):
    name = "inception-v3"
    tag = ""
    channels = 3
    feature = "pool3, 2048-d"

    def __init__(self, weights: str | Path | None = None, device: str = "cpu") -> None:
        from convgen.io.fetch import file_digest
        from convgen.models.backbones.inception import INPUT_SIZE, build_fid_inception

        path = resolve_inception_weights(weights)
        self.net = build_fid_inception(path).to(device)
        self.device = device
        self.digest = file_digest(path, "sha256")[:16]
        self.resize = f"8-bit quantised, TensorFlow-1 bilinear to {INPUT_SIZE}x{INPUT_SIZE}, gray repeated to RGB"

    def prepare(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        from convgen.models.backbones.inception import FIDInceptionV3

        tensors = [torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None] for a in images]
        return torch.cat([FIDInceptionV3.preprocess(t) for t in tensors])

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pool, logits = self.net(batch.to(self.device), preprocessed=True)
        return pool.float().cpu(), torch.softmax(logits.double(), 1).float().cpu()


def resolve_inception_weights(weights: str | Path | None = None) -> Path:
    """An explicit path, ``$CONVGEN_INCEPTION_WEIGHTS``, the cached file, or a checksummed download."""
    from convgen.models.backbones.inception import WEIGHTS_FILE, fetch_weights

    if weights or os.environ.get("CONVGEN_INCEPTION_WEIGHTS"):
        path = Path(weights or os.environ["CONVGEN_INCEPTION_WEIGHTS"])
        if not path.is_file():
            raise ConvgenError(f"{path}: InceptionV3 weights file not found")
        return path
    cache = cache_root() / "weights"
    if (cache / WEIGHTS_FILE).is_file():
        return cache / WEIGHTS_FILE
    try:
        return fetch_weights(cache)
    except ConvgenError as e:
        raise ConvgenError(
            f"the InceptionV3 FID weights are not available ({e}); pass `inception_weights` "
            f"PATH/{WEIGHTS_FILE} or use `extractor` mnist-classifier for digits"
        ) from None


# factories take (inception_weights, device); only InceptionV3 uses the weights path
EXTRACTORS.register("inception-v3")(InceptionExtractor)
EXTRACTORS.register("mnist-classifier")(
    lambda _weights=None, device="cpu": ClassifierExtractor("mnist-classifier", device)
)


def get_extractor(name: str, inception_weights: str | Path | None = None, device: str = "cpu") -> FeatureExtractor:
    """A registered extractor by name, or any convgen classifier (zoo name or model directory)."""
    if name in EXTRACTORS:
        return EXTRACTORS.get(name)(inception_weights, device=device)
    return ClassifierExtractor(name, device=device)


def default_extractor(sample: np.ndarray) -> str:
    """``mnist-classifier`` for gray images of at most 64 px, else the standard ``inception-v3``."""
    h, w, c = sample.shape
    return "mnist-classifier" if c == 1 and max(h, w) <= 64 else "inception-v3"


@dataclass
class FeatureSet:
    """Features of one image set (float32, N x D), class probabilities (N x K), and float64 mean / covariance."""

    features: np.ndarray
    probs: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    cached: bool = False


def folder_fingerprint(files: Sequence[Path]) -> str:
    """Changes whenever a file is added, removed, renamed, resized or rewritten."""
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


class StatsCache:
    """Feature sets on disk, keyed by dataset (folder and content fingerprint), split, sample count, extractor
    (name and weights digest) and resize. Written atomically as ``.npz`` (read back without pickle)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root else cache_root() / "stats"

    @staticmethod
    def key(dataset: str, split: str, n: int, extractor: FeatureExtractor) -> dict[str, Any]:
        return {
            "dataset": dataset,
            "split": split,
            "n": n,
            "extractor": extractor.name,
            "extractor_sha256_16": extractor.digest,
            "resize": extractor.resize,
            "version": 1,
        }

    def path(self, key: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        return self.root / f"{digest}.npz"

    def load(self, key: dict[str, Any]) -> FeatureSet | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                if json.loads(str(z["key"])) != key:
                    return None
                return FeatureSet(z["features"], z["probs"], z["mu"], z["sigma"], cached=True)
        except (OSError, ValueError, KeyError):
            return None  # a damaged cache entry is recomputed and rewritten

    def save(self, key: dict[str, Any], fs: FeatureSet) -> None:
        from convgen.io.atomic import atomic_write

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    key=json.dumps(key, sort_keys=True),
                    features=fs.features,
                    probs=fs.probs,
                    mu=fs.mu,
                    sigma=fs.sigma,
                )

        atomic_write(self.path(key), write)


def embed(
    n: int,
    load: Callable[[int, int], Sequence[np.ndarray]],
    extractor: FeatureExtractor,
    batch_size: int = 250,
    desc: str = "features",
) -> FeatureSet:
    """Embed ``n`` images, ``load(start, stop)`` giving decoded H x W x C arrays a batch at a time: memory holds one
    image batch plus the N x D features. Mean and covariance are accumulated in float64 from per-batch sums (no
    float64 copy of all features)."""
    feats: np.ndarray | None = None
    probs: np.ndarray | None = None
    total = np.zeros(0)
    outer = np.zeros((0, 0))
    with tqdm(total=n, desc=desc, unit="img", file=sys.stderr, disable=None, leave=False) as bar:
        for i in range(0, n, batch_size):
            stop = min(n, i + batch_size)
            f, p = extractor(extractor.prepare(load(i, stop)))
            if feats is None:
                feats = np.empty((n, f.shape[1]), np.float32)
                probs = np.empty((n, p.shape[1]), np.float32)
                total, outer = np.zeros(f.shape[1]), np.zeros((f.shape[1], f.shape[1]))
            feats[i:stop], probs[i:stop] = f.numpy(), p.numpy()
            f64 = f.double().numpy()
            total += f64.sum(0)
            outer += f64.T @ f64
            bar.update(stop - i)
    assert feats is not None and probs is not None
    mu = total / n
    sigma = (outer - n * np.outer(mu, mu)) / (n - 1)
    return FeatureSet(feats, probs, mu, sigma)


def stream_features(
    files: Sequence[Path], extractor: FeatureExtractor, batch_size: int = 250, desc: str = "features"
) -> FeatureSet:
    """Features of image files, read a batch at a time (see :func:`embed`)."""
    return embed(
        len(files),
        lambda a, b: [read_image(path, channels=extractor.channels) for path in files[a:b]],
        extractor,
        batch_size,
        desc,
    )


def tensor_features(x: torch.Tensor, extractor: FeatureExtractor, batch_size: int = 500) -> FeatureSet:
    """Features of a batch B x C x H x W of images in [0, 1] (see :func:`embed`)."""
    return embed(len(x), lambda a, b: list(x[a:b].permute(0, 2, 3, 1).float().numpy()), extractor, batch_size)


def folder_features(
    folder: str | Path,
    extractor: FeatureExtractor,
    limit: int | None = None,
    cache: StatsCache | None = None,
    batch_size: int = 250,
    desc: str = "features",
) -> tuple[FeatureSet, dict[str, Any]]:
    """Features of the images in ``folder`` (sorted by name, the first ``limit``), through ``cache`` if given."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: directory not found")
    files = list_images(folder)
    if not files:
        raise ImageError(f"{folder}: no images found")
    files = files[:limit] if limit else files
    source = {"folder": str(folder.resolve()), "fingerprint": folder_fingerprint(files)[:16]}
    key = StatsCache.key(
        json.dumps(source, sort_keys=True), "all" if not limit else f"first-{limit}", len(files), extractor
    )
    if cache is not None:
        hit = cache.load(key)
        if hit is not None:
            return hit, key
    fs = stream_features(files, extractor, batch_size, desc)
    if cache is not None:
        cache.save(key, fs)
    return fs, key
