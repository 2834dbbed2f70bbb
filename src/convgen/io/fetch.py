"""Checksummed downloads for online users (datasets, pretrained weights).

Every file has a known checksum; a download goes to a temporary file, is verified, and only then is moved into
place, so an interrupted or tampered download never leaves a file that looks valid. Mirrors are tried in order.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from convgen.errors import DataError
from convgen.io.atomic import atomic_write


def cache_root() -> Path:
    """Where downloads and caches live: ``$CONVGEN_CACHE``, else ``~/.cache/convgen``."""
    return Path(os.environ.get("CONVGEN_CACHE") or Path.home() / ".cache" / "convgen")


@dataclass(frozen=True)
class Resource:
    filename: str
    md5: str | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None  # when only the leading hex digits are published (torch.hub file names)


def file_digest(path: str | Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: str | Path, resource: Resource) -> bool:
    if resource.sha256 or resource.sha256_prefix:
        digest = file_digest(path, "sha256")
        if resource.sha256 and digest != resource.sha256:
            return False
        if resource.sha256_prefix and not digest.startswith(resource.sha256_prefix):
            return False
    return not (resource.md5 and file_digest(path, "md5") != resource.md5)


def _fetch(url: str, dest: Path, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "convgen"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=dest.name.split(".tmp")[0].lstrip("."), leave=False
        ) as bar:
            for chunk in iter(lambda: response.read(1 << 16), b""):
                out.write(chunk)
                bar.update(len(chunk))


def download_resource(resource: Resource, root: str | Path, mirrors: list[str], timeout: float = 60.0) -> Path:
    """Return ``root/filename``, downloading it from the first mirror that serves a file with the right checksum."""
    root = Path(root)
    target = root / resource.filename
    if target.is_file():
        if verify(target, resource):
            return target
        raise DataError(f"{target}: exists but fails its checksum; delete it to download again")
    errors = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + resource.filename
        bad_checksum = False

        def write(tmp: Path, url: str = url) -> None:
            nonlocal bad_checksum
            _fetch(url, tmp, timeout)
            if not verify(tmp, resource):
                bad_checksum = True
                raise DataError(f"{url}: checksum mismatch")

        try:
            atomic_write(target, write)
            return target
        except DataError as e:
            errors.append(str(e) if bad_checksum else f"{url}: {e}")
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            errors.append(f"{url}: {getattr(e, 'reason', e)}")
    raise DataError(f"could not download {resource.filename}: " + "; ".join(errors))
