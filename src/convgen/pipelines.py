"""Loading saved models and running them: ``convgen.load(name_or_path)`` returns a task-specific pipeline.

A model is a directory with ``config.json`` and ``<network>.safetensors`` files: a zoo entry, a run's ``model/``
export, a run directory (its ``model/`` is used) or a checkpoint directory.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from convgen.config import RunConfig, build_config
from convgen.data.transforms import resize
from convgen.engine.checkpoint import average_models as _average_weights
from convgen.engine.checkpoint import load_models, read_json
from convgen.engine.runtime import pick_device
from convgen.errors import ConvgenError
from convgen.io.images import read_image, resolve_inputs
from convgen.models import build_model


def resolve_model_dir(name_or_path: str | Path) -> Path:
    from convgen import zoo

    path = Path(name_or_path)
    if path.exists():
        if (path / "model" / "config.json").is_file():
            return path / "model"
        if (path / "config.json").is_file():
            return path
        raise ConvgenError(f"{path}: not a saved model directory (no config.json)")
    if str(name_or_path) in zoo.names():
        return zoo.model_dir(str(name_or_path))
    raise ConvgenError(
        f"unknown model {str(name_or_path)!r}: not a zoo name ({', '.join(zoo.names()) or 'none'}) "
        "and not a path to a saved model directory"
    )


class Pipeline:
    """Common part of every pipeline: config, networks on a device, eval mode."""

    networks: tuple[str, ...] = ()

    def __init__(self, cfg: RunConfig, model_dir: Path, device: str = "auto") -> None:
        self.cfg = cfg
        self.model_dir = model_dir
        self.device = pick_device(device)
        self.meta: dict[str, Any] = read_json(model_dir / "meta.json") if (model_dir / "meta.json").is_file() else {}
        self.models = {name: self.build(name) for name in self.networks}
        load_models(model_dir, self.models)
        for m in self.models.values():
            m.to(self.device).eval()

    def build(self, name: str) -> torch.nn.Module:
        return build_model(self.cfg.model)


class ClassifierPipeline(Pipeline):
    networks = ("classifier",)

    @property
    def model(self) -> torch.nn.Module:
        return self.models["classifier"]

    @property
    def class_names(self) -> list[str]:
        return self.meta.get("class_names") or [str(i) for i in range(self.cfg.model.num_classes)]

    def prepare(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """HxWxC float arrays -> a B x C x S x S batch at the model's input size (antialiased resize)."""
        size = self.cfg.model.image_size
        return torch.stack([resize(torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1), size) for a in images])

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Class probabilities for a batch B x C x H x W of floats in [0, 1]."""
        out = []
        for i in range(0, images.shape[0], batch_size):
            out.append(torch.softmax(self.model(images[i : i + batch_size].to(self.device)).float(), 1).cpu())
        return torch.cat(out)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.predict_proba(images).argmax(1)

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Penultimate-layer features (a domain feature space for generation metrics)."""
        out = [
            self.model.features(images[i : i + batch_size].to(self.device)).float().cpu()
            for i in range(0, images.shape[0], batch_size)
        ]
        return torch.cat(out)

    def classify_files(self, inputs: str | Path | Sequence[str | Path], batch_size: int = 500) -> dict[str, int]:
        """Classify an image file, a directory of images, or a list of files; returns file name -> class index."""
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


def _generator_pipeline():
    from convgen.generation import GeneratorPipeline

    return GeneratorPipeline


def _restoration_pipeline():
    from convgen.restoration import RestorationPipeline

    return RestorationPipeline


PIPELINES: dict[str, Any] = {
    "classification": lambda: ClassifierPipeline,
    "gan": _generator_pipeline,
    "restoration": _restoration_pipeline,
}


def load(name_or_path: str | Path, device: str = "auto", expect: type | None = None, role: str = "") -> Pipeline:
    """Load a zoo model by name (e.g. ``"mnist-classifier"``) or a saved model directory.

    With ``expect`` (a pipeline class), any other kind of model is a one-line error saying it is not ``role``.
    """
    model_dir = resolve_model_dir(name_or_path)
    cfg = build_config(read_json(model_dir / "config.json"))
    task = cfg.task.registry_name
    if task not in PIPELINES:
        raise ConvgenError(f"{model_dir}: no pipeline for task {task!r}")
    pipe = PIPELINES[task]()(cfg, model_dir, device)
    if expect is not None and not isinstance(pipe, expect):
        raise ConvgenError(f"{name_or_path} is a {task} model, not {role or expect.__name__}")
    return pipe


def average_models(
    models: Sequence[str | Path], out: str | Path, weights: Sequence[float] | None = None, overwrite: bool = False
) -> Path:
    """Average the weights of saved models of one network into a new model directory ``out``.

    ``models`` are zoo names or directories as for :func:`load`. ``weights`` (default equal) are normalised to sum
    to 1. ``out`` must not exist unless ``overwrite``. See :func:`convgen.engine.checkpoint.average_models`."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConvgenError(f"{out} already exists (pass --overwrite / overwrite=True to replace it)")
    dirs = [resolve_model_dir(m) for m in models]
    if any(d.resolve().is_relative_to(out.resolve()) for d in dirs):
        raise ConvgenError(f"{out}: the output cannot be (or hold) one of the models being averaged")
    return _average_weights(dirs, out, None if weights is None else list(weights))
