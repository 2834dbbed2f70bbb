"""Contract details of ../shared/BENCHMARKS.md that a new user trips over: a ``.npy`` output keeps its input's
shape (H x W stays H x W), and a user sees only convgen's own messages on stderr (no Python warnings)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convgen.data.datasets import bundled_mnist_paths
from convgen.data.formats import read_idx_pair
from tests.conftest import cli


def _noisy_gray(h: int = 40, w: int = 48) -> np.ndarray:
    clean = np.linspace(0, 1, h * w, dtype=np.float32).reshape(h, w)
    return (clean + np.random.default_rng(0).standard_normal((h, w)) * 25 / 255).astype(np.float32)


@pytest.mark.parametrize(
    "model, shape",
    [("denoise-gray-s25", (40, 48)), ("denoise-gray-s25", (40, 48, 1)), ("denoise-color-blind", (40, 48, 3)),
     ("denoise-color-blind", (40, 48))],
)  # fmt: skip
def test_restore_npy_keeps_the_input_shape_and_prints_no_warning(tmp_path: Path, model, shape):
    gray = _noisy_gray()
    arr = gray.reshape(shape) if len(shape) < 3 or shape[-1] == 1 else np.repeat(gray[..., None], 3, -1)
    np.save(tmp_path / "in.npy", arr)
    r = cli("restore", "denoise", model, "--input", str(tmp_path / "in.npy"), "--output", str(tmp_path / "out.npy"),
            "--ensemble", "1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = np.load(tmp_path / "out.npy")
    assert out.shape == arr.shape and out.dtype == np.float32
    assert "Warning" not in r.stderr and "warn(" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == ["denoise: wrote 1 image(s) to " + str(tmp_path / "out.npy")]


def test_restore_folder_of_npy_keeps_each_shape(tmp_path: Path):
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "a.npy", _noisy_gray())
    np.save(tmp_path / "in" / "b.npy", _noisy_gray()[..., None])
    r = cli("restore", "denoise", "denoise-gray-s25", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "o" / "a.npy").shape == (40, 48)
    assert np.load(tmp_path / "o" / "b.npy").shape == (40, 48, 1)
    assert "Warning" not in r.stderr, r.stderr


def test_classify_npy_of_either_gray_shape(tmp_path: Path):
    images, labels = read_idx_pair(*bundled_mnist_paths())
    digits = images[7990:8000, :, :, 0].astype(np.float32) / 255
    (tmp_path / "d").mkdir()
    for i, d in enumerate(digits):
        np.save(tmp_path / "d" / f"{i}_hw.npy", d)
        np.save(tmp_path / "d" / f"{i}_hw1.npy", d[..., None])
    r = cli("classify", "mnist-classifier", "--input", str(tmp_path / "d"), "--json")
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stderr, r.stderr
    pred = json.loads(r.stdout)["predictions"]
    assert len(pred) == 20
    for i in range(10):
        assert pred[f"{i}_hw.npy"] == pred[f"{i}_hw1.npy"]
    assert sum(pred[f"{i}_hw.npy"] == int(labels[7990 + i]) for i in range(10)) >= 9
