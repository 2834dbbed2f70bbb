"""Range coding of latents with ``constriction`` (a queue: symbols decode in the order they were encoded).

Symbols are coded in groups that share one integer table (:mod:`convgen.entropy.tables`): per channel for the
entropy bottleneck, per scale-table index for the Gaussian conditional. The probabilities handed to
``constriction`` are the integer tables divided by ``2**PRECISION``, so both sides build the same models.
A symbol outside its table's range is clamped to the range's end (the tables cover all but 1e-9 of the mass).
"""

from __future__ import annotations

import numpy as np
import torch

from convgen.entropy.integer import FRACTIONAL_BITS, run_integer
from convgen.entropy.tables import MEDIAN_SCALE, PRECISION
from convgen.errors import ConvgenError

assert MEDIAN_SCALE == 1 << FRACTIONAL_BITS  # the hyper-synthesis reads medians on its own fixed-point grid


def _model(pmf_row: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(pmf_row.astype(np.float64) / (1 << PRECISION), perfect=False)


def encode_groups(groups: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """``[(symbols 0..L-1, integer pmf of length L), ...]`` -> one range-coded stream."""
    import constriction

    enc = constriction.stream.queue.RangeEncoder()
    for symbols, pmf in groups:
        if len(symbols):
            enc.encode(np.ascontiguousarray(symbols, dtype=np.int32), _model(pmf))
    return enc.get_compressed().astype("<u4").tobytes()


def decode_groups(data: bytes, specs: list[tuple[int, np.ndarray]]) -> list[np.ndarray]:
    """The inverse of :func:`encode_groups` given ``[(count, pmf), ...]``; a damaged stream is a ConvgenError."""
    import constriction

    if len(data) % 4:
        raise ConvgenError("damaged codec file (a stream is not a whole number of 32-bit words)")
    try:
        dec = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
        out = [dec.decode(_model(pmf), count) if count else np.zeros(0, np.int32) for count, pmf in specs]
        exhausted = dec.maybe_exhausted()
    except BaseException as e:  # constriction raises its own errors (and Rust panics) on inconsistent data
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        raise ConvgenError(f"damaged codec file ({type(e).__name__} while decoding a stream)") from None
    if not exhausted:  # the header's size asks for fewer (or more) symbols than were coded
        raise ConvgenError("damaged codec file (the streams do not hold the image the header describes)")
    return out


def _row(tables, prefix: str, i: int) -> np.ndarray:
    length = int(tables.get(f"{prefix}_length")[i])
    return tables.get(f"{prefix}_pmf")[i, :length].numpy()


def _symbols(values: torch.Tensor, offset: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Table positions 0..length-1 of rounded ``values`` whose tables start at ``offset`` (clamped to the range)."""
    return torch.round(values.double().cpu()).long().clamp(offset, offset + length - 1) - offset


def _by_index(tables, indexes: torch.Tensor) -> tuple[np.ndarray, list[slice]]:
    """The raster positions sorted by table index (stably) and, for each Gaussian table, its slice of them."""
    flat = indexes.flatten().numpy()
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(len(tables.get("gc_length")) + 1))
    return order, [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


#: the model of the bytes a stream may start with (the file header repeated inside it): uniform over 0..255
BYTE_PMF = np.full(256, (1 << PRECISION) // 256, dtype=np.int64)


def bottleneck_encode(tables, z: torch.Tensor, prefix: list[int] | None = None) -> tuple[bytes, torch.Tensor]:
    """Code a 1 x C x h x w hyper-latent per channel, after the bytes ``prefix`` (if any); returns the stream and
    z_hat on the fixed-point grid (integers, scale 2**FRACTIONAL_BITS) that the decoder also gets."""
    med = tables.get("eb_median_fixed").double().view(1, -1, 1, 1) / MEDIAN_SCALE
    offset = tables.get("eb_offset").long().view(1, -1, 1, 1)
    sym = _symbols(z.double().cpu() - med, offset, tables.get("eb_length").long().view(1, -1, 1, 1))
    groups = [(sym[0, c].flatten().numpy(), _row(tables, "eb", c)) for c in range(z.shape[1])]
    if prefix:
        groups.insert(0, (np.asarray(prefix, np.int32), BYTE_PMF))
    return encode_groups(groups), _fixed_z(tables, sym)


def bottleneck_decode(tables, data: bytes, shape: tuple[int, int, int],
                      prefix: int = 0) -> tuple[torch.Tensor, list[int]]:  # fmt: skip
    """The fixed-point z_hat (1 x C x h x w) of a stream written by :func:`bottleneck_encode`, and the ``prefix``
    bytes it starts with."""
    c, h, w = shape
    if c != len(tables.get("eb_length")):
        raise ConvgenError("bitstream and model disagree on the hyper-latent channels")
    specs = [(prefix, BYTE_PMF)] if prefix else []
    decoded = decode_groups(data, specs + [(h * w, _row(tables, "eb", i)) for i in range(c)])
    head = [int(v) for v in decoded.pop(0)] if prefix else []
    sym = torch.from_numpy(np.stack(decoded).astype(np.int64)).view(1, c, h, w)
    return _fixed_z(tables, sym), head


def _fixed_z(tables, sym: torch.Tensor) -> torch.Tensor:
    offset = tables.get("eb_offset").long().view(1, -1, 1, 1)
    return ((sym + offset) * MEDIAN_SCALE + tables.get("eb_median_fixed").view(1, -1, 1, 1)).double()


def scale_indexes(tables, z_fixed: torch.Tensor) -> torch.Tensor:
    """Scale-table index of every y (1 x M x H x W, int64) from the integer hyper-synthesis of z_hat: the
    smallest table scale at or above the predicted one."""
    layers = sum(1 for name, _ in tables.named_buffers() if name.startswith("hs__") and name.endswith("__kind"))
    scales = run_integer(tables, "hs.", z_fixed, layers).to(torch.int64)
    threshold = tables.get("gc_threshold")
    idx = torch.searchsorted(threshold, scales.flatten().contiguous(), right=False)
    return idx.clamp_max(len(threshold) - 1).view(scales.shape)


def gaussian_encode(tables, y: torch.Tensor, indexes: torch.Tensor) -> bytes:
    """Code round(y) (1 x M x H x W, the gained latent) with the table of each position's index."""
    offset, length = tables.get("gc_offset").long()[indexes], tables.get("gc_length").long()[indexes]
    sym = _symbols(y, offset, length).flatten().numpy()
    order, parts = _by_index(tables, indexes)
    return encode_groups([(sym[order[part]], _row(tables, "gc", i)) for i, part in enumerate(parts)])


def gaussian_decode(tables, data: bytes, indexes: torch.Tensor) -> torch.Tensor:
    """y_hat (float32, 1 x M x H x W) of a stream written by :func:`gaussian_encode` with the same indexes."""
    order, parts = _by_index(tables, indexes)
    specs = [(part.stop - part.start, _row(tables, "gc", i)) for i, part in enumerate(parts)]
    sym = np.empty(len(order), dtype=np.int64)
    sym[order] = np.concatenate(decode_groups(data, specs)).astype(np.int64)
    values = torch.from_numpy(sym) + tables.get("gc_offset").long()[indexes.flatten()]
    return values.view(indexes.shape).float()
