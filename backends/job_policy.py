"""What a backend does when a job fails or hangs: time out, retry, fall back, or raise.

Every call a backend makes for an op (one job: QAAP rows, QRCE rows, the shifted QRCE
circuits) runs through ``run_job`` with the backend's ``JobPolicy``. Errors are classified:
*transient* ones (``TransientJobError``, ``TimeoutError``, ``ConnectionError``; a queue that
timed out, a dropped connection, a cancelled job) are retried with exponential backoff;
anything else is *permanent* and is not. When the retries run out (or the error is
permanent), the policy's ``fallback`` decides: ``"raise"`` (the default) raises
``JobFailedError`` naming the backend, the kernel and the site (a permanent error is raised
as it is, with that note added); ``"exact"`` computes that call's rows with the exact closed
form / statevector instead; ``"classical"`` computes what the site computed before it was
offloaded (softmax attention for a QAAP site; a QRCE site's table is gone, so its circuits
are simulated exactly, as under ``"exact"``). Retries, timeouts and fallbacks are counted per
site in ``backend.stats`` (``KernelCounters``), and every failed attempt and every fallback
leaves an ``ExecutionRecord`` with its ``outcome``, which the scheduler's timeline counts.

Every backend's job records pass through here too: ``run_job`` adds the transferred bytes of
each record the job appends (``bytes_received`` and ``raw_bytes``) to the counters of the
record's site, so the report shows them for every backend without code of its own. A record
counts for the job whose call appended it (in its thread, or in a thread that runs in its
context), however many jobs append to the same log at once; records that a timed-out
attempt appends after its ``run_job`` has returned are not counted.

A job that times out, and the jobs of a call that Ctrl-C interrupts, are cancelled where the
backend can cancel them (``cancel`` below: IBM jobs have ``cancel()``); a timed-out call that
cannot be cancelled finishes in its daemon thread and its result is dropped.

A retried job starts again from the same inputs, and a backend's sampling happens inside the
job: a seeded backend that fails before it samples gives the same numbers on the retry, so a
run with transient faults ends where the run without them does (``tests/test_faults.py``).
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch

from qgraph.backends.base import BackendStats, ExecutionRecord, JobLog, KernelCounters
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
FALLBACKS = ("raise", "exact", "classical")


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
        fallback: "raise" (JobFailedError), "exact" (compute the call exactly instead) or
            "classical" (compute what the site computed before it was offloaded: softmax
            attention for QAAP; exact simulation for QRCE, whose table is gone).
    """

    timeout_s: float | None = None
    retries: int = 2
    backoff_s: float = 0.5
    backoff_factor: float = 2.0
    fallback: Literal["raise", "exact", "classical"] = "raise"

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
    """``call()``, or JobTimeoutError when it takes longer than ``timeout_s``.

    The call runs in a copy of the caller's context (the scheduler attributes job records
    through a context variable) and the caller's grad mode (which is per thread)."""
    if timeout_s is None:
        return call()
    outcome: dict[str, object] = {}
    grad_enabled = torch.is_grad_enabled()
    context = contextvars.copy_context()

    def target() -> None:
        try:
            with torch.set_grad_enabled(grad_enabled):
                outcome["value"] = context.run(call)
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


def _incident(
    kernel: str, site: str, began: float, outcome: str, timed_out: bool = False
) -> ExecutionRecord:
    """The record of a failed attempt or a fallback that began at ``began`` (perf_counter)."""
    return ExecutionRecord(
        kernel=kernel,
        site=site,
        circuits=0,
        shots=0,
        wall_s=time.perf_counter() - began,
        outcome=outcome,
        timed_out=timed_out,
    )


def _no_cancel() -> int:
    return 0


#: the ``run_job`` whose call runs in this context (a token): a log listener credits a record
#: to the job that appended it, not to another job appending to the same log meanwhile
_RUNNING_JOB: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "qgraph_running_job", default=None
)
#: counters of one site may be updated by jobs in several threads at once
_BYTES_LOCK = threading.Lock()


