"""Training a feed-forward style network (Johnson et al. 2016) for one painting, or a mix of several.

Each step stylises a batch of photo patches with :class:`convgen.models.style.TransformNet` and minimises the
perceptual loss of :mod:`convgen.losses.perceptual` against the painting's Grams (taken once, with the painting's
longer side at ``task.style_size``) and the patches' own content features, plus total variation. The feature
network is ``task.feature_net`` (:func:`convgen.models.backbones.vgg.feature_network`); its name goes into the
exported model's ``meta.json``, so a model trained on the offline fallback is never taken for an ImageNet-VGG one.
Validation stylises the held-out crops and reports the mean loss parts; the best checkpoint has the lowest total.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from convgen.engine.optim import optimizer_step
from convgen.engine.runtime import wrap_ddp
from convgen.engine.task import Task, load_init_weights
from convgen.errors import ConfigError
from convgen.losses.perceptual import STATISTICS, STYLE_LAYERS, LossWeights, PerceptualLoss
from convgen.models import build_model
from convgen.registry import TASKS
from convgen.schema import check


def read_style(path: str | Path, side: int) -> torch.Tensor:
    """A painting as 1 x 3 x H x W in [0, 1], its longer side resized to ``side``."""
    from convgen.io.images import read_image
    from convgen.models.backbones.vgg import resize_to

    x = torch.from_numpy(read_image(path, channels=3)).permute(2, 0, 1)[None].contiguous()
    return resize_to(x, side)


FAST_CONTENT_LAYERS = ("relu2_2",)  # Johnson et al.'s content layer (Gatys et al. use relu4_2)


@TASKS.register("style")
class StyleTask(Task):
    @dataclass
    class Config:
        style: list[str] = field(default_factory=list)  # painting file(s)
        style_mix: list[float] | None = None  # weights of several paintings (default: equal)
        style_size: int = 256  # the painting's longer side when its Grams are taken
        style_scales: list[float] = field(default_factory=lambda: [1.0])  # multi-scale style loss: output and
        # painting also compared downscaled by each factor (e.g. [1, 0.5, 0.25] for strokes wider than relu5_1 sees)
        style_statistic: str = "gram"  # gram (Gatys et al.) or sliced (sliced Wasserstein, Heitz et al. 2021)
        feature_net: str = "auto"  # vgg19-imagenet, random-vgg19, or auto (ImageNet VGG19 when its file is found)
        vgg_weights: str | None = None
        content_weight: float = 1.0
        style_weight: float = 30.0  # the zoo presets' (a heavier style loses the photo's structure)
        tv_weight: float = 20.0
        gradient_weight: float = 0.0  # > 0: also match the distribution of the painting's luminance derivatives
        # (8 orientations, asinh-compressed, at every style scale): its share of flat areas and of strong strokes
        init_from: str | None = None  # a saved style model (zoo name or path) to start from (a later stage)
        style_layers: list[str] = field(default_factory=lambda: list(STYLE_LAYERS))
        content_layers: list[str] = field(default_factory=lambda: list(FAST_CONTENT_LAYERS))
        eval_batch_size: int = 4

        def __post_init__(self) -> None:
            if isinstance(self.style, str):
                self.style = [self.style]
            check(len(self.style) >= 1, "task.style", "give the painting file(s) to learn")
            check(self.style_mix is None or len(self.style_mix) == len(self.style), "task.style_mix",
                  "needs one weight per style image")  # fmt: skip
            check(self.style_mix is None or (min(self.style_mix) >= 0 < sum(self.style_mix)), "task.style_mix",
                  "weights must be >= 0 and not all 0")  # fmt: skip
            check(32 <= self.style_size <= 4096, "task.style_size", "must be in 32..4096")
            check(len(self.style_scales) >= 1 and all(0.05 <= f <= 1 for f in self.style_scales),
                  "task.style_scales", "give one or more factors in 0.05..1 (1 = full size)")  # fmt: skip
            check(self.style_statistic in STATISTICS, "task.style_statistic", f"use one of {', '.join(STATISTICS)}")
            for k in ("content_weight", "style_weight", "tv_weight", "gradient_weight"):
                check(getattr(self, k) >= 0, f"task.{k}", "must be >= 0")
            check(len(self.style_layers) >= 1, "task.style_layers", "give at least one layer")
            check(self.eval_batch_size >= 1, "task.eval_batch_size", "must be >= 1")

    export_models = ("transform",)
    best_metric = ("val/loss", "min")
    progress_keys = ("loss", "style", "content")

    def __init__(self, cfg, data, ctx, total_steps) -> None:
        from convgen.models.backbones.vgg import LAYERS, feature_network

        super().__init__(cfg, data, ctx, total_steps)
        t = cfg.task
        if data.channels != 3:
            raise ConfigError("style networks train on colour photos (data.channels 3)")
        for name in (*t.style_layers, *t.content_layers):
            if name not in LAYERS:
                raise ConfigError(f"task layer {name!r}: not a VGG19 layer (relu1_1 ... relu5_4, conv*, pool*)")
        for s in t.style:
            if not Path(s).is_file():
                raise ConfigError(f"task.style {s}: file not found")
        net = build_model(cfg.model)
        if cfg.model.registry_name != "style-transform":
            raise ConfigError(f"model type {cfg.model.registry_name!r} is not a style network (style-transform)")
        self.features = feature_network(t.feature_net, t.vgg_weights).to(ctx.device)
        styles = [read_style(s, t.style_size).to(ctx.device) for s in t.style]
        targets = PerceptualLoss.multiscale_targets(self.features, styles, t.style_scales, t.style_layers, t.style_mix,
                                                    t.style_statistic)  # fmt: skip
        weights = LossWeights(t.content_weight, t.style_weight, t.tv_weight, t.gradient_weight)
        gradients = PerceptualLoss.gradient_targets(styles, t.style_scales, t.style_mix) if t.gradient_weight else None
        self.loss = PerceptualLoss(self.features, targets, t.content_layers, weights, scales=t.style_scales,
                                   statistic=t.style_statistic, gradients=gradients)  # fmt: skip
        if t.init_from:
            load_init_weights(net, t.init_from, "transform", "style model")
        net = ctx.prepare(net)
        self.models = {"transform": net}
        self.net = wrap_ddp(net, ctx.dist, ctx.device)
        self.add_optimizer("transform", net.parameters())

    def train_step(self, batch, step: int) -> dict[str, float]:
        x = self.ctx.to_device(batch[0])
        self.net.train()
        parts = self.loss(self.net(x), self.loss.content_features(x))
        opt = self.optimizers["transform"]
        optimizer_step(parts["total"], opt, self.models["transform"].parameters(), self.cfg.train.grad_clip,
                       self.schedulers["transform"])  # fmt: skip
        out = {k: float(v.detach()) for k, v in parts.items()}
        return {"loss": out.pop("total"), **out, "lr": opt.param_groups[0]["lr"]}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if self.data.val is None:
            return {}
        net = self.models["transform"].eval()
        photos = self.data.val.images.float() / 255.0
        sums: dict[str, float] = {}
        shown = []
        for i in range(0, len(photos), self.cfg.task.eval_batch_size):
            x = self.ctx.to_device(photos[i : i + self.cfg.task.eval_batch_size])
            y = net(x)
            parts = self.loss(y, self.loss.content_features(x))
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(x)
            if len(shown) < 8:
                shown += [x.cpu(), y.cpu()]
        self.save_sample_grid(torch.cat(shown[:8]), nrow=min(len(photos), self.cfg.task.eval_batch_size))
        out = {k: v / len(photos) for k, v in sums.items()}
        out["loss"] = out.pop("total")
        return out

    def export_meta(self) -> dict[str, Any]:
        from convgen.io.fetch import file_digest

        t = self.cfg.task
        return {
            "style": [{"file": Path(s).name, "sha256": file_digest(s, "sha256")} for s in t.style],
            "style_mix": t.style_mix,
            "feature_net": self.features.name,
            "loss": {
                "content_weight": t.content_weight,
                "style_weight": t.style_weight,
                "tv_weight": t.tv_weight,
                "style_layers": list(t.style_layers),
                "content_layers": list(t.content_layers),
                "style_size": t.style_size,
                "style_scales": list(t.style_scales),
                "style_statistic": t.style_statistic,
                "gradient_weight": t.gradient_weight,
            },  # fmt: skip
        }
