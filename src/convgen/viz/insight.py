"""Looking inside CNNs (the articles' interpretability concern): filters, feature maps and Grad-CAM.

Class activation maps read the rectified activations A of a convolution layer and the gradient of a score S:

* Grad-CAM (Selvaraju et al. 2017): ReLU(sum_c mean_xy(dS/dA_c) A_c) -- gradients averaged over space per channel.
* HiResCAM (Draelos & Carin 2020), the default: ReLU(sum_c dS/dA_c * A_c) -- the same without the averaging, which
  is faithful to what the score depends on when a fully connected head follows the convolutions. On the zoo
  ``mnist-classifier`` (flattening head), Grad-CAM at its 14 x 14 layer was zero everywhere for 195 of 200 digits,
  while HiResCAM put 73% of its mass on the (dilated) digit strokes, which cover 34% of the image.

Maps are upsampled to the input. For a classifier the score is a class logit; for a GAN discriminator it is the
realness logit, so the map shows which regions make an image look real (or fake) to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convgen.errors import ConvgenError


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the model's Conv2d layers, in order."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.PReLU)


def _layer(model: nn.Module, name: str | None, default: int) -> tuple[str, nn.Module]:
    names = conv_layers(model)
    if not names:
        raise ConvgenError("the model has no convolution layers")
    name = name or names[default]
    modules = dict(model.named_modules())
    if name not in modules:
        raise ConvgenError(f"no layer {name!r}; convolution layers: {', '.join(names)}")
    return name, modules[name]


def default_cam_layer(model: nn.Module, x: torch.Tensor, min_side: int = 8) -> str:
    """The last convolution whose output is at least ``min_side`` pixels on each side.

    CAMs usually read the last convolution, but on small inputs that map is a few pixels wide (7 x 7 for a 28 px
    digit classifier) and too coarse to localise: on the zoo classifier, HiResCAM put 53% of its mass on the digit
    at 7 x 7 and 73% one stage earlier at 14 x 14 (the digit covers 34% of the image).
    """
    sizes: dict[str, tuple[int, int]] = {}
    handles = [
        m.register_forward_hook(lambda _m, _i, out, n=name: sizes.__setitem__(n, tuple(out.shape[-2:])))
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    names = conv_layers(model)
    good = [n for n in names if n in sizes and min(sizes[n]) >= min_side]
    return good[-1] if good else names[-1]


def _activated(model: nn.Module, conv_name: str) -> nn.Module:
    """The activation that follows convolution ``conv_name`` (before the next convolution), else the conv itself.

    Grad-CAM and feature maps read rectified activations, as in the paper; a raw convolution output also carries
    the zero-padding response and the following normalisation's offset, which show up as bright borders.
    """
    after = False
    for name, m in model.named_modules():
        if name == conv_name:
            after = True
        elif after and isinstance(m, nn.Conv2d):
            break
        elif after and isinstance(m, _ACTIVATIONS):
            return m
    return dict(model.named_modules())[conv_name]


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _capture(model: nn.Module, layer: nn.Module, run: Callable[[], torch.Tensor]):
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _i, out):
        store["act"] = out
        if out.requires_grad:
            out.register_hook(lambda g: store.__setitem__("grad", g))

    handle = layer.register_forward_hook(hook)
    try:
        score = run()
    finally:
        handle.remove()
    return score, store


CAM_METHODS = ("hirescam", "gradcam")


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    score: Callable[[torch.Tensor], torch.Tensor],
    layer: str | None = None,
    method: str = "hirescam",
) -> tuple[torch.Tensor, str]:
    """Class activation maps B x H x W in [0, 1] (each scaled by its maximum) for ``score(model(x))``.

    ``score`` gives one value per image; ``method`` is ``hirescam`` or ``gradcam``; ``layer`` defaults to
    :func:`default_cam_layer`. Returns the maps and the layer's name.
    """
    if method not in CAM_METHODS:
        raise ConvgenError(f"unknown CAM method {method!r} (known: {', '.join(CAM_METHODS)})")
    x = x.detach().clone().requires_grad_(True)
    with _eval_mode(model), torch.enable_grad():
        name, _ = _layer(model, layer or default_cam_layer(model, x), -1)
        s, store = _capture(model, _activated(model, name), lambda: score(model(x)))
        model.zero_grad(set_to_none=True)
        s.sum().backward()
    act, grad = store["act"].detach(), store["grad"]
    weights = grad.mean((2, 3), keepdim=True) if method == "gradcam" else grad
    cam = F.relu((weights * act).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return cam / peak, name


@torch.no_grad()
def feature_maps(model: nn.Module, x: torch.Tensor, layer: str | None = None, limit: int = 64):
    """The first image's activations at ``layer`` (default: the first convolution), each map scaled to [0, 1]."""
    name, _ = _layer(model, layer, 0)
    with _eval_mode(model):
        _, store = _capture(model, _activated(model, name), lambda: model(x[:1]))
    maps = store["act"][0, :limit]
    lo, hi = maps.flatten(1).amin(1)[:, None, None], maps.flatten(1).amax(1)[:, None, None]
    return ((maps - lo) / (hi - lo).clamp_min(1e-12))[:, None], name


def filters(model: nn.Module, layer: str | None = None, limit: int = 64) -> tuple[torch.Tensor, str]:
    """Kernels of ``layer`` (default: the first convolution) as small images, each scaled to [0, 1].

    Kernels over 1 or 3 input channels are shown as gray or colour; others as the mean over input channels.
    """
    name, module = _layer(model, layer, 0)
    w = module.weight.detach()[:limit].float()
    if w.shape[1] not in (1, 3):
        w = w.mean(1, keepdim=True)
    lo, hi = w.flatten(1).amin(1)[:, None, None, None], w.flatten(1).amax(1)[:, None, None, None]
    return (w - lo) / (hi - lo).clamp_min(1e-12), name


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a heat map (H x W in [0, 1], jet colours) over an image (H x W x C in [0, 1]) -> H x W x 3."""
    from matplotlib import colormaps

    heat = colormaps["jet"](cam)[..., :3]
    base = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    return (1 - alpha) * base + alpha * heat
