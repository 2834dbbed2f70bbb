"""InceptionV3 as used for FID (the TensorFlow ``inception-2015-12-05`` graph), in plain PyTorch.

The module names and shapes follow the public PyTorch port of those weights, ``pt_inception-2015-12-05-6726825d.pth``
(pytorch-fid, torch-fidelity), so that file loads with ``load_state_dict(strict=True)``. The graph differs from
torchvision's ImageNet InceptionV3 where the TF graph does: 1008 classes, average pools that ignore padding, and a
max pool in the last block's pool branch.

Preprocessing reproduces the TF reference: images are quantised to 8 bits, resized to 299 x 299 with TensorFlow 1.x
bilinear resizing (``align_corners=False``, no half-pixel centres: output pixel i samples input i * in / out),
then mapped to [-1, 1] by (x - 128) / 128.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from convgen.errors import ConvgenError
from convgen.io.weights import fit_state, load_public_weights

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URLS = ["https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"]
WEIGHTS_SHA256_PREFIX = "6726825d"  # torch.hub convention: the file name carries the first 8 hex digits of its SHA-256
INPUT_SIZE = 299


class BasicConv2d(nn.Module):
    """Convolution without bias, BatchNorm (eps 1e-3, as in TF), ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size, stride: int = 1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)  # TF does not average the padding


def _row(cin: int, cout: int) -> BasicConv2d:  # 1 x 7
    return BasicConv2d(cin, cout, (1, 7), padding=(0, 3))


def _col(cin: int, cout: int) -> BasicConv2d:  # 7 x 1
    return BasicConv2d(cin, cout, (7, 1), padding=(3, 0))


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_tf_avg_pool(x)),
            ],
            1,
        )


class InceptionB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), dbl, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = _row(c7, c7)
        self.branch7x7_3 = _col(c7, 192)
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = _col(c7, c7)
        self.branch7x7dbl_3 = _row(c7, c7)
        self.branch7x7dbl_4 = _col(c7, c7)
        self.branch7x7dbl_5 = _row(c7, 192)
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, self.branch7x7dbl_5(d), self.branch_pool(_tf_avg_pool(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = _row(192, 192)
        self.branch7x7x3_3 = _col(192, 192)
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """``max_pool``: the last block of the FID graph pools its pool branch with a max, not an average."""

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(b3),
                self.branch3x3_2b(b3),
                self.branch3x3dbl_3a(d),
                self.branch3x3dbl_3b(d),
                self.branch_pool(pooled),
            ],
            1,
        )


def tf1_resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TensorFlow 1.x ``resize_bilinear(align_corners=False)``: output pixel i samples input i * in / out.

    Legacy TF has no half-pixel offset, unlike ``F.interpolate(..., align_corners=False)``, which is why
    FID implementations that use the latter disagree with the reference numbers.
    """

    def taps(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pos = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
        lo = pos.floor().long().clamp(max=n_in - 1)
        return lo, (lo + 1).clamp(max=n_in - 1), (pos - lo.double()).to(x.dtype)

    (ylo, yhi, fy), (xlo, xhi, fx) = taps(x.shape[-2], size[0]), taps(x.shape[-1], size[1])
    top, bottom = x[..., ylo, :], x[..., yhi, :]
    rows = top + (bottom - top) * fy.view(-1, 1)
    left, right = rows[..., xlo], rows[..., xhi]
    return left + (right - left) * fx


class FIDInceptionV3(nn.Module):
    """Images in [0, 1] (B x 1|3 x H x W, any size) -> 2048-d pool features and 1008-class logits."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> the network's input: 8-bit quantisation, TF resize to 299, (x - 128) / 128, 3 channels."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != 3:
            raise ConvgenError(f"InceptionV3 needs 1 or 3 channels, got {x.shape[1]}")
        x = (x.clamp(0, 1) * 255).round()
        x = tf1_resize_bilinear(x.float(), (INPUT_SIZE, INPUT_SIZE))
        return (x - 128) / 128

    def forward(self, x: torch.Tensor, preprocessed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (pool3 features B x 2048, logits B x 1008 without the fc bias, as in the reference IS code)."""
        if not preprocessed:
            x = self.preprocess(x)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        pool = x.mean((2, 3))
        return pool, pool @ self.fc.weight.T


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pth`` (read with torch's restricted ``weights_only`` unpickler) or ``.safetensors`` file."""
    return load_public_weights(path, "InceptionV3")


def build_fid_inception(weights: str | Path) -> FIDInceptionV3:
    net = FIDInceptionV3()
    state = load_weights_file(weights)
    own = net.state_dict()
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ConvgenError(
            f"{weights}: not the FID InceptionV3 layout ({len(missing)} missing, {len(unexpected)} unexpected tensors, "
            f"e.g. {(missing + unexpected)[0]})"
        )
    fit_state(net, state, weights, ignore=("num_batches_tracked",))
    return net.eval().requires_grad_(False)


def fetch_weights(cache_dir: str | Path, mirrors: list[str] | None = None) -> Path:
    """Download the FID weights into ``cache_dir`` (checked against the SHA-256 prefix in their name) or reuse them."""
    from convgen.io.fetch import Resource, download_resource

    resource = Resource(WEIGHTS_FILE, sha256_prefix=WEIGHTS_SHA256_PREFIX)
    return download_resource(resource, cache_dir, list(mirrors or WEIGHTS_URLS))
