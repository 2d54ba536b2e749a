"""Quantum jobs: one op call run in a worker thread, and the backend records it produced."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx

from qgraph.backends import ExecutionRecord
from qgraph.scheduler.qrce_cache import Chunk
from qgraph.scheduler.timeline import TimelineEvent

__all__ = ["Job", "JobRunner", "job_event", "raw_bytes"]

#: the (runner, job) whose op call runs in this context; a backend that runs a job in a
#: thread of its own (a JobPolicy timeout) copies the context, so its records still count
_RUNNING: contextvars.ContextVar[tuple[JobRunner, Job] | None] = contextvars.ContextVar(
    "qgraph_running_job", default=None
)


@dataclass
class Job:
    """One submitted quantum op call."""

    microbatch: int
    node: fx.Node
    site: str
    qubits: int
    submitted: float
    chunk: Chunk | None = None  # QRCE: the token rows this job produces
    started: float = 0.0
    ended: float = 0.0
    thread: str = ""
    records: list[ExecutionRecord] = field(default_factory=list)
    tokens: tuple[int, int, int] = (0, 0, 0)  # QRCE: total, unique, computed


class JobRunner:
    """Runs jobs in worker threads and gives each the backend records its op call made.

    A context variable names the running job; ``on_record`` is the listener to install on the
    backends' job logs, and attributes each record to the job of the context it was made in.
    """

    def run(
        self,
        job: Job,
        target: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        grad: bool,
        inference: bool,
    ) -> Any:
        """In a worker thread: run the op call under the caller's autograd modes (thread-local
        state, which the worker does not inherit)."""
        job.thread = threading.current_thread().name
        token = _RUNNING.set((self, job))
        job.started = time.perf_counter()
        try:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return target(*args, **kwargs)
        finally:
            job.ended = time.perf_counter()
            _RUNNING.reset(token)

    def on_record(self, record: ExecutionRecord) -> None:
        """Attribute ``record`` to the job running in this context, if it is one of ours."""
        running = _RUNNING.get()
        if running is not None and running[0] is self:
            running[1].records.append(record)


def job_event(job: Job, origin: float) -> TimelineEvent:
    """The timeline event of a finished job; times from ``origin`` (perf_counter)."""
    records = [r for r in job.records if r.outcome == "done"]
    incidents = [r for r in job.records if r.outcome != "done"]
    queues = [r.queue_s for r in records if r.queue_s is not None]
    queue_s = sum(queues) if queues else None
    duration = job.ended - job.started
    shots = sum(r.shots for r in records)
    return TimelineEvent(
        job.node.name,
        "quantum",
        job.started - origin,
        job.ended - origin,
        job.thread,
        job.microbatch,
        job.node.name,
        site=job.site,
        submitted_s=job.submitted - origin,
        queue_s=queue_s,
        run_s=None if queue_s is None else max(duration - queue_s, 0.0),
        jobs=len(records),
        circuits=sum(r.circuits for r in records),
        shots=shots,
        bytes_received=sum(r.bytes_received for r in records),
        raw_shot_bytes=raw_bytes(records, shots, job.qubits),
        tokens=job.tokens[0],
        unique_tokens=job.tokens[1],
        computed_tokens=job.tokens[2],
        retries=sum(r.outcome == "retried" for r in incidents),
        timeouts=sum(r.timed_out for r in incidents),
        fallbacks=sum(r.outcome == "fallback" for r in incidents),
        device_jobs=_count_by_device(records, lambda r: 1),
        device_circuits=_count_by_device(records, lambda r: r.circuits),
    )


def _count_by_device(
    records: list[ExecutionRecord], count: Callable[[ExecutionRecord], int]
) -> dict[str, int]:
    """``count`` summed per device over the records that name one, in order of appearance."""
    counts: dict[str, int] = {}
    for record in records:
        if record.device is not None:
            counts[record.device] = counts.get(record.device, 0) + count(record)
    return counts


def raw_bytes(records: list[ExecutionRecord], shots: int, qubits: int) -> int:
    """What one bitstring per shot would have taken: the backends' own figure
    (``ExecutionRecord.raw_bytes``) where every record has one, else shots × qubits / 8."""
    if records and all(r.raw_bytes for r in records):
        return sum(r.raw_bytes for r in records)
    return shots * qubits // 8
