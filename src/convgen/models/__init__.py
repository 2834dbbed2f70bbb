"""Networks only: building blocks, the CNN classifier, DCGAN, restoration networks; ``backbones/`` holds the
pretrained feature networks. Each registered model has a ``Config`` dataclass and is built from it.

Importing this package registers its models (the registry imports it by name on the first lookup).
"""

from __future__ import annotations

from torch import nn

from convgen.models import autoencoders, classifier, codec, diffusion, gan, restorers, style  # noqa: F401  (registers the models)
from convgen.registry import MODELS


def build_model(cfg) -> nn.Module:
    """Build the model named by a validated ``model`` config section (its ``registry_name``)."""
    return MODELS.get(cfg.registry_name)(cfg)
