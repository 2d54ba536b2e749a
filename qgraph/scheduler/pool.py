"""The scheduler's worker threads: a small executor whose threads are daemons.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the interpreter exits, so a
quantum job that hangs (a queue that never answers) would keep the process alive after
Ctrl-C. These workers are daemon threads: an interrupted run returns at once, and the
process can always exit; a job still running is abandoned, not killed.
"""

from __future__ import annotations

import concurrent.futures as cf
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["DaemonPool"]


class DaemonPool(cf.Executor):
    """``max_workers`` daemon threads (started on the first call) running calls in order."""

    def __init__(self, max_workers: int, name: str = "qgraph-job") -> None:
        self.max_workers = max_workers
        self.name = name
        self._work: queue.SimpleQueue[tuple[cf.Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Run ``fn(*args, **kwargs)`` in a worker; its Future holds the result."""
        future: cf.Future[Any] = cf.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the scheduler's worker pool is closed.")
            if not self._threads:  # all workers at once: they wait on the queue, cheaply
                for index in range(self.max_workers):
                    worker = threading.Thread(
                        target=self._loop, name=f"{self.name}_{index}", daemon=True
                    )
                    self._threads.append(worker)
                    worker.start()
            self._work.put((future, lambda: fn(*args, **kwargs)))
        return future

    def _loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            future, call = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as exc:
                    future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the workers; ``cancel_futures`` drops calls not yet started, ``wait`` joins
        the workers (a hung one is not waited for when ``wait`` is False)."""
        with self._lock:
            self._closed = True
        if cancel_futures:
            while True:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in self._threads:
            self._work.put(None)
        if wait:
            for worker in self._threads:
                worker.join()
