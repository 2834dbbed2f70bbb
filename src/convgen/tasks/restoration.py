"""Image restoration: train a network to undo a degradation (noise, missing regions, down-sampling, JPEG).

Each step cuts a batch of clean patches, flips/rotates them (8 dihedral transforms), degrades them with the
configured degradation (:mod:`convgen.data.degradations`) and regresses the clean patch. Validation degrades whole
held-out images deterministically (the benchmark protocol: Gaussian noise seeded by image index) and reports PSNR
and SSIM; the best checkpoint is the one with the highest validation PSNR.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convgen.data.degradations import build_degradation_config, make_degradation
from convgen.data.transforms import dihedral
from convgen.engine.optim import optimizer_step
from convgen.engine.runtime import wrap_ddp
from convgen.engine.task import Task, init_weights
from convgen.errors import ConfigError
from convgen.losses.base import build_loss_config, make_loss
from convgen.metrics.reference import psnr, ssim
from convgen.models import build_model
from convgen.registry import TASKS
from convgen.schema import check


def random_dihedral(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Apply one of the 8 flips/rotations (:func:`~convgen.data.transforms.dihedral`), chosen independently for
    each image of a B x C x S x S batch."""
    choice = torch.randint(0, 8, (x.shape[0],), generator=gen)
    out = x.clone()
    for k in range(1, 8):
        idx = (choice == k).nonzero().flatten()
        if len(idx):
            out[idx] = dihedral(x[idx], k)
    return out


