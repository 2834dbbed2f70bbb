"""What every degradation kind provides: training batches, the benchmark protocol, and the network input at
inference. Each kind is one registered class with its own ``Config`` (``task.degradation: {kind: ..., ...}``).

Images are float in [0, 1]: NumPy H x W x C arrays (protocol) or torch B x C x H x W batches (training,
inference). The conditioning map, where a kind has one, is B x 1 x H x W (H x W x 1 in the protocol).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from convgen.errors import ConfigError
from convgen.registry import DEGRADATIONS
from convgen.schema import build_typed


class Degradation:
    """Base class; subclasses set ``verb`` (the ``convgen restore`` verb) and a ``Config`` dataclass."""

    verb: str = ""
    is_noise = False  # a noise level (sigma) means something for this kind
    has_mask = False  # the conditioning map is a mask of missing pixels

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    @property
    def kind(self) -> str:
        return self.cfg.registry_name

    @classmethod
    def accept(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """Configs saved before each kind had its own schema hold every kind's fields at their defaults: drop
        another kind's field when it holds that default; refuse it when it was set."""
        own = {f.name for f in dataclasses.fields(cls.Config)}
        kept = {}
        for key, value in raw.items():
            other = next(((n, o) for n, o in DEGRADATIONS.items() if key in _defaults(o.Config)), None)
            if key in own or other is None:
                kept[key] = value
            elif _defaults(other[1].Config)[key] != value:
                raise ConfigError(f"config key 'task.degradation.{key}' is for {other[0]} degradations, not this one")
        return kept

    def check_model(self, model_cfg: Any) -> None:
        """Refuse a network that cannot restore this degradation (a ConfigError)."""

    def batch(self, clean: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Degrade a training batch: (degraded input, conditioning map or None)."""
        raise NotImplementedError

    def protocol(self, clean: np.ndarray, index: int, sigma: float | None = None):
        """Deterministic degradation of validation/benchmark image ``index`` (H x W x C float), by the protocol:
        (degraded, conditioning H x W x 1 or None)."""
        raise NotImplementedError

    def eval_levels(self, sigmas: list[float]) -> list[float | None]:
        """The noise levels validation runs at (``[None]``: one run, no level)."""
        return [None]

    def loss_weight(self, cond: torch.Tensor | None, hole_weight: float) -> torch.Tensor | None:
        """Per-pixel training loss weight (None: uniform)."""
        return None

    def network_input(
        self, x: torch.Tensor, mask: torch.Tensor | None, level: float | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inference on a 1 x C x H x W image: (the network's input, its conditioning map or None). ``level`` is a
        noise level (0-255 scale) for a network that takes one; ``mask`` is 1 x 1 x H x W, 1 = missing."""
        return x, None

    def finish(self, x_in: torch.Tensor, out: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """The restored image from the network's output (e.g. known pixels kept as they were)."""
        return out


def _defaults(config_cls: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def build_degradation_config(raw: Any, section: str = "task.degradation") -> Any:
    """A validated ``task.degradation`` section (``kind`` picks the class; default ``noise``)."""
    if dataclasses.is_dataclass(raw):
        return raw
    return build_typed(section, raw, DEGRADATIONS, key="kind", default="noise")


def make_degradation(cfg: Any) -> Degradation:
    """The degradation object for a config section (validated, or plain data as in a YAML file)."""
    cfg = build_degradation_config(cfg)
    return DEGRADATIONS.get(cfg.registry_name)(cfg)
