"""A bounded worker pool for model work: a fixed number of threads and a queue of fixed length.

A request that finds the pool and its queue full is refused at once (HTTP 429) instead of waiting without bound;
a job that runs past its time limit answers HTTP 503 (the thread finishes the job in the background and its slot
is only freed then, so the pool never holds more jobs than it has room for).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from convgen.errors import ConvgenError

T = TypeVar("T")


class QueueFull(ConvgenError):
    """Every worker is busy and the queue is full."""


class JobTimeout(ConvgenError):
    """A job ran past the server's time limit."""


class JobPool:
    def __init__(self, workers: int = 2, queue: int = 32, timeout_s: float = 120.0) -> None:
        if workers < 1 or queue < 0 or timeout_s <= 0:
            raise ConvgenError("`workers` must be >= 1, `queue` >= 0 and `timeout` > 0")
        self.workers, self.queue, self.timeout_s = workers, queue, timeout_s
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="convgen-job")
        self._lock = threading.Lock()
        self.pending = 0  # running + queued
        self.served = self.refused = self.timed_out = 0

    def _release(self, _future: Any) -> None:
        with self._lock:
            self.pending -= 1

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a worker thread; :class:`QueueFull` or :class:`JobTimeout` instead of waiting forever."""
        with self._lock:
            if self.pending >= self.workers + self.queue:
                self.refused += 1
                raise QueueFull(f"the server is busy ({self.workers} jobs running, {self.queue} waiting); try again "
                                "in a moment")  # fmt: skip
            self.pending += 1
        future = self._executor.submit(fn, *args)
        future.add_done_callback(self._release)
        try:
            result = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), self.timeout_s)
        except asyncio.TimeoutError:
            self.timed_out += 1
            raise JobTimeout(f"the job took longer than the server's limit of {self.timeout_s:g} s") from None
        self.served += 1
        return result

    def stats(self) -> dict[str, int]:
        return {"workers": self.workers, "queue": self.queue, "pending": self.pending, "served": self.served,
                "refused": self.refused, "timed_out": self.timed_out}  # fmt: skip

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
