"""Checkpoints without pickle: safetensors for every tensor, JSON for everything else.

A checkpoint directory holds ``config.json`` (the resolved run config), one ``<model>.safetensors`` per network,
``state.safetensors`` + ``state.json`` (optimisers, schedulers, RNG states, step, task extras) and ``meta.json``.
Directories are written under a temporary name and renamed, so a killed run never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from convgen.errors import ConvgenError
from convgen.io.atomic import atomic_dir

STEP_DIR = re.compile(r"^step_(\d{8})$")


def flatten_state(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "") -> Any:
    """Split a nested state (dicts, lists, tuples, tensors, scalars) into JSON-able data and named tensors."""
    if isinstance(obj, torch.Tensor):
        name = prefix or "tensor"
        tensors[name] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": name}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: flatten_state(v, tensors, f"{prefix}.{k}" if prefix else k) for k, v in obj.items()}
        return {"__items__": [[k, flatten_state(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix!r} in a checkpoint")


def unflatten_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__items__" in obj:
            return {k: unflatten_state(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(unflatten_state(v, tensors) for v in obj["__tuple__"])
        return {k: unflatten_state(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    return obj


def _dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def save_models(directory: Path, models: dict[str, nn.Module]) -> None:
    for name, module in models.items():
        sd = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
        save_file(sd, str(directory / f"{name}.safetensors"))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConvgenError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ConvgenError(f"{path}: not a valid safetensors file ({e})") from None


def load_models(directory: Path, models: dict[str, nn.Module]) -> None:
    for name, module in models.items():
        sd = load_weights(directory / f"{name}.safetensors")
        missing, unexpected = module.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ConvgenError(
                f"{directory / (name + '.safetensors')}: weights do not fit the configured model "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )


def save_checkpoint(
    directory: Path, config: dict, models: dict[str, nn.Module], state: dict[str, Any], meta: dict[str, Any]
) -> Path:
    """Write a complete checkpoint directory atomically."""
    with atomic_dir(directory) as tmp:
        (tmp / "config.json").write_text(_dump_json(config))
        save_models(tmp, models)
        tensors: dict[str, torch.Tensor] = {}
        data = flatten_state(state, tensors)
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(_dump_json(data))
        (tmp / "meta.json").write_text(_dump_json(meta))
    return directory


def load_state(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads((directory / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConvgenError(f"{directory}: unreadable checkpoint state ({e})") from None
    return unflatten_state(data, load_weights(directory / "state.safetensors"))


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConvgenError(f"{path}: file not found") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ConvgenError(f"{path}: not valid JSON ({e})") from None


def step_checkpoints(ckpt_root: Path) -> list[Path]:
    if not ckpt_root.is_dir():
        return []
    found = [p for p in ckpt_root.iterdir() if p.is_dir() and STEP_DIR.match(p.name) and (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    found = step_checkpoints(ckpt_root)
    return found[-1] if found else None


def prune_checkpoints(ckpt_root: Path, keep: int) -> None:
    for old in step_checkpoints(ckpt_root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def export_model(src: Path, dest: Path, model_names: list[str], extra: dict[str, Any] | None = None) -> Path:
    """Copy the inference part of a checkpoint (config + named weights) into a standalone model directory."""
    with atomic_dir(dest) as tmp:
        shutil.copy2(src / "config.json", tmp / "config.json")
        for name in model_names:
            shutil.copy2(src / f"{name}.safetensors", tmp / f"{name}.safetensors")
        meta = read_json(src / "meta.json")
        meta.update(extra or {})
        (tmp / "meta.json").write_text(_dump_json(meta))
    return dest


def average_models(sources: list[Path], dest: Path, weights: list[float] | None = None) -> Path:
    """Write a model directory whose weights are the (weighted) mean of those of ``sources``.

    Averaging snapshots of one run (checkpoint averaging, as SWA does) or fine-tunes from one starting point ("model
    soups") often scores a little better than any one of them; it is measured, not assumed, per model (for the zoo
    ``inpaint`` it did not carry over to the test photos, docs/benchmarks.md).
    Every source must be the same network: equal ``model`` config and the same tensor names and shapes.
    Floating-point tensors (including BatchNorm running statistics, which SWA would re-estimate instead) are
    averaged in float64; integer buffers are taken from the first source. ``config.json`` and ``meta.json`` come
    from the first source; the meta records the sources and weights and drops their validation metrics, which
    describe the sources, not the average. ``dest`` is written atomically."""
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
    names = sorted(p.stem for p in sources[0].glob("*.safetensors") if p.stem != "state")
    if not names:
        raise ConvgenError(f"{sources[0]}: no network weights (*.safetensors)")
    total = sum(weights)
    averaged: dict[str, dict[str, torch.Tensor]] = {}
    for name in names:
        states = [load_weights(s / f"{name}.safetensors") for s in sources]
        first = states[0]
        for src, sd in zip(sources[1:], states[1:], strict=True):
            if sd.keys() != first.keys() or any(sd[k].shape != first[k].shape for k in first):
                raise ConvgenError(f"{src / (name + '.safetensors')}: tensors differ from {sources[0]}'s")
        averaged[name] = {
            k: (
                (sum(w * sd[k].double() for w, sd in zip(weights, states, strict=True)) / total).to(v.dtype)
                if v.is_floating_point()
                else v.clone()
            ).contiguous()
            for k, v in first.items()
        }
    meta = read_json(sources[0] / "meta.json") if (sources[0] / "meta.json").is_file() else {}
    for key in ("metrics", "best_metric", "best_value", "exported_from", "step", "epoch"):
        meta.pop(key, None)
    meta["averaged_from"] = [str(s) for s in sources]
    meta["average_weights"] = [w / total for w in weights]
    with atomic_dir(dest) as tmp:
        (tmp / "config.json").write_text(_dump_json(configs[0]))
        for name, sd in averaged.items():
            save_file(sd, str(tmp / f"{name}.safetensors"))
        (tmp / "meta.json").write_text(_dump_json(meta))
    return dest
