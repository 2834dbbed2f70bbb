from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# the C2PA signing credentials every test run makes (convgen.io.provenance) go to a throwaway folder, not ~/.config
os.environ.setdefault("CONVGEN_CONFIG", tempfile.mkdtemp(prefix="convgen-test-config-"))
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL 15 cluster on a free loopback port, stopped and removed after the test session."""
    pytest.importorskip("psycopg")
    if not (PG_BIN / "initdb").exists():
        if os.environ.get("CI"):
            pytest.fail("CI must have PostgreSQL 15 (Debian's postgresql package)")
        pytest.skip("PostgreSQL 15 is not installed")
    root = Path(tempfile.mkdtemp(prefix="convgen-pg-"))  # not under pytest's 0700 folder: postgres must enter it
    data, port = root / "data", free_port()
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        shutil.chown(root, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    run = lambda *cmd: subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    run(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")  # fmt: skip
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
