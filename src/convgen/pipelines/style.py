"""Neural style transfer: the optimisation of Gatys et al. (2016) and trained feed-forward models (Johnson et al.
2016, :class:`convgen.models.style.TransformNet`), for images and folders.

Feature network. Both methods measure style and content through VGG19 features
(:mod:`convgen.models.backbones.vgg`): the ImageNet VGG19 when its torchvision file is given (``vgg_weights``,
``$CONVGEN_VGG_WEIGHTS``, or the cache), else the offline fallback ``random-vgg19`` (seeded random weights, each
layer's style term normalised in the loss). Every output's metadata names the one used; they give different
pictures.

Optimisation. The image starts from the content photo and minimises ``content * L_content(relu4_2) + style *
L_style(relu1_1 ... relu5_1) + tv * TV`` with L-BFGS (or Adam). Large images are done coarse to fine: the result at
half the size starts the next scale. ``preserve_color`` transfers luminance only (Gatys et al. 2017): the style's
luminance is matched to the photo's mean and spread, the optimisation runs on gray images, and the result's
luminance is recombined with the photo's own chroma (BT.601 YCbCr).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from convgen.errors import ConvgenError
from convgen.io.images import convert_channels, read_image, resolve_inputs, write_image
from convgen.losses.perceptual import CONTENT_LAYERS, STYLE_LAYERS, LossWeights, PerceptualLoss
from convgen.models.backbones.vgg import VGG19Features, feature_network, resize_to
from convgen.pipelines.base import Pipeline
from convgen.registry import PIPELINES

MAX_SIDE = 4096  # stylised images are at most this many pixels on a side
YCBCR = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
YCBCR_INV = torch.linalg.inv(YCBCR.double())


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W RGB in [0, 1] -> Y in [0, 1], Cb and Cr centred on 0 (BT.601, full range)."""
    return torch.einsum("ij,bjhw->bihw", YCBCR.to(x), x)


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", YCBCR_INV.to(x), x)


def luminance3(x: torch.Tensor) -> torch.Tensor:
    return rgb_to_ycbcr(x)[:, :1].expand(-1, 3, -1, -1)


