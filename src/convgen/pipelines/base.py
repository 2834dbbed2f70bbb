"""What every pipeline shares, and the dispatch from a saved model to its pipeline.

``convgen.load(name_or_path)`` opens a saved model directory (:mod:`convgen.modeldir`) and builds the pipeline
registered for its task type (``@PIPELINES.register("<task>")``): a classifier, a :class:`~convgen.pipelines.
sample.Sampler` (generators), a :class:`~convgen.pipelines.restore.RestorePipeline` (restorers), or a plugin's own.
Pipelines validate their own arguments and raise errors in their own words; the CLI and the web app only parse
and call.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from convgen import modeldir
from convgen.engine.runtime import pick_device
from convgen.errors import ConvgenError
from convgen.registry import PIPELINES


class Pipeline:
    """A saved model ready for inference: its config, meta, and networks (``networks``) on a device, eval mode."""

    networks: tuple[str, ...] = ()

    def __init__(self, saved: modeldir.SavedModel, device: str = "auto") -> None:
        self.saved = saved
        self.cfg = saved.cfg
        self.model_dir: Path = saved.path
        self.meta: dict[str, Any] = saved.meta
        self.device = pick_device(device)
        self.networks = self.select_networks(saved)
        self.models: dict[str, torch.nn.Module] = {name: saved.network(name, self.device) for name in self.networks}

    def select_networks(self, saved: modeldir.SavedModel) -> tuple[str, ...]:
        """The networks to load (e.g. the EMA generator when the model has one)."""
        return self.networks

    @property
    def class_names(self) -> list[str]:
        n = getattr(self.cfg.model, "num_classes", 0)
        return self.meta.get("class_names") or [str(i) for i in range(n)]


def check_distinct_targets(files: Sequence[Path], targets: Sequence[Path]) -> None:
    """Two inputs that would be written to one output (``x.jpg`` and ``x.png`` both -> ``x.png``) are an error,
    before anything is written."""
    seen: dict[Path, Path] = {}
    for f, t in zip(files, targets, strict=True):
        if t in seen:
            raise ConvgenError(f"{seen[t].name} and {f.name} would both be written as {t}; rename one of them")
        seen[t] = f


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ConvgenError(f"`batch_size` {batch_size}: must be >= 1")


def load(name_or_path: str | Path, device: str = "auto", expect: type | None = None, role: str = "") -> Pipeline:
    """Load a zoo model by name (e.g. ``"mnist-classifier"``) or a saved model directory.

    With ``expect`` (a pipeline class), any other kind of model is a one-line error saying it is not ``role``.
    """
    saved = modeldir.open_model(name_or_path)
    if saved.task not in PIPELINES:
        raise ConvgenError(f"{saved.path}: no pipeline for task {saved.task!r}")
    cls = PIPELINES.get(saved.task)
    if expect is not None and not issubclass(cls, expect):
        raise ConvgenError(f"{name_or_path} is a {saved.task} model, not {role or expect.__name__}")
    return cls(saved, device)
