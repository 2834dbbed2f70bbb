"""An exponential moving average of a network's weights, and BatchNorm statistics that fit the averaged weights.

The EMA copy is a task network like any other (saved in every checkpoint, exported, used for evaluation and
sampling): BasicSR's ``params_ema`` and StudioGAN's EMA generator work the same way.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn


class EMA:
    """``average`` follows ``model``: ``average = decay * average + (1 - decay) * model`` at every :meth:`update`
    (buffers are copied). With ``warmup``, the decay is ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so
    early on the average follows the model closely (StudioGAN / Karras et al.)."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True, start: int = 0) -> None:
        self.average = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup, self.start = decay, warmup, start

    def decay_at(self, step: int, updates: int) -> float:
        """The decay of the update after ``updates`` updates, at training step ``step`` (0 before ``start``)."""
        if step < self.start:
            return 0.0
        return min(self.decay, (1 + updates) / (10 + updates)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        ema_update(self.average, model, decay)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    e_params, m_params = list(ema.parameters()), [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(e_params, m_params, 1.0 - decay)
    for eb, mb in zip(ema.buffers(), model.buffers(), strict=True):
        eb.copy_(mb)


@torch.no_grad()
def recalibrate_batchnorm(net: nn.Module, inputs: Callable[[int], tuple], batches: int = 16) -> None:
    """Re-estimate a network's BatchNorm running statistics for its current (e.g. EMA) weights.

    EMA weights never saw a forward pass, so the raw network's running statistics do not fit them; the
    cumulative average over ``batches`` forward passes of ``net(*inputs(i))`` does (StudioGAN's "standing
    statistics")."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    for i in range(batches):
        net(*inputs(i))
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    net.eval()
