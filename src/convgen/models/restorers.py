"""Restoration networks: plain CNN (DnCNN / FFDNet-style), U-Net (+ self-attention, + gated convolutions for
inpainting) and a conv-recurrent (ConvLSTM) refiner.

Every network has the same interface: ``net(x, cond)`` with ``x`` a B x C x H x W degraded image in [0, 1]
(noise unclipped) and ``cond`` an optional B x 1 x H x W map (noise level sigma/255, or the inpainting mask with
1 = missing) used when ``cond_channels`` is 1. With ``residual: true`` the network predicts the degradation and
returns ``x - prediction`` (DnCNN's residual learning). Any H x W works: inputs are reflect-padded to the
network's size multiple and cropped back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from convgen.registry import MODELS
from convgen.schema import check


class RestorationNet(nn.Module):
    """Shared padding, conditioning and residual logic; subclasses implement ``body(x_in) -> output``."""

    multiple = 1
    channels = 1
    cond_channels = 0
    residual = True

    def body(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        inp = x
        if self.cond_channels:
            if cond is None:
                raise ValueError("this network needs a conditioning map (noise level or mask)")
            inp = torch.cat([x, cond.to(x.dtype)], 1)
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            inp = F.pad(inp, (0, pw, 0, ph), mode=mode)
        out = self.body(inp)[..., :h, :w]
        return x - out if self.residual else out


# ---------------------------------------------------------------------------------------------------------------
# DnCNN (Zhang et al. 2017); downscale 2 gives the FFDNet layout (Zhang et al. 2018)
# ---------------------------------------------------------------------------------------------------------------


@MODELS.register("dncnn")
class DnCNN(RestorationNet):
    """Conv+ReLU, (depth-2) x Conv+BN+ReLU, Conv. ``downscale: 2`` runs it on 2x2 pixel-unshuffled sub-images."""

    @dataclass
    class Config:
        channels: int = 1
        depth: int = 17
        width: int = 64
        batch_norm: bool = True
        downscale: int = 1  # 1 = DnCNN; 2 = FFDNet-style (4x fewer pixels per layer)
        cond_channels: int = 0  # 1 = noise-level map input (FFDNet's non-blind mode)
        residual: bool = True

        def __post_init__(self) -> None:
            check(self.channels in (1, 3), "model.channels", "must be 1 or 3")
            check(self.depth >= 3, "model.depth", "must be >= 3")
            check(self.width >= 1, "model.width", "must be >= 1")
            check(self.downscale in (1, 2), "model.downscale", "must be 1 or 2")
            check(self.cond_channels in (0, 1), "model.cond_channels", "must be 0 or 1")

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.channels, self.cond_channels, self.residual = cfg.channels, cfg.cond_channels, cfg.residual
        self.multiple = self.down = cfg.downscale
        d2 = cfg.downscale**2
        layers: list[nn.Module] = [nn.Conv2d((cfg.channels + cfg.cond_channels) * d2, cfg.width, 3, padding=1)]
        layers.append(nn.ReLU(inplace=True))
        for _ in range(cfg.depth - 2):
            layers.append(nn.Conv2d(cfg.width, cfg.width, 3, padding=1, bias=not cfg.batch_norm))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm2d(cfg.width, eps=1e-4, momentum=0.05))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(cfg.width, cfg.channels * d2, 3, padding=1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.net[-1].weight, 0, 1e-3)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        if self.down > 1:
            return F.pixel_shuffle(self.net(F.pixel_unshuffle(x, self.down)), self.down)
        return self.net(x)


# ---------------------------------------------------------------------------------------------------------------
# U-Net with residual blocks (DRUNet-like), optional self-attention and gated convolutions

# ---------------------------------------------------------------------------------------------------------------
# Blind denoising of real photos: a noise-estimation branch and a non-blind U-Net (CBDNet, Guo et al. 2019)
# ---------------------------------------------------------------------------------------------------------------


@MODELS.register("noise-estimating-unet")
class NoiseEstimatingUNet(nn.Module):
    """A small fully convolutional network estimates the per-pixel noise level of the photo (a map on the [0, 1]
    scale, what real camera noise has: it varies with brightness and colour), and a U-Net denoises given the photo
    and that map, scaled by ``strength`` (0: the map of a clean picture; above 1: stronger).

    Training (``cond``: the true map): the estimator learns only from its own loss (``last_aux``: an asymmetric L1
    that punishes under-estimation more, as CBDNet's, plus a smoothness term), since the U-Net, trained end to end on
    the estimate, would otherwise make the map a constant it does not need (measured: a flat 7/255 after 1,000
    steps, for true levels 0 to 11.5). The U-Net sees the true map for the first half of each batch and the
    (detached) estimate for the second, so it learns to follow the map and to live with the estimator's errors."""

    residual = True
    cond_channels = 0  # blind from the outside: the map is its own

    @dataclass
    class Config:
        channels: int = 3
        widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
        blocks: int = 1
        estimator_width: int = 32
        estimator_depth: int = 5
        under_weight: float = 0.7  # asymmetric estimation loss: weight of under-estimates (over-estimates: 1 - it)
        estimation_weight: float = 1.0  # of the estimation loss, relative to the image loss
        smoothness_weight: float = 0.05  # total variation of the estimated map
        estimator_lr_scale: float = 5.0  # the estimator's learning rate, relative to the run's

        def __post_init__(self) -> None:
            check(self.channels in (1, 3), "model.channels", "must be 1 or 3")
            check(self.estimator_width >= 1 and self.estimator_depth >= 2, "model.estimator_depth",
                  "the estimator needs a width >= 1 and a depth >= 2")  # fmt: skip
            check(0 < self.under_weight < 1, "model.under_weight", "must be in (0, 1)")
            check(self.estimation_weight >= 0 and self.smoothness_weight >= 0, "model.estimation_weight",
                  "the loss weights must be >= 0")  # fmt: skip
            check(0 < self.estimator_lr_scale <= 100, "model.estimator_lr_scale", "must be in (0, 100]")

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.channels = cfg.channels
        w, d = cfg.estimator_width, cfg.estimator_depth
        layers: list[nn.Module] = [nn.Conv2d(2 * cfg.channels, w, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(d - 2):
            layers += [nn.Conv2d(w, w, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(w, 1, 3, padding=1))
        self.estimator = nn.Sequential(*layers)
        self.denoiser = UNetRestore(UNetRestore.Config(channels=cfg.channels, widths=list(cfg.widths),
                                                       blocks=cfg.blocks, cond_channels=1))  # fmt: skip
        self.multiple = self.denoiser.multiple
        self.last_aux: torch.Tensor | None = None

    def param_groups(self) -> list[dict]:
        """The estimator learns at ``estimator_lr_scale`` times the run's rate: it gets only its own small loss and
        must keep up with the U-Net it feeds (at the run's rate its estimate lagged far behind)."""
        return [{"params": self.denoiser.parameters()},  # first: the rate the logs show
                {"params": self.estimator.parameters(), "lr_scale": self.cfg.estimator_lr_scale}]  # fmt: skip

    def estimate(self, x: torch.Tensor) -> torch.Tensor:
        """The noise-level map (B x 1 x H x W, [0, 1] scale) of noisy images ``x``. The estimator sees the image
        and the local energy of its high-pass part (a 3 x 3 Laplacian-like residual, averaged over 7 x 7): the
        feature every classical noise estimate starts from, which a small ReLU network does not find on its own
        (without it the estimate stayed a flat 7-8/255 for true levels 0 to 11.5 after 1,000 steps)."""
        high = x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        energy = F.avg_pool2d(F.pad(high.square(), (3, 3, 3, 3), mode="replicate"), 7, stride=1).sqrt()
        return F.softplus(self.estimator(torch.cat([x, 10 * energy], 1)) - 3.0) * 0.1

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None, strength: float = 1.0) -> torch.Tensor:
        """The denoised images; in training with ``cond`` (the true noise-level map) the estimation loss is left
        in :attr:`last_aux` for the task to add."""
        level = self.estimate(x)
        if cond is not None and self.training:  # validation and inference use the estimate alone
            true = cond.to(level.dtype)
            self.last_aux = self.estimation_loss(level, true)
            half = len(x) // 2
            level = torch.cat([true[:half], level.detach()[half:]]) if half else level.detach()
        return self.denoiser(x, level * strength)

    def estimation_loss(self, level: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """Asymmetric L1 of the estimated map against the true one (under-estimates weigh ``under_weight``) plus
        the map's total variation: on the scale of the image's Charbonnier loss."""
        c = self.cfg
        err = level - true
        weight = torch.where(err < 0, c.under_weight, 1 - c.under_weight)
        tv = (level[..., 1:, :] - level[..., :-1, :]).abs().mean() + (level[..., 1:] - level[..., :-1]).abs().mean()
        return c.estimation_weight * (weight * err.abs()).mean() + c.smoothness_weight * tv

# ---------------------------------------------------------------------------------------------------------------


class GatedConv(nn.Module):
    """Gated convolution (Yu et al. 2019): ``act(conv_f(x)) * sigmoid(conv_g(x))`` learns where to trust input."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, 2 * cout, k, stride, padding=(k - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, g = self.conv(x).chunk(2, 1)
        return F.elu(f) * torch.sigmoid(g)


class ResBlock(nn.Module):
    def __init__(self, ch: int, gated: bool = False) -> None:
        super().__init__()
        if gated:
            self.body = nn.Sequential(GatedConv(ch, ch), nn.Conv2d(ch, ch, 3, padding=1))
        else:
            self.body = nn.Sequential(
                nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(ch, ch, 3, padding=1)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention over all positions of a feature map (non-local block), pre-norm, residual."""

    def __init__(self, ch: int, heads: int = 4) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, ch)
        self.attn = nn.MultiheadAttention(ch, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.norm(x).flatten(2).transpose(1, 2)
        out, _ = self.attn(t, t, t, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


@MODELS.register("unet-restore")
class UNetRestore(RestorationNet):
    """Encoder-decoder with skip connections; each level has ``blocks`` residual blocks.

    ``attention: true`` adds self-attention blocks at the bottleneck (the CNN + attention variant); ``gated: true``
    uses gated convolutions in the encoder (the inpainting network, which sees the mask as ``cond``).
    """

    @dataclass
    class Config:
        channels: int = 1
        widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
        blocks: int = 1
        cond_channels: int = 0
        residual: bool = True
        attention: bool = False
        attention_heads: int = 4
        gated: bool = False

        def __post_init__(self) -> None:
            check(self.channels in (1, 3), "model.channels", "must be 1 or 3")
            check(len(self.widths) >= 2 and all(w >= 1 for w in self.widths), "model.widths", "two or more widths")
            check(self.blocks >= 1, "model.blocks", "must be >= 1")
            check(self.cond_channels in (0, 1), "model.cond_channels", "must be 0 or 1")
            ok = self.widths[-1] % self.attention_heads == 0
            check(not self.attention or ok, "model.attention_heads", "must divide the last width")

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.channels, self.cond_channels, self.residual = cfg.channels, cfg.cond_channels, cfg.residual
        w = cfg.widths
        self.multiple = 2 ** (len(w) - 1)
        self.head = nn.Conv2d(cfg.channels + cfg.cond_channels, w[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.enc = nn.ModuleList()
        for i in range(len(w) - 1):
            self.enc.append(nn.Sequential(*[ResBlock(w[i], cfg.gated) for _ in range(cfg.blocks)]))
            self.down.append(nn.Conv2d(w[i], w[i + 1], 2, 2, bias=False))
        mid: list[nn.Module] = [ResBlock(w[-1], cfg.gated)]
        if cfg.attention:
            mid.append(SelfAttention(w[-1], cfg.attention_heads))
        mid.append(ResBlock(w[-1]))
        self.mid = nn.Sequential(*mid)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in reversed(range(len(w) - 1)):
            self.up.append(nn.ConvTranspose2d(w[i + 1], w[i], 2, 2, bias=False))
            self.dec.append(nn.Sequential(*[ResBlock(w[i]) for _ in range(cfg.blocks)]))
        self.tail = nn.Conv2d(w[0], cfg.channels, 3, padding=1)
        nn.init.normal_(self.tail.weight, 0, 1e-3)
        nn.init.zeros_(self.tail.bias)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        skips = []
        for enc, down in zip(self.enc, self.down, strict=True):
            h = enc(h)
            skips.append(h)
            h = down(h)
        h = self.mid(h)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips), strict=True):
            h = dec(up(h) + skip)
        out = self.tail(h)
        if not self.residual and self.cond_channels:  # inpainting: start from the known pixels
            out = out + x[:, : self.channels]
        return out


# Colour from gray: a shared gray U-Net in an orthonormal opponent colour space
# ---------------------------------------------------------------------------------------------------------------

_OPPONENT = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, -1.0], [1.0, -2.0, 1.0]])
_OPPONENT = _OPPONENT / _OPPONENT.norm(dim=1, keepdim=True)  # rows: luminance and two chroma axes, orthonormal


@MODELS.register("opponent-unet")
class OpponentUNet(nn.Module):
    """Colour restoration with one gray U-Net, in the opponent colour space that CBM3D also works in.

    RGB goes to (luminance, two chroma) by an orthonormal transform, which keeps white noise white with the same
    sigma in every channel. Each opponent channel is restored by the same gray U-Net, which also sees the noisy
    luminance as a guide (its second input channel, as CBM3D groups chroma blocks by luminance); the result goes
    back to RGB. Luminance is scaled by 1/sqrt(3) into [0, 1] and chroma shifted by 0.5, so all three look like
    gray images to the network. The guide's input weights start at zero, so a gray denoiser loaded with
    ``task.init_from`` starts out as exactly the channel-by-channel opponent-space denoiser.
    """

    channels = 3
    cond_channels = 0

    @dataclass
    class Config:
        channels: int = 3
        widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
        blocks: int = 1
        guide: bool = True

        def __post_init__(self) -> None:
            check(self.channels == 3, "model.channels", "opponent-unet restores colour images: must be 3")
            check(len(self.widths) >= 2 and all(w >= 1 for w in self.widths), "model.widths", "two or more widths")
            check(self.blocks >= 1, "model.blocks", "must be >= 1")

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.guide = cfg.guide
        self.gray = UNetRestore(
            UNetRestore.Config(channels=1, widths=cfg.widths, blocks=cfg.blocks, cond_channels=int(cfg.guide))
        )
        if cfg.guide:
            with torch.no_grad():
                self.gray.head.weight[:, 1:].zero_()
        self.multiple = self.gray.multiple
        self.register_buffer("transform", _OPPONENT.clone(), persistent=False)
        self.register_buffer("scale", torch.tensor([3**-0.5, 1.0, 1.0]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("offset", torch.tensor([0.0, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        opp = torch.einsum("kc,bchw->bkhw", self.transform.to(x.dtype), x) * self.scale + self.offset
        flat = opp.reshape(b * 3, 1, h, w)
        guide = opp[:, :1].repeat_interleave(3, 0) if self.guide else None
        out = self.gray(flat, guide).reshape(b, 3, h, w)
        return torch.einsum("kc,bkhw->bchw", self.transform.to(x.dtype), (out - self.offset) / self.scale)

    def adapt_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A gray ``unet-restore`` state dict -> this network's (``task.init_from``): zero guide weights."""
        if any(k.startswith("gray.") for k in state):
            return state
        out = {f"gray.{k}": v for k, v in state.items()}
        head = out.get("gray.head.weight")
        if head is not None and self.guide and head.shape[1] == 1:
            out["gray.head.weight"] = torch.cat([head, torch.zeros_like(head)], 1)
        return out


# ---------------------------------------------------------------------------------------------------------------
# Conv-recurrent refinement (ConvLSTM)
# ---------------------------------------------------------------------------------------------------------------


class ConvLSTMCell(nn.Module):
    """ConvLSTM (Shi et al. 2015): LSTM gates computed by a 3x3 convolution over [input, hidden]."""

    def __init__(self, cin: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(cin + hidden, 4 * hidden, 3, padding=1)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None):
        if state is None:
            z = x.new_zeros(x.shape[0], self.hidden, *x.shape[-2:])
            state = (z, z)
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], 1)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


@MODELS.register("convlstm-restore")
class ConvLSTMRestore(RestorationNet):
    """Recurrent refinement: a CNN encodes the input, a ConvLSTM updates a hidden state for ``steps`` iterations,
    each iteration re-reading the current estimate; a CNN decodes the final state. Runs at half resolution
    (2x2 pixel-unshuffle), like FFDNet, to keep the recurrence cheap."""

    @dataclass
    class Config:
        channels: int = 1
        width: int = 64
        encoder_depth: int = 4
        steps: int = 4
        cond_channels: int = 0
        residual: bool = True

        def __post_init__(self) -> None:
            check(self.channels in (1, 3), "model.channels", "must be 1 or 3")
            check(self.width >= 4, "model.width", "must be >= 4")
            check(self.encoder_depth >= 1, "model.encoder_depth", "must be >= 1")
            check(self.steps >= 1, "model.steps", "must be >= 1")
            check(self.cond_channels in (0, 1), "model.cond_channels", "must be 0 or 1")

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.channels, self.cond_channels, self.residual = cfg.channels, cfg.cond_channels, cfg.residual
        self.multiple, self.steps = 2, cfg.steps
        cin = (cfg.channels + cfg.cond_channels) * 4
        layers: list[nn.Module] = [nn.Conv2d(cin, cfg.width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(cfg.encoder_depth - 1):
            layers += [nn.Conv2d(cfg.width, cfg.width, 3, padding=1), nn.ReLU(inplace=True)]
        self.encoder = nn.Sequential(*layers)
        self.read = nn.Conv2d(cfg.channels * 4, cfg.width // 2, 3, padding=1)
        self.cell = ConvLSTMCell(cfg.width + cfg.width // 2, cfg.width)
        self.decode = nn.Conv2d(cfg.width, cfg.channels * 4, 3, padding=1)
        nn.init.normal_(self.decode.weight, 0, 1e-3)
        nn.init.zeros_(self.decode.bias)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        xs = F.pixel_unshuffle(x, 2)
        c = self.channels * 4
        feat = self.encoder(xs)
        estimate, state, pred = xs[:, :c], None, torch.zeros_like(xs[:, :c])
        for _ in range(self.steps):
            h, state = self.cell(torch.cat([feat, F.relu(self.read(estimate))], 1), state)
            pred = self.decode(h)
            estimate = xs[:, :c] - pred if self.residual else pred
        return F.pixel_shuffle(pred, 2)
