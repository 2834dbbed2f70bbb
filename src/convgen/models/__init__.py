"""Networks only: building blocks, the CNN classifier, DCGAN, restoration networks; ``backbones/`` holds the
pretrained feature networks. Each registered model has a ``Config`` dataclass and is built from it.

The registry imports every module of this package on its first lookup (``registry.import_package``), so a
module registers by being here.
"""

from __future__ import annotations

from torch import nn

from convgen.registry import MODELS


def build_model(cfg) -> nn.Module:
    """Build the model named by a validated ``model`` config section (its ``registry_name``)."""
    return MODELS.get(cfg.registry_name)(cfg)
