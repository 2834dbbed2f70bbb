"""Atomic file and directory writes: a reader sees the old file or the complete new one, never half of one.

A write that fails for a reason outside convgen (disk full, no permission, read-only file system) leaves no
temporary file behind and is a one-line :class:`~convgen.errors.ConvgenError` naming the path. New files and
directories get the user's usual permissions (the umask), not the 0600 / 0700 of temporary files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from convgen.errors import ConvgenError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: what the file system answers when it refuses a write (other OSErrors, e.g. a failed download, pass through)
FS_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.ENOTDIR,
             errno.EISDIR, errno.ENAMETOOLONG, errno.EEXIST}  # fmt: skip


def _refused_write(e: OSError) -> bool:
    """The file system refused the write (a download's HTTP error, also an OSError, is not that)."""
    import urllib.error

    return e.errno in FS_ERRNOS or (e.errno is None and not isinstance(e, urllib.error.URLError))


def write_error(path: Path, e: OSError) -> ConvgenError:
    """The one-line error for a write the system refused."""
    reason = e.strerror or str(e)
    try:
        full = shutil.disk_usage(path.parent if path.parent.exists() else Path.cwd()).free < (1 << 20)
    except OSError:
        full = False
    if e.errno in (errno.ENOSPC, errno.EDQUOT) or (e.errno is None and full):
        reason = "no space left on the device"
    return ConvgenError(f"{path}: cannot write ({reason}); nothing was left half-written")


def refuse_existing(paths: Iterable[str | Path], overwrite: bool = False) -> None:
    """Nothing a user has is replaced without asking: an existing target file is an error unless ``overwrite``, and
    a directory where a file is to be written is an error either way. Called before any work is done."""
    for p in map(Path, paths):
        if p.is_dir():
            raise ConvgenError(f"{p} is a directory; give a file name to write")
        if p.exists() and not overwrite:
            raise ConvgenError(f"{p} already exists; pass `overwrite` to replace it")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then move the temporary file onto ``path`` in one rename."""
    path = Path(path)
    if path.is_dir():
        raise ConvgenError(f"{path} is a directory; give a file name to write")
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the user's usual permissions
        os.replace(tmp_path, path)
    except OSError as e:
        if not _refused_write(e):
            raise
        raise write_error(path, e) from None
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` (if it exists) once the block finishes without error."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 directories
    except OSError as e:
        raise write_error(path, e) from None
    try:
        yield tmp
        for p in tmp.rglob("*"):  # some writers (safetensors) make 0600 files
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~_umask())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as e:
        if not _refused_write(e):
            raise
        raise write_error(path, e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def output_folder(path: str | Path) -> Iterator[Path]:
    """Create the folder ``path`` (and missing parents) for a job's outputs; if the job fails, the folders this
    created are removed again when nothing was written into them, so a refused command leaves nothing behind."""
    path = Path(path)
    created = []
    for p in [path, *path.parents]:
        if p.exists():
            break
        created.append(p)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        yield path
    except BaseException:
        for p in created:  # innermost first
            with contextlib.suppress(OSError):
                p.rmdir()  # only when empty
        raise
