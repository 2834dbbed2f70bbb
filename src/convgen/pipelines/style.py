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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from convgen.errors import ConvgenError
from convgen.io.colour import rgb_to_ycbcr, ycbcr_to_rgb
from convgen.io.images import convert_channels, read_image, resolve_inputs, write_image
from convgen.losses.perceptual import CONTENT_LAYERS, STYLE_LAYERS, LossWeights, PerceptualLoss
from convgen.models.backbones.vgg import LAYERS, VGG19Features, feature_network, resize_to
from convgen.options import Options, build, option
from convgen.pipelines.base import Pipeline
from convgen.registry import PIPELINES

MAX_SIDE = 4096  # stylised images are at most this many pixels on a side


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
class StyleOptions(Options):
    """What both methods take."""

    preserve_color: bool = option(False, "transfer luminance only; keep the photo's colours")
    size: int | None = option(None, "make the result with this longer side in px (default: the input's)", lo=16,
                              hi=MAX_SIDE)  # fmt: skip


@dataclass
class GatysOptions(StyleOptions):
    """Options of the optimisation (``convgen stylize --style``)."""

    iterations: int = option(300, "optimiser iterations over all scales", lo=1, hi=1_000_000)
    optimizer: Literal["lbfgs", "adam"] = option("lbfgs", "the optimiser")
    lr: float | None = option(None, "Adam's step (default 0.02); L-BFGS uses 1 with a strong-Wolfe line search",
                              gt=0, hi=1e3)  # fmt: skip
    content_weight: float = option(1.0, "weight of the content loss", lo=0)
    style_weight: float = option(1e3, "weight of the style (Gram) loss", lo=0)
    tv_weight: float = option(1e1, "weight of the total variation loss", lo=0)
    content_layers: tuple[str, ...] = option(CONTENT_LAYERS, "VGG19 layers of the content loss")
    style_layers: tuple[str, ...] = option(STYLE_LAYERS, "VGG19 layers of the style loss")
    style_size: int | None = option(None, "the painting's longer side for its Grams (default: --size)", lo=16,
                                    hi=MAX_SIDE)  # fmt: skip
    coarse_side: int = option(256, "larger results are made coarse to fine, from this side upwards", lo=16,
                              hi=MAX_SIDE)  # fmt: skip
    init: Literal["content", "noise"] = option("content", "start from the photo or from noise")
    seed: int = option(0, "noise seed for --init noise", lo=-(2**63), hi=2**63 - 1)

    def check(self) -> None:
        known = set(LAYERS)
        for key in ("content_layers", "style_layers"):
            bad = [name for name in getattr(self, key) if name not in known]
            if bad:
                raise ConvgenError(f"`{key}`: unknown layer {bad[0]!r} (layers: relu1_1 ... relu5_4, conv*, pool*)")


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
          progress: Callable[[int, dict[str, float]], None] | None = None, style_mix: Sequence[float] | None = None,
          history: list[dict[str, float]] | None = None) -> torch.Tensor:  # fmt: skip
    """Stylise ``content`` (1 x 3 x H x W in [0, 1]) with ``styles`` (weighted by ``style_mix``); returns
    1 x 3 x H' x W' in [0, 1], H' x W' the content's size scaled to ``opts.size``. ``history`` receives each
    iteration's loss parts."""
    history = [] if history is None else history
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
        grams = PerceptualLoss.style_targets(net, refs, opts.style_layers, style_mix)
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
        x = _optimise(x.detach().contiguous().requires_grad_(True), loss_fn, cont, n, opts, progress, history)
    out = x.detach().clamp(0, 1)
    if opts.preserve_color:
        out = recombine_chroma(out, target).clamp(0, 1)
    return out


