"""A model family from outside convgen, registered the way a third-party plugin does it: a model, a task and a
pipeline with a restore verb of its own (``convgen restore identity``) and a sampler, each with an option of its own
(``--gain``, ``--brightness``) declared as an options dataclass. Loaded through ``$CONVGEN_PLUGINS`` or a
``convgen.plugins`` entry point; nothing in convgen names it.

The network is one gain and one offset per channel (``out = gain * x + offset``) that starts far from the identity
(gain 0.3, offset 0.2) and learns it from images by mean squared error. Its "samples" are the network applied to
mid-gray images, times ``brightness``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from convgen.engine.optim import optimizer_step
from convgen.engine.task import Task
from convgen.options import Options, option
from convgen.pipelines.restore import RestorePipeline, as_float_image
from convgen.pipelines.sample import Sampler
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
        self.add_optimizer("net", net.parameters())

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


@dataclass
class IdentityOptions(Options):
    gain: float = option(1.0, "multiply the result by this", lo=0, hi=4)


@dataclass
class ToySampleOptions(Options):
    brightness: float = option(1.0, "scale the samples' brightness", lo=0, hi=4)


@PIPELINES.register("toy-identity")
class ToyIdentityPipeline(Sampler, RestorePipeline):
    networks = ("net",)
    restores = ("identity",)
    verb_help = {"identity": "return the image as it was (a plugin's own verb)"}
    restore_options = {"identity": IdentityOptions}
    sample_options = ToySampleOptions

    @torch.no_grad()
    def restore_image(self, image: np.ndarray, mask=None, name: str = "image", verb: str = "identity",
                      gain: float = 1.0) -> np.ndarray:  # fmt: skip
        x = torch.from_numpy(as_float_image(image, name)).permute(2, 0, 1)[None]
        return (gain * self.models["net"](x.to(self.device)))[0].permute(1, 2, 0).cpu().numpy()

    @torch.no_grad()
    def generate_images(self, n, seed, labels, batch_size, brightness: float = 1.0) -> torch.Tensor:
        gray = torch.full((n, self.cfg.model.channels, 8, 8), 0.5)
        return (brightness * self.models["net"](gray)).clamp(0, 1).cpu()
