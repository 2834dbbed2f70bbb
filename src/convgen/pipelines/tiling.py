"""Running a network on large images in overlapping tiles, and geometric self-ensembles.

Overlapping tiles are restored one at a time and blended with weights that are zero near a tile's inner edges
(where the network sees padding instead of image) and ramp up to one, so memory stays bounded and the result
matches untiled inference away from the seams.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from tqdm import tqdm

from convgen.data.transforms import dihedral
from convgen.errors import ConvgenError

Net = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def _ramp(n: int, taper_start: bool, taper_end: bool, overlap: int) -> torch.Tensor:
    """1-D blending weights: 0 for the first overlap/4 pixels of a tapered side, then a linear ramp to 1."""
    w = torch.ones(n)
    if overlap < 2:
        return w
    margin, length = overlap // 4, max(1, overlap // 2)
    t = torch.arange(n, dtype=torch.float32)
    if taper_start:
        w = torch.minimum(w, ((t - margin + 1) / length).clamp(0, 1))
    if taper_end:
        w = torch.minimum(w, ((n - t - margin) / length).clamp(0, 1))
    return w


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    return [*starts, size - tile]


def check_tiling(tile: int | None, overlap: int) -> None:
    """``tile`` None (or 0 on the command line) means no tiling."""
    if tile is not None and tile < 16:
        raise ConvgenError(f"`tile` {tile} is too small (at least 16 px)")
    if overlap < 0:
        raise ConvgenError("`overlap` must be >= 0")
    if tile is not None and overlap >= tile:
        raise ConvgenError(f"`overlap` {overlap} must be smaller than `tile` {tile}")


@torch.no_grad()
def ensemble(net: Net, x: torch.Tensor, cond: torch.Tensor | None, views: int = 1) -> torch.Tensor:
    """``net`` on one tile; with ``views`` > 1, the mean over that many of the 8 flips/rotations (geometric
    self-ensemble, as in EDSR+ and the DnCNN/FFDNet papers: ~0.1 dB for ``views`` x time)."""
    acc = None
    for k in range(views):
        xt, ct = dihedral(x, k), None if cond is None else dihedral(cond, k)
        out = dihedral(net(xt, ct).float().cpu(), k, inverse=True)
        acc = out if acc is None else acc + out
    return acc / views


@torch.no_grad()
def run_tiled(
    net: Net, x: torch.Tensor, cond: torch.Tensor | None, tile: int | None, overlap: int, views: int = 1
) -> torch.Tensor:
    """Restore a 1 x C x H x W tensor, in overlapping ``tile`` x ``tile`` tiles when it is larger than that."""
    _, c, h, w = x.shape
    if tile is None or (h <= tile and w <= tile):
        return ensemble(net, x, cond, views)
    check_tiling(tile, overlap)
    ys, xs = _starts(h, tile, overlap), _starts(w, tile, overlap)
    out = torch.zeros(c, h, w)
    total = torch.zeros(1, h, w)
    with tqdm(total=len(ys) * len(xs), desc="tiles", unit="tile", file=sys.stderr, leave=False) as bar:
        for y0 in ys:
            th = min(tile, h - y0)
            wy = _ramp(th, y0 > 0, y0 + th < h, overlap)
            for x0 in xs:
                tw = min(tile, w - x0)
                wx = _ramp(tw, x0 > 0, x0 + tw < w, overlap)
                sl = (..., slice(y0, y0 + th), slice(x0, x0 + tw))
                piece = ensemble(net, x[sl], None if cond is None else cond[sl], views)[0]
                weight = wy[:, None] * wx[None, :]
                out[sl] += piece * weight
                total[sl] += weight
                bar.update(1)
    return (out / total)[None]
