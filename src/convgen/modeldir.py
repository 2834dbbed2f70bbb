"""Saved model directories: find, open, export and average them. The one place that loads a saved model.

A model directory holds ``config.json`` (the resolved run config), one ``<network>.safetensors`` per network and
``meta.json`` (metrics, class names, inference settings). It is a zoo entry, a run's ``model/`` export, a run
directory (its ``model/`` is used) or a checkpoint directory. Nothing is unpickled.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from convgen import zoo
from convgen.config import RunConfig, build_config
from convgen.errors import ConvgenError
from convgen.io.atomic import atomic_dir
from convgen.io.weights import dump_json, file_sha256, load_models, load_weights, read_json
from convgen.registry import MODELS


def resolve(name_or_path: str | Path) -> Path:
    """The model directory of a zoo name, a run directory, a ``model/`` export or a checkpoint directory."""
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


def is_model_dir(path: Path) -> bool:
    """A saved model directory: config.json, network weights, and nothing but model files."""
    if not path.is_dir() or not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
        return False
    allowed = {".json", ".safetensors", ".md"}
    return all(p.is_file() and p.suffix in allowed for p in path.iterdir())


def build_network(model_cfg: Any, name: str) -> nn.Module:
    """The network saved as ``<name>.safetensors``, freshly built from a ``model`` config section. A model class
    holding several networks (a GAN's generator and discriminator) picks one with ``component(name)``."""
    model = MODELS.get(model_cfg.registry_name)(model_cfg)
    component = getattr(model, "component", None)
    return component(name) if component is not None else model


@dataclass
class SavedModel:
    """An opened model directory: its config and meta; networks are built and loaded on request."""

    path: Path
    cfg: RunConfig
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.cfg.task.registry_name

    def has(self, network: str) -> bool:
        return (self.path / f"{network}.safetensors").is_file()

    def weights(self, network: str) -> dict[str, torch.Tensor]:
        """The saved tensors of ``network`` as they are (e.g. to start another network from them)."""
        self.check_file(f"{network}.safetensors")
        return load_weights(self.path / f"{network}.safetensors")

    def check_file(self, filename: str) -> None:
        """A file whose SHA-256 ``meta.json`` records must still have it (a flipped byte is an error, not a
        silently different model); directories written before checksums were recorded are not checked."""
        digest = self.meta.get("files", {}).get(filename) if isinstance(self.meta.get("files"), dict) else None
        if digest is not None and (self.path / filename).is_file() and file_sha256(self.path / filename) != digest:
            raise ConvgenError(f"{self.path / filename}: does not match the checksum in meta.json (damaged file)")

    def network(self, name: str, device: torch.device | str = "cpu") -> nn.Module:
        """Network ``name`` with its saved weights, on ``device``, in eval mode."""
        self.check_file(f"{name}.safetensors")
        net = build_network(self.cfg.model, name)
        load_models(self.path, {name: net})
        return net.to(device).eval()


def open_model(name_or_path: str | Path) -> SavedModel:
    path = resolve(name_or_path)
    meta = read_json(path / "meta.json") if (path / "meta.json").is_file() else {}
    return SavedModel(path, build_config(read_json(path / "config.json")), meta)


def export(src: Path, dest: Path, networks: Sequence[str], extra: dict[str, Any] | None = None) -> Path:
    """Copy the inference part of a checkpoint (config + named weights) into a standalone model directory."""
    with atomic_dir(dest) as tmp:
        shutil.copy2(src / "config.json", tmp / "config.json")
        for name in networks:
            shutil.copy2(src / f"{name}.safetensors", tmp / f"{name}.safetensors")
        meta = read_json(src / "meta.json")
        meta.update(extra or {})
        meta["files"] = _checksums(tmp)  # the checkpoint's own list described the checkpoint
        (tmp / "meta.json").write_text(dump_json(meta))
    return dest


def _checksums(directory: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(directory.glob("*.safetensors"))}


def record_checksums(model_dir: Path) -> None:
    """Record the SHA-256 of every weights file in ``meta.json`` (after a task added files at export)."""
    from convgen.io.atomic import atomic_write_text

    meta = read_json(model_dir / "meta.json") if (model_dir / "meta.json").is_file() else {}
    meta["files"] = _checksums(model_dir)
    atomic_write_text(model_dir / "meta.json", dump_json(meta))


def _check_average_inputs(sources: list[Path], weights: list[float] | None) -> tuple[list[float], list[dict]]:
    if len(sources) < 2:
        raise ConvgenError("averaging needs at least two models")
    weights = [1.0] * len(sources) if weights is None else [float(w) for w in weights]
    if len(weights) != len(sources):
        raise ConvgenError(f"{len(weights)} weights for {len(sources)} models")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise ConvgenError(f"weights must be >= 0 with a positive sum, got {weights}")
    configs = [read_json(s / "config.json") for s in sources]
    for src, cfg in zip(sources[1:], configs[1:], strict=True):
        if cfg.get("model") != configs[0].get("model"):
            raise ConvgenError(f"{src}: a different network from {sources[0]} (config 'model' differs)")
    return weights, configs


def _mean_state(sources: list[Path], name: str, weights: list[float]) -> dict[str, torch.Tensor]:
    states = [load_weights(s / f"{name}.safetensors") for s in sources]
    first, total = states[0], sum(weights)
    for src, sd in zip(sources[1:], states[1:], strict=True):
        if sd.keys() != first.keys() or any(sd[k].shape != first[k].shape for k in first):
            raise ConvgenError(f"{src / (name + '.safetensors')}: tensors differ from {sources[0]}'s")
    return {
        k: (
            (sum(w * sd[k].double() for w, sd in zip(weights, states, strict=True)) / total).to(v.dtype)
            if v.is_floating_point()
            else v.clone()
        ).contiguous()
        for k, v in first.items()
    }


def average(
    models: Sequence[str | Path], out: str | Path, weights: Sequence[float] | None = None, overwrite: bool = False
) -> Path:
    """Average the weights of saved models of one network into a new model directory ``out``.

    ``models`` are zoo names or directories as for :func:`resolve`; ``weights`` (default equal) are normalised to
    sum to 1; ``out`` must not exist unless ``overwrite``. Averaging snapshots of one run (checkpoint averaging, as
    SWA does) or fine-tunes from one starting point ("model soups") often scores a little better than any one of
    them; it is measured, not assumed, per model (for the zoo ``inpaint`` it did not carry over to the test photos,
    docs/benchmarks.md). Every source must be the same network: equal ``model`` config and the same tensor names
    and shapes. Floating-point tensors (including BatchNorm running statistics, which SWA would re-estimate
    instead) are averaged in float64; integer buffers are taken from the first source. ``config.json`` and
    ``meta.json`` come from the first source; the meta records the sources and weights and drops their validation
    metrics, which describe the sources, not the average. ``out`` is written atomically."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConvgenError(f"{out} already exists (pass `overwrite` to replace it)")
    sources = [resolve(m) for m in models]
    if any(d.resolve().is_relative_to(out.resolve()) for d in sources):
        raise ConvgenError(f"{out}: the output cannot be (or hold) one of the models being averaged")
    if out.exists() and not is_model_dir(out):
        raise ConvgenError(f"{out} is not a model directory; `overwrite` replaces only a model directory")
    weights, configs = _check_average_inputs(sources, None if weights is None else list(weights))
    names = sorted(p.stem for p in sources[0].glob("*.safetensors") if p.stem != "state")
    if not names:
        raise ConvgenError(f"{sources[0]}: no network weights (*.safetensors)")
    averaged = {name: _mean_state(sources, name, weights) for name in names}
    meta = read_json(sources[0] / "meta.json") if (sources[0] / "meta.json").is_file() else {}
    for key in ("metrics", "best_metric", "best_value", "exported_from", "step", "epoch"):
        meta.pop(key, None)
    meta["averaged_from"] = [str(s) for s in sources]
    meta["average_weights"] = [w / sum(weights) for w in weights]
    with atomic_dir(out) as tmp:
        (tmp / "config.json").write_text(dump_json(configs[0]))
        for name, sd in averaged.items():
            save_file(sd, str(tmp / f"{name}.safetensors"))
        meta["files"] = _checksums(tmp)
        (tmp / "meta.json").write_text(dump_json(meta))
    return out