def _in_job(call: Callable[[], _T], token: object) -> Callable[[], _T]:
    """``call`` run with ``token`` as the running job (reset after, so that the caller's own
    context does not keep it when the call runs in it directly)."""

    def attempt() -> _T:
        reset = _RUNNING_JOB.set(token)
        try:
            return call()
        finally:
            _RUNNING_JOB.reset(reset)

    return attempt


def _byte_counter(stats: BackendStats, token: object) -> Callable[[ExecutionRecord], None]:
    """A log listener that adds the transferred bytes of the records the job ``token``
    appends to the counters of each record's site."""

    def count(record: ExecutionRecord) -> None:
        if _RUNNING_JOB.get() is not token or not (record.bytes_received or record.raw_bytes):
            return
        with _BYTES_LOCK:
            counters = stats.site(record.site)
            counters.bytes_received += record.bytes_received
            counters.raw_bytes += record.raw_bytes

    return count


def run_job(
    call: Callable[[], _T],
    policy: JobPolicy,
    stats: BackendStats,
    kernel: str,
    site: str,
    describe: str,
    fallback: Callable[[], _T],
    cancel: Callable[[], int] = _no_cancel,
    sleep: Callable[[float], None] = time.sleep,
) -> _T:
    """Run one job under ``policy``.

    ``describe`` names backend, kernel and site for errors; ``fallback`` computes the result
    the policy's fallback asks for; ``cancel`` cancels what the backend still runs for this
    site (on a timeout and on Ctrl-C) and says how many jobs it cancelled. Counters and
    records go to ``stats`` under ``site``; the bytes of the records the call appends go to
    the counters of their sites.
    """
    counters = stats.site(site)
    if not isinstance(stats.records, JobLog):  # a plain list a backend assigned: keep its records
        stats.records = JobLog(stats.records)
    token = object()
    job = _in_job(call, token)
    count_bytes = _byte_counter(stats, token)
    log = stats.records
    log.listeners.append(count_bytes)
    try:
        return _attempts(
            job, policy, stats, counters, kernel, site, describe, fallback, cancel, sleep
        )
    finally:
        log.listeners.remove(count_bytes)


def _attempts(
    job: Callable[[], _T],
    policy: JobPolicy,
    stats: BackendStats,
    counters: KernelCounters,
    kernel: str,
    site: str,
    describe: str,
    fallback: Callable[[], _T],
    cancel: Callable[[], int],
    sleep: Callable[[float], None],
) -> _T:
    """``run_job``'s attempts: the job until it succeeds, then the policy's fallback."""
    attempt = 0
    while True:
        began = time.perf_counter()
        try:
            return _within(policy.timeout_s, job)
        except KeyboardInterrupt:
            cancel()
            raise
        except Exception as exc:
            timed_out = isinstance(exc, JobTimeoutError)
            if timed_out:
                counters.timeouts += 1
                cancel()
            transient = is_transient(exc)
            retry = transient and attempt < policy.retries
            stats.records.append(
                _incident(kernel, site, began, "retried" if retry else "failed", timed_out)
            )
            if retry:
                counters.retries += 1
                sleep(policy.backoff_s * policy.backoff_factor**attempt)
                attempt += 1
                continue
            if policy.fallback != "raise":
                counters.fallbacks += 1
                began = time.perf_counter()
                result = fallback()
                stats.records.append(_incident(kernel, site, began, "fallback"))
                return result
            if not transient:
                # a permanent error keeps its type (often a bad input): it only learns where
                if hasattr(exc, "add_note"):  # Python ≥ 3.11
                    exc.add_note(f"(in {describe})")
                raise
            raise JobFailedError(
                f"{describe} failed transiently {attempt + 1} times: {type(exc).__name__}: "
                f"{exc}. Retry the step, allow more with JobPolicy(retries=...) or a longer "
                "timeout_s, or set a fallback: qgraph.compile(..., job_policy=JobPolicy("
                "fallback='exact' or 'classical'))."
            ) from exc
