"""``convgen explain``: class activation maps, feature maps and filters of what a model's pipeline offers to be
explained (:meth:`Pipeline.explainable`: a classifier, the discriminator of a GAN checkpoint); the maths is in
:mod:`convgen.viz.insight`. Nothing here knows a family."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from convgen.errors import ConvgenError
from convgen.pipelines.base import load
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
    what = load(model_name, device="cpu").explainable(target)
    model = what.network
    paths = resolve_inputs(inputs)[:16]
    x = what.prepare(paths)
    cams, cam_layer = grad_cam(model, x, what.score, layer, method)
    images = what.to_image(x)
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
        "kind": what.kind,
        "images": [p.name for p in paths],
        "cam_method": method,
        "gradcam_layer": cam_layer,
        "feature_map_layer": map_layer,
        "filter_layer": filter_layer,
        "pictures": [str(out / n) for n in names],
        **what.extra(x),
    }