@TASKS.register("restoration")
class RestorationTask(Task):
    @dataclass
    class Config:
        degradation: Any = None  # {kind: noise | poisson-gaussian | inpaint | superres | jpeg, ...}; null = noise
        loss: Any = "charbonnier"  # a pixel loss: its registered name, or {type: name, ...its settings}
        hole_weight: float = 5.0  # inpainting: extra loss weight on missing pixels
        augment: bool = True  # random flips and 90-degree rotations
        eval_sigmas: list[float] = field(default_factory=lambda: [25.0])  # noise: validation noise levels
        eval_batch_size: int = 8
        init_from: str | None = None  # a saved restoration model (zoo name or path) to start from

        def __post_init__(self) -> None:
            self.degradation = build_degradation_config(self.degradation)
            self.loss = build_loss_config("task.loss", self.loss, "pixel")
            check(self.hole_weight >= 0, "task.hole_weight", "must be >= 0")
            check(bool(self.eval_sigmas), "task.eval_sigmas", "needs at least one noise level")
            check(self.eval_batch_size >= 1, "task.eval_batch_size", "must be >= 1")

    export_models = ("restorer",)
    best_metric = ("val/psnr", "max")
    progress_keys = ("loss",)
    rng_salt = 29  # patches' flips, noise, masks

    def __init__(self, cfg, data, ctx, total_steps) -> None:
        super().__init__(cfg, data, ctx, total_steps)
        m = cfg.model
        self.degradation = make_degradation(cfg.task.degradation)
        self.loss = make_loss(cfg.task.loss)
        if getattr(m, "channels", data.channels) != data.channels:
            raise ConfigError(f"config value model.channels is {m.channels} but the data has {data.channels}")
        self.degradation.check_model(m)
        net = build_model(m)
        if not hasattr(net, "cond_channels"):
            raise ConfigError(f"model type {m.registry_name!r} is not a restoration network")
        if cfg.task.init_from:
            self._init_from(net, cfg.task.init_from)
        net = ctx.prepare(net)
        self.models = {"restorer": net}
        self.net = wrap_ddp(net, ctx.dist, ctx.device)
        self.add_optimizer("restorer", net.param_groups() if hasattr(net, "param_groups") else net.parameters())
        self._val_cache: dict[float | None, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}

    @staticmethod
    def _init_from(net: torch.nn.Module, source: str) -> None:
        own = net.state_dict()
        state = init_weights(source, "restorer", "restoration model")
        if hasattr(net, "adapt_state"):
            state = net.adapt_state(state)
        state = {k: _inflate(v, own[k]) if k in own else v for k, v in state.items()}
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError:
            missing, unexpected = ["(shape mismatch)"], []
        if missing or unexpected:
            raise ConfigError(f"task.init_from {source}: weights do not fit the configured model")

    def train_step(self, batch, step: int) -> dict[str, float]:
        clean, _ = batch
        tcfg = self.cfg.task
        if tcfg.augment:
            clean = random_dihedral(clean, self.gen)
        noisy, cond = self.degradation.batch(clean, self.gen)
        weight = self.degradation.loss_weight(cond, tcfg.hole_weight)
        weight = None if weight is None else self.ctx.to_device(weight)
        clean, noisy = self.ctx.to_device(clean), self.ctx.to_device(noisy)
        cond = self.ctx.to_device(cond) if cond is not None else None
        opt = self.optimizers["restorer"]
        self.net.train()
        with self.ctx.autocast():
            out = self.net(noisy, cond)
        loss = self.loss(out.float() - clean, weight)
        net = self.models["restorer"]
        aux = getattr(net, "last_aux", None)  # a network's own loss term (a noise-estimation branch), from forward
        if aux is not None:
            loss = loss + aux.float()
            net.last_aux = None
        optimizer_step(loss, opt, self.net.parameters(), self.cfg.train.grad_clip, self.schedulers["restorer"])
        with torch.no_grad():
            mse = (out.detach().float().clamp(0, 1) - clean).square().mean()
        return {
            "loss": loss.item(),
            "psnr": float(-10 * torch.log10(mse.clamp_min(1e-10))),
            "lr": opt.param_groups[0]["lr"],
            **({"estimation": float(aux.detach())} if aux is not None else {}),
        }

    # -- validation --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def restore_batch(self, degraded: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        net = self.models["restorer"]
        net.eval()
        with self.ctx.autocast():
            out = net(self.ctx.to_device(degraded), None if cond is None else self.ctx.to_device(cond))
        return self.degradation.finish(degraded, out.float().cpu().clamp(0, 1), cond)

    def _degraded_val(self, sigma: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(clean, degraded, conditioning) for the validation images; deterministic, so built once per level."""
        if sigma not in self._val_cache:
            self._val_cache[sigma] = self._degrade_val(sigma)
        return self._val_cache[sigma]

    def _degrade_val(self, sigma: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        clean = self.data.val.images.float() / 255.0
        deg, conds = [], []
        for i, img in enumerate(clean.permute(0, 2, 3, 1).numpy()):
            d, c = self.degradation.protocol(img, i, sigma)
            deg.append(torch.from_numpy(np.ascontiguousarray(d)).permute(2, 0, 1))
            conds.append(None if c is None else torch.from_numpy(c).permute(2, 0, 1))
        cond = None if conds[0] is None else torch.stack(conds)
        return clean, torch.stack(deg).float(), cond

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if self.data.val is None:
            return {}
        sigmas = self.degradation.eval_levels(self.cfg.task.eval_sigmas)
        out: dict[str, float] = {}
        bs = self.cfg.task.eval_batch_size
        for j, sigma in enumerate(sigmas):
            clean, deg, cond = self._degraded_val(sigma)
            restored = torch.cat(
                [
                    self.restore_batch(deg[i : i + bs], None if cond is None else cond[i : i + bs])
                    for i in range(0, len(deg), bs)
                ]
            )
            ref = clean.permute(0, 2, 3, 1).numpy()
            res = restored.permute(0, 2, 3, 1).numpy()
            suffix = "" if j == 0 else f"_s{sigma:g}"
            out[f"psnr{suffix}"] = float(np.mean([psnr(a, b) for a, b in zip(ref, res, strict=True)]))
            if j == 0:
                out["ssim"] = float(np.mean([ssim(a, b) for a, b in zip(ref, res, strict=True)]))
                out["psnr_input"] = float(
                    np.mean(
                        [psnr(a, np.clip(b, 0, 1)) for a, b in zip(ref, deg.permute(0, 2, 3, 1).numpy(), strict=True)]
                    )
                )
                if cond is not None and self.degradation.has_mask:
                    masks = cond.permute(0, 2, 3, 1).numpy()[..., 0] > 0.5
                    out["psnr_missing"] = float(
                        np.mean([psnr(a, b, mask=m) for a, b, m in zip(ref, res, masks, strict=True)])
                    )
                    inputs = deg.permute(0, 2, 3, 1).numpy()  # zeros, or the Telea pre-fill in the holes
                    out["psnr_missing_input"] = float(
                        np.mean([psnr(a, b, mask=m) for a, b, m in zip(ref, inputs, masks, strict=True)])
                    )
        return out

    def on_train_end(self, run_dir: Path) -> dict[str, Any]:
        from convgen.viz.grid import save_grid

        if self.data.val is None:
            return {}
        clean, deg, cond = self._degraded_val(None)
        n = min(4, len(clean))
        restored = self.restore_batch(deg[:n], None if cond is None else cond[:n])
        rows = torch.stack([deg[:n].clamp(0, 1), restored, clean[:n]], 1).flatten(0, 1)
        save_grid(rows, run_dir / "restoration.png", nrow=3)
        return {"pictures": ["restoration.png"]}


def _inflate(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Gray -> colour start for ``init_from``: a 1-channel input layer sees the mean of the colour channels
    (weights / C) and a 1-channel output layer is repeated for every channel. Other shapes pass unchanged."""
    if src.shape == dst.shape or src.ndim != dst.ndim:
        return src
    if src.ndim == 4 and src.shape[1] == 1 and src.shape[0] == dst.shape[0] and src.shape[2:] == dst.shape[2:]:
        return src.repeat(1, dst.shape[1], 1, 1) / dst.shape[1]
    if src.shape[0] == 1 and src.shape[1:] == dst.shape[1:]:
        return src.repeat(dst.shape[0], *([1] * (src.ndim - 1)))
    return src
