"""Watermark training: an encoder hides random bits in photo patches, a random chain of attacks
(:func:`convgen.data.attacks.random_attack`: crops, resizing, blur, noise, colour changes, real JPEG through a
straight-through gradient, 8-bit rounding) damages them, and the decoder reads the bits back; both are trained on
the bits' cross-entropy. The mark's strength is not learned: every mark is scaled to ``task.psnr`` dB, so the
networks only learn where and how to put that energy. For the first ``task.warm`` of the steps the marks are strong
(``task.psnr_start`` dB) and unattacked; over the next ``task.curriculum`` they weaken to ``task.psnr`` dB while the
attacks' ranges grow from nothing to full (a cold start at full strength and full attacks does not learn: 300
steps at 40 dB stayed at chance, and so did 300 steps with attacks ramping from the first step). Validation reads
held-out photos after each of the benchmark's fixed attacks (:data:`convgen.data.attacks.BENCHMARK`), each read
at the zoom (:data:`convgen.models.watermark.ZOOMS`) the decoder is surest of; the best checkpoint has the highest
mean bit accuracy over the attacks the acceptance names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from convgen.data.attacks import BENCHMARK, REQUIRED, quantize, random_attack
from convgen.engine.optim import optimizer_step
from convgen.engine.runtime import wrap_ddp
from convgen.engine.task import Task, load_init_weights
from convgen.errors import ConfigError
from convgen.models import build_model
from convgen.models.watermark import resize
from convgen.registry import TASKS
from convgen.schema import check


@TASKS.register("watermark")
class WatermarkTask(Task):
    @dataclass
    class Config:
        psnr: float = 40.0  # every training mark's distance from its photo (dB)
        psnr_start: float = 20.0  # the marks start this strong and weaken to ``psnr`` over the curriculum
        warm: float = 0.1  # fraction of the steps (first) with no attacks and the marks at ``psnr_start``
        curriculum: float = 0.2  # fraction of the steps (after ``warm``) over which the attacks grow to full strength
        eval_batch_size: int = 16
        crop_share: float = 0.0  # extra share of images whose attacks start with a centre crop of 30-80% of the area
        init_from: str | None = None  # a saved watermark model (zoo name or path) to start from (a fine-tuning stage)

        def __post_init__(self) -> None:
            check(20 <= self.psnr <= 60, "task.psnr", "must be in [20, 60] dB")
            check(10 <= self.psnr_start <= self.psnr, "task.psnr_start", "must be in [10, task.psnr] dB")
            check(0 <= self.warm <= 1, "task.warm", "must be in [0, 1]")
            check(0 <= self.curriculum <= 1, "task.curriculum", "must be in [0, 1]")
            check(self.eval_batch_size >= 1, "task.eval_batch_size", "must be >= 1")
            check(0 <= self.crop_share <= 1, "task.crop_share", "must be in [0, 1]")

    export_models = ("watermark",)
    best_metric = ("val/bit_accuracy", "max")
    progress_keys = ("loss", "bit_accuracy")
    rng_salt = 43  # bits and attacks

    def __init__(self, cfg, data, ctx, total_steps) -> None:
        super().__init__(cfg, data, ctx, total_steps)
        if data.channels != 3:
            raise ConfigError(f"a watermark is trained on colour photos; the data has {data.channels} channel(s)")
        net = build_model(cfg.model)
        if not hasattr(net, "residual"):
            raise ConfigError(f"model type {cfg.model.registry_name!r} is not a watermark network")
        if cfg.task.init_from:
            load_init_weights(net, cfg.task.init_from, "watermark", "watermark model")
        net = ctx.prepare(net)
        self.models = {"watermark": net}
        self.net = wrap_ddp(net, ctx.dist, ctx.device)
        self.add_optimizer("watermark", net.parameters())

    def strength(self, step: int) -> float:
        """The curriculum at ``step``: 0 (no attacks, marks at ``psnr_start``) to 1 (full attacks, ``psnr``)."""
        t = self.cfg.task
        start, ramp = t.warm * self.total_steps, t.curriculum * self.total_steps
        if step < start:
            return 0.0
        return 1.0 if ramp <= 0 else min(1.0, (step - start) / ramp)

    def train_step(self, batch, step: int) -> dict[str, float]:
        photos = self.ctx.to_device(batch[0])
        net = self.models["watermark"]
        bits = torch.randint(0, 2, (len(photos), net.cfg.bits), generator=self.gen).to(photos)
        self.net.train()
        s = self.strength(step)
        psnr = self.cfg.task.psnr_start + (self.cfg.task.psnr - self.cfg.task.psnr_start) * s
        marked = net.embed(photos, bits, psnr)
        # each image's attack chain gives its own size; the decoder sees them all at its working size, as one batch
        # (decoding them one by one would leave its BatchNorm a batch of one)
        share = self.cfg.task.crop_share
        logits = net.decode(torch.cat([resize(random_attack(marked[i : i + 1], self.gen, s, share), net.work)
                                       for i in range(len(marked))]))  # fmt: skip
        loss = F.binary_cross_entropy_with_logits(logits, bits)
        opt = self.optimizers["watermark"]
        optimizer_step(loss, opt, self.net.parameters(), self.cfg.train.grad_clip, self.schedulers["watermark"])
        acc = ((logits.detach() > 0).float() == bits).float().mean()
        lr = opt.param_groups[0]["lr"]
        return {"loss": loss.item(), "bit_accuracy": acc.item(), "strength": s, "psnr": psnr, "lr": lr}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if self.data.val is None:
            return {}
        net = self.models["watermark"].eval()
        photos = self.data.val.batch(torch.arange(len(self.data.val)))[0]
        gen = torch.Generator().manual_seed(1234)  # the same bits at every validation
        bits = torch.randint(0, 2, (len(photos), net.cfg.bits), generator=gen).float()
        bs = self.cfg.task.eval_batch_size
        psnr = self.cfg.task.psnr
        marked = torch.cat([quantize(net.embed(self.ctx.to_device(photos[i : i + bs]), bits[i : i + bs], psnr)).cpu()
                            for i in range(0, len(photos), bs)])  # fmt: skip
        out: dict[str, float] = {}
        for name, attack in BENCHMARK.items():  # each picture read at the zoom its decoder is surest of
            zoomed = torch.cat([net.decode_zooms(self.ctx.to_device(attack(marked[i : i + 1]))).cpu()
                                for i in range(len(marked))])  # fmt: skip
            best = zoomed.abs().mean(dim=2).argmax(dim=1)
            logits = zoomed[torch.arange(len(zoomed)), best]
            out[f"acc_{name}"] = float(((logits > 0).float() == bits).float().mean())
        out["bit_accuracy"] = float(np.mean([out[f"acc_{k}"] for k in REQUIRED]))
        out["psnr"] = float(-10 * torch.log10((marked - photos).square().mean()))
        return out

    def export_meta(self) -> dict[str, Any]:
        return {"psnr": self.cfg.task.psnr}
