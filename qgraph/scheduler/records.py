"""Listening to the ExecutionRecords that backends append while the scheduler runs.

Backends know nothing of the scheduler: each appends one record per job to its own
``stats.records``. The scheduler swaps that list for a ``RecordTap`` (the records stay in
it) and listens while a step or a backward pass runs, to attribute records to jobs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch.fx as fx

from qgraph.backends import Backend, ExecutionRecord, get_backend
from qgraph.scheduler.quantum import bound_args, is_quantum

__all__ = ["RecordListener", "RecordTap", "backend_taps", "listening", "tap"]

RecordListener = Callable[[ExecutionRecord], None]


class RecordTap(list):  # type: ignore[type-arg]
    """A backend's ``stats.records`` list that also tells listeners about each new record."""

    def __init__(self, records: Sequence[ExecutionRecord]) -> None:
        super().__init__(records)
        self.listeners: list[RecordListener] = []

    def append(self, record: ExecutionRecord) -> None:
        super().append(record)
        for listener in list(self.listeners):  # a copy: a listener may be removed meanwhile
            listener(record)

    def extend(self, records: Any) -> None:
        for record in records:
            self.append(record)


def tap(backend: Backend) -> RecordTap:
    """Install (once) the tap on ``backend.stats.records``; the records themselves are kept."""
    records = backend.stats.records
    if not isinstance(records, RecordTap):
        records = RecordTap(records)
        backend.stats.records = records
    return records


def backend_taps(gm: fx.GraphModule) -> list[RecordTap]:
    """The taps of every backend the quantum nodes of ``gm`` run on (each once)."""
    taps: list[RecordTap] = []
    for node in gm.graph.nodes:
        if is_quantum(node):
            key = bound_args(node.target, node.args, dict(node.kwargs))["backend"]
            backend_tap = tap(get_backend(key))
            if not any(backend_tap is known for known in taps):  # lists compare by value
                taps.append(backend_tap)
    return taps


@contextlib.contextmanager
def listening(taps: Sequence[RecordTap], listener: RecordListener) -> Iterator[None]:
    """``listener`` hears every record appended to ``taps`` within the block."""
    for record_tap in taps:
        record_tap.listeners.append(listener)
    try:
        yield
    finally:
        for record_tap in taps:
            record_tap.listeners.remove(listener)
