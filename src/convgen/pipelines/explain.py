"""``convgen explain``: class activation maps, feature maps and filters of a saved classifier, or of the
discriminator in a GAN checkpoint (the maths is in :mod:`convgen.viz.insight`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from convgen.errors import ConvgenError
from convgen.viz.insight import feature_maps, filters, grad_cam, overlay


def _upscale(batch: torch.Tensor, min_side: int = 96) -> torch.Tensor:
    factor = max(1, -(-min_side // batch.shape[-1]))
    return F.interpolate(batch, scale_factor=factor, mode="nearest") if factor > 1 else batch


def explain(
    model_name: str,
    inputs: str | Path,
    out: str | Path,
    target: int | None = None,
    layer: str | None = None,
    method: str = "hirescam",
    overwrite: bool = False,
) -> dict[str, Any]:
    """CAM overlays, feature maps and filters for a classifier, or a GAN discriminator in a checkpoint.

    Writes ``gradcam.png``, ``feature_maps.png`` and ``filters.png`` into ``out`` (which must not hold them
    already, unless ``overwrite``); returns what was written and, for a classifier, the predicted classes.
    """
    from convgen.io.atomic import refuse_existing
    from convgen.io.images import resolve_inputs
    from convgen.viz.grid import save_grid

    out = Path(out)
    names = ("gradcam.png", "feature_maps.png", "filters.png")
    if out.exists() and not out.is_dir():
        raise ConvgenError(f"{out} is a file; `out` is the folder the pictures go in")
    if any((out / n).exists() for n in names) and not overwrite:
        raise ConvgenError(f"{out} already holds explain pictures; choose another `out` or pass `overwrite`")
    refuse_existing([out / n for n in names], overwrite=True)
    if method not in ("hirescam", "gradcam"):
        raise ConvgenError(f"`method` must be hirescam or gradcam, got {method!r}")
    model, prepare, score, kind, extra = _explainable(model_name, target)
    paths = resolve_inputs(inputs)[:16]
    x = prepare(paths)
    cams, cam_layer = grad_cam(model, x, score, layer, method)
    images = x if kind == "classifier" else (x + 1) / 2
    blended = [
        torch.from_numpy(overlay(img.permute(1, 2, 0).numpy(), c.numpy())).permute(2, 0, 1).float()
        for img, c in zip(images, cams, strict=True)
    ]
    rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
    pairs = torch.stack([t for pair in zip(rgb, blended, strict=True) for t in pair])
    out.mkdir(parents=True, exist_ok=True)
    save_grid(_upscale(pairs), out / "gradcam.png", nrow=min(8, len(pairs)))
    maps, map_layer = feature_maps(model, x, layer)
    save_grid(_upscale(maps, 48), out / "feature_maps.png")
    kernels, filter_layer = filters(model, layer)
    save_grid(_upscale(kernels, 24), out / "filters.png")
    return {
        "model": model_name,
        "kind": kind,
        "images": [p.name for p in paths],
        "cam_method": method,
        "gradcam_layer": cam_layer,
        "feature_map_layer": map_layer,
        "filter_layer": filter_layer,
        "pictures": [str(out / n) for n in names],
        **extra(x),
    }


def _explainable(model_name: str, target: int | None):
    """(network, prepare(paths) -> batch, score(output) -> per-image score, kind, extra(batch) -> dict)."""
    from convgen import modeldir
    from convgen.io.images import read_image
    from convgen.pipelines.base import load
    from convgen.pipelines.classify import ClassifierPipeline

    saved = modeldir.open_model(model_name)
    if saved.has("discriminator"):
        cfg = saved.cfg
        if cfg.model.d_pack > 1:
            raise ConvgenError(
                f"this discriminator judges packs of {cfg.model.d_pack} images (PacGAN), not single images"
            )
        if cfg.model.clusters:
            raise ConvgenError(
                "this discriminator is conditioned on unsupervised clusters (self-conditioned GAN); "
                "explain its generator's samples with a classifier instead"
            )
        if cfg.model.num_classes and target is None:
            raise ConvgenError("this discriminator is class-conditional: give `target` CLASS")
        _check_target(target, cfg.model.num_classes, conditional_only=True)
        disc = saved.network("discriminator")
        c, s = cfg.model.channels, cfg.model.image_size

        def prepare_d(paths):
            from convgen.data.transforms import resize_arrays

            return resize_arrays([read_image(p, channels=c) for p in paths], s).clamp(0, 1) * 2 - 1

        labels = None if target is None else torch.tensor([target])

        def run_d(x):
            return disc(x, None if labels is None else labels.expand(len(x)))

        @torch.no_grad()
        def extra_d(x):
            return {"realness_logits": [round(v, 4) for v in run_d(x).tolist()]}

        return _Call(disc, run_d), prepare_d, lambda logits: logits, "discriminator", extra_d
    pipe = load(model_name, device="cpu", expect=ClassifierPipeline, role="a classifier or a GAN checkpoint")
    _check_target(target, pipe.cfg.model.num_classes)
    channels = pipe.cfg.model.in_channels

    def prepare_c(paths):
        return pipe.prepare([read_image(p, channels=channels) for p in paths]).clamp(0, 1)

    def score_c(logits):
        cls = logits.argmax(1) if target is None else torch.full((len(logits),), target)
        return logits.gather(1, cls[:, None])[:, 0]

    def extra_c(x):
        pred = pipe.predict(x).tolist()
        return {"predicted": [pipe.class_names[i] for i in pred], "target": "predicted" if target is None else target}

    return pipe.model, prepare_c, score_c, "classifier", extra_c


def _check_target(target: int | None, num_classes: int, conditional_only: bool = False) -> None:
    if target is None:
        return
    if conditional_only and not num_classes:
        raise ConvgenError("this discriminator is unconditional: it takes no `target` class")
    if not 0 <= target < num_classes:
        raise ConvgenError(f"`target` {target} is out of range (classes 0..{num_classes - 1})")


class _Call(nn.Module):
    """Wraps a network whose forward needs extra arguments so that ``model(x)`` works for the hooks above."""

    def __init__(self, net: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.net = net
        self._fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(x)
