"""Readers for the standard on-disk formats: MNIST IDX, CIFAR-10 python batches, NumPy arrays, image folders.

All readers return uint8 arrays of shape NxHxWxC plus int64 labels (or None), and raise :class:`DataError`
with the file name for anything malformed.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from convgen.errors import DataError, ImageError
from convgen.io.images import IMAGE_SUFFIXES, convert_channels, list_images, read_image

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (MNIST / Fashion-MNIST format), gzip-compressed or raw."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: corrupt gzip data ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path}: IDX payload is {len(raw) - header} bytes, header says {expected} for shape {shape}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx_pair(images_path: str | Path, labels_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected N x H x W uint8 images, got {images.shape} {images.dtype}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images")
    return images[..., None], labels.astype(np.int64)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10 python batches, refusing every global except the numpy array constructors they use."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        if module.startswith("numpy"):
            import numpy.core.multiarray as multiarray

            return {"_reconstruct": multiarray._reconstruct, "ndarray": np.ndarray, "dtype": np.dtype}[name]
        import _codecs

        return _codecs.encode


def _load_cifar_batch(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a malformed file
        raise DataError(f"{name}: not a CIFAR-10 python batch ({e})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{name}: CIFAR batch lacks 'data' or 'labels'")
    flat = np.asarray(batch[b"data"], dtype=np.uint8)
    if flat.ndim != 2 or flat.shape[1] != 3072:
        raise DataError(f"{name}: CIFAR data has shape {flat.shape}, expected N x 3072")
    images = flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if len(labels) != len(images):
        raise DataError(f"{name}: {len(labels)} labels for {len(images)} images")
    return np.ascontiguousarray(images), labels


CIFAR_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST_BATCHES = ["test_batch"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def read_cifar10(root: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR-10 from ``cifar-10-batches-py/`` (or its parent), or straight from ``cifar-10-python.tar.gz``."""
    root = Path(root)
    names = CIFAR_TRAIN_BATCHES if split == "train" else CIFAR_TEST_BATCHES
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    if root.is_file() and root.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(root, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for n in names:
                if n not in members:
                    raise DataError(f"{root}: archive has no {n}")
                fh = tar.extractfile(members[n])
                assert fh is not None
                parts.append(_load_cifar_batch(fh.read(), f"{root}:{n}"))
    else:
        folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
        for n in names:
            f = folder / n
            if not f.is_file():
                raise DataError(f"{f}: CIFAR-10 batch not found")
            parts.append(_load_cifar_batch(f.read_bytes(), str(f)))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def read_numpy(path: str | Path, images_key: str | None = None, labels_key: str | None = None):
    """Read images (NxHxW or NxHxWxC, uint8 or float in [0, 1]) and optional labels from ``.npy`` / ``.npz``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    labels = None
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                ik = images_key or next((k for k in ("images", "x", "X", "data") if k in keys), None)
                if ik is None or ik not in keys:
                    raise DataError(f"{path}: no images array (keys: {', '.join(keys)}); set data.images_key")
                images = z[ik]
                lk = labels_key or next((k for k in ("labels", "y", "Y", "targets") if k in keys), None)
                if lk is not None:
                    if lk not in keys:
                        raise DataError(f"{path}: no array named {lk!r}")
                    labels = z[lk]
        else:
            images = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable NumPy file ({e})") from None
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(f"{path}: expected N x H x W (x 1 or 3) images, got shape {images.shape}")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.floating):
            raise DataError(f"{path}: images must be uint8 or float, got {images.dtype}")
        if not np.isfinite(images).all():
            raise DataError(f"{path}: images contain NaN or infinite values")
        if images.min() < 0 or images.max() > 1:
            raise DataError(f"{path}: float images must lie in [0, 1]")
        images = (images * 255.0 + 0.5).astype(np.uint8)
    if labels is not None:
        raw = np.asarray(labels).reshape(-1)
        if raw.dtype.kind not in "iub" and not (
            raw.dtype.kind == "f" and np.isfinite(raw).all() and (raw == np.round(raw)).all()
        ):
            raise DataError(f"{path}: labels must be whole numbers (class indices), got dtype {raw.dtype}")
        labels = raw.astype(np.int64)
        if len(labels) and labels.min() < 0:
            raise DataError(f"{path}: labels must be >= 0 (class indices), found {labels.min()}")
        if len(labels) != len(images):
            raise DataError(f"{path}: {len(labels)} labels for {len(images)} images")
    return images, labels


def read_dataset_image(path: Path, channels: int) -> np.ndarray:
    """One training image as float H x W x C with ``channels`` channels; unreadable files are DataErrors."""
    try:
        return convert_channels(read_image(path), channels, str(path))
    except ImageError as e:
        raise DataError(str(e)) from None


def _round_robin(files: list[tuple[Path, int]]) -> list[tuple[Path, int]]:
    """(file, class) pairs reordered as the first of every class, then the second of every class, ..."""
    seen: dict[int, int] = {}
    ranked = []
    for f, c in files:
        ranked.append((seen.get(c, 0), c, f))
        seen[c] = seen.get(c, 0) + 1
    return [(f, c) for _, c, f in sorted(ranked, key=lambda t: (t[0], t[1]))]


def read_image_folder(root: str | Path, channels: int, image_size: int | None = None, limit: int | None = None):
    """Read a flat folder (unlabelled) or a folder with one sub-folder per class (classes in sorted name order, so
    CIFAR-10's folders give its standard indices airplane = 0 ... truck = 9).

    Returns uint8 NxHxWxC images, labels (or None) and class names, decoded once into memory. Images of different
    sizes need ``image_size`` (resized with antialiasing, then centre-cropped to a square). ``limit`` reads only
    that many, taken in turn from every class (the first file of each class, then the second, ...).
    """
    from convgen.data.transforms import resize_center_crop_numpy

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs:
        classes = [d.name for d in subdirs]
        files = [(f, i) for i, d in enumerate(subdirs) for f in list_images(d, IMAGE_SUFFIXES)]
    else:
        classes = []
        files = [(f, -1) for f in list_images(root, IMAGE_SUFFIXES)]
    if not files:
        raise DataError(f"{root}: no images found")
    if limit is not None and limit < len(files):
        files = _round_robin(files)[:limit]
    images = []
    for f, _ in files:
        arr = read_dataset_image(f, channels)
        if image_size is not None:
            arr = resize_center_crop_numpy(arr, image_size)
        images.append(arr)
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise DataError(f"{root}: images have different sizes {sorted(shapes)[:3]}...; set data.image_size")
    stacked = (np.stack(images) * 255.0 + 0.5).astype(np.uint8)
    labels = np.array([i for _, i in files], dtype=np.int64) if classes else None
    return stacked, labels, classes
