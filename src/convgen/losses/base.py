"""What every registered loss shares, and how a config names one.

A loss is a class registered in ``LOSSES`` (``@LOSSES.register("charbonnier")``) with a ``family`` (``pixel``,
``adversarial``, ``likelihood``, ``perceptual``, ``rate-distortion``) and a ``Config`` dataclass of its settings. A
config names a loss by its registered name (``loss: charbonnier``) or as a typed section (``loss: {type:
charbonnier, eps: 0.001}``); :func:`build_loss_config` checks it against the registered losses of the family the
task needs, so the valid names in an error come from the registry, and :func:`make_loss` builds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from convgen.registry import LOSSES
from convgen.schema import build_typed


class Loss:
    """Base of the registered losses: ``family`` says what the loss compares; ``Config`` holds its settings."""

    family = ""

    @dataclass
    class Config:
        pass

    def __init__(self, cfg: Any = None) -> None:
        self.cfg = cfg if cfg is not None else self.Config()


def losses_of(family: str):
    """The registered losses of one family, as a registry a typed config section is built from."""
    return LOSSES.subset(f"{family} loss", lambda obj: getattr(obj, "family", None) == family)


def build_loss_config(section: str, raw: Any, family: str) -> Any:
    """A typed loss config from a name (``"charbonnier"``) or a ``{type: name, ...}`` mapping; the name must be a
    registered loss of ``family``."""
    if isinstance(raw, str):
        raw = {"type": raw}
    return build_typed(section, raw, losses_of(family))


def make_loss(cfg: Any) -> Loss:
    """The loss a typed config (from :func:`build_loss_config`) names, built with its settings."""
    return LOSSES.get(cfg.registry_name)(cfg)


def loss_name(cfg: Any) -> str:
    return cfg.registry_name
