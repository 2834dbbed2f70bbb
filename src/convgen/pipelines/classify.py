"""Classifying images with a trained classifier: ``convgen.load("mnist-classifier").classify_files("digits/")``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from convgen.data.transforms import resize_arrays
from convgen.io.images import read_image, resolve_inputs
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
        """Classify an image file, a directory of images, or a list of files; returns file name -> class index."""
        check_batch_size(batch_size)
        paths = resolve_inputs(inputs) if isinstance(inputs, (str, Path)) else [Path(p) for p in inputs]
        channels = self.cfg.model.in_channels
        predictions: dict[str, int] = {}
        with tqdm(total=len(paths), desc="classify", unit="img", file=sys.stderr, disable=len(paths) < 2000) as bar:
            for i in range(0, len(paths), batch_size):
                chunk = paths[i : i + batch_size]
                batch = self.prepare([read_image(p, channels=channels) for p in chunk])
                for p, c in zip(chunk, self.predict(batch).tolist(), strict=True):
                    predictions[p.name] = int(c)
                bar.update(len(chunk))
        return predictions
