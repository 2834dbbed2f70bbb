"""What a task gives the generic trainer: networks, optimisers, one training step, an evaluation, what to export.

The trainer owns the loop, logging, checkpoints, resume and distribution; a task owns the maths. A new task
(a GAN, a denoiser) subclasses :class:`Task` and is registered under the name used in ``task.type``
(``@TASKS.register("name")``). Optimisers, schedules and the optimiser step are in :mod:`convgen.engine.optim`,
the EMA in :mod:`convgen.engine.ema`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convgen import modeldir
from convgen.config import RunConfig
from convgen.data.datasets import DataBundle
from convgen.engine.runtime import DistInfo
from convgen.errors import ConfigError


@dataclass
class Context:
    """Where and how a task runs: device, distribution, precision and memory-format switches."""

    device: torch.device
    dist: DistInfo
    bf16: bool = False
    channels_last: bool = False

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare(self, module: nn.Module) -> nn.Module:
        module = module.to(self.device)
        return module.to(memory_format=torch.channels_last) if self.channels_last else module


def init_weights(source: str, network: str, kind: str) -> dict[str, torch.Tensor]:
    """The saved ``network`` weights of ``source`` (a model, run or checkpoint directory, or a zoo name) that a
    later training stage starts from (``task.init_from``); a source without them is an error naming ``kind``."""
    saved = modeldir.open_model(source)
    if not saved.has(network):
        raise ConfigError(f"task.init_from {source}: no {network}.safetensors (not a {kind})")
    return saved.weights(network)


class Task:
    """Base class. Subclasses set ``models`` (saved), ``optimizers`` and ``schedulers`` in ``__init__``."""

    #: model names written to an exported model directory (the networks inference needs)
    export_models: tuple[str, ...] = ()
    #: metric that selects the best checkpoint, and whether higher is better
    best_metric: tuple[str, str] = ("val/loss", "min")
    #: training values shown on the progress bar (all of them are logged)
    progress_keys: tuple[str, ...] = ("loss",)

    def __init__(self, cfg: RunConfig, data: DataBundle, ctx: Context, total_steps: int) -> None:
        self.cfg = cfg
        self.data = data
        self.ctx = ctx
        self.total_steps = total_steps
        self.models: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.run_dir: Path | None = None  # set by the trainer on the main process (for pictures written mid-run)
        self.current_step = 0  # set by the trainer before each evaluation

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor | None], step: int) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        return {}

    def health(self, val: dict[str, float], step: int) -> str | None:
        """After a validation: a reason to roll back to the last good checkpoint (e.g. mode collapse), or None."""
        return None

    def reseed(self, salt: int) -> None:
        """Re-seed the task's own random generators after a rollback, so the run does not replay its failure."""

    def extra_state(self) -> dict[str, Any]:
        """Task state beyond networks/optimisers/schedulers (augmentation RNG, EMA, ...)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def on_train_end(self, run_dir: Path) -> dict[str, Any]:
        """Write the run's pictures and return summary values (called on the main process)."""
        return {}

    def save_sample_grid(self, images: torch.Tensor, nrow: int | None = None) -> None:
        """``samples/step_N.png`` in the run directory at a validation (main process only)."""
        if self.run_dir is None or not self.ctx.dist.is_main:
            return
        from convgen.viz.grid import save_grid

        save_grid(images, self.run_dir / "samples" / f"step_{self.current_step:08d}.png", nrow=nrow)

    def export_meta(self) -> dict[str, Any]:
        """What the exported model's ``meta.json`` records beyond the checkpoint's metrics (e.g. class names)."""
        return {"class_names": self.data.class_names}

    def finalize_export(self, model_dir: Path) -> None:
        """Last step of an export, on the written model directory (e.g. a codec builds its coding tables here)."""

    def scale_learning_rates(self, factor: float) -> None:
        """Multiply every optimiser's learning rate (and its schedule) by ``factor`` (used by rollbacks)."""
        for name, opt in self.optimizers.items():
            sched = self.schedulers.get(name)
            if sched is not None:
                sched.base_lrs = [b * factor for b in sched.base_lrs]
            for group in opt.param_groups:
                group["lr"] *= factor
                if "initial_lr" in group:
                    group["initial_lr"] *= factor

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self.load_extra_state(state.get("extra", {}))
