"""The CNN U-Net of the diffusion models (Ho et al. 2020; the layout of diffusers' ``UNet2DModel``).

28 -> 14 -> 7 px for digits (``widths`` per resolution; the input side is padded to a multiple of
2**(levels-1)): a sinusoidal embedding of the timestep through a two-layer MLP, added to a learned class embedding
(class ``num_classes`` is the null class of classifier-free guidance), conditions every residual block (GroupNorm,
SiLU, 3x3 convolutions, the embedding as a per-channel scale and shift of the second norm); multi-head
self-attention at the lowest resolution; skip connections from every block of the way down to the way up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from convgen.registry import MODELS
from convgen.schema import check


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer (or real) timesteps: [cos(t w_k), sin(t w_k)], w_k = max_period^(-k/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(min(groups, c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # every block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map (pre-norm, residual, zero-initialised output)."""

    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(min(groups, channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


@MODELS.register("unet")
class UNet(nn.Module):
    """``forward(x, t, labels=None, guidance=None)``: the prediction (noise, v or x0: ``task.prediction``) for x_t
    at timesteps t; ``labels`` None (or the null class ``num_classes``) is the unconditional model. With
    ``guidance_input`` (a distilled student, Meng et al. 2023) the classifier-free guidance scale is an input
    (``guidance``, one per image; default 1) and one pass gives the guided prediction."""

    @dataclass
    class Config:
        image_size: int = 28
        channels: int = 1
        widths: list[int] = field(default_factory=lambda: [32, 64, 64])  # channels at 28, 14, 7 px
        blocks: int = 1  # residual blocks per resolution on the way down (one more on the way up)
        attention_heads: int = 4  # self-attention at the lowest resolution (0 = none)
        groups: int = 8  # GroupNorm groups
        dropout: float = 0.1
        num_classes: int = 0  # > 0: class-conditional, with a null class for classifier-free guidance
        guidance_input: bool = False  # the guidance scale is an input (a guidance-distilled student)

        def __post_init__(self) -> None:
            check(self.channels in (1, 3), "model.channels", "must be 1 or 3")
            check(len(self.widths) >= 1 and all(w >= 1 for w in self.widths), "model.widths", "positive widths")
            check(
                all(w % min(self.groups, w) == 0 for w in self.widths),
                "model.widths",
                f"every width must be a multiple of model.groups ({self.groups})",
            )
            check(self.blocks >= 1, "model.blocks", "must be >= 1")
            check(self.attention_heads >= 0, "model.attention_heads", "must be >= 0")
            check(
                self.attention_heads == 0 or self.widths[-1] % self.attention_heads == 0,
                "model.attention_heads",
                f"must divide the lowest-resolution width ({self.widths[-1]})",
            )
            check(self.groups >= 1, "model.groups", "must be >= 1")
            check(0 <= self.dropout < 1, "model.dropout", "must be in [0, 1)")
            check(self.num_classes >= 0, "model.num_classes", "must be >= 0")
            check(self.image_size >= 1, "model.image_size", "must be >= 1")
            check(not self.guidance_input or self.num_classes > 0, "model.guidance_input", "needs model.num_classes")

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.channels, self.image_size = cfg.channels, cfg.image_size
        self.num_classes = cfg.num_classes
        widths, groups, drop = list(cfg.widths), cfg.groups, cfg.dropout
        base = widths[0]
        self.emb_dim = emb = 4 * base
        self.time_mlp = nn.Sequential(nn.Linear(base, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.class_embed = nn.Embedding(cfg.num_classes + 1, emb) if cfg.num_classes else None
        self.guidance_mlp = None
        if cfg.guidance_input:  # zero output at first: a student starts as its teacher's conditional model
            self.guidance_mlp = nn.Sequential(nn.Linear(base, emb), nn.SiLU(), nn.Linear(emb, emb))
            nn.init.zeros_(self.guidance_mlp[-1].weight)
            nn.init.zeros_(self.guidance_mlp[-1].bias)
        self.conv_in = nn.Conv2d(cfg.channels, base, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, c = [base], base
        for level, w in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(cfg.blocks):
                blocks.append(ResBlock(c, w, emb, groups, drop))
                c = w
                skips.append(c)
            self.down.append(blocks)
            if level < len(widths) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid1 = ResBlock(c, c, emb, groups, drop)
        self.attn = Attention(c, cfg.attention_heads, groups) if cfg.attention_heads else None
        self.mid2 = ResBlock(c, c, emb, groups, drop)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level, w in reversed(list(enumerate(widths))):
            blocks = nn.ModuleList()
            for _ in range(cfg.blocks + 1):
                blocks.append(ResBlock(c + skips.pop(), w, emb, groups, drop))
                c = w
            self.up.append(blocks)
            if level > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.up_attn = Attention(widths[-1], cfg.attention_heads, groups) if cfg.attention_heads else None
        self.norm_out = nn.GroupNorm(min(groups, c), c)
        self.conv_out = nn.Conv2d(c, cfg.channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def multiple(self) -> int:
        """Input sides are padded to a multiple of this (each downsampling halves them)."""
        return 2 ** (len(self.cfg.widths) - 1)

    def embedding(
        self, t: torch.Tensor, labels: torch.Tensor | None, guidance: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.cfg.widths[0]))
        if self.class_embed is not None:
            if labels is None:
                labels = torch.full_like(t, self.num_classes, dtype=torch.long)
            emb = emb + self.class_embed(labels)
        if self.guidance_mlp is not None:  # scales 0..5 spread over the sinusoids like timesteps 0..500
            w = torch.ones(len(t), device=t.device) if guidance is None else guidance.to(t.device).float()
            emb = emb + self.guidance_mlp(timestep_embedding(100 * w, self.cfg.widths[0]))
        return emb

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h0, w0 = x.shape[-2:]
        m = self.multiple
        ph, pw = (-h0) % m, (-w0) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h0, w0) > max(ph, pw) else "replicate")
        emb = self.embedding(t, labels, guidance)
        h = self.conv_in(x)
        skips = [h]
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                skips.append(h)
        h = self.mid1(h, emb)
        if self.attn is not None:
            h = self.attn(h)
        h = self.mid2(h, emb)
        for i, blocks in enumerate(self.up):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if i == 0 and self.up_attn is not None:
                h = self.up_attn(h)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2, mode="nearest"))
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out[..., :h0, :w0]
