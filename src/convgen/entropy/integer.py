"""The hyper-synthesis as an integer network (after Ballé, Johnston & Minnen 2019, "Integer networks for data
compression"), so the decoder picks exactly the coding table the encoder picked, on any machine and with any
thread count.

Weights are rounded to ``WEIGHT_BITS`` fractional bits and activations to ``FRACTIONAL_BITS``; every
convolution runs in float64 on integer values whose partial sums stay below 2**53, where float arithmetic is exact
in any summation order; rescaling is a floor division by a power of two, also exact. A float network's output
would differ in its last bits between thread counts and could land on the other side of a table boundary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from convgen.errors import ConvgenError

WEIGHT_BITS = 12
FRACTIONAL_BITS = 8
EXACT_LIMIT = 2.0**52


def quantize_layers(seq: nn.Sequential) -> dict[str, torch.Tensor]:
    """``{i.weight, i.bias, i.kind}`` for each layer of a Sequential of Conv2d / ConvTranspose2d / ReLU."""
    out: dict[str, torch.Tensor] = {}
    for i, layer in enumerate(seq):
        if isinstance(layer, nn.ReLU):
            out[f"{i}.kind"] = torch.tensor(0)
            continue
        if not isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
            raise TypeError(f"layer {i} ({type(layer).__name__}) has no integer form")
        kind = 2 if isinstance(layer, nn.ConvTranspose2d) else 1
        out[f"{i}.kind"] = torch.tensor([kind, layer.stride[0], layer.padding[0], layer.output_padding[0]])
        out[f"{i}.weight"] = torch.round(layer.weight.detach().double() * 2**WEIGHT_BITS).to(torch.int32)
        bias = layer.bias.detach().double() * 2 ** (WEIGHT_BITS + FRACTIONAL_BITS)
        out[f"{i}.bias"] = torch.round(bias).to(torch.int64)
    return out


def run_integer(tables, prefix: str, x: torch.Tensor, layers: int) -> torch.Tensor:
    """Apply the integer layers ``prefix0 .. prefix{layers-1}`` to integer-valued ``x`` (float64, scaled by
    2**FRACTIONAL_BITS); the result has the same scaling."""
    x = x.double().cpu()
    for i in range(layers):
        kind = tables.get(f"{prefix}{i}.kind")
        if kind.ndim == 0:
            x = torch.clamp_min(x, 0)
            continue
        w, b = tables.get(f"{prefix}{i}.weight").double(), tables.get(f"{prefix}{i}.bias").double()
        bound = float(w.abs().sum()) * float(x.abs().max()) + float(b.abs().max())  # loose but sufficient
        if bound >= EXACT_LIMIT:
            raise ConvgenError("the hyper-synthesis left exact integer range (a latent far outside training)")
        _, stride, padding, out_pad = (int(v) for v in kind)
        if int(kind[0]) == 2:
            x = F.conv_transpose2d(x, w, b, stride, padding, out_pad)
        else:
            x = F.conv2d(x, w, b, stride, padding)
        x = torch.floor(x / 2**WEIGHT_BITS)
    return x
