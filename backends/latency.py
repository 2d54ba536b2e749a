"""A wrapper that injects a fixed per-job latency in front of any backend (tests, benchmarks).

``LatencyBackend(inner, latency_s)`` behaves like ``inner`` (same results, capabilities and
per-site counters) but every job, i.e. every call of ``qaap``, ``qrce`` or
``qrce_gradient``, first waits ``latency_s`` seconds, as a job on a remote QPU waits for the
network and the queue. The waits of concurrent jobs overlap (the scheduler keeps several
jobs in flight); the inner backend then runs one job at a time (``exclusive=True``, the
default), as a single device does, which also keeps the inner backend's random streams and
job records consistent under concurrency. With ``exclusive=False`` jobs also run
concurrently; totals stay exact but an inner record may be credited to a neighbouring job.

Every job leaves an ``ExecutionRecord`` in this wrapper's ``stats.records``: the inner
backend's records of the job, with the wait (latency plus time spent waiting for the device)
added to ``queue_s`` and ``wall_s`` of the job's first record; or, for backends that keep no
records (the exact backend), one record with ``shots=0``, ``bytes_received=0`` and
``circuits`` the instances evaluated (QAAP: B·H·Sq rows; QRCE and its gradient: unique tokens).
``calls`` counts the calls per method.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from qgraph.backends import get_backend
from qgraph.backends.base import Backend, BackendStats, Capabilities, ExecutionRecord, job_log

if TYPE_CHECKING:
    from qgraph.kernels.qrce import QRCEStructure

_T = TypeVar("_T")


def _check_latency(latency_s: object) -> float:
    if (
        isinstance(latency_s, bool)
        or not isinstance(latency_s, (int, float))
        or not math.isfinite(latency_s)
        or latency_s < 0
    ):
        raise ValueError(
            f"LatencyBackend: latency_s is the wait per job in seconds and must be a finite "
            f"number ≥ 0; got {latency_s!r}."
        )
    return float(latency_s)


class LatencyBackend:
    """``inner`` with ``latency_s`` seconds of injected latency per job."""

    def __init__(self, inner: Backend | str, latency_s: float, *, exclusive: bool = True) -> None:
        self.latency_s = _check_latency(latency_s)
        if isinstance(inner, str):
            inner = get_backend(inner)
        if not isinstance(inner, Backend):
            raise ValueError(
                f"LatencyBackend wraps a qgraph backend (or a registry name such as 'exact'); "
                f"got {type(inner).__name__}."
            )
        self.inner: Backend = inner
        self.name = f"{inner.name}+latency"
        self.exclusive = bool(exclusive)
        # Counters are the inner backend's (same object); job records are this wrapper's.
        self.stats = BackendStats(per_site=inner.stats.per_site)
        self.calls: Counter[str] = Counter()
        self._device = threading.Lock()
        self._log = threading.Lock()
        # inner records already taken (exclusive=False), as the inner log's running total
        self._cursor = job_log(inner).total

    @property
    def capabilities(self) -> Capabilities:
        """The inner backend's capabilities (latency changes no capability)."""
        return self.inner.capabilities

    def __getattr__(self, name: str) -> Any:
        # Options of the inner backend (shots, seed, reseed(), ...) read through the wrapper.
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    # ------------------------------------------------------------------ the job

    def _job(
        self, kernel: str, site: str, circuits: Callable[[], int], run: Callable[[], _T]
    ) -> _T:
        submitted = time.perf_counter()
        with self._log:
            self.calls[kernel] += 1
        if self.latency_s > 0:
            time.sleep(self.latency_s)
        if self.exclusive:
            with self._device:
                started = time.perf_counter()
                records = job_log(self.inner)
                first = records.total
                result = run()
                own = records.since(first)
                ended = time.perf_counter()
        else:
            started = time.perf_counter()
            result = run()
            ended = time.perf_counter()
            with self._log:  # whatever the inner backend logged since the last job ended
                own, self._cursor = job_log(self.inner).read_since(self._cursor)
        waited = started - submitted
        if own:
            head = own[0]
            own[0] = dataclasses.replace(
                head,
                queue_s=(head.queue_s or 0.0) + waited,
                wall_s=head.wall_s + waited,
            )
            for record in own:
                self.stats.records.append(record)
        else:
            self.stats.records.append(
                ExecutionRecord(
                    kernel=kernel,
                    site=site,
                    circuits=circuits(),
                    shots=0,
                    wall_s=ended - submitted,
                    queue_s=waited,
                    bytes_received=0,
                )
            )
        return result

    # ------------------------------------------------------------------ the protocol

    def qaap(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attn_mask: torch.Tensor | None,
        is_causal: bool,
        dropout_keep: torch.Tensor | None,
        dropout_p: float,
        site: str,
        form: str = "auto",
    ) -> torch.Tensor:
        """The inner backend's QAAP after ``latency_s``."""
        return self._job(
            "qaap",
            site,
            lambda: int(q.shape[:-1].numel()),
            lambda: self.inner.qaap(
                q, k, v, attn_mask, is_causal, dropout_keep, dropout_p, site, form=form
            ),
        )

    def qrce(
        self,
        token_ids: torch.Tensor,
        angle_table: torch.Tensor,
        weights: torch.Tensor,
        structure: QRCEStructure,
        site: str,
    ) -> torch.Tensor:
        """The inner backend's QRCE after ``latency_s``."""
        return self._job(
            "qrce",
            site,
            lambda: int(torch.unique(token_ids).numel()),
            lambda: self.inner.qrce(token_ids, angle_table, weights, structure, site),
        )

    def qrce_gradient(
        self,
        grad_out: torch.Tensor,
        token_ids: torch.Tensor,
        angle_table: torch.Tensor,
        weights: torch.Tensor,
        structure: QRCEStructure,
        method: str,
        site: str,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The inner backend's QRCE gradient after ``latency_s``."""
        return self._job(
            "qrce-gradient",
            site,
            lambda: int(torch.unique(token_ids).numel()),
            lambda: self.inner.qrce_gradient(
                grad_out, token_ids, angle_table, weights, structure, method, site
            ),
        )

    def __repr__(self) -> str:
        return f"LatencyBackend({self.inner!r}, latency_s={self.latency_s})"
