"""Hung IBM jobs are cancelled: on a timeout, on Ctrl-C, and through ``cancel_running``.

Local testing mode (``fake_santiago``), network blocked; the primitive is replaced by a stub
whose jobs hang in ``result()`` until ``cancel()`` is called, then fail as a cancelled
``RuntimeJobV2`` does (``RuntimeInvalidStateError``: "Job was cancelled").
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch

pytest.importorskip("qiskit_ibm_runtime")

from qiskit_ibm_runtime.exceptions import RuntimeInvalidStateError, RuntimeJobFailureError

import qgraph.backends.ibm as ibm_module
from qgraph.backends.ibm import IBMBackend, IBMRuntimeError
from qgraph.backends.job_policy import JobFailedError, JobPolicy

FAKE = "fake_santiago"
#: a stub job hangs at most this long when nobody cancels it (so a broken build fails, not hangs)
HANG_S = 20.0
#: how long a test waits for a thread it expects to end soon
END_S = 10.0


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def _inputs(queries: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, queries, 4, generator=g)
    k, v = (torch.randn(1, 1, 2, 4, generator=g) for _ in range(2))
    return q, k, v


def _qaap(backend: IBMBackend, site: str = "site", queries: int = 2) -> torch.Tensor:
    q, k, v = _inputs(queries)
    return backend.qaap(q, k, v, None, False, None, 0.0, site)


class HangingJob:
    """``result()`` blocks until ``cancel()`` (or ``release``), then raises as a cancelled
    job does; ``cancel()`` may raise or return False like a job past cancelling."""

    def __init__(
        self,
        *,
        interrupt: bool = False,
        cancel_error: Exception | None = None,
        cancel_returns: bool | None = None,
    ) -> None:
        self.interrupt = interrupt
        self.cancel_error = cancel_error
        self.cancel_returns = cancel_returns
        self.cancel_calls = 0
        self.release = threading.Event()
        self.waiter: threading.Thread | None = None

    def result(self) -> Any:
        self.waiter = threading.current_thread()
        if self.interrupt:
            raise KeyboardInterrupt  # Ctrl-C arriving while the main thread waits here
        if not self.release.wait(HANG_S):
            raise TimeoutError("stub job: never cancelled")
        if self.cancel_calls:
            raise RuntimeInvalidStateError("Unable to retrieve result. Job was cancelled.")
        raise RuntimeJobFailureError("Unable to retrieve job result. released by the test")

    def cancel(self) -> Any:
        self.cancel_calls += 1
        if self.cancel_error is not None:
            raise self.cancel_error
        if self.cancel_returns is not False:
            self.release.set()
        return self.cancel_returns

    def metrics(self) -> dict[str, Any]:
        return {}


class CountingJob:
    """A real local job, with its ``cancel()`` calls counted."""

    def __init__(self, job: Any) -> None:
        self.job = job
        self.cancel_calls = 0

    def result(self) -> Any:
        return self.job.result()

    def metrics(self) -> Any:
        return self.job.metrics()

    def cancel(self) -> Any:
        self.cancel_calls += 1
        return self.job.cancel()


def _install(
    monkeypatch: pytest.MonkeyPatch, make_job: Callable[[Any, Any], Any]
) -> tuple[list[Any], threading.Event]:
    """Replace the module's Sampler; ``make_job(real_sampler, pubs)`` makes each job.
    Returns the submitted jobs and an event set on every submission."""
    real_sampler = ibm_module.Sampler
    submitted: list[Any] = []
    submission = threading.Event()

    class StubSampler:
        def __init__(self, mode: Any) -> None:
            self.real = real_sampler(mode=mode)
            self.options = self.real.options

        def run(self, pubs: Any, shots: int | None = None) -> Any:
            job = make_job(self, pubs)
            submitted.append(job)
            submission.set()
            return job

    monkeypatch.setattr(ibm_module, "Sampler", StubSampler)
    return submitted, submission


def _hanging(*jobs: HangingJob) -> Callable[[Any, Any], Any]:
    queue = list(jobs)
    return lambda sampler, pubs: queue.pop(0)


def test_nothing_in_flight_cancels_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = IBMBackend(FAKE, shots=64, seed=0)
    assert backend.cancel_running() == 0 and backend.cancel_running("site") == 0
    # a real local call: its job is collected and no longer tracked afterwards
    submitted, _ = _install(
        monkeypatch, lambda sampler, pubs: CountingJob(sampler.real.run(pubs, shots=64))
    )
    assert torch.isfinite(_qaap(backend)).all()
    assert len(submitted) == 1
    assert backend.cancel_running() == 0 and backend.cancel_running("site") == 0
    assert submitted[0].cancel_calls == 0


def test_timeout_cancels_the_hung_job_and_its_thread_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = IBMBackend(FAKE, shots=64, seed=0)
    _qaap(backend)  # transpile now, so the timed call submits its job at once
    hung = HangingJob()
    submitted, _ = _install(monkeypatch, _hanging(hung))
    backend.job_policy = JobPolicy(timeout_s=0.2, retries=0)

    with pytest.raises(JobFailedError, match="failed transiently 1 times"):
        _qaap(backend)

    assert submitted == [hung] and hung.cancel_calls == 1
    assert backend.stats.site("site").timeouts == 1
    assert hung.waiter is not None and hung.waiter.name == "qgraph-job"
    hung.waiter.join(END_S)
    assert not hung.waiter.is_alive(), "the abandoned job thread did not end after the cancel"
    assert backend.cancel_running() == 0  # the thread's call untracked what it had


def test_ctrl_c_while_waiting_cancels_the_jobs_of_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = IBMBackend(FAKE, shots=64, seed=0, max_circuits_per_job=1)
    first, second = HangingJob(interrupt=True), HangingJob()
    submitted, _ = _install(monkeypatch, _hanging(first, second))

    with pytest.raises(KeyboardInterrupt):
        _qaap(backend)

    assert submitted == [first, second]  # 2 query rows, 1 circuit per job
    assert second.cancel_calls == 1  # submitted, never collected
    assert first.cancel_calls == 1  # the one being waited for was still running too
    assert backend.cancel_running() == 0


def test_cancel_running_skips_jobs_that_cannot_be_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = IBMBackend(FAKE, shots=64, seed=0, max_circuits_per_job=1)
    finished = HangingJob(cancel_error=RuntimeInvalidStateError("Job cannot be cancelled: 409"))
    running_locally = HangingJob(cancel_returns=False)  # a PrimitiveJob already running
    cancellable = HangingJob()
    submitted, _ = _install(monkeypatch, _hanging(finished, running_locally, cancellable))
    outcome: dict[str, BaseException] = {}

    def call() -> None:
        try:
            _qaap(backend, queries=3)
        except BaseException as exc:
            outcome["error"] = exc

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    for _ in range(int(END_S / 0.01)):
        if len(submitted) == 3 or not caller.is_alive():
            break
        threading.Event().wait(0.01)
    assert len(submitted) == 3, outcome

    assert backend.cancel_running("another site") == 0
    assert backend.cancel_running() == 1  # only `cancellable`; the others are skipped
    assert [job.cancel_calls for job in submitted] == [1, 1, 1]
    assert backend.cancel_running("site") == 0  # untracked, even those not cancelled

    finished.release.set()
    running_locally.release.set()
    caller.join(END_S)
    assert not caller.is_alive()
    assert isinstance(outcome.get("error"), IBMRuntimeError)
    assert [job.cancel_calls for job in submitted] == [1, 1, 1]  # nothing cancelled twice
