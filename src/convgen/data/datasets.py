"""Registered datasets. Each ``type:`` in a config's ``data:`` section maps to one class here.

Datasets are held in memory as uint8 tensors (N x C x H x W); batches are cut and augmented as whole tensors,
which on a CPU is several times faster than a per-sample DataLoader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from convgen.data import download as dl
from convgen.data.formats import CIFAR10_CLASSES, read_cifar10, read_idx_pair, read_image_folder, read_numpy
from convgen.errors import DataError
from convgen.registry import DATASETS
from convgen.schema import check

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


@dataclass
class ArrayDataset:
    images: torch.Tensor  # uint8, N x C x H x W
    labels: torch.Tensor | None  # int64, N

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, idx: torch.Tensor) -> ArrayDataset:
        return ArrayDataset(self.images[idx], None if self.labels is None else self.labels[idx])

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.images[idx].float().div_(255.0)
        return x, None if self.labels is None else self.labels[idx]


@dataclass
class DataBundle:
    train: ArrayDataset
    val: ArrayDataset | None
    class_names: list[str]
    source: str

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[-1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def split_indices(n: int, val_count: int, seed: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/validation split, stratified by class when labels are given."""
    if not 0 <= val_count < n:
        raise DataError(f"validation size {val_count} must be in [0, {n})")
    rng = np.random.default_rng(seed)
    if labels is None or val_count == 0:
        perm = rng.permutation(n)
        return np.sort(perm[val_count:]), np.sort(perm[:val_count])
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts / n * val_count).astype(int)
    for i in np.argsort(-(counts / n * val_count - quota))[: val_count - quota.sum()]:
        quota[i] += 1  # largest remainders get the leftover slots
    val = []
    for c, q in zip(classes, quota, strict=True):
        members = np.flatnonzero(labels == c)
        val.append(rng.permutation(members)[:q])
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(n), val_idx)
    return train_idx, val_idx


def _bundle(images: np.ndarray, labels: np.ndarray | None, classes: list[str], source: str, cfg) -> DataBundle:
    """Turn NHWC uint8 arrays into a DataBundle with the configured split and size limit."""
    if cfg.limit is not None:
        images, labels = images[: cfg.limit], None if labels is None else labels[: cfg.limit]
    n = len(images)
    val_count = cfg.val_count if cfg.val_count is not None else int(round(n * cfg.val_fraction))
    train_idx, val_idx = split_indices(n, val_count, cfg.split_seed, labels)
    tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    lab = None if labels is None else torch.from_numpy(labels)
    full = ArrayDataset(tensor, lab)
    train = full.subset(torch.from_numpy(train_idx))
    val = full.subset(torch.from_numpy(val_idx)) if len(val_idx) else None
    return DataBundle(train=train, val=val, class_names=classes, source=source)


@dataclass
class SplitConfig:
    val_fraction: float = 0.125
    val_count: int | None = None  # overrides val_fraction
    split_seed: int = 0
    limit: int | None = None  # use only the first N images (quick experiments, tests); class folders: in turn per class

    def _check_split(self) -> None:
        check(0 <= self.val_fraction < 1, "data.val_fraction", "must be in [0, 1)")
        check(self.val_count is None or self.val_count >= 0, "data.val_count", "must be >= 0")
        check(self.limit is None or self.limit >= 2, "data.limit", "must be >= 2")


def bundled_mnist_paths() -> tuple[Path, Path]:
    root = resources.files("convgen") / "assets" / "mnist"
    return Path(str(root / "dev-images-idx3-ubyte.gz")), Path(str(root / "dev-labels-idx1-ubyte.gz"))


