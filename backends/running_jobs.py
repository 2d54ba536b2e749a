"""The jobs a provider-backed backend has submitted and not yet collected, per site, so that a
timeout or Ctrl-C can cancel them (``QuantumFrontEnd.cancel_running``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["RunningJobs"]

logger = logging.getLogger(__name__)


class RunningJobs:
    """Site -> jobs in flight, under a lock; each job is handed out for cancelling at most
    once, whichever thread (the caller's cleanup, a timeout, Ctrl-C) gets to it first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, list[Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {}  # a lock does not pickle; jobs in flight stay with the original

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    def track(self, site: str, job: Any) -> None:
        """``job`` was submitted for ``site``."""
        with self._lock:
            self._jobs.setdefault(site, []).append(job)

    def untrack(self, site: str, jobs: Sequence[Any]) -> list[Any]:
        """Stop tracking those of ``jobs`` still tracked for ``site``; returns them."""
        with self._lock:
            tracked = self._jobs.get(site, [])
            taken = [job for job in jobs if any(job is other for other in tracked)]
            remaining = [job for job in tracked if not any(job is other for other in taken)]
            if remaining:
                self._jobs[site] = remaining
            else:
                self._jobs.pop(site, None)
        return taken

    def take(self, site: str | None) -> list[tuple[str, list[Any]]]:
        """Stop tracking every job of ``site`` (every site: None); returns them by site."""
        with self._lock:
            sites = list(self._jobs) if site is None else [site]
            return [(s, self._jobs.pop(s, [])) for s in sites]


def cancel_jobs(
    site: str, jobs: Sequence[Any], call: Callable[[str, Callable[[], Any]], Any]
) -> int:
    """``job.cancel()`` each job through ``call`` (the backend's scrubbing wrapper); a job
    that cannot be cancelled (``cancel()`` raises, or returns False as a local qiskit
    ``PrimitiveJob`` does once it runs) is skipped. Returns how many cancels went through."""
    cancelled = 0
    for job in jobs:
        try:
            outcome = call("cancelling a job", job.cancel)
        except Exception as exc:  # e.g. RuntimeInvalidStateError: the job is already final
            logger.debug("a job of site %r was not cancelled: %s", site, exc)
            continue
        if outcome is False:
            logger.debug("a job of site %r could not be cancelled", site)
            continue
        cancelled += 1
    return cancelled
