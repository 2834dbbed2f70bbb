"""Integer coding tables, built once at export (CompressAI's ``update()``) and saved as ``tables.safetensors``.

Every table is a probability mass function over consecutive integer symbols, quantised to integers that sum to
``2**PRECISION`` with none zero, so encoder and decoder use the same numbers on any machine:

- ``eb_pmf`` (C x L), ``eb_length``, ``eb_offset`` (C): the entropy bottleneck's per-channel tables; a symbol
  is ``round(z - median) - offset``, with the medians on a 1/``MEDIAN_SCALE`` grid (``eb_median_fixed``).
- ``gc_pmf`` (64 x L), ``gc_length``, ``gc_offset``: the zero-mean Gaussian at each scale of
  :func:`~convgen.entropy.models.scale_table`; ``gc_threshold`` holds those scales as fixed-point integers that
  the integer hyper-synthesis (:mod:`convgen.entropy.integer`) output is compared with.
- ``hs.*``: the hyper-synthesis as integers (:func:`convgen.entropy.integer.quantize_layers`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

PRECISION = 16
MEDIAN_SCALE = 256
TAIL_MASS = 1e-9


def quantize_pmf(pmf: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Integers >= 1 summing to ``2**precision``, proportional to ``pmf`` (the remainder goes to the largest
    entries, ties by position, so the result is a pure function of the input)."""
    total = 1 << precision
    n = len(pmf)
    if n > total // 2:
        raise ValueError(f"a table of {n} symbols does not fit {precision}-bit precision")
    pmf = np.clip(np.asarray(pmf, dtype=np.float64), 0, None)
    pmf = pmf / pmf.sum() if pmf.sum() > 0 else np.full(n, 1.0 / n)
    q = np.floor(pmf * (total - n)).astype(np.int64) + 1
    rest = total - int(q.sum())
    order = np.lexsort((np.arange(n), -pmf))  # largest first, then by position
    q[order[: rest % n]] += 1
    q += rest // n
    assert q.sum() == total and q.min() >= 1
    return q


def _pad(rows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(r) for r in rows)
    table = np.zeros((len(rows), length), dtype=np.int32)
    for i, r in enumerate(rows):
        table[i, : len(r)] = r
    return torch.from_numpy(table), torch.tensor([len(r) for r in rows], dtype=torch.int32)


@torch.no_grad()
def bottleneck_tables(eb: nn.Module) -> dict[str, torch.Tensor]:
    """Per-channel tables of an :class:`~convgen.entropy.models.EntropyBottleneck` over its fitted tails."""
    q = eb.quantiles.detach().double()[:, 0, :]
    med_fixed = torch.round(q[:, 1] * MEDIAN_SCALE).to(torch.int64)
    med = med_fixed.double() / MEDIAN_SCALE
    lower = torch.floor(q[:, 0] - med).clamp_max(-1).to(torch.int64)
    upper = torch.ceil(q[:, 2] - med).clamp_min(1).to(torch.int64)
    lengths = (upper - lower + 1).tolist()
    grid = lower[:, None] + torch.arange(max(lengths))[None] + med[:, None]  # channel c's symbols in row c
    lik = eb.likelihood(grid.float()[None, :, None, :])[0, :, 0].double()  # all channels in one pass
    pmf, length = _pad([quantize_pmf(lik[c, :n].numpy()) for c, n in enumerate(lengths)])
    return {"eb_pmf": pmf, "eb_length": length, "eb_offset": lower.to(torch.int32), "eb_median_fixed": med_fixed}


def gaussian_tables(scales: torch.Tensor, fractional_bits: int) -> dict[str, torch.Tensor]:
    """Tables of a zero-mean Gaussian at each of ``scales``, symbols -R..R with R covering all but TAIL_MASS."""
    from scipy.stats import norm

    rows, offsets = [], []
    for s in scales.tolist():
        r = max(1, math.ceil(s * norm.ppf(1 - TAIL_MASS / 2)))
        k = np.arange(-r, r + 1, dtype=np.float64)
        rows.append(quantize_pmf(norm.cdf((k + 0.5) / s) - norm.cdf((k - 0.5) / s)))
        offsets.append(-r)
    pmf, length = _pad(rows)
    threshold = torch.ceil(scales * (1 << fractional_bits)).to(torch.int64)
    return {"gc_pmf": pmf, "gc_length": length, "gc_offset": torch.tensor(offsets, dtype=torch.int32),
            "gc_threshold": threshold}  # fmt: skip


class CodecTables(nn.Module):
    """Holds the tables as buffers, so they save and load like any network (``tables.safetensors``)."""

    def __init__(self, tables: dict[str, torch.Tensor]) -> None:
        """From named tables (``hs.0.weight``) or from a saved file's tensors (``hs__0__weight``)."""
        super().__init__()
        for k, v in tables.items():
            self.register_buffer(k.replace(".", "__"), v)

    def get(self, key: str) -> torch.Tensor:
        return getattr(self, key.replace(".", "__"))


def build_codec_tables(net: nn.Module) -> CodecTables:
    """All tables of a trained :class:`~convgen.models.codec.ImageCodec` (on the CPU)."""
    from convgen.entropy.integer import FRACTIONAL_BITS, quantize_layers
    from convgen.entropy.models import scale_table

    tables = bottleneck_tables(net.entropy_bottleneck)
    if net.hyperprior:
        tables.update(gaussian_tables(scale_table(), FRACTIONAL_BITS))
        tables.update({f"hs.{k}": v for k, v in quantize_layers(net.h_s).items()})
    return CodecTables(tables)
