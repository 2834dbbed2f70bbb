"""Network weights and small JSON files on disk: safetensors for tensors, JSON for the rest; never pickle."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from convgen.errors import ConvgenError


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def save_models(directory: Path, models: dict[str, nn.Module]) -> None:
    mask = os.umask(0)
    os.umask(mask)
    for name, module in models.items():
        sd = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
        save_file(sd, str(directory / f"{name}.safetensors"))
        os.chmod(directory / f"{name}.safetensors", 0o666 & ~mask)  # safetensors writes 0600 files


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConvgenError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ConvgenError(f"{path}: not a valid safetensors file ({e})") from None


def load_public_weights(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a public weights file: a ``.pth`` read with torch's restricted ``weights_only`` unpickler
    (never a full unpickle) or a ``.safetensors``; anything else is a one-line error naming ``what``."""
    path = Path(path)
    if not path.is_file():
        raise ConvgenError(f"{path}: {what} weights file not found")
    if path.suffix == ".safetensors":
        return load_weights(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConvgenError(f"{path}: not a readable weights file ({type(e).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConvgenError(f"{path}: expected a state dict of tensors")
    return state


def fit_state(module: nn.Module, state: dict[str, torch.Tensor], source: str | Path, ignore=()) -> None:
    """Load ``state`` into ``module`` after checking that it fits: the same tensor names (but those ending in one of
    ``ignore``), the same shapes, finite values. Anything else is a one-line error naming ``source``."""
    own = module.state_dict()
    keep = lambda k: not any(k.endswith(s) for s in ignore)  # noqa: E731
    missing = [k for k in own if k not in state and keep(k)]
    unexpected = [k for k in state if k not in own and keep(k)]
    if missing or unexpected:
        raise ConvgenError(
            f"{source}: weights do not fit the configured model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    wrong = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise ConvgenError(
            f"{source}: tensor {k} has shape {tuple(state[k].shape)}, the model needs {tuple(own[k].shape)}"
        )
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise ConvgenError(f"{source}: tensor {bad} holds NaN or infinite values")
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def load_models(directory: Path, models: dict[str, nn.Module]) -> None:
    for name, module in models.items():
        path = directory / f"{name}.safetensors"
        fit_state(module, load_weights(path), path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConvgenError(f"{path}: file not found") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ConvgenError(f"{path}: not valid JSON ({e})") from None
