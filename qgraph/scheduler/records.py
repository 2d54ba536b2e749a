"""Listening to the ExecutionRecords that backends append while the scheduler runs.

Backends know nothing of the scheduler: each appends one record per job to its own
``stats.records``, a bounded ``JobLog`` (``qgraph.backends.base``) that tells its listeners
about each new record. The scheduler listens while a step or a backward pass runs, to
attribute records to jobs; a backend that assigned a plain list there gets a ``JobLog`` of
its records in its place (``tap``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch.fx as fx

from qgraph.backends import Backend, JobLog, get_backend, job_log
from qgraph.backends.base import RecordListener
from qgraph.scheduler.quantum import bound_args, is_quantum

__all__ = ["RecordListener", "backend_taps", "listening", "tap"]


def tap(backend: Backend) -> JobLog:
    """``backend.stats.records``, the log the scheduler listens to (a plain list a backend
    assigned there is converted once; its records are kept)."""
    return job_log(backend)


def backend_taps(gm: fx.GraphModule) -> list[JobLog]:
    """The logs of every backend the quantum nodes of ``gm`` run on (each once)."""
    taps: list[JobLog] = []
    for node in gm.graph.nodes:
        if is_quantum(node):
            key = bound_args(node.target, node.args, dict(node.kwargs))["backend"]
            backend_tap = tap(get_backend(key))
            if not any(backend_tap is known for known in taps):  # lists compare by value
                taps.append(backend_tap)
    return taps


@contextlib.contextmanager
def listening(taps: Sequence[JobLog], listener: RecordListener) -> Iterator[None]:
    """``listener`` hears every record appended to ``taps`` within the block."""
    for record_tap in taps:
        record_tap.listeners.append(listener)
    try:
        yield
    finally:
        for record_tap in taps:
            record_tap.listeners.remove(listener)
