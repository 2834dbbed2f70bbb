"""VGG19 ``features`` (Simonyan & Zisserman 2014) in plain PyTorch, for style and content (perceptual) losses.

The module names and shapes are torchvision's, so its public ImageNet file ``vgg19-dcbb9e9d.pth`` (the suffix is
the first hex digits of its SHA-256, the torch.hub convention) loads with ``strict=True`` after dropping the
classifier: ``features.{0,2,5,7,10,12,14,16,19,21,23,25,28,30,32,34}.{weight,bias}``. Inputs are RGB in [0, 1],
normalised inside with the ImageNet mean and standard deviation.

Offline, where that file cannot be had, :func:`random_vgg19` builds the documented fallback ``random-vgg19``: the
same architecture with seeded random weights (PyTorch's Kaiming-uniform default, zero biases; He, Wang & Hopcroft
2016 use random VGG weights the same way), whose per-layer scale is normalised in the loss
(:class:`convgen.losses.perceptual.PerceptualLoss` divides each layer's style term by its target Gram's norm).
Its name is recorded with every result it produces. ``docs/benchmarks.md`` has the measurement that chose it over
per-channel activation normalisation (Gatys et al.'s normalised VGG, applied to random filters: much worse, it
makes rarely firing channels hypersensitive), average pooling, and shallow multi-scale random filters
(Ustyuzhaninov et al. 2016).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from convgen.errors import ConvgenError

WEIGHTS_FILE = "vgg19-dcbb9e9d.pth"
WEIGHTS_URLS = ["https://download.pytorch.org/models/"]
WEIGHTS_SHA256_PREFIX = "dcbb9e9d"
WEIGHTS_ENV = "CONVGEN_VGG_WEIGHTS"
MIN_SIDE = 16  # the smallest side the features are computed at (smaller inputs are padded)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's "E" configuration: channels per conv, "M" a 2 x 2 max pool
CFG_E = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def _layer_names() -> dict[str, int]:
    """``conv1_1`` / ``relu1_1`` / ``pool1`` ... -> index in ``features``."""
    names, block, conv, i = {}, 1, 1, 0
    for v in CFG_E:
        if v == "M":
            names[f"pool{block}"] = i
            block, conv, i = block + 1, 1, i + 1
        else:
            names[f"conv{block}_{conv}"], names[f"relu{block}_{conv}"] = i, i + 1
            conv, i = conv + 1, i + 2
    return names


LAYERS = _layer_names()
FEATURE_NETS = ("auto", "vgg19-imagenet", "random-vgg19")
CONV_INDEXES = [i for n, i in LAYERS.items() if n.startswith("conv")]


class VGG19Features(nn.Module):
    """``features`` of torchvision's VGG19; :meth:`forward` returns the named layers' activations."""

    def __init__(self, pool: str = "max") -> None:
        super().__init__()
        if pool not in ("max", "avg"):
            raise ConvgenError(f"`pool` {pool!r}: must be max or avg")
        layers: list[nn.Module] = []
        cin = 3
        for v in CFG_E:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2) if pool == "max" else nn.AvgPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.name = "vgg19"  # replaced by the loader: "vgg19-imagenet" or "random-vgg19-norm"

    def forward(self, x: torch.Tensor, layers: list[str] | tuple[str, ...]) -> dict[str, torch.Tensor]:
        """RGB in [0, 1] (B x 3 x H x W) -> ``{layer: activation}`` for the requested layer names."""
        unknown = [n for n in layers if n not in LAYERS]
        if unknown:
            raise ConvgenError(f"unknown VGG19 layer {unknown[0]!r} (names are conv1_1, relu1_1, pool1, ... relu5_4)")
        wanted = {LAYERS[n]: n for n in layers}
        last = max(wanted)
        h, out = (x - self.mean) / self.std, {}
        short = [max(0, MIN_SIDE - s) for s in h.shape[-2:]]
        if any(short):  # four 2 x 2 pools before relu5_*: a smaller side is padded by replication to 16
            h = F.pad(h, (0, short[1], 0, short[0]), mode="replicate")
        for i, module in enumerate(self.features):
            h = module(h)
            if i in wanted:
                out[wanted[i]] = h
            if i == last:
                break
        return out


def _hub_prefix(path: Path) -> str | None:
    """The SHA-256 prefix a torch.hub style name carries (``name-<hex>.pth``), or None."""
    m = re.search(r"-([0-9a-f]{8,64})\.(?:pth|pt)$", path.name)
    return m.group(1) if m else None


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``features.*`` tensors of a VGG19 file: torchvision's ``.pth`` (read with torch's restricted
    ``weights_only`` unpickler, checked against the SHA-256 prefix its name carries) or a ``.safetensors``."""
    from convgen.io.fetch import file_digest
    from convgen.io.weights import load_public_weights

    path = Path(path)
    if not path.is_file():
        raise ConvgenError(f"{path}: VGG19 weights file not found")
    prefix = _hub_prefix(path)
    if prefix and not file_digest(path, "sha256").startswith(prefix):
        raise ConvgenError(f"{path}: SHA-256 does not start with {prefix} as its name says (a damaged or "
                           "different file); delete it and download it again")  # fmt: skip
    state = load_public_weights(path, "VGG19")
    return {k: v for k, v in state.items() if k.startswith("features.")}


