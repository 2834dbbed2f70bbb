"""An exclusive lock on a directory, so that two processes never write one run at the same time.

The lock is an ``flock`` on ``DIR/.lock``, held while the process runs: the kernel releases it when the process
ends, however it ends (kill -9 included), so a lock file left behind by a dead process is stale and is simply
taken over; only a live holder refuses. The file records the holder's PID for the error message. On systems
without ``fcntl`` (Windows) the lock is a no-op.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import TracebackType

from convgen.errors import ConvgenError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class DirectoryLock:
    def __init__(self, directory: str | Path, what: str = "run directory") -> None:
        self.directory = Path(directory)
        self.what = what
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> DirectoryLock:
        if self.directory.exists() and not self.directory.is_dir():
            raise ConvgenError(f"{self.directory} is a file; `out` is the {self.what}")
        if fcntl is None:
            return self
        self._created = not self.directory.exists()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConvgenError(
                f"{self.directory}: this {self.what} is in use by another convgen process (pid {holder}); "
                "wait for it to finish or choose another `out`"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, kind: type | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is None:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        leftovers = {p.name for p in self.directory.iterdir()} if self.directory.is_dir() else set()
        if self._created and kind is not None and leftovers <= {LOCK_NAME}:
            shutil.rmtree(self.directory, ignore_errors=True)  # a run that failed before writing anything
