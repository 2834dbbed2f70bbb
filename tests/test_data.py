import gzip
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from convgen.config import build_config
from convgen.data.datasets import build_data, bundled_mnist_paths, split_indices
from convgen.data.formats import read_cifar10, read_idx, read_idx_pair, read_image_folder, read_numpy
from convgen.data.loader import BatchLoader
from convgen.data.transforms import AugmentConfig, center_crop, normalize, random_affine, resize
from convgen.errors import ConfigError, DataError
from tests.conftest import SHARED_DATA, tiny_config


def write_idx(path, array, gz=True):
    codes = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


def test_bundled_mnist_matches_manifest():
    images, labels = read_idx_pair(*bundled_mnist_paths())
    assert images.shape == (8000, 28, 28, 1) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [773, 905, 834, 803, 788, 723, 756, 813, 787, 818]
    shared = read_idx(SHARED_DATA / "mnist" / "dev-images-idx3-ubyte.gz")
    assert np.array_equal(shared, images[..., 0])


@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip(tmp_path, gz):
    arr = np.random.default_rng(0).integers(0, 255, (5, 3, 4), dtype=np.uint8)
    write_idx(tmp_path / "x.idx", arr, gz)
    assert np.array_equal(read_idx(tmp_path / "x.idx"), arr)
    floats = np.random.default_rng(0).random((2, 3)).astype(np.float32)
    write_idx(tmp_path / "f.idx", floats, gz)
    assert np.array_equal(read_idx(tmp_path / "f.idx"), floats)


def test_idx_malformed(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "bad")
    arr = np.zeros((5, 3, 4), np.uint8)
    write_idx(tmp_path / "x.idx", arr, gz=False)
    (tmp_path / "short.idx").write_bytes((tmp_path / "x.idx").read_bytes()[:-7])
    with pytest.raises(DataError, match="payload"):
        read_idx(tmp_path / "short.idx")
    labels = np.zeros(4, np.uint8)
    write_idx(tmp_path / "l.idx", labels)
    with pytest.raises(DataError, match="4 labels for 5 images"):
        read_idx_pair(tmp_path / "x.idx", tmp_path / "l.idx")


def make_cifar_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    batch = {
        b"batch_label": b"testing batch",
        b"labels": rng.integers(0, 10, n).tolist(),
        b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img{i}.png".encode() for i in range(n)],
    }
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return batch


def test_cifar_folder_and_archive(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = [make_cifar_batch(folder / f"data_batch_{i}", 4, i) for i in range(1, 6)]
    make_cifar_batch(folder / "test_batch", 3, 9)
    images, labels = read_cifar10(tmp_path, "train")
    assert images.shape == (20, 32, 32, 3) and labels.tolist()[:4] == batches[0][b"labels"]
    first = batches[0][b"data"][0]
    assert np.array_equal(images[0, :, :, 0].ravel(), first[:1024])  # red plane first, row-major
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    images2, _ = read_cifar10(archive, "test")
    assert images2.shape == (3, 32, 32, 3)


def test_cifar_refuses_malicious_pickle(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(DataError, match="not allowed"):
        read_cifar10(tmp_path, "test")


def test_image_folder_flat_and_classes(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "cls" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((10, 12, 3), i * 40, np.uint8)).save(tmp_path / "cls" / cls / f"{i}.png")
    images, labels, classes = read_image_folder(tmp_path / "cls", channels=3, image_size=8)
    assert images.shape == (6, 8, 8, 3) and classes == ["cat", "dog"] and labels.tolist() == [0, 0, 0, 1, 1, 1]
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "flat" / "a.png")
    Image.fromarray(np.zeros((8, 8, 4), np.uint8) + 255).save(tmp_path / "flat" / "b.png")  # opaque RGBA
    images, labels, classes = read_image_folder(tmp_path / "flat", channels=3)
    assert images.shape == (2, 8, 8, 3) and labels is None and classes == []
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "flat" / "c.png")
    with pytest.raises(DataError, match="different sizes"):
        read_image_folder(tmp_path / "flat", channels=1)


