from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
ENV_PYTHONPATH = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}


def cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m convgen ARGS`` in a fresh process, as a user runs it (stdout and stderr captured as text)."""
    return subprocess.run(
        [sys.executable, "-m", "convgen", *args], capture_output=True, text=True, env=ENV_PYTHONPATH, timeout=300
    )


def tiny_config(**overrides) -> dict:
    """A classification run that trains in seconds: 600 bundled digits, a 2-stage CNN."""
    cfg = {
        "name": "tiny",
        "seed": 0,
        "task": {"type": "classification", "augment": {"degrees": 10, "translate": 0.05}},
        "model": {"type": "cnn-classifier", "stages": [[8], [16]], "hidden": [32], "dropout": 0.2},
        "data": {"type": "mnist", "limit": 600, "val_count": 100},
        "train": {"epochs": 2, "batch_size": 50, "lr": 0.003, "log_every": 5, "progress": False},
    }
    return with_overrides(cfg, overrides)


def with_overrides(cfg: dict, overrides: dict) -> dict:
    """``section__field=value`` keyword overrides of a test config dict (changed in place, returned)."""
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        cfg[section][field] = value
    return cfg


def png_bytes(width: int, height: int, color_type: int = 0, payload: bytes | None = None) -> bytes:
    """A PNG with a valid header; ``payload`` None gives a correct all-zero image of that size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    if payload is None:
        channels = {0: 1, 2: 3, 6: 4}[color_type]
        payload = zlib.compress(b"".join(b"\x00" + b"\x00" * width * channels for _ in range(height)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", payload) + chunk(b"IEND", b"")


@pytest.fixture
def digits_dir(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """40 bundled validation digits written as PNGs, with their labels."""
    import numpy as np
    from PIL import Image

    from convgen.data.datasets import bundled_mnist_paths
    from convgen.data.formats import read_idx_pair

    images, labels = read_idx_pair(*bundled_mnist_paths())
    out = tmp_path / "digits"
    out.mkdir()
    truth = {}
    for i in range(7960, 8000):
        name = f"{i:05d}.png"
        Image.fromarray(np.ascontiguousarray(images[i, :, :, 0])).save(out / name)
        truth[name] = int(labels[i])
    return out, truth


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Tests never read or write the user's ~/.cache/convgen (statistics cache, downloaded weights)."""
    monkeypatch.setenv("CONVGEN_CACHE", str(tmp_path_factory.getbasetemp() / "convgen-cache"))
    monkeypatch.delenv("CONVGEN_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.delenv("CONVGEN_VGG_WEIGHTS", raising=False)