@DATASETS.register("mnist")
class MNIST:
    """MNIST or Fashion-MNIST from IDX files. With no ``root``, the 8,000-digit split bundled with convgen."""

    @dataclass
    class Config(SplitConfig):
        variant: str = "mnist"  # mnist | fashion-mnist
        root: str | None = None  # folder with the four IDX files; null = bundled 8k split
        split: str = "train"  # train | test (files in root)
        download: bool = False

        def __post_init__(self) -> None:
            self._check_split()
            check(self.variant in ("mnist", "fashion-mnist"), "data.variant", "expected mnist or fashion-mnist")
            check(self.split in ("train", "test"), "data.split", "expected train or test")
            check(not (self.download and self.root is None), "data.download", "needs data.root")

    @staticmethod
    def build(cfg: Config) -> DataBundle:
        classes = MNIST_CLASSES if cfg.variant == "mnist" else FASHION_CLASSES
        if cfg.root is None:
            images, labels = read_idx_pair(*bundled_mnist_paths())
            return _bundle(images, labels, classes, "bundled MNIST dev split (8,000 digits)", cfg)
        prefix = "train" if cfg.split == "train" else "test"
        if cfg.download:
            paths = dl.download(cfg.variant, cfg.root)
            img_path, lab_path = paths[f"{prefix}-images"], paths[f"{prefix}-labels"]
        else:
            files = dl.RESOURCES[cfg.variant][1]
            gz = [Path(cfg.root) / files[f"{prefix}-{kind}"].filename for kind in ("images", "labels")]
            img_path, lab_path = (p if p.is_file() else p.with_suffix("") for p in gz)  # or un-gzipped copies
        images, labels = read_idx_pair(img_path, lab_path)
        return _bundle(images, labels, classes, f"{cfg.variant} {cfg.split} from {cfg.root}", cfg)


@DATASETS.register("cifar10")
class CIFAR10:
    """CIFAR-10 python batches (a ``cifar-10-batches-py`` folder or the ``cifar-10-python.tar.gz`` archive)."""

    @dataclass
    class Config(SplitConfig):
        root: str = "data/cifar10"
        split: str = "train"
        download: bool = False
        val_fraction: float = 0.1

        def __post_init__(self) -> None:
            self._check_split()
            check(self.split in ("train", "test"), "data.split", "expected train or test")

    @staticmethod
    def build(cfg: Config) -> DataBundle:
        root = Path(cfg.root)
        if cfg.download:
            root = dl.download("cifar10", cfg.root)["archive"]
        elif (root / "cifar-10-python.tar.gz").is_file() and not (root / "cifar-10-batches-py").is_dir():
            root = root / "cifar-10-python.tar.gz"
        images, labels = read_cifar10(root, cfg.split)
        return _bundle(images, labels, CIFAR10_CLASSES, f"CIFAR-10 {cfg.split} from {cfg.root}", cfg)


@DATASETS.register("image-folder")
class ImageFolder:
    """PNG/JPEG/TIFF images in a flat folder (unlabelled) or in one sub-folder per class."""

    @dataclass
    class Config(SplitConfig):
        root: str = ""
        channels: int = 3
        image_size: int | None = None  # resize (short side) + centre crop; needed when sizes differ
        val_fraction: float = 0.1

        def __post_init__(self) -> None:
            self._check_split()
            check(bool(self.root), "data.root", "an image folder path is required")
            check(self.channels in (1, 3), "data.channels", "must be 1 or 3")
            check(self.image_size is None or self.image_size >= 4, "data.image_size", "must be >= 4")

    @staticmethod
    def build(cfg: Config) -> DataBundle:
        images, labels, classes = read_image_folder(cfg.root, cfg.channels, cfg.image_size, cfg.limit)
        return _bundle(images, labels, classes, f"image folder {cfg.root}", cfg)


@DATASETS.register("numpy")
class NumpyArrays:
    """Images (and optional labels) from a ``.npy`` or ``.npz`` file."""

    @dataclass
    class Config(SplitConfig):
        path: str = ""
        images_key: str | None = None
        labels_key: str | None = None
        class_names: list[str] = field(default_factory=list)
        val_fraction: float = 0.1

        def __post_init__(self) -> None:
            self._check_split()
            check(bool(self.path), "data.path", "a .npy or .npz path is required")

    @staticmethod
    def build(cfg: Config) -> DataBundle:
        images, labels = read_numpy(cfg.path, cfg.images_key, cfg.labels_key)
        classes = list(cfg.class_names)
        if labels is not None and not classes:
            classes = [str(i) for i in range(int(labels.max()) + 1)]
        return _bundle(images, labels, classes, f"numpy {cfg.path}", cfg)


def build_data(cfg) -> DataBundle:
    """Build the dataset named by a validated ``data`` config section."""
    return DATASETS.get(cfg.registry_name).build(cfg)
