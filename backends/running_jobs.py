"""The jobs a provider-backed backend has submitted and not yet collected, per site, so that a
timeout or Ctrl-C can cancel them (``QuantumFrontEnd.cancel_running``); and, for a backend
that spreads a call over several devices, the work each device has outstanding
(``DeviceQueues``: one queue per device, a chunk goes to the least loaded)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["DeviceQueues", "RunningJobs", "cancel_jobs"]

logger = logging.getLogger(__name__)


class RunningJobs:
    """Site -> jobs in flight (each with the device it was submitted to), under a lock; each
    job is handed out for cancelling at most once, whichever thread (the caller's cleanup, a
    timeout, Ctrl-C) gets to it first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, list[tuple[Any, str | None]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {}  # a lock does not pickle; jobs in flight stay with the original

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    def track(self, site: str, job: Any, device: str | None = None) -> None:
        """``job`` was submitted for ``site`` (to ``device``, where the backend has several)."""
        with self._lock:
            self._jobs.setdefault(site, []).append((job, device))

    def untrack(self, site: str, jobs: Sequence[Any]) -> list[Any]:
        """Stop tracking those of ``jobs`` still tracked for ``site``; returns them."""
        with self._lock:
            tracked = self._jobs.get(site, [])
            taken = [job for job in jobs if any(job is other for other, _ in tracked)]
            remaining = [e for e in tracked if not any(e[0] is other for other in taken)]
            if remaining:
                self._jobs[site] = remaining
            else:
                self._jobs.pop(site, None)
        return taken

    def take(self, site: str | None) -> list[tuple[str, str | None, list[Any]]]:
        """Stop tracking every job of ``site`` (every site: None); returns them as
        (site, device, jobs), one entry per site and device in submission order."""
        with self._lock:
            sites = list(self._jobs) if site is None else [site]
            entries = [(s, self._jobs.pop(s, [])) for s in sites]
        taken: list[tuple[str, str | None, list[Any]]] = []
        for s, tracked in entries:
            devices = list(dict.fromkeys(device for _, device in tracked))
            for device in devices:
                taken.append((s, device, [job for job, d in tracked if d == device]))
        return taken

    def tracked(self) -> dict[str, list[str | None]]:
        """Site -> the device of each job tracked for it (a snapshot, for inspection)."""
        with self._lock:
            return {s: [device for _, device in jobs] for s, jobs in self._jobs.items()}


class DeviceQueues:
    """Circuits each device has outstanding (assigned by a call and not yet collected or
    given up), under a lock: one queue per device.

    ``assign`` gives a chunk to the device with the least outstanding work, the first in
    device order on a tie, and adds the chunk's circuits to it in the same step, so threads
    that submit at once spread over the devices; ``release`` takes them off again.
    """

    def __init__(self, devices: Sequence[str]) -> None:
        self.devices = tuple(devices)
        self._lock = threading.Lock()
        self._outstanding = dict.fromkeys(self.devices, 0)

    def __getstate__(self) -> dict[str, Any]:
        return {"devices": self.devices}  # work in flight stays with the original

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["devices"])  # type: ignore[misc]

    def assign(self, circuits: int) -> str:
        """The device a chunk of ``circuits`` goes to; its outstanding work grows by them."""
        with self._lock:
            # min() keeps the first of equal keys: ties go to the earlier device
            device = min(self.devices, key=self._outstanding.__getitem__)
            self._outstanding[device] += circuits
            return device

    def release(self, device: str, circuits: int) -> None:
        """``circuits`` of ``device`` came back (or were given up)."""
        with self._lock:
            self._outstanding[device] = max(0, self._outstanding[device] - circuits)

    def outstanding(self) -> dict[str, int]:
        """Device -> circuits outstanding (a snapshot)."""
        with self._lock:
            return dict(self._outstanding)


def cancel_jobs(
    site: str,
    jobs: Sequence[Any],
    call: Callable[[str, Callable[[], Any]], Any],
    device: str | None = None,
) -> int:
    """``job.cancel()`` each job through ``call`` (the backend's scrubbing wrapper); a job
    that cannot be cancelled (``cancel()`` raises, or returns False as a local qiskit
    ``PrimitiveJob`` does once it runs) is skipped. Returns how many cancels went through.
    ``device`` (where the jobs ran) only names it in the debug log."""
    where = f" on {device}" if device else ""
    cancelled = 0
    for job in jobs:
        try:
            outcome = call("cancelling a job", job.cancel)
        except Exception as exc:  # e.g. RuntimeInvalidStateError: the job is already final
            logger.debug("a job of site %r%s was not cancelled: %s", site, where, exc)
            continue
        if outcome is False:
            logger.debug("a job of site %r%s could not be cancelled", site, where)
            continue
        logger.debug("a job of site %r%s was cancelled", site, where)
        cancelled += 1
    return cancelled
