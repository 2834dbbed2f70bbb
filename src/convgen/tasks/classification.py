"""Image classification: cross-entropy training of a CNN classifier, accuracy-driven checkpoint selection."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from convgen.data.loader import BatchLoader
from convgen.data.transforms import AugmentConfig
from convgen.engine.optim import optimizer_step
from convgen.engine.runtime import wrap_ddp
from convgen.engine.task import Task, load_init_weights
from convgen.errors import ConfigError
from convgen.models import build_model
from convgen.registry import TASKS
from convgen.schema import check


@TASKS.register("classification")
class ClassificationTask(Task):
    @dataclass
    class Config:
        label_smoothing: float = 0.0
        augment: AugmentConfig = field(default_factory=AugmentConfig)
        eval_batch_size: int = 500
        norm_lr_scale: float = 1.0  # normalisation layers' parameters learn this much faster (airbench: 64)
        init_images: int = 5000  # training images a model with ``init_from_data`` (a whitening stem) is set from
        # airbench's lookahead: every ``lookahead_every`` steps the weights and BatchNorm statistics move to a slow
        # copy, slow = lerp(slow, fast, 1 - d) with d = lookahead_decay ** every * progress ** 3, and the fast
        # weights restart from it; the last step hands over the slow copy. 0 = off.
        lookahead_every: int = 0
        lookahead_decay: float = 0.95
        stem_bias_epochs: float = 0  # a whitening stem's bias trains this many epochs, then freezes (0 = never)
        init_from: str | None = None  # a saved classifier (zoo name or path) to start from (a later stage)

        def __post_init__(self) -> None:
            check(0 <= self.label_smoothing < 1, "task.label_smoothing", "must be in [0, 1)")
            check(self.eval_batch_size >= 1, "task.eval_batch_size", "must be >= 1")
            check(0 < self.norm_lr_scale <= 1000, "task.norm_lr_scale", "must be in (0, 1000]")
            check(self.init_images >= 1, "task.init_images", "must be >= 1")
            check(self.lookahead_every >= 0, "task.lookahead_every", "must be >= 0 (0 = off)")
            check(0 < self.lookahead_decay < 1, "task.lookahead_decay", "must be in (0, 1)")
            check(self.stem_bias_epochs >= 0, "task.stem_bias_epochs", "must be >= 0 (0 = never frozen)")

    export_models = ("classifier",)
    best_metric = ("val/accuracy", "max")
    progress_keys = ("loss", "accuracy")
    rng_salt = 17  # augmentation

    def __init__(self, cfg, data, ctx, total_steps) -> None:
        super().__init__(cfg, data, ctx, total_steps)
        m = cfg.model
        self.check_data("in_channels", "num_classes", "image_size")
        if data.train.labels is None:
            raise ConfigError("classification needs labelled data (class sub-folders or a labels array)")
        net = build_model(m)
        if cfg.task.init_from:  # a later stage: every weight (a whitening stem's too) from the saved model
            load_init_weights(net, cfg.task.init_from, "classifier", "classifier")
        elif hasattr(net, "init_from_data"):  # deterministic: the same first images of the training split
            count = min(cfg.task.init_images, len(data.train))
            net.init_from_data(data.train.batch(torch.arange(count))[0])
        net = ctx.prepare(net)
        self.models = {"classifier": net}
        if cfg.task.lookahead_every:  # saved with every checkpoint, so a resumed run continues exactly
            self.models["lookahead"] = copy.deepcopy(net).requires_grad_(False)
        if cfg.task.stem_bias_epochs and not isinstance(getattr(net, "whiten", None), torch.nn.Conv2d):
            raise ConfigError("task.stem_bias_epochs needs a model with a whitening stem (whitened-convnet)")
        self.net = wrap_ddp(net, ctx.dist, ctx.device)
        self.add_optimizer("classifier", self.param_groups(net, cfg.task.norm_lr_scale))

    @staticmethod
    def param_groups(net: torch.nn.Module, norm_lr_scale: float) -> list:
        """The trainable parameters as optimiser groups: normalisation layers' at ``norm_lr_scale`` times the rate
        (their weight decay per step unchanged), the rest at the run's rate; one plain list at scale 1."""
        if norm_lr_scale == 1:
            return [p for p in net.parameters() if p.requires_grad]
        norm_types = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)
        norm_ids = {id(p) for mod in net.modules() if isinstance(mod, norm_types) for p in mod.parameters()}
        trainable = [p for p in net.parameters() if p.requires_grad]
        groups = [{"params": [p for p in trainable if id(p) not in norm_ids]},
                  {"params": [p for p in trainable if id(p) in norm_ids], "lr_scale": norm_lr_scale,
                   "decay_scale": 1 / norm_lr_scale}]  # fmt: skip
        return [g for g in groups if g["params"]]

    def train_step(self, batch, step: int) -> dict[str, float]:
        x, y = batch
        tcfg = self.cfg.task
        if tcfg.augment.active:
            x = tcfg.augment.apply(x, self.gen)
        x, y = self.ctx.to_device(x), y.to(self.ctx.device)
        opt = self.optimizers["classifier"]
        frozen = None  # the stem bias after its epochs: put back after the step (DDP-safe, unlike requires_grad)
        if tcfg.stem_bias_epochs and step / (self.steps_per_epoch or self.total_steps) >= tcfg.stem_bias_epochs:
            frozen = self.models["classifier"].whiten.bias.detach().clone()
        self.net.train()
        with self.ctx.autocast():
            logits = self.net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=tcfg.label_smoothing)
        optimizer_step(loss, opt, self.net.parameters(), self.cfg.train.grad_clip, self.schedulers["classifier"])
        if frozen is not None:
            with torch.no_grad():
                self.models["classifier"].whiten.bias.copy_(frozen)
        self._lookahead(step + 1)
        acc = (logits.detach().argmax(1) == y).float().mean()
        return {"loss": loss.item(), "accuracy": acc.item(), "lr": opt.param_groups[0]["lr"]}

    @torch.no_grad()
    def _lookahead(self, done: int) -> None:
        """airbench's LookaheadState.update after ``done`` optimiser steps (see the config's comment)."""
        every = self.cfg.task.lookahead_every
        if not every or (done % every and done != self.total_steps):
            return
        progress = done / self.total_steps
        decay = 1.0 if done == self.total_steps else self.cfg.task.lookahead_decay**every * progress**3
        fast = self.models["classifier"].state_dict()
        for key, slow in self.models["lookahead"].state_dict().items():
            if slow.is_floating_point():
                slow.lerp_(fast[key], 1.0 - decay)
                fast[key].copy_(slow)

    @torch.no_grad()
    def predict(self, dataset) -> tuple[torch.Tensor, float]:
        """Logits for a whole dataset (in order) and the mean cross-entropy."""
        net = self.models["classifier"]
        net.eval()
        loader = BatchLoader(dataset, self.cfg.task.eval_batch_size, shuffle=False, drop_last=False)
        outs, loss_sum = [], 0.0
        for x, y in loader.batches(0):
            with self.ctx.autocast():
                logits = net(self.ctx.to_device(x)).float().cpu()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            outs.append(logits)
        return torch.cat(outs), loss_sum / len(dataset)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if self.data.val is None:
            return {}
        logits, loss = self.predict(self.data.val)
        acc = (logits.argmax(1) == self.data.val.labels).float().mean().item()
        return {"loss": loss, "accuracy": acc, "errors": float((logits.argmax(1) != self.data.val.labels).sum())}

    def on_train_end(self, run_dir: Path) -> dict[str, Any]:
        from convgen.viz.figures import plot_predictions

        split = self.data.val if self.data.val is not None else self.data.train
        logits, _ = self.predict(split.subset(torch.arange(min(64, len(split)))))
        x, y = split.batch(torch.arange(min(64, len(split))))
        plot_predictions(x, logits.argmax(1), y, self.data.class_names, run_dir / "predictions.png")
        return {"pictures": ["predictions.png"]}
