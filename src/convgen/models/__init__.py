"""Network architectures. Each registered model has a ``Config`` dataclass and is built from it."""

from __future__ import annotations

from torch import nn


def build_model(cfg) -> nn.Module:
    """Build the model named by a validated ``model`` config section (its ``registry_name``)."""
    from convgen.registry import MODELS

    return MODELS.get(cfg.registry_name)(cfg)
