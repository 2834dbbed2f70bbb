"""Typed, validated run configuration.

A run config is a YAML file (presets live in ``configs/``) plus ``key.sub=value`` overrides from the command line.
Every section is a dataclass; registry-typed sections (``model``, ``data``, ``task``) take their schema from the
class that their ``type:`` names. Validation is strict: an unknown key, a value of the wrong type, or a value out
of range raises :class:`ConfigError` naming the key. The fully resolved config (defaults included) is saved as
JSON next to every checkpoint, so a saved model reloads without guessing.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from convgen.errors import ConfigError
from convgen.registry import DATASETS, MODELS, TASKS
from convgen.schema import build_typed, check, convert, from_dict, to_dict


@dataclass
class TrainConfig:
    """Settings of the generic training loop (shared by every task)."""

    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimiser steps (overrides epochs when smaller)
    max_minutes: float | None = None  # wall-clock budget: validate, checkpoint and stop once it is spent
    stop_at_step: int | None = None  # end here but keep the schedule of the full length (a stage of a recipe)
    batch_size: int = 128  # per process
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.9  # sgd only
    scheduler: Literal["constant", "cosine", "onecycle", "triangle"] = "constant"
    warmup_fraction: float = 0.0  # onecycle / cosine / triangle warm-up, fraction of all steps
    grad_clip: float | None = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    bf16: bool = False  # bf16 autocast for forward passes
    channels_last: bool = False
    deterministic: bool = False  # deterministic kernels (exact resume, reproducible runs)
    threads: int | None = None  # torch intra-op threads; null = torch default
    log_every: int = 50  # steps between metric log lines
    eval_every: int | None = None  # steps between validations; null = once per epoch
    ckpt_every: int | None = None  # steps between checkpoints; null = once per epoch
    keep_last: int = 2  # step checkpoints kept (the best one is kept separately)
    best_metric: str | None = None  # e.g. "val/accuracy"; null = the task's default
    best_mode: Literal["max", "min"] | None = None
    tensorboard: bool = False
    progress: bool = True
    max_rollbacks: int = 3  # on NaN/Inf or a task health failure: roll back to the last checkpoint this often
    rollback_lr_factor: float = 0.5  # learning rates are multiplied by this at every rollback

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "train.epochs", "must be >= 1")
        check(self.max_steps is None or self.max_steps >= 1, "train.max_steps", "must be >= 1")
        check(self.max_minutes is None or self.max_minutes > 0, "train.max_minutes", "must be > 0")
        check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        check(self.lr > 0, "train.lr", "must be > 0")
        check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "train.betas", "two numbers in [0, 1)")
        check(0 <= self.warmup_fraction < 1, "train.warmup_fraction", "must be in [0, 1)")
        check(self.grad_clip is None or self.grad_clip > 0, "train.grad_clip", "must be > 0")
        check(self.log_every >= 1, "train.log_every", "must be >= 1")
        check(self.eval_every is None or self.eval_every >= 1, "train.eval_every", "must be >= 1")
        check(self.ckpt_every is None or self.ckpt_every >= 1, "train.ckpt_every", "must be >= 1")
        check(self.keep_last >= 1, "train.keep_last", "must be >= 1")
        check(self.threads is None or self.threads >= 1, "train.threads", "must be >= 1")
        check(self.max_rollbacks >= 0, "train.max_rollbacks", "must be >= 0")
        check(0 < self.rollback_lr_factor <= 1, "train.rollback_lr_factor", "must be in (0, 1]")
        valid_device = self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")
        check(valid_device, "train.device", f"expected auto, cpu, cuda, cuda:N or mps, got {self.device!r}")


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    task: Any = None
    model: Any = None
    data: Any = None
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def build_config(raw: dict[str, Any]) -> RunConfig:
    if not isinstance(raw, dict):
        raise ConfigError("a run config must be a mapping of sections (name, seed, task, model, data, train)")
    allowed = {"name", "seed", "task", "model", "data", "train"}
    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (valid sections: {', '.join(sorted(allowed))})"
            raise ConfigError(f"unknown config key {key!r}{hint}")
    name = convert(raw.get("name", "run"), str, "name")
    seed = convert(raw.get("seed", 0), int, "seed")
    return RunConfig(
        name=name,
        seed=seed,
        task=build_typed("task", raw.get("task"), TASKS),
        model=build_typed("model", raw.get("model"), MODELS),
        data=build_typed("data", raw.get("data"), DATASETS),
        train=from_dict(TrainConfig, raw.get("train"), "train"),
    )


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.sub=value")
    key, value = text.split("=", 1)
    path = [p for p in key.strip().split(".")]
    if not all(path):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return path, parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    raw = json.loads(json.dumps(raw))  # deep copy of plain data
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        moved = sorted(path.parent.glob(f"*/{path.name}")) if path.parent.is_dir() else []
        hint = f" (presets are grouped by task now: {moved[0]}?)" if moved else ""
        raise ConfigError(f"config file not found: {path}{hint}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must contain a mapping of sections")
    return raw


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None
) -> RunConfig:
    """Load a run config from a YAML/JSON file (or ``base`` dict) with ``key=value`` overrides, validated."""
    raw = dict(base or {})
    if path is not None:
        raw = read_yaml(path)  # YAML is a superset of JSON, so saved config.json files load too
    return build_config(apply_overrides(raw, overrides or []))
