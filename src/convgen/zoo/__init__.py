"""The bundled model zoo: small models trained by the convgen team, each with a model card.

Each entry is a folder here holding ``config.json``, weights (``*.safetensors``), ``meta.json`` (metrics) and
``MODEL_CARD.md`` (training command, data, time, measured metrics).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from convgen.io.weights import read_json


def _root() -> Path:
    return Path(str(resources.files("convgen") / "zoo"))


def names() -> list[str]:
    root = _root()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file())


def model_dir(name: str) -> Path:
    return _root() / name


def describe(name: str) -> dict[str, Any]:
    d = model_dir(name)
    config = read_json(d / "config.json")
    meta = read_json(d / "meta.json") if (d / "meta.json").is_file() else {}
    card = (d / "MODEL_CARD.md").read_text(encoding="utf-8") if (d / "MODEL_CARD.md").is_file() else ""
    summary = next((line.strip() for line in card.splitlines() if line.strip() and not line.startswith("#")), "")
    return {
        "name": name,
        "task": config["task"]["type"],
        "model": config["model"]["type"],
        "summary": summary,
        "metrics": meta.get("card_metrics", meta.get("metrics", {})),
        "path": str(d),
    }


def list_models() -> list[dict[str, Any]]:
    return [describe(n) for n in names()]
