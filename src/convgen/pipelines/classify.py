"""Classifying images with a trained classifier: ``convgen.load("mnist-classifier").classify_files("digits/")``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from convgen.data.transforms import resize_arrays
from convgen.errors import ImageError
from convgen.io.images import list_images, read_image, resolve_inputs
from convgen.pipelines.base import Explainable, Pipeline, check_batch_size, check_target
from convgen.registry import PIPELINES


@PIPELINES.register("classification")
class ClassifierPipeline(Pipeline):
    networks = ("classifier",)

    @property
    def model(self) -> torch.nn.Module:
        return self.models["classifier"]

    def explainable(self, target: int | None = None) -> Explainable:
        """CAMs of the predicted class (or ``target``) over the classifier's input."""
        check_target(target, self.cfg.model.num_classes)
        channels = self.cfg.model.in_channels

        def prepare(paths):
            return self.prepare([read_image(p, channels=channels) for p in paths]).clamp(0, 1)

        def score(logits):
            cls = logits.argmax(1) if target is None else torch.full((len(logits),), target)
            return logits.gather(1, cls[:, None])[:, 0]

        def extra(x):
            pred = self.predict(x).tolist()
            return {"predicted": [self.class_names[i] for i in pred],
                    "target": "predicted" if target is None else target}  # fmt: skip

        return Explainable(self.model.cpu(), prepare, score, "classifier", extra)

    def prepare(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """H x W (x C) float arrays -> a B x C x S x S batch at the model's input size (antialiased resize)."""
        return resize_arrays(images, self.cfg.model.image_size)

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Class probabilities for a batch B x C x H x W of floats in [0, 1]."""
        check_batch_size(batch_size)
        out = []
        for i in range(0, images.shape[0], batch_size):
            out.append(torch.softmax(self.model(images[i : i + batch_size].to(self.device)).float(), 1).cpu())
        return torch.cat(out)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.predict_proba(images).argmax(1)

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Penultimate-layer features (a domain feature space for generation metrics)."""
        check_batch_size(batch_size)
        out = [
            self.model.features(images[i : i + batch_size].to(self.device)).float().cpu()
            for i in range(0, images.shape[0], batch_size)
        ]
        return torch.cat(out)

    def classify_files(self, inputs: str | Path | Sequence[str | Path], batch_size: int = 500) -> dict[str, int]:
        """Classify an image file, a directory of images, or a list of files; returns file name -> class index.

        A directory that holds no images itself but one sub-folder of images per class (a labelled test set) is
        read whole; its keys are ``"<sub-folder>/<file name>"`` (see :meth:`score`)."""
        check_batch_size(batch_size)
        if isinstance(inputs, (str, Path)):
            labelled = class_folders(inputs)
            paths = [f for _, files in labelled for f in files] if labelled else resolve_inputs(inputs)
            keys = [f"{f.parent.name}/{f.name}" if labelled else f.name for f in paths]
        else:
            paths = [Path(p) for p in inputs]
            keys = [p.name for p in paths]
        channels = self.cfg.model.in_channels
        predictions: dict[str, int] = {}
        with tqdm(total=len(paths), desc="classify", unit="img", file=sys.stderr, disable=len(paths) < 2000) as bar:
            for i in range(0, len(paths), batch_size):
                chunk = paths[i : i + batch_size]
                batch = self.prepare([read_image(p, channels=channels) for p in chunk])
                for key, c in zip(keys[i : i + batch_size], self.predict(batch).tolist(), strict=True):
                    predictions[key] = int(c)
                bar.update(len(chunk))
        return predictions

    def score(self, predictions: dict[str, int]) -> dict | None:
        """Accuracy of ``"<class folder>/<file>"`` predictions whose folders are this model's class names (overall
        and per class); None when the keys carry no such class."""
        index = {name: i for i, name in enumerate(self.class_names)}
        truth = {k: index.get(k.partition("/")[0]) for k in predictions if "/" in k}
        if not truth or None in truth.values():
            return None
        per_class = {}
        for name, i in index.items():
            hits = [predictions[k] == i for k, t in truth.items() if t == i]
            if hits:
                per_class[name] = sum(hits) / len(hits)
        correct = sum(predictions[k] == t for k, t in truth.items())
        return {"accuracy": correct / len(truth), "count": len(truth), "per_class_accuracy": per_class}


def class_folders(root: str | Path) -> list[tuple[str, list[Path]]] | None:
    """``[(class name, images)]`` for a directory with no images of its own and image sub-folders (sorted by
    name); None for anything else."""
    root = Path(root)
    if not root.is_dir() or list_images(root):
        return None
    subdirs = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)
    found = [(d.name, list_images(d)) for d in subdirs]
    found = [(name, files) for name, files in found if files]
    if not found:
        raise ImageError(f"{root}: no images found (neither in the folder nor in sub-folders)")
    return found
