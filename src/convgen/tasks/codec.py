"""Rate-distortion training of the learned codec (:class:`convgen.models.codec.ImageCodec`).

Each step draws a quality per patch and minimises ``lambda[q] * 255^2 * MSE + bpp`` (the rate from the
likelihoods of noise-perturbed latents; the reconstruction from rounded latents with a straight-through
gradient), plus the auxiliary loss that fits the entropy bottleneck's quantiles on its own optimiser. A share of
the patches is turned gray (three equal channels) so the one network codes gray photos too. Validation codes
the held-out crops at every quality with rounded latents and reports the estimated bpp and the PSNR; the best
checkpoint has the lowest mean rate-distortion loss. Export builds the integer coding tables
(:func:`convgen.entropy.tables.build_codec_tables`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from convgen.engine.optim import optimizer_step
from convgen.engine.runtime import wrap_ddp
from convgen.engine.task import Task, init_weights
from convgen.errors import ConfigError
from convgen.io.colour import luma
from convgen.losses.rate_distortion import bits_per_pixel, rate_distortion_loss
from convgen.models import build_model
from convgen.registry import TASKS
from convgen.schema import check
from convgen.tasks.restoration import random_dihedral


def to_gray3(x: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W colour -> its BT.601 luminance repeated in three channels."""
    return luma(x).expand_as(x)


@TASKS.register("codec")
class CodecTask(Task):
    @dataclass
    class Config:
        gray_fraction: float = 0.3  # share of training patches turned gray
        augment: bool = True  # random flips and 90-degree rotations
        aux_lr: float = 1e-3  # the quantiles' optimiser
        eval_batch_size: int = 4
        init_from: str | None = None  # a saved codec or checkpoint directory to start from (a later stage)
        max_loss_jump: float = 1.3  # roll back when val/loss exceeds the best so far by this factor (0: never)

        def __post_init__(self) -> None:
            check(0 <= self.gray_fraction <= 1, "task.gray_fraction", "must be in [0, 1]")
            check(self.aux_lr > 0, "task.aux_lr", "must be > 0")
            check(self.eval_batch_size >= 1, "task.eval_batch_size", "must be >= 1")
            check(self.max_loss_jump == 0 or self.max_loss_jump > 1, "task.max_loss_jump", "must be 0 or > 1")

    export_models = ("codec",)
    best_metric = ("val/loss", "min")
    progress_keys = ("loss", "bpp", "psnr")
    rng_salt = 31  # flips, gray images, qualities

    def __init__(self, cfg, data, ctx, total_steps) -> None:
        super().__init__(cfg, data, ctx, total_steps)
        if data.channels != 3:
            raise ConfigError("the codec trains on colour images (data.channels 3); gray is learnt from them")
        net = build_model(cfg.model)
        if not hasattr(net, "aux_loss"):
            raise ConfigError(f"model type {cfg.model.registry_name!r} is not a codec")
        if cfg.task.init_from:
            _init_from(net, cfg.task.init_from)
        self.best_loss = float("inf")
        net = ctx.prepare(net)
        self.models = {"codec": net}
        self.net = wrap_ddp(net, ctx.dist, ctx.device)
        main = [p for n, p in net.named_parameters() if not n.endswith("quantiles")]
        aux = [p for n, p in net.named_parameters() if n.endswith("quantiles")]
        self.add_optimizer("codec", main)
        self.add_optimizer("aux", aux, cfg.task.aux_lr, schedule=False)

    def train_step(self, batch, step: int) -> dict[str, float]:
        x, _ = batch
        tcfg, net = self.cfg.task, self.models["codec"]
        if tcfg.augment:
            x = random_dihedral(x, self.gen)
        gray = torch.rand(len(x), generator=self.gen) < tcfg.gray_fraction
        x = torch.where(gray.view(-1, 1, 1, 1), to_gray3(x), x)
        quality = torch.randint(0, net.qualities, (len(x),), generator=self.gen)
        x, quality = self.ctx.to_device(x), quality.to(self.ctx.device)
        self.net.train()
        out = self.net(x, quality)
        loss, parts = rate_distortion_loss(out["x_hat"], x, out["likelihoods"], net.lambdas[quality])
        opt, sched = self.optimizers["codec"], self.schedulers["codec"]
        optimizer_step(loss, opt, net.parameters(), self.cfg.train.grad_clip, sched)
        aux = net.aux_loss()
        optimizer_step(aux, self.optimizers["aux"], [net.entropy_bottleneck.quantiles])
        return {"loss": loss.item(), **parts, "aux": aux.item(), "lr": self.optimizers["codec"].param_groups[0]["lr"]}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if self.data.val is None:
            return {}
        net = self.models["codec"]
        net.eval()
        clean = self.data.val.images.float() / 255.0
        out: dict[str, float] = {}
        losses = []
        for q in range(net.qualities):
            bpp, mse = [], []
            for i in range(0, len(clean), self.cfg.task.eval_batch_size):
                x = self.ctx.to_device(clean[i : i + self.cfg.task.eval_batch_size])
                rec = net.estimate(x, torch.full((len(x),), q, device=x.device))
                bpp.append(bits_per_pixel(rec["likelihoods"], x).cpu())
                mse.append((rec["x_hat"].clamp(0, 1) - x).square().mean((1, 2, 3)).cpu())
            bpp_q, mse_q = torch.cat(bpp), torch.cat(mse)
            out[f"bpp_q{q + 1}"] = float(bpp_q.mean())
            out[f"psnr_q{q + 1}"] = float((-10 * torch.log10(mse_q.clamp_min(1e-10))).mean())
            losses.append(float((net.lambdas[q].cpu() * 255**2 * mse_q + bpp_q).mean()))
        out["loss"] = sum(losses) / len(losses)
        return out

    def health(self, val: dict[str, float], step: int) -> str | None:
        """Roll back when the validation loss jumps (a GDN transform blowing up), not when it drifts."""
        loss, best = val.get("val/loss"), self.best_loss
        if loss is None:
            return None
        self.best_loss = min(best, loss)
        jump = self.cfg.task.max_loss_jump
        if jump and loss > jump * best:
            return f"the rate-distortion loss jumped from {best:.3f} to {loss:.3f} (task.max_loss_jump={jump})"
        return None

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "best_loss": self.best_loss}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.best_loss = float(state.get("best_loss", float("inf")))

    def finalize_export(self, model_dir: Path) -> None:
        """Fit the bottleneck's quantiles exactly and write ``tables.safetensors`` from the exported weights."""
        from convgen.entropy.tables import build_codec_tables
        from convgen.io.weights import load_models, save_models

        net = self.models["codec"]
        load_models(model_dir, {"codec": net})  # the exported (best) weights
        net.cpu().entropy_bottleneck.fit_quantiles()
        save_models(model_dir, {"codec": net, "tables": build_codec_tables(net)})


def _init_from(net: torch.nn.Module, source: str) -> None:
    from convgen.io.weights import fit_state

    fit_state(net, init_weights(source, "codec", "codec model or checkpoint"), source)