def recombine_chroma(stylised: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The luminance of ``stylised`` with the chroma (Cb, Cr) of ``content``."""
    y = rgb_to_ycbcr(stylised)[:, :1]
    return ycbcr_to_rgb(torch.cat([y, rgb_to_ycbcr(content)[:, 1:]], 1))


def match_luminance(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The style's gray luminance, shifted and scaled to the content luminance's mean and standard deviation."""
    ys, yc = rgb_to_ycbcr(style)[:, :1], rgb_to_ycbcr(content)[:, :1]
    y = (ys - ys.mean()) / ys.std().clamp_min(1e-6) * yc.std() + yc.mean()
    return y.clamp(0, 1).expand(-1, 3, -1, -1)


def to_tensor(image: np.ndarray, name: str = "image") -> torch.Tensor:
    """H x W (x C) float image -> 1 x 3 x H x W in [0, 1], after the checks every stylised image gets."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ConvgenError(f"{name}: expected an H x W x C image with 1, 3 or 4 channels, got shape {arr.shape}")
    h, w = arr.shape[:2]
    if min(h, w) < 2:
        raise ConvgenError(f"{name}: a {w}x{h} image is too small to stylise (at least 2 pixels on each side)")
    if max(h, w) > MAX_SIDE:
        raise ConvgenError(f"{name}: a {w}x{h} image is too large to stylise (at most {MAX_SIDE} px a side)")
    if not np.isfinite(arr).all():
        raise ConvgenError(f"{name}: the image has NaN or infinite values")
    arr = convert_channels(np.clip(arr.astype(np.float32), 0, 1), 3, name)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].contiguous()


def is_gray(image: np.ndarray) -> bool:
    """An H x W or H x W x 1 image (stylised as RGB, returned as gray)."""
    arr = np.asarray(image)
    return arr.ndim == 2 or arr.shape[-1] == 1


def to_array(x: torch.Tensor, gray: bool = False) -> np.ndarray:
    out = x.clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
    return out.mean(-1, keepdims=True) if gray else out


@dataclass
class GatysOptions:
    """Options of the optimisation (``convgen stylize --style``). ``size``: the longer side the result is made
    at (None: the content's own size, at most ``MAX_SIDE``); ``style_size``: the painting's longer side when its
    Grams are taken (None: ``size``)."""

    iterations: int = 300
    optimizer: str = "lbfgs"
    lr: float | None = None  # Adam's step (default 0.02); L-BFGS uses 1 with a strong-Wolfe line search
    content_weight: float = 1.0
    style_weight: float = 1e3
    tv_weight: float = 1e1
    content_layers: Sequence[str] = CONTENT_LAYERS
    style_layers: Sequence[str] = STYLE_LAYERS
    style_mix: Sequence[float] | None = None  # weights of several style images (default: equal)
    preserve_color: bool = False
    size: int | None = None
    style_size: int | None = None
    coarse_side: int = 256  # larger results are made coarse to fine, from this side upwards by factors of 2
    init: str = "content"  # or "noise"
    seed: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def check(self) -> None:
        if self.iterations < 1:
            raise ConvgenError(f"`iterations` {self.iterations}: must be >= 1")
        if self.optimizer not in ("lbfgs", "adam"):
            raise ConvgenError(f"`optimizer` {self.optimizer!r}: must be lbfgs or adam")
        if self.init not in ("content", "noise"):
            raise ConvgenError(f"`init` {self.init!r}: must be content or noise")
        for k in ("content_weight", "style_weight", "tv_weight"):
            if not getattr(self, k) >= 0:
                raise ConvgenError(f"`{k}` {getattr(self, k)}: must be >= 0")
        for k in ("size", "style_size"):
            v = getattr(self, k)
            if v is not None and not 16 <= v <= MAX_SIDE:
                raise ConvgenError(f"`{k}` {v}: must be in 16..{MAX_SIDE}")
        if self.coarse_side < 16:
            raise ConvgenError(f"`coarse_side` {self.coarse_side}: must be >= 16")
        if not self.style_layers:
            raise ConvgenError("`style_layers`: give at least one layer")


def scales(side: int, coarse_side: int) -> list[int]:
    """Longer sides of the coarse-to-fine passes: ..., side / 4, side / 2, side (none below ``coarse_side``)."""
    out = [side]
    while out[0] > coarse_side and out[0] // 2 >= coarse_side:
        out.insert(0, out[0] // 2)
    return out


def split_iterations(total: int, n: int) -> list[int]:
    """Most iterations at the coarse scales, where they are cheap: the last pass gets a third (at least 1)."""
    if n == 1:
        return [total]
    last = max(1, total // 3)
    rest = [(total - last) // (n - 1)] * (n - 1)
    rest[0] += total - last - sum(rest)
    return [*rest, last]


def gatys(content: torch.Tensor, styles: Sequence[torch.Tensor], net: VGG19Features, opts: GatysOptions,
          progress: Callable[[int, dict[str, float]], None] | None = None) -> torch.Tensor:  # fmt: skip
    """Stylise ``content`` (1 x 3 x H x W in [0, 1]) with ``styles``; returns 1 x 3 x H' x W' in [0, 1], H' x W' the
    content's size scaled to ``opts.size``. ``opts.history`` receives each iteration's loss parts."""
    opts.check()
    device = next(net.parameters()).device
    content, styles = content.to(device), [s.to(device) for s in styles]
    side = opts.size or max(content.shape[-2:])
    target = resize_to(content, side) if side != max(content.shape[-2:]) else content
    passes = scales(side, opts.coarse_side)
    iters = split_iterations(opts.iterations, len(passes))
    x = None
    for s, n in zip(passes, iters, strict=True):
        photo = resize_to(target, s) if s != side else target
        style_side = round((opts.style_size or side) * s / side)
        refs = [resize_to(st, style_side) for st in styles]
        if opts.preserve_color:
            refs = [match_luminance(r, photo) for r in refs]
            photo_in = luminance3(photo)
        else:
            photo_in = photo
        grams = PerceptualLoss.style_targets(net, refs, opts.style_layers, opts.style_mix)
        loss_fn = PerceptualLoss(net, grams, opts.content_layers,
                                 LossWeights(opts.content_weight, opts.style_weight, opts.tv_weight))  # fmt: skip
        cont = loss_fn.content_features(photo_in) if opts.content_weight > 0 else None
        if x is None:
            if opts.init == "noise":
                g = torch.Generator().manual_seed(opts.seed)
                x = (0.5 + 0.1 * torch.randn(photo_in.shape, generator=g)).to(device)
            else:
                x = photo_in.clone()
        else:
            x = F.interpolate(x, size=photo_in.shape[-2:], mode="bilinear", align_corners=False)
            if opts.preserve_color:
                x = luminance3(x)
        x = _optimise(x.detach().contiguous().requires_grad_(True), loss_fn, cont, n, opts, progress)
    out = x.detach().clamp(0, 1)
    if opts.preserve_color:
        out = recombine_chroma(out, target).clamp(0, 1)
    return out


def _optimise(x, loss_fn, cont, n, opts, progress) -> torch.Tensor:
    def record(parts):
        row = {k: float(v.detach()) for k, v in parts.items()}
        opts.history.append(row)
        if progress:
            progress(len(opts.history), row)

    if opts.optimizer == "adam":
        opt = torch.optim.Adam([x], lr=opts.lr or 0.02)
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            parts = loss_fn(x, cont)
            parts["total"].backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
            record(parts)
        return x
    opt = torch.optim.LBFGS([x], lr=opts.lr or 1.0, max_iter=n, max_eval=n * 5 // 4 + 1, history_size=50,
                            tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")  # fmt: skip
    def closure():
        opt.zero_grad(set_to_none=True)
        parts = loss_fn(x, cont)
        parts["total"].backward()
        record(parts)
        return parts["total"]

    opt.step(closure)
    return x


# -- files ---------------------------------------------------------------------------------------------------------
class _Stylizer:
    """What both methods share: one array in, one array out (:meth:`stylize`); files and folders
    (:meth:`stylize_files`), each output keeping its input's name, with the method and feature network recorded in
    every PNG's text chunks."""

    method = ""
    feature_net = ""

    def stylize(self, image: np.ndarray, name: str = "image", **options) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict[str, str]:
        return {"convgen:method": self.method, "convgen:feature_net": self.feature_net}

    def check_options(self, **options) -> None:
        """Raise on options :meth:`stylize` would refuse (called before any file is read or written)."""

    def stylize_files(self, inputs: str | Path, output: str | Path, overwrite: bool = False, **options) -> list[Path]:
        from convgen.io.images import probe_image, stored_ndim
        from convgen.pipelines.restore import plan_outputs

        self.check_options(**options)
        files = resolve_inputs(inputs)
        targets = plan_outputs(files, Path(inputs), Path(output), overwrite)
        for f in files:  # every input is checked before anything is written
            probe_image(f)
        written: list[Path] = []
        bar = tqdm(total=len(files), desc=f"stylize ({self.method})", unit="img", file=sys.stderr,
                   disable=len(files) < 2)  # fmt: skip
        for f, target in zip(files, targets, strict=True):
            try:
                out = self.stylize(read_image(f), name=str(f), **options)
            except ConvgenError as e:
                if not written:
                    raise
                raise type(e)(f"{e.template} (stopped there: {len(written)} of {len(files)} outputs written)") from None
            if stored_ndim(f) == 2 and out.shape[-1] == 1:
                out = out[..., 0]
            written.append(write_image(target, out, metadata=self.describe()))
            bar.update(1)
        bar.close()
        return written


@PIPELINES.register("style")
class StylePipeline(Pipeline, _Stylizer):
    """A trained feed-forward style model (``convgen stylize MODEL``): one network pass per image."""

    networks = ("transform",)
    method = "fast"

    def __init__(self, saved, device: str = "auto") -> None:
        super().__init__(saved, device)
        self.net = self.models["transform"]
        self.feature_net = str(self.meta.get("feature_net", "unknown"))

    @property
    def style_names(self) -> list[str]:
        return [s["file"] for s in self.meta.get("style", [])]

    def describe(self) -> dict[str, str]:
        return {**super().describe(), "convgen:model": self.model_dir.name,
                "convgen:style": ", ".join(self.style_names)}  # fmt: skip

    def check_options(self, preserve_color: bool = False, size: int | None = None) -> None:
        if size is not None and not 16 <= size <= MAX_SIDE:
            raise ConvgenError(f"`size` {size}: must be in 16..{MAX_SIDE}")

    @torch.no_grad()
    def stylize(self, image: np.ndarray, name: str = "image", preserve_color: bool = False,
                size: int | None = None) -> np.ndarray:  # fmt: skip
        """H x W (x C) float image in [0, 1] -> the stylised float32 H' x W' x C image (H' x W' = the input's size,
        or its longer side resized to ``size``). A gray input gives a gray result."""
        self.check_options(preserve_color=preserve_color, size=size)
        gray = is_gray(image)
        x = to_tensor(image, name)
        if size is not None:
            x = resize_to(x, size)
        y = self.net(x.to(self.device)).float().cpu()
        if preserve_color:
            y = recombine_chroma(y, x).clamp(0, 1)
        return to_array(y, gray)


class Gatys(_Stylizer):
    """The optimisation of Gatys et al. for one or more style images (paths or H x W x C arrays), mixed by
    ``style_mix``; :meth:`stylize` takes the :class:`GatysOptions` fields as keywords."""

    method = "gatys"

    def __init__(self, styles: Sequence[str | Path | np.ndarray], style_mix: Sequence[float] | None = None,
                 feature_net: str = "auto", vgg_weights: str | Path | None = None,
                 device: str = "cpu") -> None:  # fmt: skip
        from convgen.engine.runtime import pick_device

        if not styles:
            raise ConvgenError("give at least one style image")
        if style_mix is not None and (len(style_mix) != len(styles) or min(style_mix) < 0 or sum(style_mix) <= 0):
            raise ConvgenError(f"`style_mix` {list(style_mix)}: one weight >= 0 per style image, not all 0")
        self.style_files = [Path(s).name if not isinstance(s, np.ndarray) else "array" for s in styles]
        self.styles = [to_tensor(read_image(s) if not isinstance(s, np.ndarray) else s, str(s)[:40]) for s in styles]
        self.style_mix = None if style_mix is None else list(style_mix)
        self.device = pick_device(device)
        self.net = feature_network(feature_net, vgg_weights).to(self.device)
        self.feature_net = self.net.name
        self.last_history: list[dict[str, float]] = []

    def describe(self) -> dict[str, str]:
        return {**super().describe(), "convgen:style": ", ".join(self.style_files)}

    def options(self, **options: Any) -> GatysOptions:
        """Checked :class:`GatysOptions` from keywords (the style mix is the one given at construction)."""
        unknown = [k for k in options if k not in GatysOptions.__dataclass_fields__ or k in ("history", "style_mix")]
        if unknown:
            raise ConvgenError(f"stylize does not take `{unknown[0]}`")
        opts = GatysOptions(style_mix=self.style_mix, **options)
        opts.check()
        return opts

    def check_options(self, **options: Any) -> None:
        self.options(**options)

    def stylize(self, image: np.ndarray, name: str = "image", **options: Any) -> np.ndarray:
        """Stylise one H x W (x C) float image; ``options``: the :class:`GatysOptions` fields. The loss parts of
        each iteration are left in :attr:`last_history`."""
        opts = self.options(**options)
        gray = is_gray(image)
        x = to_tensor(image, name)
        with tqdm(total=opts.iterations, desc=f"gatys {Path(name).name}", unit="it", file=sys.stderr,
                  leave=False, disable=opts.iterations < 20) as bar:  # fmt: skip
            y = gatys(x, self.styles, self.net, opts,
                      lambda i, row: bar.update(1) if bar.n < opts.iterations else None)  # fmt: skip
        self.last_history = opts.history
        return to_array(y.cpu(), gray)
