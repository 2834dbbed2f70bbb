"""What a task gives the generic trainer: networks, optimisers, one training step, an evaluation, what to export.

The trainer owns the loop, logging, checkpoints, resume and distribution; a task owns the maths. A new task
(a GAN, a denoiser) subclasses :class:`Task` and is registered under the name used in ``task.type``
(``@TASKS.register("name")``). Optimisers, schedules and the optimiser step are in :mod:`convgen.engine.optim`,
the EMA in :mod:`convgen.engine.ema`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convgen import modeldir
from convgen.config import RunConfig
from convgen.data.datasets import DataBundle
from convgen.engine.optim import make_optimizer, make_scheduler
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


def load_init_weights(net: nn.Module, source: str, network: str, kind: str) -> None:
    """Load :func:`init_weights` into ``net`` exactly; weights of another shape or other names are a one-line
    error, not a traceback."""
    try:
        net.load_state_dict(init_weights(source, network, kind))
    except RuntimeError:
        raise ConfigError(f"task.init_from {source}: weights do not fit the configured model") from None


class Task:
    """Base class. Subclasses set ``models`` (saved) in ``__init__`` and add their optimisers with
    :meth:`add_optimizer`. What every family needs is here once: the task's random generator (``self.gen``, seeded
    from the run's seed and :attr:`rng_salt`, saved in the resume state, re-seeded after a rollback), the data
    checks (:meth:`check_data`), class conditioning (:attr:`conditional`) and the validation of generated samples
    (:attr:`validator`)."""

    #: model names written to an exported model directory (the networks inference needs)
    export_models: tuple[str, ...] = ()
    #: metric that selects the best checkpoint, and whether higher is better
    best_metric: tuple[str, str] = ("val/loss", "min")
    #: training values shown on the progress bar (all of them are logged)
    progress_keys: tuple[str, ...] = ("loss",)
    #: keeps the task's random stream apart from other tasks' for one run seed (seed * 7919 + salt + rank)
    rng_salt: int = 0

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
        self.steps_per_epoch: int | None = None  # set by the trainer
        #: the task's random generator (latents, noise, augmentation, label dropout)
        self.gen = torch.Generator().manual_seed(cfg.seed * 7919 + self.rng_salt + ctx.dist.rank)

    # -- what every family needs ---------------------------------------------------------------------------------
    def add_optimizer(self, name: str, params: Iterable, lr: float | None = None, schedule: bool = True,
                      steps: int | None = None) -> torch.optim.Optimizer:  # fmt: skip
        """An optimiser of ``train.optimizer`` (learning rate ``lr``, default ``train.lr``) under ``name``, with
        the run's learning-rate schedule over ``steps`` (default: the run's steps) unless ``schedule`` is False."""
        opt = make_optimizer(params, self.cfg.train, lr)
        self.optimizers[name] = opt
        if schedule:
            self.schedulers[name] = make_scheduler(opt, self.cfg.train, self.total_steps if steps is None else steps)
        return opt

    def check_data(self, *keys: str) -> None:
        """Refuse a model whose ``keys`` (of ``channels``, ``image_size``, ``num_classes``) disagree with the data;
        a conditional model (``model.num_classes`` > 0) needs labelled data."""
        m, data = self.cfg.model, self.data
        have = {"channels": data.channels, "in_channels": data.channels, "image_size": data.image_size,
                "num_classes": data.num_classes}  # fmt: skip
        for key in keys:
            value = getattr(m, key, None)
            if key == "num_classes" and not value:
                continue
            if value is not None and value != have[key]:
                raise ConfigError(f"config value model.{key} is {value} but the data has {have[key]}")
        if getattr(m, "num_classes", 0) and data.train.labels is None:
            raise ConfigError(f"model.num_classes is {m.num_classes}: the model needs labelled data (class "
                              "sub-folders or a labels array)")  # fmt: skip

    @property
    def conditional(self) -> bool:
        """A class-conditional model: ``model.num_classes`` > 0."""
        return bool(getattr(self.cfg.model, "num_classes", 0))

    @functools.cached_property
    def validator(self):
        """Scores generated samples in the feature space of ``task.fd_extractor`` against the held-out images
        (:class:`~convgen.metrics.distribution.SampleValidator`); None when it is ``none``."""
        from convgen.metrics.distribution import SampleValidator

        channels = getattr(self.cfg.model, "channels", self.data.channels)
        return SampleValidator.for_training(self.cfg.task.fd_extractor, channels, self.data, str(self.ctx.device))

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor | None], step: int) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        return {}

    def health(self, val: dict[str, float], step: int) -> str | None:
        """After a validation: a reason to roll back to the last good checkpoint (e.g. mode collapse), or None."""
        return None

    def reseed(self, salt: int) -> None:
        """Re-seed the task's random generator after a rollback, so the run does not replay its failure."""
        self.gen.manual_seed(self.cfg.seed * 7919 + self.rng_salt + 104729 * salt)

    def extra_state(self) -> dict[str, Any]:
        """Task state beyond networks/optimisers/schedulers: the random generator, and a family's own counters
        (extend with ``{**super().extra_state(), ...}``)."""
        return {"gen": self.gen.get_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        gen = state.get("gen", state.get("augment_gen"))  # augment_gen: the classifier's name before it was shared
        if gen is not None:
            self.gen.set_state(gen)

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
        state = {
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "extra": self.extra_state(),
        }
        validator = self.__dict__.get("validator")  # only once a validation has built it
        if validator is not None:
            state["validator_extractor"] = {"name": validator.extractor.name, "sha256_16": validator.extractor.digest}
        return state

    def _check_validator(self, saved: dict[str, str] | None) -> None:
        """A resumed run must score its samples in the feature space its best checkpoint was chosen in: a
        ``task.fd_extractor`` that now names other weights (a retrained zoo classifier) would compare FDs of two
        different feature spaces."""
        if not saved or self.validator is None or self.validator.extractor.digest == saved["sha256_16"]:
            return
        raise ConfigError(
            f"this run's validation FD was measured with {saved['name']} (weights sha256 {saved['sha256_16']}...), "
            f"but task.fd_extractor {self.cfg.task.fd_extractor!r} now has weights {self.validator.extractor.digest}"
            "...: resume with task.fd_extractor set to the original classifier (a model with those weights)"
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_validator(state.get("validator_extractor"))
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self.load_extra_state(state.get("extra", {}))
