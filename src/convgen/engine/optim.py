"""Optimisers, learning-rate schedules and the one optimiser step every task takes."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from convgen.config import TrainConfig


def make_optimizer(params, cfg: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    """An optimiser of ``cfg.optimizer`` over tensors, or over groups ``{"params": ..., "lr_scale": s}`` (a part of
    a network that learns at ``s`` times the rate, e.g. a noise estimator beside a large denoiser), optionally with
    ``"decay_scale": d`` (its weight decay times ``d``; ``1 / s`` keeps the decay per step of a faster group equal
    to the others' under SGD's coupled decay)."""
    lr = cfg.lr if lr is None else lr
    params = list(params)
    if params and isinstance(params[0], dict):
        params = [{"params": list(g["params"]), "lr": lr * g.get("lr_scale", 1.0),
                   "weight_decay": cfg.weight_decay * g.get("decay_scale", 1.0)} for g in params]  # fmt: skip
    tensors = [p for g in params for p in g["params"]] if params and isinstance(params[0], dict) else params
    # the fused kernels (one op for all tensors) are faster on CPU and CUDA; same update maths
    fused = {"fused": True} if tensors and all(p.device.type in ("cpu", "cuda") for p in tensors) else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    betas = (cfg.betas[0], cfg.betas[1])
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=cfg.weight_decay, **fused)
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=cfg.weight_decay, **fused)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """LR multiplier as a pure function of the step: constant, cosine, one-cycle (warm-up then cosine), or
    triangle (linear from 0.2 up to 1 over the warm-up, then linearly down to 0: the airbench schedule)."""
    warm = int(cfg.warmup_fraction * total_steps)

    def factor(step: int) -> float:
        if cfg.scheduler == "constant":
            return 1.0
        if cfg.scheduler == "triangle":
            if step < warm:
                return 0.2 + 0.8 * step / max(1, warm)
            return max(0.0, 1 - (step - warm) / max(1, total_steps - warm))
        if step < warm:
            return 0.04 + 0.96 * step / max(1, warm)
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        floor = 1e-3 if cfg.scheduler == "onecycle" else 0.0
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    parameters: Iterable[nn.Parameter],
    grad_clip: float | None = None,
    scheduler: Any = None,
    frozen: nn.Module | None = None,
) -> None:
    """zero_grad, backward, optional gradient-norm clipping, step, schedule step.

    ``frozen`` is a module whose parameters need no gradients for this loss (a GAN's discriminator during the
    generator's update): it is frozen for the backward pass only, so no time is spent on gradients that would be
    thrown away."""
    optimizer.zero_grad(set_to_none=True)
    if frozen is not None:
        frozen.requires_grad_(False)
    loss.backward()
    if frozen is not None:
        frozen.requires_grad_(True)
    if grad_clip:
        nn.utils.clip_grad_norm_(parameters, grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