def test_image_patches_read_colour_photos_as_train400_luma(tmp_path):
    # Train400 (DnCNN) is 180 px crops of MATLAB-rgb2gray BSDS500 photos: data.gray must give the same 8-bit pixels
    import shutil

    from convgen.data.patches import read_folder

    shutil.copy(SHARED_DATA / "bsds500" / "train" / "100075.jpg", tmp_path / "photo.jpg")
    _, [luma] = read_folder(tmp_path, 1, gray=True)
    crop = np.asarray(Image.open(SHARED_DATA / "denoise" / "train400" / "test_001.png"))
    assert luma.shape == (321, 481, 1) and luma.dtype == np.uint8
    assert np.array_equal(luma[80:260, 247:427, 0], crop)
    rgb = np.asarray(Image.open(tmp_path / "photo.jpg"), np.float64)  # rgb2gray's formula, independently
    assert np.abs(np.round(rgb @ [0.298936021293775, 0.587043074451121, 0.114020904255103]) - luma[..., 0]).max() == 0
    Image.fromarray(np.full((40, 40), 77, np.uint8)).save(tmp_path / "gray.png")  # gray files pass through
    assert read_folder(tmp_path, 1, gray=True)[1][0].max() == 77
    data = {"type": "image-patches", "root": str(tmp_path), "channels": 1, "gray": True, "patch_size": 32,
            "stride": 32, "val_count": 0}  # fmt: skip
    bundle = build_data(build_config({**tiny_config(), "data": data}).data)
    assert bundle.train.images.shape[1] == 1 and len(bundle.train) == 1 + 10 * 15
    with pytest.raises(ConfigError, match="data.gray"):
        build_config({**tiny_config(), "data": {**data, "channels": 3}})
    with pytest.raises(DataError, match="colour"):  # without data.gray a colour photo is still refused
        build_data(build_config({**tiny_config(), "data": {**data, "gray": False}}).data)


def test_numpy_files(tmp_path):
    x = np.random.default_rng(0).random((6, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", images=x, labels=np.arange(6) % 2)
    images, labels = read_numpy(tmp_path / "d.npz")
    assert images.shape == (6, 8, 8, 1) and images.dtype == np.uint8 and labels.tolist() == [0, 1, 0, 1, 0, 1]
    np.save(tmp_path / "bad.npy", x * 5)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        read_numpy(tmp_path / "bad.npy")


def test_split_is_deterministic_and_stratified():
    labels = np.repeat(np.arange(4), [40, 30, 20, 10])
    tr1, va1 = split_indices(100, 20, seed=3, labels=labels)
    tr2, va2 = split_indices(100, 20, seed=3, labels=labels)
    assert np.array_equal(va1, va2) and len(va1) == 20 and len(np.intersect1d(tr1, va1)) == 0
    assert np.bincount(labels[va1]).tolist() == [8, 6, 4, 2]
    _, va3 = split_indices(100, 20, seed=4, labels=labels)
    assert not np.array_equal(va1, va3)


def test_bundled_dataset_split_sizes():
    data = build_data(build_config(tiny_config(data__limit=None, data__val_count=1000)).data)
    assert len(data.train) == 7000 and len(data.val) == 1000 and data.num_classes == 10
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (1, 28, 28)


def test_loader_deterministic_resumable_and_sharded():
    data = build_data(build_config(tiny_config()).data)
    loader = BatchLoader(data.train, 32, seed=1)
    full = [y for _, y in loader.batches(epoch=2)]
    resumed = [y for _, y in loader.batches(epoch=2, start=3)]
    assert all(torch.equal(a, b) for a, b in zip(full[3:], resumed, strict=True))
    r0, r1 = (BatchLoader(data.train, 32, seed=1, rank=r, world_size=2).indices(2) for r in (0, 1))
    assert len(r0) == len(r1) and len(np.intersect1d(r0.numpy(), r1.numpy())) == 0


def test_transforms():
    x = torch.rand(4, 3, 20, 30)
    assert resize(x, 10).shape == (4, 3, 10, 10)
    assert center_crop(x, 16).shape == (4, 3, 16, 16)
    n = normalize(x, [0.5] * 3, [0.25] * 3)
    assert torch.allclose(n * 0.25 + 0.5, x, atol=1e-6)
    gen = torch.Generator().manual_seed(0)
    same = random_affine(x, gen, degrees=0, translate=0, scale=(1, 1))
    assert torch.allclose(same, x, atol=1e-5)
    aug = AugmentConfig(hflip=True, crop_padding=2, degrees=10, translate=0.1)
    a = aug.apply(x, torch.Generator().manual_seed(5))
    b = aug.apply(x, torch.Generator().manual_seed(5))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
