"""Training diffusion models (Ho et al. 2020): a U-Net learns to predict the noise (or v, or x0) added to a
training image at a uniformly drawn timestep, mean-squared error. Class-conditional models see the null class
instead of the label with probability ``cond_drop`` so one network also serves unconditionally, which is what
classifier-free guidance needs. An EMA copy of the U-Net (the engine's shared EMA) is saved in every checkpoint,
validated, exported and used for sampling.

Validation draws ``eval_samples`` EMA samples with the default sampler (DDIM, ``sample_steps`` steps, guidance
``guidance``) and scores them in a classifier's feature space (``val/fd``: FD-mnistcls for digits, not a standard
FID; diversity, smallest class share and, for a conditional model, the share recognised as the requested class);
``val/loss`` is the EMA network's loss on the held-out images at fixed timesteps and noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from convgen.diffusion import NoiseSchedule
from convgen.diffusion.samplers import generate
from convgen.engine.ema import EMA
from convgen.engine.optim import optimizer_step
from convgen.engine.runtime import wrap_ddp
from convgen.engine.task import Task
from convgen.errors import ConfigError
from convgen.models import build_model
from convgen.registry import TASKS
from convgen.schema import check


@TASKS.register("diffusion")
class DiffusionTask(Task):
    @dataclass
    class Config:
        schedule: Literal["linear", "cosine"] = "cosine"
        timesteps: int = 1000
        prediction: Literal["eps", "v", "x0"] = "eps"  # what the network is trained to output
        cond_drop: float = 0.1  # conditional models: share of training images shown with the null class
        ema_decay: float = 0.999
        ema_start: int = 0
        sample_steps: int = 25  # the default sampler: DDIM with this many steps ...
        guidance: float = 2.0  # ... and this classifier-free guidance scale (0 unconditional, 1 conditional)
        eta: float = 0.0  # ... and this DDIM eta (0 deterministic, 1 ancestral)
        eval_samples: int = 1000
        eval_batch_size: int = 64  # images per network batch when sampling (small batches are faster on a CPU)
        fd_extractor: str = "auto"  # auto | none | a classifier (zoo name or model dir)
        sample_grid: int = 100

        def __post_init__(self) -> None:
            check(2 <= self.timesteps <= 100_000, "task.timesteps", "must be in 2..100000")
            check(0 <= self.cond_drop < 1, "task.cond_drop", "must be in [0, 1)")
            check(0 <= self.ema_decay < 1, "task.ema_decay", "must be in [0, 1)")
            check(self.ema_start >= 0, "task.ema_start", "must be >= 0")
            check(1 <= self.sample_steps <= self.timesteps, "task.sample_steps", "must be in 1..task.timesteps")
            check(self.guidance >= 0, "task.guidance", "must be >= 0")
            check(0 <= self.eta <= 1, "task.eta", "must be in [0, 1]")
            check(self.eval_samples >= 10, "task.eval_samples", "must be >= 10")
            check(self.eval_batch_size >= 1, "task.eval_batch_size", "must be >= 1")
            check(self.sample_grid >= 1, "task.sample_grid", "must be >= 1")

    export_models = ("unet_ema",)
    best_metric = ("val/fd", "min")
    progress_keys = ("loss",)
    rng_salt = 59  # timesteps, noise, label dropout

    def __init__(self, cfg, data, ctx, total_steps) -> None:
        super().__init__(cfg, data, ctx, total_steps)
        m, t = cfg.model, cfg.task
        self.check_data("channels", "num_classes")
        net = build_model(m)
        if not hasattr(net, "multiple") or not hasattr(net, "embedding"):
            raise ConfigError(f"model type {m.registry_name!r} is not a diffusion U-Net")
        net = ctx.prepare(net)
        self.net, self.module = net, wrap_ddp(net, ctx.dist, ctx.device)
        self.ema = EMA(net, t.ema_decay, warmup=True, start=t.ema_start)
        self.models = {"unet": net, "unet_ema": self.ema.average}
        self.add_optimizer("unet", net.parameters())
        self.schedule = NoiseSchedule.make(t.schedule, t.timesteps)
        self.updates = 0
        if self.validator is None and cfg.train.best_metric is None:
            self.best_metric = ("val/loss", "min")

    def loss(self, net, x0: torch.Tensor, labels, gen: torch.Generator) -> torch.Tensor:
        """The training loss of a batch in [0, 1] (timesteps, noise and label dropout drawn from ``gen``)."""
        t_cfg = self.cfg.task
        x0 = x0 * 2 - 1
        b = len(x0)
        t = torch.randint(0, self.schedule.T, (b,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        if labels is not None:
            drop = torch.rand(b, generator=gen) < t_cfg.cond_drop
            labels = torch.where(drop, torch.full_like(labels, self.net.num_classes), labels)
        xt = self.schedule.q_sample(x0, t, noise)
        target = self.schedule.target(t_cfg.prediction, x0, noise, t)
        dev = self.ctx.device
        out = net(self.ctx.to_device(xt), t.to(dev), None if labels is None else labels.to(dev))
        return F.mse_loss(out.float(), self.ctx.to_device(target))

    def train_step(self, batch, step: int) -> dict[str, float]:
        x, labels = batch
        self.net.train()
        with self.ctx.autocast():
            loss = self.loss(self.module, x, labels if self.conditional else None, self.gen)
        opt = self.optimizers["unet"]
        optimizer_step(loss, opt, self.net.parameters(), self.cfg.train.grad_clip, self.schedulers["unet"])
        self.updates += 1
        self.ema.update(self.net, self.ema.decay_at(step, self.updates))
        return {"loss": loss.item(), "lr": opt.param_groups[0]["lr"]}

    # -- validation ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``n`` EMA samples in [0, 1] (CPU) with the default sampler; conditional models cycle through the
        classes."""
        t = self.cfg.task
        ema = self.ema.average.eval()
        y = torch.arange(n) % self.net.num_classes if self.conditional else None
        shape = (self.cfg.model.channels, self.cfg.model.image_size, self.cfg.model.image_size)

        def net(x, tb, labels):
            return ema(self.ctx.to_device(x), tb, labels)

        null = self.net.num_classes if self.conditional else None
        fakes = generate(net, self.schedule, t.prediction, shape, n, seed, y, t.sample_steps, t.guidance, t.eta,
                         t.eval_batch_size, null, self.ctx.device)  # fmt: skip
        return fakes, y

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        split = self.data.val if self.data.val is not None else self.data.train
        x, labels = split.batch(torch.arange(min(len(split), 1000)))
        gen = torch.Generator().manual_seed(2024)
        net = self.ema.average.eval()
        losses = []
        for i in range(0, len(x), self.cfg.task.eval_batch_size):
            sl = slice(i, i + self.cfg.task.eval_batch_size)
            yi = labels[sl] if self.conditional and labels is not None else None
            losses.append(self.loss(net, x[sl], yi, gen).item() * len(x[sl]))
        result = {"loss": sum(losses) / len(x)}
        validator = self.validator
        if validator is not None:
            fakes, y = self.generate(self.cfg.task.eval_samples, seed=2024)
            self.save_sample_grid(fakes[: self.cfg.task.sample_grid], self.net.num_classes or None)
            result.update(validator(fakes, y))
        return result

    # -- state ---------------------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "updates": self.updates}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.updates = state.get("updates", 0)

    def export_meta(self) -> dict[str, Any]:
        t = self.cfg.task
        sampler = {"steps": t.sample_steps, "guidance": t.guidance, "eta": t.eta}
        return {**super().export_meta(), "inference": sampler}

    def on_train_end(self, run_dir: Path) -> dict[str, Any]:
        from convgen.viz.grid import save_grid

        n = 100 if not self.conditional else 10 * self.net.num_classes
        fakes, _ = self.generate(n, seed=0)  # a conditional model's classes cycle: one column per class
        save_grid(fakes, run_dir / "samples.png", nrow=10)
        return {"pictures": ["samples.png"]}