def build_vgg19(weights: str | Path, pool: str = "max") -> VGG19Features:
    """VGG19 features with the weights of ``weights`` (strict layout check), frozen, eval mode."""
    from convgen.io.weights import fit_state

    net = VGG19Features(pool)
    state = load_weights_file(weights)
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ConvgenError(
            f"{weights}: not the torchvision VGG19 layout ({len(missing)} missing, {len(unexpected)} unexpected "
            f"tensors, e.g. {(missing + unexpected)[0]})"
        )
    fit_state(net, state, weights)
    net.name = "vgg19-imagenet"
    return net.eval().requires_grad_(False)


def calibration_images(n: int = 8, size: int = 128, seed: int = 0) -> torch.Tensor:
    """Fixed synthetic RGB images with a natural 1/f amplitude spectrum and correlated colour, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(size).view(-1, 1)
    fx = torch.fft.rfftfreq(size).view(1, -1)
    amp = 1.0 / (fx.square() + fy.square()).sqrt().clamp_min(1.0 / size)
    spec = torch.randn(n, 1, size, size // 2 + 1, 2, generator=g)
    gray = torch.fft.irfft2(torch.view_as_complex(spec) * amp, s=(size, size))
    tint = torch.fft.irfft2(torch.view_as_complex(torch.randn(n, 3, size, size // 2 + 1, 2, generator=g)) * amp,
                            s=(size, size))  # fmt: skip
    x = gray + 0.4 * tint
    x = (x - x.mean((1, 2, 3), keepdim=True)) / x.std((1, 2, 3), keepdim=True)
    return (0.5 + 0.2 * x).clamp(0, 1)


@torch.no_grad()
def normalise_layers(net: VGG19Features, images: torch.Tensor) -> VGG19Features:
    """Rescale each conv layer in turn so every channel's mean ReLU activation over ``images`` is 1 (a channel
    that never fires gets its bias raised until it does). The network's function up to a per-channel scale is
    unchanged for ReLU nets, so only the relative weight of channels and layers in a loss changes."""
    h = (images - net.mean) / net.std
    for module in net.features:
        if isinstance(module, nn.Conv2d):
            pre = module(h)
            act = pre.relu().mean((0, 2, 3))
            dead = act < 1e-6
            if dead.any():  # shift dead channels so they fire on about half the positions
                module.bias[dead] -= pre[:, dead].median()
                act = module(h).relu().mean((0, 2, 3))
            module.weight /= act.view(-1, 1, 1, 1)
            module.bias /= act
        h = module(h)
    return net


def random_vgg19(seed: int = 0, normalise: bool = False, pool: str = "max") -> VGG19Features:
    """The offline fallback: VGG19 with seeded random (Kaiming-uniform, PyTorch's default) weights and zero biases;
    ``normalise`` rescales every channel on :func:`calibration_images` (an alternative measured, not the default)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        net = VGG19Features(pool)
    finally:
        torch.random.set_rng_state(state)
    for i in CONV_INDEXES:
        nn.init.zeros_(net.features[i].bias)
    if normalise:
        normalise_layers(net, calibration_images())
    net.name = "random-vgg19-channelnorm" if normalise else "random-vgg19"
    if pool == "avg":
        net.name += "-avgpool"
    return net.eval().requires_grad_(False)


def fetch_weights(cache_dir: str | Path, mirrors: list[str] | None = None) -> Path:
    """Download torchvision's VGG19 into ``cache_dir`` (checked against the SHA-256 prefix in its name) or reuse it."""
    from convgen.io.fetch import Resource, download_resource

    resource = Resource(WEIGHTS_FILE, sha256_prefix=WEIGHTS_SHA256_PREFIX)
    return download_resource(resource, cache_dir, list(mirrors or WEIGHTS_URLS))


def resolve_weights(weights: str | Path | None = None, download: bool = True) -> Path | None:
    """An explicit path, ``$CONVGEN_VGG_WEIGHTS``, the cached file, or (``download``) a checksummed download;
    None when none of them gives a file (the caller then uses the fallback and says so)."""
    from convgen.io.fetch import cache_root

    if weights or os.environ.get(WEIGHTS_ENV):
        path = Path(weights or os.environ[WEIGHTS_ENV])
        if not path.is_file():
            raise ConvgenError(f"{path}: VGG19 weights file not found")
        return path
    cache = cache_root() / "weights"
    if (cache / WEIGHTS_FILE).is_file():
        return cache / WEIGHTS_FILE
    if not download:
        return None
    try:
        return fetch_weights(cache)
    except ConvgenError:
        return None


def feature_network(name: str = "auto", weights: str | Path | None = None, download: bool = False) -> VGG19Features:
    """``vgg19-imagenet`` (the weights file, an error when it is missing), ``random-vgg19`` (the offline
    fallback), or ``auto``: the ImageNet VGG19 when a weights file is found, else the fallback."""
    if name not in FEATURE_NETS:
        raise ConvgenError(f"feature network {name!r}: must be one of {', '.join(FEATURE_NETS)}")
    if name == "random-vgg19":
        return random_vgg19()
    path = resolve_weights(weights, download=download)
    if path is None:
        if name == "vgg19-imagenet":
            raise ConvgenError(f"the VGG19 ImageNet weights are not available; pass --vgg-weights PATH/{WEIGHTS_FILE}"
                               f" or set ${WEIGHTS_ENV}")  # fmt: skip
        return random_vgg19()
    return build_vgg19(path)


def resize_to(x: torch.Tensor, side: int) -> torch.Tensor:
    """Resize B x C x H x W so its longer side is ``side`` (antialiased area/bilinear)."""
    h, w = x.shape[-2:]
    s = side / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=s < 1)
