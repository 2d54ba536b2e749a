"""Quantum jobs: one op call run in a worker thread, and the backend records it produced."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx

from qgraph.backends import ExecutionRecord
from qgraph.scheduler.qrce_cache import Chunk
from qgraph.scheduler.timeline import TimelineEvent

__all__ = ["Job", "JobRunner", "job_event"]


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
    """Runs jobs in worker threads and gives each the backend records made in its thread.

    Backends append records from the thread that runs the op, so the thread identifies the
    job; ``on_record`` is the listener to install on the backends' record taps.
    """

    def __init__(self) -> None:
        self._by_thread: dict[int, Job] = {}

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
        ident = threading.get_ident()
        job.thread = threading.current_thread().name
        self._by_thread[ident] = job
        job.started = time.perf_counter()
        try:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return target(*args, **kwargs)
        finally:
            job.ended = time.perf_counter()
            self._by_thread.pop(ident, None)

    def on_record(self, record: ExecutionRecord) -> None:
        """Attribute ``record`` to the job running in this thread, if any."""
        job = self._by_thread.get(threading.get_ident())
        if job is not None:
            job.records.append(record)


def job_event(job: Job, origin: float) -> TimelineEvent:
    """The timeline event of a finished job; times from ``origin`` (perf_counter)."""
    records = job.records
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
        raw_shot_bytes=shots * job.qubits // 8,
        tokens=job.tokens[0],
        unique_tokens=job.tokens[1],
        computed_tokens=job.tokens[2],
    )
