"""Patch datasets for restoration: a folder of images of any sizes becomes a set of fixed-size training patches.

As in DnCNN's data generation, every training image is rescaled by each of ``scales`` (bicubic) and cut into
``patch_size`` patches every ``stride`` pixels; patches are held in memory as uint8. A held-out set of whole images
(split off the folder, or ``val_root``), centre-cropped to ``val_crop``, is the validation set. Random flips and
rotations are applied per batch by the restoration task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from convgen.data.datasets import ArrayDataset, DataBundle, split_indices
from convgen.data.formats import read_dataset_image
from convgen.errors import DataError
from convgen.io.colour import RGB2GRAY
from convgen.io.images import IMAGE_SUFFIXES, list_images, to_uint8
from convgen.registry import DATASETS
from convgen.schema import check


def read_folder(
    root: str | Path, channels: int, limit: int | None = None, gray: bool = False
) -> tuple[list[Path], list[np.ndarray]]:
    """All images of a flat folder as uint8 H x W x C arrays (sorted by file name).

    ``gray`` turns colour photos into 1-channel luma (ITU-R BT.601 weights rounded to 8 bits, as MATLAB's
    ``rgb2gray`` made Train400 and BSD68 from the BSDS colour photos); gray files pass through unchanged.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    files = list_images(root, IMAGE_SUFFIXES)[:limit]
    if not files:
        raise DataError(f"{root}: no images found")
    if not gray:
        return files, [to_uint8(read_dataset_image(f, channels)) for f in files]
    weights = np.asarray(RGB2GRAY, np.float32)[:, None]
    return files, [to_uint8(read_dataset_image(f, 3) @ weights) for f in files]


def extract_patches(image: np.ndarray, patch: int, stride: int, scales: list[float]) -> np.ndarray:
    """N x patch x patch x C patches of ``image`` (uint8 H x W x C) at each scale, on a ``stride`` grid."""
    out = []
    for s in scales:
        img = image
        if s != 1.0:
            h, w = image.shape[:2]
            size = (max(1, round(w * s)), max(1, round(h * s)))
            pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
            img = np.asarray(pil.resize(size, Image.Resampling.BICUBIC)).reshape(size[1], size[0], -1)
        h, w = img.shape[:2]
        if h < patch or w < patch:
            continue
        for y in range(0, h - patch + 1, stride):
            for x in range(0, w - patch + 1, stride):
                out.append(img[y : y + patch, x : x + patch])
    return np.stack(out) if out else np.zeros((0, patch, patch, image.shape[-1]), np.uint8)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    if h < size or w < size:
        raise DataError(f"validation image of {w}x{h} is smaller than data.val_crop {size}")
    y, x = (h - size) // 2, (w - size) // 2
    return image[y : y + size, x : x + size]


@DATASETS.register("image-patches")
class ImagePatches:
    """Training patches cut from a folder of images (e.g. Train400 or BSDS500 train) plus whole validation images."""

    @dataclass
    class Config:
        root: str = ""
        channels: int = 1
        patch_size: int = 64
        stride: int = 32
        scales: list[float] = field(default_factory=lambda: [1.0])
        val_root: str | None = None  # separate validation folder; null = hold out val_count images of root
        val_count: int = 0
        val_crop: int = 160  # validation images are centre-cropped to this square size
        split_seed: int = 0
        limit: int | None = None  # use only the first N images of root
        extra_roots: list[str] = field(default_factory=list)  # more training folders (e.g. gray photos), all used
        gray: bool = False  # colour photos -> 8-bit luma (rgb2gray's weights); needs channels 1

        def __post_init__(self) -> None:
            check(bool(self.root), "data.root", "an image folder path is required")
            check(self.channels in (1, 3), "data.channels", "must be 1 or 3")
            check(self.patch_size >= 8, "data.patch_size", "must be >= 8")
            check(self.stride >= 1, "data.stride", "must be >= 1")
            check(bool(self.scales) and all(0 < s <= 1 for s in self.scales), "data.scales", "values in (0, 1]")
            check(self.val_count >= 0, "data.val_count", "must be >= 0")
            check(self.val_crop >= 8, "data.val_crop", "must be >= 8")
            check(self.limit is None or self.limit >= 1, "data.limit", "must be >= 1")
            check(not self.gray or self.channels == 1, "data.gray", "needs data.channels 1")

    @staticmethod
    def build(cfg: Config) -> DataBundle:
        _, images = read_folder(cfg.root, cfg.channels, cfg.limit, cfg.gray)
        if cfg.val_root is None:
            train_idx, val_idx = split_indices(len(images), cfg.val_count, cfg.split_seed)
            train_imgs, val_imgs = [images[i] for i in train_idx], [images[i] for i in val_idx]
        else:
            train_imgs, val_imgs = images, read_folder(cfg.val_root, cfg.channels, gray=cfg.gray)[1]
        for extra in cfg.extra_roots:
            train_imgs = train_imgs + read_folder(extra, cfg.channels, gray=cfg.gray)[1]
        patches = [extract_patches(img, cfg.patch_size, cfg.stride, cfg.scales) for img in train_imgs]
        train = np.concatenate(patches)
        if len(train) == 0:
            raise DataError(f"{cfg.root}: no image is at least {cfg.patch_size} px on each side (data.patch_size)")
        to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
        val = None
        if val_imgs:
            val = ArrayDataset(to_tensor(np.stack([center_crop(v, cfg.val_crop) for v in val_imgs])), None)
        roots = " + ".join([cfg.root, *cfg.extra_roots])
        source = f"{roots}: {len(train_imgs)} images -> {len(train):,} patches of {cfg.patch_size} px"
        return DataBundle(train=ArrayDataset(to_tensor(train), None), val=val, class_names=[], source=source)
