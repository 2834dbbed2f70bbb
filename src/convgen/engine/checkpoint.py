"""Checkpoints without pickle: safetensors for every tensor, JSON for everything else.

A checkpoint directory holds ``config.json`` (the resolved run config), one ``<model>.safetensors`` per network,
``state.safetensors`` + ``state.json`` (optimisers, schedulers, RNG states, step, task extras) and ``meta.json``.
Directories are written under a temporary name and renamed, so a killed run never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from convgen.errors import ConvgenError
from convgen.io.atomic import atomic_dir
from convgen.io.weights import dump_json, file_sha256, load_weights, save_models

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


def save_checkpoint(
    directory: Path, config: dict, models: dict[str, nn.Module], state: dict[str, Any], meta: dict[str, Any]
) -> Path:
    """Write a complete checkpoint directory atomically."""
    with atomic_dir(directory) as tmp:
        (tmp / "config.json").write_text(dump_json(config))
        save_models(tmp, models)
        tensors: dict[str, torch.Tensor] = {}
        data = flatten_state(state, tensors)
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(dump_json(data))
        files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir())}  # "intact" is checkable on resume
        (tmp / "meta.json").write_text(dump_json({**meta, "files": files}))
    return directory


def checkpoint_problem(directory: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (a missing, truncated or altered file), or None if it is intact.
    Checked against the SHA-256 of every file recorded in its ``meta.json``; a checkpoint written before those
    were recorded is checked by reading its state."""
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError) as e:
        return f"unreadable meta.json ({type(e).__name__})"
    files = meta.get("files") if isinstance(meta, dict) else None
    if not isinstance(files, dict):
        try:
            load_state(directory)
        except ConvgenError as e:
            return str(e)
        return None
    for name, digest in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if file_sha256(path) != digest:
            return f"{name} does not match its checksum"
    return None


def load_state(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads((directory / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConvgenError(f"{directory}: unreadable checkpoint state ({e})") from None
    return unflatten_state(data, load_weights(directory / "state.safetensors"))


def step_checkpoints(ckpt_root: Path) -> list[Path]:
    if not ckpt_root.is_dir():
        return []
    found = [p for p in ckpt_root.iterdir() if p.is_dir() and STEP_DIR.match(p.name) and (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    found = step_checkpoints(ckpt_root)
    return found[-1] if found else None


def latest_intact_checkpoint(ckpt_root: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint that passes :func:`checkpoint_problem`, and the newer ones skipped with their reason."""
    skipped = []
    for path in reversed(step_checkpoints(ckpt_root)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append((path, problem))
    return None, skipped


def prune_checkpoints(ckpt_root: Path, keep: int) -> None:
    for old in step_checkpoints(ckpt_root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
