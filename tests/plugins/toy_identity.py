"""A model family from outside convgen, registered the way a third-party plugin does it: a model, a task and a
pipeline with a restore verb of its own (``convgen restore identity``). Loaded through ``$CONVGEN_PLUGINS`` or a
``convgen.plugins`` entry point; nothing in convgen names it.

The network is one gain and one offset per channel (``out = gain * x + offset``) that starts far from the identity
(gain 0.3, offset 0.2) and learns it from images by mean squared error."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from convgen.engine.optim import make_optimizer, make_scheduler, optimizer_step
from convgen.engine.task import Task
from convgen.pipelines.restore import RestorePipeline, as_float_image
from convgen.registry import MODELS, PIPELINES, TASKS
from convgen.schema import check


@MODELS.register("toy-identity")
class ToyIdentity(nn.Module):
    @dataclass
    class Config:
        channels: int = 1

        def __post_init__(self) -> None:
            check(self.channels >= 1, "model.channels", "must be >= 1")

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.full((1, cfg.channels, 1, 1), 0.3))
        self.offset = nn.Parameter(torch.full((1, cfg.channels, 1, 1), 0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * x + self.offset


@TASKS.register("toy-identity")
class ToyIdentityTask(Task):
    @dataclass
    class Config:
        pass

    export_models = ("net",)
    best_metric = ("val/mse", "min")
    progress_keys = ("mse",)

    def __init__(self, cfg, data, ctx, total_steps) -> None:
        super().__init__(cfg, data, ctx, total_steps)
        net = ctx.prepare(ToyIdentity(cfg.model))
        self.models = {"net": net}
        self.optimizers = {"net": make_optimizer(net.parameters(), cfg.train)}
        self.schedulers = {"net": make_scheduler(self.optimizers["net"], cfg.train, total_steps)}

    def train_step(self, batch, step):
        x = self.ctx.to_device(batch[0])
        loss = (self.models["net"](x) - x).square().mean()
        optimizer_step(loss, self.optimizers["net"], self.models["net"].parameters(), None, self.schedulers["net"])
        return {"mse": loss.item()}

    @torch.no_grad()
    def evaluate(self):
        x, _ = self.data.val.batch(torch.arange(len(self.data.val)))
        return {"mse": float((self.models["net"](x) - x).square().mean())}

    def export_meta(self):
        return {"toy": "exported by a plugin"}

    def finalize_export(self, model_dir):
        (model_dir / "tables.json").write_text('{"built": true}')  # what a codec's coding tables would be


@PIPELINES.register("toy-identity")
class ToyIdentityPipeline(RestorePipeline):
    networks = ("net",)
    restores = ("identity",)
    verb_help = {"identity": "return the image as it was (a plugin's own verb)"}

    @torch.no_grad()
    def restore(self, image: np.ndarray, mask=None, name: str = "image", **options) -> np.ndarray:
        x = torch.from_numpy(as_float_image(image, name)).permute(2, 0, 1)[None]
        return self.models["net"](x.to(self.device))[0].permute(1, 2, 0).cpu().numpy()
