"""Training diffusion models (Ho et al. 2020): a U-Net learns to predict the noise (or v, or x0) added to a
training image at a uniformly drawn timestep, mean-squared error. Class-conditional models see the null class
instead of the label with probability ``cond_drop`` so one network also serves unconditionally, which is what
classifier-free guidance needs. An EMA copy of the U-Net (the engine's shared EMA) is saved in every checkpoint,
validated, exported and used for sampling.

Validation draws ``eval_samples`` EMA samples with the default sampler (DDIM, ``sample_steps`` steps, guidance
``guidance``) and scores them in a classifier's feature space (``val/fd``: FD-mnistcls for digits, not a standard
FID; diversity, smallest class share and, for a conditional model, the share recognised as the requested class);
``val/loss`` is the EMA network's loss on the held-out images at fixed timesteps and noise.

**Distillation** (``task.distill.teacher`` set): the network is a student of a trained diffusion model, started
from its weights. Progressive distillation (Salimans & Ho 2022) with the guidance folded in (Meng et al. 2023):
one DDIM step of the student from level ``G[f i]`` of the teacher's grid ``G`` must land where ``f`` guided DDIM
steps of the teacher land (``G[f (i + 1)]``), at a guidance scale drawn from ``guidance_range`` that the student
takes as an input, so it samples in ``len(G) / f`` steps of one network pass each. The regression target is the
clean image that makes one DDIM step exact, given to the network in its own parameterisation (MSE). The first
level is trained from pure noise, as sampling starts; the default ``trailing`` grid leaves out level T - 1, where
an eps-predicting teacher's clean-image estimate is only clipping. A student can be the teacher of the next stage
(its own grid is then ``G``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from convgen.data.transforms import random_hflip
from convgen.diffusion import NoiseSchedule
from convgen.diffusion.samplers import ddim_timesteps, distilled_grid, generate, one_step_target
from convgen.engine.ema import EMA
from convgen.engine.optim import optimizer_step
from convgen.engine.runtime import wrap_ddp
from convgen.engine.task import Task
from convgen.errors import ConfigError
from convgen.models import build_model
from convgen.registry import TASKS
from convgen.schema import check


@dataclass
class DistillConfig:
    """``task.distill``: learn a few-step student of a trained diffusion model (off while ``teacher`` is null)."""

    teacher: str | None = None  # a diffusion model (zoo name or model dir) with the same schedule and classes
    teacher_steps: int | None = None  # the teacher's grid: DDIM with this many steps (null: a distilled teacher's)
    factor: int = 2  # teacher steps per student step
    # the teacher's levels: "even" = DDIM's grid from T - 1; "trailing" = the even grid of teacher_steps + 1 without
    # its first level, T - 1 (where an eps-predicting model's x0 estimate is pure clipping: sqrt(abar) ~ 0)
    grid: Literal["even", "trailing"] = "trailing"
    guidance_range: list[float] = field(default_factory=lambda: [1.0, 3.0])  # scales the student learns

    def __post_init__(self) -> None:
        check(self.teacher_steps is None or self.teacher_steps >= 1, "task.distill.teacher_steps", "must be >= 1")
        check(self.factor >= 1, "task.distill.factor", "must be >= 1")
        lo_hi = self.guidance_range
        ok = len(lo_hi) == 2 and 0 <= lo_hi[0] <= lo_hi[1]
        check(ok, "task.distill.guidance_range", "must be [low, high] with 0 <= low <= high")


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
        hflip: bool = False  # training images mirrored left-right at random (half of them), as DDPM on CIFAR-10
        distill: DistillConfig = field(default_factory=DistillConfig)

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
        self.schedule = NoiseSchedule.make(t.schedule, t.timesteps)
        self.teacher, self.grid = None, None  # distillation: the teacher network and the student's timesteps
        if t.distill.teacher:
            self._setup_distillation(net)
        net = ctx.prepare(net)
        self.net, self.module = net, wrap_ddp(net, ctx.dist, ctx.device)
        self.ema = EMA(net, t.ema_decay, warmup=True, start=t.ema_start)
        self.models = {"unet": net, "unet_ema": self.ema.average}
        self.add_optimizer("unet", net.parameters())
        self.updates = 0
        if self.validator is None and cfg.train.best_metric is None:
            self.best_metric = ("val/loss", "min")

    # -- distillation ---------------------------------------------------------------------------------------------
    def _setup_distillation(self, net: torch.nn.Module) -> None:
        """Open the teacher, check it fits the student, start the student from its weights, set the grids."""
        from convgen import modeldir

        t, d = self.cfg.task, self.cfg.task.distill
        saved = modeldir.open_model(d.teacher)
        tt, tm = saved.cfg.task, saved.cfg.model
        if saved.task != "diffusion":
            raise ConfigError(f"task.distill.teacher {d.teacher} is not a diffusion model")
        for key in ("schedule", "timesteps", "prediction"):
            if getattr(tt, key) != getattr(t, key):
                raise ConfigError(f"task.{key} is {getattr(t, key)!r} but the teacher's is {getattr(tt, key)!r}")
        if getattr(tm, "num_classes", 0) != self.cfg.model.num_classes:
            raise ConfigError(f"model.num_classes must be the teacher's ({getattr(tm, 'num_classes', 0)})")
        if self.conditional and not self.cfg.model.guidance_input:
            raise ConfigError("a conditional student needs model.guidance_input: true (the scale is an input)")
        name = "unet_ema" if saved.has("unet_ema") else "unet"
        self.teacher = saved.network(name, self.ctx.device).requires_grad_(False)
        self.teacher_folded = bool(getattr(tm, "guidance_input", False))
        misfit = f"the student (model section) does not fit the teacher {d.teacher}'s weights"
        try:
            missing, unexpected = net.load_state_dict(saved.weights(name), strict=False)
        except RuntimeError:  # a tensor of another shape
            raise ConfigError(f"{misfit}: the model section must be the teacher's (plus guidance_input)") from None
        if unexpected or any(not k.startswith("guidance_mlp.") for k in missing):
            raise ConfigError(f"{misfit}: missing {missing[:3]}, unexpected {unexpected[:3]}")
        own = saved.meta.get("distilled", {}).get("timesteps")
        if d.teacher_steps is None and not own:
            raise ConfigError(f"task.distill.teacher_steps is needed: {d.teacher} has no distilled grid of its own")
        if d.teacher_steps:
            extra = d.grid == "trailing"
            teacher_grid = ddim_timesteps(t.timesteps, d.teacher_steps + extra)[extra:]
        else:
            teacher_grid = list(own)
        try:
            self.grid = distilled_grid(teacher_grid, d.factor)
        except ValueError as exc:
            raise ConfigError(f"task.distill: {exc}") from None
        self.teacher_grid = torch.tensor([*teacher_grid, -1])
        if t.sample_steps != len(self.grid):
            raise ConfigError(f"task.sample_steps must be the student's step count, {len(self.grid)} "
                              f"({len(teacher_grid)} teacher steps / factor {d.factor})")  # fmt: skip

    def _scaled(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(abar_t) and sqrt(1 - abar_t) per image (t = -1: 1 and 0), shaped to broadcast over ``like``."""
        ab = self.schedule.abar(t)
        return self.schedule._b(ab.sqrt(), like), self.schedule._b((1 - ab).sqrt(), like)

    @torch.no_grad()
    def _teacher_out(self, x: torch.Tensor, t: torch.Tensor, labels, w: torch.Tensor) -> torch.Tensor:
        """The teacher's guided output at per-image timesteps ``t`` and scales ``w`` (null-class rows: unguided)."""
        dev = self.ctx.device
        x, t = self.ctx.to_device(x), t.to(dev)
        if labels is None:
            return self.teacher(x, t, None).float().cpu()
        labels, w = labels.to(dev), w.to(dev)
        if self.teacher_folded:
            return self.teacher(x, t, labels, w).float().cpu()
        null = torch.full_like(labels, self.net.num_classes)
        cond, uncond = self.teacher(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).float().chunk(2)
        return (uncond + w.view(-1, 1, 1, 1) * (cond - uncond)).cpu()

    def distill_loss(self, net, x0: torch.Tensor, labels, gen: torch.Generator) -> torch.Tensor:
        """The student's loss on a batch in [0, 1]: from x_t at a random student level, ``factor`` guided teacher
        DDIM steps give x_end; the target is the (x0, eps) for which one DDIM step from x_t lands on x_end
        (:func:`~convgen.diffusion.samplers.one_step_target`), in the network's parameterisation."""
        t_cfg, d = self.cfg.task, self.cfg.task.distill
        x0 = x0 * 2 - 1
        b = len(x0)
        pos = torch.randint(0, len(self.grid), (b,), generator=gen) * d.factor
        noise = torch.randn(x0.shape, generator=gen)
        lo, hi = d.guidance_range
        w = lo + (hi - lo) * torch.rand(b, generator=gen)
        if labels is not None:
            drop = torch.rand(b, generator=gen) < t_cfg.cond_drop
            labels = torch.where(drop, torch.full_like(labels, self.net.num_classes), labels)
        t = self.teacher_grid[pos]  # the first level starts from pure noise, as sampling does
        xt = torch.where((pos == 0).view(-1, 1, 1, 1), noise, self.schedule.q_sample(x0, t, noise))
        x = xt
        for j in range(d.factor):  # the teacher's deterministic DDIM steps
            tj, tn = self.teacher_grid[pos + j], self.teacher_grid[pos + j + 1]
            x0h, eps = self.schedule.split(t_cfg.prediction, x, self._teacher_out(x, tj, labels, w), tj)
            a_n, s_n = self._scaled(tn, x)
            x = a_n * x0h + s_n * eps
        x_target, eps_target = one_step_target(self.schedule, xt, t, x, self.teacher_grid[pos + d.factor])
        target = self.schedule.target(t_cfg.prediction, x_target, eps_target, t)
        dev = self.ctx.device
        y = None if labels is None else labels.to(dev)
        out = net(self.ctx.to_device(xt), t.to(dev), y, w.to(dev) if y is not None else None)
        return F.mse_loss(out.float(), self.ctx.to_device(target))

    def loss(self, net, x0: torch.Tensor, labels, gen: torch.Generator) -> torch.Tensor:
        """The training loss of a batch in [0, 1] (timesteps, noise and label dropout drawn from ``gen``)."""
        if self.teacher is not None:
            return self.distill_loss(net, x0, labels, gen)
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
        if self.cfg.task.hflip:
            x = random_hflip(x, self.gen)
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

        def net(x, tb, labels, scales=None):
            return ema(self.ctx.to_device(x), tb, labels, scales)

        null = self.net.num_classes if self.conditional else None
        folded = bool(getattr(self.cfg.model, "guidance_input", False))
        fakes = generate(net, self.schedule, t.prediction, shape, n, seed, y, t.sample_steps, t.guidance, t.eta,
                         t.eval_batch_size, null, self.ctx.device, timesteps=self.grid, folded=folded)  # fmt: skip
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
        meta = {**super().export_meta(), "inference": sampler}
        if self.grid is not None:
            d = t.distill
            meta["distilled"] = {"timesteps": self.grid, "teacher": d.teacher, "factor": d.factor,
                                 "teacher_steps": len(self.teacher_grid) - 1,
                                 "guidance_range": d.guidance_range}  # fmt: skip
        return meta

    def on_train_end(self, run_dir: Path) -> dict[str, Any]:
        from convgen.viz.grid import save_grid

        n = 100 if not self.conditional else 10 * self.net.num_classes
        fakes, _ = self.generate(n, seed=0)  # a conditional model's classes cycle: one column per class
        save_grid(fakes, run_dir / "samples.png", nrow=10)
        return {"pictures": ["samples.png"]}
