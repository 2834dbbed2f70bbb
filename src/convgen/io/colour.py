"""BT.601 colour conversions on B x 3 x H x W tensors in [0, 1], shared by every module that needs luminance or
YCbCr (the codec's gray inputs, style transfer's colour preservation, camera noise's chroma reduction, the
watermark's saturation attack, the style loss's gradient term)."""

from __future__ import annotations

import torch

#: BT.601 RGB -> YCbCr, full range, chroma centred on 0; its first row is the luminance
YCBCR = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
LUMA = YCBCR[0]
YCBCR_INV = torch.linalg.inv(YCBCR.double())  # inverted once, in float64
#: MATLAB ``rgb2gray``'s weights (BT.601 rounded the other way: 3,580 of 61.8 M BSDS500 pixels differ in 8 bits from
#: :data:`LUMA`); Train400 and BSD68 were made with them, so gray training data read from the BSDS photos uses these
RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)


def luma(x: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W -> B x 1 x H x W BT.601 luminance."""
    return (x * LUMA.to(x).view(1, 3, 1, 1)).sum(1, keepdim=True)


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W RGB in [0, 1] -> Y in [0, 1], Cb and Cr centred on 0."""
    return torch.einsum("ij,bjhw->bihw", YCBCR.to(x), x)


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`rgb_to_ycbcr`."""
    return torch.einsum("ij,bjhw->bihw", YCBCR_INV.to(x), x)
