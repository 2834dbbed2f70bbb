"""Image classification: cross-entropy training of a CNN classifier, accuracy-driven checkpoint selection."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from convgen.data.loader import BatchLoader
from convgen.data.transforms import AugmentConfig
from convgen.engine.optim import optimizer_step
from convgen.engine.runtime import wrap_ddp
from convgen.engine.task import Task
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

        def __post_init__(self) -> None:
            check(0 <= self.label_smoothing < 1, "task.label_smoothing", "must be in [0, 1)")
            check(self.eval_batch_size >= 1, "task.eval_batch_size", "must be >= 1")

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
        net = ctx.prepare(build_model(m))
        self.models = {"classifier": net}
        self.net = wrap_ddp(net, ctx.dist, ctx.device)
        self.add_optimizer("classifier", net.parameters())

    def train_step(self, batch, step: int) -> dict[str, float]:
        x, y = batch
        tcfg = self.cfg.task
        if tcfg.augment.active:
            x = tcfg.augment.apply(x, self.gen)
        x, y = self.ctx.to_device(x), y.to(self.ctx.device)
        opt = self.optimizers["classifier"]
        self.net.train()
        with self.ctx.autocast():
            logits = self.net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=tcfg.label_smoothing)
        optimizer_step(loss, opt, self.net.parameters(), self.cfg.train.grad_clip, self.schedulers["classifier"])
        acc = (logits.detach().argmax(1) == y).float().mean()
        return {"loss": loss.item(), "accuracy": acc.item(), "lr": opt.param_groups[0]["lr"]}

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
