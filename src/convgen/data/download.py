"""Checksummed dataset downloads for online users: the datasets' files, checksums and mirrors (:mod:`convgen.io.fetch`).

Every file has a known checksum; a download goes to a temporary file, is verified, and only then is moved into
place, so an interrupted or tampered download never leaves a file that looks valid. Mirrors are tried in order.
"""

from __future__ import annotations

import os
from pathlib import Path

from convgen.errors import DataError
from convgen.io.fetch import Resource, download_resource

MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]
FASHION_MNIST_MIRRORS = ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
CIFAR10_MIRRORS = ["https://www.cs.toronto.edu/~kriz/"]

RESOURCES: dict[str, tuple[list[str], dict[str, Resource]]] = {
    "mnist": (
        MNIST_MIRRORS,
        {
            "train-images": Resource("train-images-idx3-ubyte.gz", md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            "train-labels": Resource("train-labels-idx1-ubyte.gz", md5="d53e105ee54ea40749a09fcbcd1e9432"),
            "test-images": Resource("t10k-images-idx3-ubyte.gz", md5="9fb629c4189551a2d022fa330f9573f3"),
            "test-labels": Resource("t10k-labels-idx1-ubyte.gz", md5="ec29112dd5afa0611ce80d1b7f02629c"),
        },
    ),
    "fashion-mnist": (
        FASHION_MNIST_MIRRORS,
        {
            "train-images": Resource("train-images-idx3-ubyte.gz", md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            "train-labels": Resource("train-labels-idx1-ubyte.gz", md5="25c81989df183df01b3e8a0aad5dffbe"),
            "test-images": Resource("t10k-images-idx3-ubyte.gz", md5="bef4ecab320f06d8554ea6380940ec79"),
            "test-labels": Resource("t10k-labels-idx1-ubyte.gz", md5="bb300cfdad3c16e7a12a480ee83cd310"),
        },
    ),
    "cifar10": (
        CIFAR10_MIRRORS,
        {"archive": Resource("cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a")},
    ),
}


def download(dataset: str, root: str | Path, mirrors: list[str] | None = None) -> dict[str, Path]:
    """Download every file of ``dataset`` (mnist, fashion-mnist, cifar10) into ``root``; returns key -> path.

    ``CONVGEN_MIRROR`` (a base URL) is tried before the built-in mirrors, for users behind a proxy or cache.
    """
    if dataset not in RESOURCES:
        raise DataError(f"unknown downloadable dataset {dataset!r} (known: {', '.join(RESOURCES)})")
    default_mirrors, files = RESOURCES[dataset]
    mirrors = list(mirrors or default_mirrors)
    if os.environ.get("CONVGEN_MIRROR"):
        mirrors.insert(0, os.environ["CONVGEN_MIRROR"])
    return {key: download_resource(res, root, mirrors) for key, res in files.items()}
