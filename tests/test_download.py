"""Checksummed downloads, tested against an HTTP server on 127.0.0.1 serving files in the real formats."""

import functools
import gzip
import hashlib
import http.server
import threading

import numpy as np
import pytest

from convgen.data import download as dl
from convgen.data.formats import read_idx_pair
from convgen.errors import DataError
from tests.test_data import write_idx


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    (root / "good").mkdir(parents=True)
    (root / "bad").mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_mnist_format_with_checksums(server, tmp_path, monkeypatch):
    root, url = server
    images = np.random.default_rng(0).integers(0, 255, (6, 28, 28), dtype=np.uint8)
    labels = np.arange(6, dtype=np.uint8)
    write_idx(root / "good" / "t10k-images-idx3-ubyte.gz", images)
    write_idx(root / "good" / "t10k-labels-idx1-ubyte.gz", labels)
    files = {
        "test-images": dl.Resource("t10k-images-idx3-ubyte.gz", md5=md5(root / "good" / "t10k-images-idx3-ubyte.gz")),
        "test-labels": dl.Resource("t10k-labels-idx1-ubyte.gz", md5=md5(root / "good" / "t10k-labels-idx1-ubyte.gz")),
    }
    monkeypatch.setitem(dl.RESOURCES, "mnist", ([f"{url}/missing/", f"{url}/good/"], files))
    paths = dl.download("mnist", tmp_path / "data")
    x, y = read_idx_pair(paths["test-images"], paths["test-labels"])
    assert np.array_equal(x[..., 0], images) and y.tolist() == list(range(6))
    again = dl.download("mnist", tmp_path / "data")  # already present and verified: no second download
    assert again == paths


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    root, url = server
    (root / "bad" / "f.gz").write_bytes(gzip.compress(b"tampered"))
    res = dl.Resource("f.gz", md5="0" * 32)
    with pytest.raises(DataError, match="checksum mismatch"):
        dl.download_resource(res, tmp_path / "d", [f"{url}/bad/"])
    assert not any((tmp_path / "d").iterdir())


def test_existing_corrupt_file_is_reported(tmp_path):
    (tmp_path / "f.gz").write_bytes(b"partial")
    with pytest.raises(DataError, match="fails its checksum"):
        dl.download_resource(dl.Resource("f.gz", md5="0" * 32), tmp_path, ["http://127.0.0.1:9/"])


def test_unreachable_mirror_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="could not download"):
        dl.download_resource(dl.Resource("f.gz", md5="0" * 32), tmp_path, ["http://127.0.0.1:9/"], timeout=2)


def test_canonical_checksums_are_listed():
    assert dl.RESOURCES["mnist"][1]["test-images"].md5 == "9fb629c4189551a2d022fa330f9573f3"
    assert dl.RESOURCES["mnist"][1]["train-images"].md5 == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert dl.RESOURCES["cifar10"][1]["archive"].md5 == "c58f30108f718f92721af3b95e74349a"
