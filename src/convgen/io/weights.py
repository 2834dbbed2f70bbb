"""Network weights and small JSON files on disk: safetensors for tensors, JSON for the rest; never pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from convgen.errors import ConvgenError


def dump_json(obj: Any) -> str:
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


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConvgenError(f"{path}: file not found") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ConvgenError(f"{path}: not valid JSON ({e})") from None