def _optimise(x, loss_fn, cont, n, opts, progress, history) -> torch.Tensor:
    def record(parts):
        row = {k: float(v.detach()) for k, v in parts.items()}
        history.append(row)
        if progress:
            progress(len(history), row)

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
    """What both methods share: one array in, one array out (:meth:`stylize`, options checked against
    ``stylize_options``, then the method's :meth:`stylize_image`); files and folders (:meth:`stylize_files`), each
    output keeping its input's name, with the method and feature network recorded in every PNG's text chunks."""

    method = ""
    feature_net = ""
    name = "style transfer"
    stylize_options: type[Options] = StyleOptions

    def stylize(self, image: np.ndarray, name: str = "image", **options) -> np.ndarray:
        """Stylise one H x W (x C) float image in [0, 1]; a gray input gives a gray result."""
        return self.stylize_image(image, name, **self.check_options(**options))

    def stylize_image(self, image: np.ndarray, name: str, **options) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict[str, str]:
        return {"convgen:method": self.method, "convgen:feature_net": self.feature_net}

    def check_options(self, **options) -> dict[str, Any]:
        """The options checked against ``stylize_options`` (before any file is read or written)."""
        return build(self.stylize_options, options, f"stylize with {self.name}").values()

    def stylize_files(self, inputs: str | Path, output: str | Path, overwrite: bool = False, provenance: bool = True,
                      **options) -> list[Path]:  # fmt: skip
        from convgen.io.images import probe_image, stored_ndim
        from convgen.pipelines.restore import plan_outputs, warn_lossy

        checked = self.check_options(**options)
        record = self.provenance("stylize") if provenance else None
        files = resolve_inputs(inputs)
        targets = plan_outputs(files, Path(inputs), Path(output), overwrite)
        for f in files:  # every input is checked before anything is written
            probe_image(f)
        written: list[Path] = []
        bar = tqdm(total=len(files), desc=f"stylize ({self.method})", unit="img", file=sys.stderr,
                   disable=len(files) < 2)  # fmt: skip
        for f, target in zip(files, targets, strict=True):
            try:
                out = self.stylize_image(read_image(f), str(f), **checked)
            except ConvgenError as e:
                if not written:
                    raise
                raise type(e)(f"{e.template} (stopped there: {len(written)} of {len(files)} outputs written)") from None
            if stored_ndim(f) == 2 and out.shape[-1] == 1:
                out = out[..., 0]
            written.append(write_image(target, out, metadata=self.describe(), provenance=record))
            bar.update(1)
        bar.close()
        warn_lossy(files, written)
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

    def check_options(self, **options) -> dict[str, Any]:
        optimisation = [k for k in options if k in GatysOptions.__dataclass_fields__ and k not in self.stylize_options
                        .__dataclass_fields__]  # fmt: skip
        if optimisation:
            raise ConvgenError(f"`{optimisation[0]}` is an option of the Gatys optimisation (`style`), not of a "
                               "trained style model")  # fmt: skip
        return super().check_options(**options)

    @torch.no_grad()
    def stylize_image(self, image: np.ndarray, name: str = "image", preserve_color: bool = False,
                      size: int | None = None) -> np.ndarray:  # fmt: skip
        """H x W (x C) float image in [0, 1] -> the stylised float32 H' x W' x C image (H' x W' = the input's size,
        or its longer side resized to ``size``). A gray input gives a gray result."""
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
    name = "the Gatys optimisation"
    stylize_options = GatysOptions

    def provenance(self, verb: str, kind: str = "generated"):
        from convgen.io.provenance import Provenance

        return Provenance(kind, "gatys-optimisation", verb)

    def __init__(self, styles: Sequence[str | Path | np.ndarray], style_mix: Sequence[float] | None = None,
                 feature_net: str = "auto", vgg_weights: str | Path | None = None,
                 device: str = "cpu") -> None:  # fmt: skip
        from convgen.device import pick_device

        if not styles:
            raise ConvgenError("give at least one style image")
        if style_mix is not None:
            mix = [float(w) if not isinstance(w, bool) and isinstance(w, (int, float)) else float("nan")
                   for w in style_mix]  # fmt: skip
            if len(mix) != len(styles) or not all(np.isfinite(mix)) or min(mix) < 0 or sum(mix) <= 0:
                raise ConvgenError(f"`style_mix` {list(style_mix)}: one finite weight >= 0 per style image, not all 0")
            style_mix = mix
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
        """Checked :class:`GatysOptions` from keywords."""
        return GatysOptions(**self.check_options(**options))

    def stylize_image(self, image: np.ndarray, name: str = "image", **options: Any) -> np.ndarray:
        """Stylise one H x W (x C) float image; ``options``: the checked :class:`GatysOptions` fields. The loss
        parts of each iteration are left in :attr:`last_history`."""
        opts = GatysOptions(**options)
        gray = is_gray(image)
        x = to_tensor(image, name)
        history: list[dict[str, float]] = []
        with tqdm(total=opts.iterations, desc=f"gatys {Path(name).name}", unit="it", file=sys.stderr,
                  leave=False, disable=opts.iterations < 20) as bar:  # fmt: skip
            y = gatys(x, self.styles, self.net, opts,
                      lambda i, row: bar.update(1) if bar.n < opts.iterations else None,
                      style_mix=self.style_mix, history=history)  # fmt: skip
        self.last_history = history
        return to_array(y.cpu(), gray)
