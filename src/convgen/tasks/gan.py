"""GAN training: DCGAN / conditional DCGAN with a choice of loss and stabilisers.

One trainer step is one discriminator update on one real batch; the generator is updated every ``d_steps``
steps (1 for the DCGAN recipe, 5 for WGAN-GP). The alternating update is the reference's: D on real and on a
detached fake batch, then G through the updated D on the same fake batch. The discriminator's weights are frozen
during the generator's backward pass, so no time is spent on gradients that would be thrown away.

Losses (``task.loss``): ``ns`` (the non-saturating loss of Goodfellow et al. / DCGAN; BCE on logits), ``hinge``,
``wgan-gp`` (Gulrajani et al.; ``gp_weight``) and ``ls`` (least squares, Mao et al.). Stabilisers: spectral norm
(``model.spectral_norm``), an EMA copy of the generator (saved in every checkpoint, used for evaluation, export
and sampling), R1 penalty (``r1_gamma``, lazily every ``r1_every`` steps), DiffAugment and separate learning rates
for G and D (``lr_g``/``lr_d``; two time-scale update rule).

Validation samples ``eval_samples`` images from the (EMA) generator and reports, in the feature space of a
classifier (``fd_extractor``, by default the zoo ``mnist-classifier`` for 1-channel data), the Fréchet distance to
the validation split (``val/fd_mnistcls`` -- not a standard FID), a diversity ratio (mean pairwise feature
distance of fakes / of reals; mode collapse drives it down), the smallest class share among samples, and for
conditional models the share of samples the classifier assigns to the requested class.

Self-conditioned GAN (``model.clusters``; Liu et al. 2020): before training, the training images are clustered by
k-means on their pixels (no labels are used), the cluster ids replace the labels for G and D, and the generator
learns the clusters' frequencies, from which it later picks a cluster for each latent (see
``convgen.models.gan.Generator.cluster_of``). It is sampled like any unconditional model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convgen.data.diffaugment import POLICIES, diff_augment
from convgen.data.transforms import resize
from convgen.engine.ema import EMA, recalibrate_batchnorm
from convgen.engine.optim import optimizer_step
from convgen.engine.runtime import wrap_ddp
from convgen.engine.task import Task
from convgen.errors import ConfigError
from convgen.losses.adversarial import d_loss, g_loss, gradient_penalty, r1_penalty
from convgen.losses.base import build_loss_config
from convgen.models import build_model
from convgen.models.gan import generate, latents
from convgen.registry import TASKS
from convgen.schema import check


@dataclass
class HealthConfig:
    # mode collapse = val/diversity below this AND below half of its best value so far (samples start out alike,
    # so only a fall from a healthier level counts) -> roll back to the last checkpoint
    collapse_diversity: float = 0.3
    min_step: int = 0  # no collapse verdicts before this step

    def __post_init__(self) -> None:
        check(0 <= self.collapse_diversity < 1, "task.health.collapse_diversity", "must be in [0, 1)")


@TASKS.register("gan")
class GANTask(Task):
    @dataclass
    class Config:
        loss: Any = "ns"  # an adversarial loss: its registered name (ns, hinge, wgan-gp, ls) or {type: name}
        lr_g: float | None = None  # null = train.lr
        lr_d: float | None = None  # null = train.lr
        d_steps: int = 1  # discriminator updates per generator update
        gp_weight: float = 10.0  # wgan-gp gradient penalty weight
        r1_gamma: float = 0.0  # R1 penalty gamma/2 * E|grad D(real)|^2; 0 = off
        r1_every: int = 1  # lazy R1: every this many D steps (scaled to keep the same strength)
        ema: bool = True
        ema_decay: float = 0.999
        ema_start: int = 0  # EMA copies the generator until this step
        diffaugment: list[str] = field(default_factory=list)  # subset of color, translation, cutout
        eval_samples: int = 1000
        eval_batch_size: int = 500
        fd_extractor: str = "auto"  # auto | none | classifier zoo name or model dir
        sample_grid: int = 64  # images in the samples/step_N.png grid written at each validation
        health: HealthConfig = field(default_factory=HealthConfig)

        def __post_init__(self) -> None:
            self.loss = build_loss_config("task.loss", self.loss, "adversarial")
            check(self.lr_g is None or self.lr_g > 0, "task.lr_g", "must be > 0")
            check(self.lr_d is None or self.lr_d > 0, "task.lr_d", "must be > 0")
            check(self.d_steps >= 1, "task.d_steps", "must be >= 1")
            check(self.gp_weight >= 0, "task.gp_weight", "must be >= 0")
            check(self.r1_gamma >= 0, "task.r1_gamma", "must be >= 0")
            check(self.r1_every >= 1, "task.r1_every", "must be >= 1")
            check(0 <= self.ema_decay < 1, "task.ema_decay", "must be in [0, 1)")
            check(self.ema_start >= 0, "task.ema_start", "must be >= 0")
            bad = [p for p in self.diffaugment if p not in POLICIES]
            check(not bad, "task.diffaugment", f"unknown policy {bad[:1]} (choose from {', '.join(POLICIES)})")
            check(self.eval_samples >= 10, "task.eval_samples", "must be >= 10")
            check(self.eval_batch_size >= 1, "task.eval_batch_size", "must be >= 1")
            check(self.sample_grid >= 1, "task.sample_grid", "must be >= 1")

    export_models = ("generator", "generator_ema")
    best_metric = ("val/fd", "min")
    progress_keys = ("loss_d", "loss_g")
    rng_salt = 31  # latents, labels, augmentation

    def __init__(self, cfg, data, ctx, total_steps) -> None:
        super().__init__(cfg, data, ctx, total_steps)
        m, t = cfg.model, cfg.task
        self.check_data("channels", "num_classes")
        if cfg.train.batch_size % m.d_pack:
            raise ConfigError(f"config value train.batch_size must be a multiple of model.d_pack ({m.d_pack})")
        if m.clusters > len(data.train) // 2:
            raise ConfigError(f"config value model.clusters ({m.clusters}) needs 2 or more training images per cluster")
        gan = build_model(m)
        if m.clusters:
            self._self_condition(gan.generator)
        g, d = ctx.prepare(gan.generator), ctx.prepare(gan.discriminator)
        self.models = {"generator": g, "discriminator": d}
        self.ema = EMA(g, t.ema_decay, warmup=True, start=t.ema_start) if t.ema else None
        self.g_ema = self.ema.average if self.ema is not None else None
        if self.g_ema is not None:
            self.models["generator_ema"] = self.g_ema
        else:
            self.export_models = ("generator",)
        self.G, self.D = wrap_ddp(g, ctx.dist, ctx.device), wrap_ddp(d, ctx.dist, ctx.device)
        self.add_optimizer("generator", g.parameters(), t.lr_g, steps=max(1, total_steps // t.d_steps))
        self.add_optimizer("discriminator", d.parameters(), t.lr_d)
        self._last_g = 0.0  # generator loss of the latest G update (logged on D-only steps too)
        self.g_updates = 0
        self.peak_diversity = 0.0

    # -- helpers -------------------------------------------------------------------------------------------------
    def _self_condition(self, generator: nn.Module) -> None:
        """k-means cluster ids of the training images become their labels; the clusters' frequencies become the
        generator's cluster prior."""
        from convgen.data.clusters import cluster_features, kmeans

        k = self.cfg.model.clusters
        labels, _ = kmeans(cluster_features(self.data.train.images), k, seed=self.cfg.seed)
        self.data.train.labels = labels
        generator.set_cluster_frequencies(torch.bincount(labels, minlength=k))

    def _latents(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = torch.randn(n, self.cfg.model.z_dim, generator=gen)
        y = torch.randint(0, self.cfg.model.num_classes, (n,), generator=gen) if self.conditional else None
        return z.to(self.ctx.device), None if y is None else y.to(self.ctx.device)

    def _real(self, x: torch.Tensor) -> torch.Tensor:
        x = resize(x, self.cfg.model.image_size)
        return self.ctx.to_device(x * 2 - 1)

    def _disc(self, x: torch.Tensor, y) -> torch.Tensor:
        """D's logits for a batch: DiffAugment first, then PacGAN packing (``model.d_pack`` consecutive images
        stacked as channels, one logit per pack)."""
        if self.cfg.task.diffaugment:
            x = diff_augment(x, self.cfg.task.diffaugment, self.gen)
        pack = self.cfg.model.d_pack
        if pack > 1:
            b, c, h, w = x.shape
            x = x.reshape(b // pack, pack * c, h, w)
        return self.D(x, y)

    def _penalty(self, real: torch.Tensor, fake: torch.Tensor, y, step: int) -> torch.Tensor | None:
        t = self.cfg.task
        if t.loss.registry_name == "wgan-gp" and t.gp_weight > 0:
            return t.gp_weight * gradient_penalty(lambda x: self._disc(x, y), real, fake, self.gen)
        if t.r1_gamma > 0 and step % t.r1_every == 0:
            return t.r1_gamma / 2 * t.r1_every * r1_penalty(lambda x: self._disc(x, y), real)
        return None

    # -- training ------------------------------------------------------------------------------------------------
    def train_step(self, batch, step: int) -> dict[str, float]:
        t = self.cfg.task
        x, labels = batch
        real = self._real(x)
        b = real.shape[0]
        y = labels.to(self.ctx.device) if self.conditional or self.cfg.model.clusters else None
        z, _ = self._latents(b, self.gen)
        # the fakes' condition: the real batch's classes (cGAN), or the clusters the latents pick (self-conditioned)
        y_fake = self.models["generator"].cluster_of(z) if self.cfg.model.clusters else y
        update_g = (step + 1) % t.d_steps == 0
        opt_d, opt_g = self.optimizers["discriminator"], self.optimizers["generator"]
        self.G.train()
        self.D.train()

        with self.ctx.autocast():
            if update_g:
                fake = self.G(z, y_fake)
            else:
                with torch.no_grad():
                    fake = self.G(z, y_fake)
            d_real = self._disc(real, y).float()
            d_fake = self._disc(fake.detach(), y_fake).float()
        loss_d = d_loss(t.loss, d_real, d_fake)
        penalty = self._penalty(real, fake, y, step)
        total_d = loss_d if penalty is None else loss_d + penalty
        clip = self.cfg.train.grad_clip
        optimizer_step(total_d, opt_d, self.D.parameters(), clip, self.schedulers["discriminator"])
        out = {
            "loss_d": loss_d.item(),
            "d_real": d_real.mean().item(),
            "d_fake": d_fake.mean().item(),
            "lr_d": opt_d.param_groups[0]["lr"],
        }
        if t.loss.registry_name == "wgan-gp" or t.r1_gamma > 0:
            out["penalty"] = 0.0 if penalty is None else penalty.item()

        if update_g:
            disc = self.models["discriminator"]
            disc.requires_grad_(False)  # no time on D's gradients: frozen in the forward pass and the backward
            with self.ctx.autocast():
                g_out = self._disc(fake, y_fake).float()
            loss_g = g_loss(t.loss, g_out)
            optimizer_step(loss_g, opt_g, self.G.parameters(), clip, self.schedulers["generator"], frozen=disc)
            self._last_g = loss_g.item()
            self.g_updates += 1
            if self.ema is not None:
                self.ema.update(self.models["generator"], self.ema.decay_at(step, self.g_updates))
        out["loss_g"] = self._last_g
        out["lr_g"] = opt_g.param_groups[0]["lr"]
        return out

    # -- evaluation ----------------------------------------------------------------------------------------------
    @property
    def sampler(self) -> nn.Module:
        return self.g_ema if self.g_ema is not None else self.models["generator"]

    @torch.no_grad()
    def generate(self, n: int, seed: int, net: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``n`` samples in [0, 1] (CPU) from a fixed seed; conditional models cycle through the classes."""
        net = net or self.sampler
        net.eval()
        z = latents(n, self.cfg.model.z_dim, seed)
        y = torch.arange(n) % self.cfg.model.num_classes if self.conditional else None
        return generate(net, z, y, batch_size=self.cfg.task.eval_batch_size, device=self.ctx.device), y

    def _recalibrate(self) -> None:
        if self.g_ema is None:
            return
        gen = torch.Generator().manual_seed(12345)
        bs = self.cfg.train.batch_size
        recalibrate_batchnorm(self.g_ema, lambda i: self._latents(bs, gen))

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self._recalibrate()
        fakes, y = self.generate(self.cfg.task.eval_samples, seed=2024)
        self.save_sample_grid(fakes[: self.cfg.task.sample_grid], self.cfg.model.num_classes or None)
        result: dict[str, float] = {"pixel_std": float(fakes.std(0).mean())}
        validator = self.validator
        if validator is not None:
            result.update(validator(fakes, y))
        return result

    def health(self, val: dict[str, float], step: int) -> str | None:
        """A reason to roll back (mode collapse), or None when training looks healthy."""
        h = self.cfg.task.health
        div = val.get("val/diversity")
        if div is None:
            return None
        peak, self.peak_diversity = self.peak_diversity, max(self.peak_diversity, div)
        if step >= h.min_step and div < h.collapse_diversity and div < 0.5 * peak:
            return (
                f"mode collapse suspected: sample diversity fell from {peak:.3f} to {div:.3f} of the real data's "
                f"(task.health.collapse_diversity={h.collapse_diversity})"
            )
        return None

    # -- state ---------------------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {
            **super().extra_state(),
            "last_g": self._last_g,
            "g_updates": self.g_updates,
            "peak_diversity": self.peak_diversity,
            **({"clusters": self.data.train.labels} if self.cfg.model.clusters else {}),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self._last_g = state.get("last_g", 0.0)
        self.g_updates = state.get("g_updates", 0)
        self.peak_diversity = state.get("peak_diversity", 0.0)
        if "clusters" in state:  # the run's own clustering, not a recomputation that could differ in a tie
            self.data.train.labels = state["clusters"].long()

    def on_train_end(self, run_dir: Path) -> dict[str, Any]:
        from convgen.viz.grid import save_grid

        self._recalibrate()
        fakes, _ = self.generate(100 if not self.conditional else 10 * self.cfg.model.num_classes, seed=0)
        nrow = 10 if not self.conditional else self.cfg.model.num_classes
        save_grid(fakes, run_dir / "samples.png", nrow=nrow)
        return {"pictures": ["samples.png"]}
