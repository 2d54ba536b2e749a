"""What a backend does when a job fails or hangs: time out, retry, fall back, or raise.

Every call a backend makes for an op (one job: QAAP rows, QRCE rows, the shifted QRCE
circuits) runs through ``run_job`` with the backend's ``JobPolicy``. Errors are classified:
*transient* ones (``TransientJobError``, ``TimeoutError``, ``ConnectionError``; a queue that
timed out, a dropped connection, a cancelled job) are retried with exponential backoff;
anything else is *permanent* and is not. When the retries run out (or the error is
permanent), the policy's ``fallback`` decides: ``"raise"`` (the default) raises
``JobFailedError`` naming the backend, the kernel and the site (a permanent error is raised
as it is, with that note added); ``"exact"`` computes that call's rows with the exact closed
form / statevector instead. Retries, timeouts and fallbacks are counted per site in
``backend.stats``.

A retried job starts again from the same inputs, and a backend's sampling happens inside the
job: a seeded backend that fails before it samples gives the same numbers on the retry, so a
run with transient faults ends where the run without them does (``tests/test_faults.py``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch

from qgraph.backends.base import KernelCounters
from qgraph.errors import QGraphError

__all__ = [
    "FALLBACKS",
    "JobFailedError",
    "JobPolicy",
    "JobTimeoutError",
    "TransientJobError",
    "is_transient",
    "run_job",
]

_T = TypeVar("_T")

#: what a job that keeps failing turns into
FALLBACKS = ("raise", "exact")


class TransientJobError(QGraphError, RuntimeError):
    """A job failed in a way that a retry can fix (a dropped connection, a queue timeout)."""


class JobTimeoutError(TransientJobError, TimeoutError):
    """A job did not finish within the policy's ``timeout_s``."""


class JobFailedError(QGraphError, RuntimeError):
    """A job failed for good: permanently, or transiently more often than the retries allow."""


def is_transient(error: BaseException) -> bool:
    """Whether a retry may succeed where ``error`` happened."""
    return isinstance(error, (TransientJobError, TimeoutError, ConnectionError))


@dataclass(frozen=True)
class JobPolicy:
    """How a backend treats failing and hanging jobs (set ``backend.job_policy``).

    Args:
        timeout_s: seconds a job may take before it counts as failed (transiently); None
            waits as long as it takes. A timed-out job's thread is left to finish on its
            own (a daemon thread: the process can still exit).
        retries: how many times a transient failure is retried.
        backoff_s: the wait before the first retry; each further one waits
            ``backoff_factor`` times longer.
        fallback: "raise" (JobFailedError) or "exact" (compute the call exactly instead).
    """

    timeout_s: float | None = None
    retries: int = 2
    backoff_s: float = 0.5
    backoff_factor: float = 2.0
    fallback: Literal["raise", "exact"] = "raise"

    def __post_init__(self) -> None:
        if self.timeout_s is not None and not (
            isinstance(self.timeout_s, (int, float))
            and not isinstance(self.timeout_s, bool)
            and math.isfinite(self.timeout_s)
            and self.timeout_s > 0
        ):
            raise ValueError(
                f"JobPolicy: timeout_s must be a number of seconds > 0 or None; got "
                f"{self.timeout_s!r}."
            )
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"JobPolicy: retries must be an int ≥ 0; got {self.retries!r}.")
        for name in ("backoff_s", "backoff_factor"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (math.isfinite(value) and value >= 0)
            ):
                raise ValueError(f"JobPolicy: {name} must be a finite number ≥ 0; got {value!r}.")
        if self.fallback not in FALLBACKS:
            raise ValueError(
                f"JobPolicy: fallback must be one of {list(FALLBACKS)}; got {self.fallback!r}."
            )


def _within(timeout_s: float | None, call: Callable[[], _T]) -> _T:
    """``call()``, or JobTimeoutError when it takes longer than ``timeout_s``."""
    if timeout_s is None:
        return call()
    outcome: dict[str, object] = {}
    grad_enabled = torch.is_grad_enabled()  # grad mode is per thread

    def target() -> None:
        try:
            with torch.set_grad_enabled(grad_enabled):
                outcome["value"] = call()
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="qgraph-job", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise JobTimeoutError(f"the job did not finish within {timeout_s} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def run_job(
    call: Callable[[], _T],
    policy: JobPolicy,
    counters: KernelCounters,
    describe: str,
    fallback: Callable[[], _T],
    sleep: Callable[[float], None] = time.sleep,
) -> _T:
    """Run one job under ``policy``; ``describe`` names backend, kernel and site for errors,
    ``fallback`` computes the exact result when the policy says so."""
    attempt = 0
    while True:
        try:
            return _within(policy.timeout_s, call)
        except Exception as exc:
            if isinstance(exc, JobTimeoutError):
                counters.timeouts += 1
            transient = is_transient(exc)
            if transient and attempt < policy.retries:
                counters.retries += 1
                sleep(policy.backoff_s * policy.backoff_factor**attempt)
                attempt += 1
                continue
            if policy.fallback == "exact":
                counters.fallbacks += 1
                return fallback()
            if not transient:
                # a permanent error keeps its type (often a bad input): it only learns where
                if hasattr(exc, "add_note"):  # Python ≥ 3.11
                    exc.add_note(f"(in {describe})")
                raise
            raise JobFailedError(
                f"{describe} failed transiently {attempt + 1} times: {type(exc).__name__}: "
                f"{exc}. Retry the step, allow more with JobPolicy(retries=...) or a longer "
                "timeout_s, or set JobPolicy(fallback='exact') on the backend "
                "(backend.job_policy)."
            ) from exc
