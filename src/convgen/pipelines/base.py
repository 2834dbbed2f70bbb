"""What every pipeline shares, and the dispatch from a saved model to its pipeline.

``convgen.load(name_or_path)`` opens a saved model directory (:mod:`convgen.modeldir`) and builds the pipeline
registered for its task type (``@PIPELINES.register("<task>")``): a classifier, a :class:`~convgen.pipelines.
sample.Sampler` (generators), a :class:`~convgen.pipelines.restore.RestorePipeline` (restorers), or a plugin's own.
Pipelines validate their own arguments and raise errors in their own words; the CLI and the web app only parse
and call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from convgen import modeldir
from convgen.device import pick_device
from convgen.errors import ConvgenError
from convgen.options import Options, build, describe
from convgen.registry import PIPELINES


@dataclass
class Explainable:
    """What ``convgen explain`` looks into: a network whose ``network(batch)`` gives one output per image,
    ``prepare(paths) -> batch``, ``score(output) -> per-image score`` to explain, ``to_image(batch)`` for display in
    [0, 1], ``kind`` (its name in the report), and ``extra(batch) -> dict`` for the report."""

    network: torch.nn.Module
    prepare: Callable[[list[Path]], torch.Tensor]
    score: Callable[[torch.Tensor], torch.Tensor]
    kind: str
    extra: Callable[[torch.Tensor], dict[str, Any]]
    to_image: Callable[[torch.Tensor], torch.Tensor] = lambda x: x


class CallNet(torch.nn.Module):
    """A network whose forward needs extra arguments, wrapped so that ``model(x)`` works for hooks."""

    def __init__(self, net: torch.nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.net = net
        self._fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(x)


def check_target(target: int | None, num_classes: int, what: str = "this model") -> None:
    if target is None:
        return
    if not num_classes:
        raise ConvgenError(f"{what} is unconditional: it takes no `target` class")
    if not 0 <= target < num_classes:
        raise ConvgenError(f"`target` {target} is out of range (classes 0..{num_classes - 1})")


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

    @property
    def name(self) -> str:
        """The model's name in messages: its zoo name, or its directory."""
        from convgen import zoo

        model_dir = getattr(self, "model_dir", None)
        if model_dir is None:
            return "this model"
        return model_dir.name if model_dir == zoo.model_dir(model_dir.name) else str(model_dir)

    def provenance(self, verb: str, kind: str = "generated"):
        """The :class:`~convgen.io.provenance.Provenance` record of what this model writes for ``verb``: generated
        and composite pictures also get the invisible watermark (zoo ``watermark``) where they can hold one."""
        from convgen.io.provenance import Provenance

        return Provenance(kind, self.name, verb, mark=watermark_marker(self.name) if kind != "enhanced" else None)

    def explainable(self, target: int | None = None) -> Explainable:
        """What ``convgen explain`` shows for this model (a family that can be explained overrides this)."""
        raise ConvgenError(f"{self.name} is a {self.saved.task} model, not a classifier or a GAN checkpoint (what "
                           "explain looks into)")  # fmt: skip

    # -- declared options (convgen.options) ----------------------------------------------------------------------
    def limits(self, declared: type[Options]) -> dict[str, dict[str, Any]]:
        """This model's narrower bounds for fields of ``declared`` (name -> {"lo", "hi", ...}), e.g. a codec's
        number of qualities; checked with the declared ones."""
        return {}

    def option_defaults(self, declared: type[Options]) -> dict[str, Any]:
        """What an empty (None) field of ``declared`` stands for with this model (e.g. its own sampler steps)."""
        return {}

    def checked(self, declared: type[Options], given: dict[str, Any], what: str = "") -> dict[str, Any]:
        """``given`` checked against ``declared`` and this model's :meth:`limits`, as keyword values (defaults
        filled in); an unknown name is an error saying what the model takes."""
        owner = f"{what} with {self.name}" if what else self.name
        return build(declared, given, owner, self.limits(declared)).values()

    def describe_options(self, declared: type[Options]) -> list[dict[str, Any]]:
        """``declared`` as form fields for this model (:func:`convgen.options.describe`)."""
        return describe(declared, self.limits(declared), self.option_defaults(declared))


def watermark_marker(model: str):
    """The zoo watermark's marker for pictures of ``model`` (:meth:`~convgen.pipelines.watermark.
    WatermarkPipeline.marker`), loaded once per process; None when this install has no watermark model."""
    from convgen import zoo

    if "watermark" not in _MARKERS:
        _MARKERS["watermark"] = load("watermark", device="cpu") if zoo.model_dir("watermark").is_dir() else None
    pipe = _MARKERS["watermark"]
    return None if pipe is None else pipe.marker(model)


_MARKERS: dict[str, Any] = {}


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
