"""The one protocol every quantum backend implements.

A backend executes the two kernels for a batch of instances (every batch × head × query of
one QAAP op call, every unique token of one QRCE op call) and, for QRCE, the gradient by a
named method. Lowering binds each quantum op of a rewritten graph to a backend by its
registry key (``qgraph.backends.register``); the op implementations look it up at run time,
so graphs stay plain torch.fx with string attributes. Shipped backends implement only
row-level methods and inherit this protocol from ``backends/frontend.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, SupportsIndex, runtime_checkable

import torch

if TYPE_CHECKING:
    from qgraph.kernels.qrce import QRCEStructure

#: every gradient method qgraph knows, and the kernels each applies to
GRADIENT_METHODS: dict[str, tuple[str, ...]] = {
    "autograd": ("qaap", "qrce"),  # exact backends: differentiate the closed form / statevector
    "parameter-shift": ("qrce",),  # exact for rotation gates: (f(θ+π/2) − f(θ−π/2)) / 2
    "straight-through": ("qaap",),  # forward from samples, backward through the closed form
    "spsa": ("qaap",),  # simultaneous-perturbation estimate from two extra sampled forwards
}


def default_gradient_method(kernel: str, exact: bool) -> str:
    """Autograd where amplitudes are exact; otherwise straight-through for QAAP (DESIGN.md's
    first option: it costs no circuits) and parameter shift for QRCE (exact for its gates)."""
    if exact:
        return "autograd"
    return "straight-through" if kernel == "qaap" else "parameter-shift"


def gradient_method_error(method: str, kernel: str) -> str | None:
    """Why ``method`` cannot differentiate ``kernel``, or None when it can (the one check
    that ``compile(gradient=...)`` and the cost model share)."""
    if method not in GRADIENT_METHODS:
        return (
            f"unknown gradient method {method!r}; use 'auto' or one of "
            f"{list(GRADIENT_METHODS)} (or a dict per kernel, e.g. {{'qaap': 'spsa'}})."
        )
    if kernel not in GRADIENT_METHODS[method]:
        valid = [m for m, kernels in GRADIENT_METHODS.items() if kernel in kernels]
        applies = ", ".join(k.upper() for k in GRADIENT_METHODS[method])
        return (
            f"gradient {method!r} does not apply to {kernel} (it applies to {applies}); "
            f"{kernel} takes one of {valid}."
        )
    return None


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do. ``compile`` checks gradient requests against
    ``gradient_methods`` (straight-through, the closed-form backward, is always available);
    backends enforce their own qubit and job-size limits when they run."""

    exact: bool  # results are exact expectation values / probabilities, not samples
    max_qubits: int | None  # None: limited only by memory
    max_circuits_per_job: int | None  # None: no limit; otherwise calls are chunked
    gradient_methods: tuple[str, ...]  # subset of GRADIENT_METHODS
    needs_transpilation: bool  # runs gate-level circuits transpiled for a target

    @property
    def differentiable(self) -> bool:
        """Whether plain autograd through the forward gives exact gradients."""
        return "autograd" in self.gradient_methods


@dataclass
class ExecutionRecord:
    """One job (or one batched evaluation) a backend ran."""

    kernel: str  # "qaap" (SPSA's perturbed pair included), "qrce", "qrce-gradient"
    site: str
    circuits: int  # circuit instances (parameter sets) in the job
    shots: int  # total shots over all circuits (0 on exact backends)
    wall_s: float  # wall time of the job as seen by the caller
    queue_s: float | None = None  # time queued before running, where the provider says
    bytes_received: int = 0  # size of the results that came back
    raw_bytes: int = 0  # one bitstring per shot (codec.raw_shot_bytes); 0: not computed
    # "done"; for an attempt that failed (backends/job_policy.py): "retried" (run again) or
    # "failed" (given up); "fallback": the policy's fallback computed the call instead
    outcome: str = "done"
    timed_out: bool = False  # the attempt outlived the policy's timeout_s
    # where the job ran when a backend spreads one call over several: a QPU's name, a Dask
    # worker's address; None: the backend's one device
    device: str | None = None


@dataclass
class KernelCounters:
    """Running totals a backend keeps per site (the op's ``site`` label)."""

    calls: int = 0
    instances: int = 0  # QAAP: batch × head × query rows; QRCE: unique tokens simulated
    settled_fallback_rows: int = 0  # read ``fallback_rows``: the pending counts are added
    settled_empty_rows: int = 0  # read ``empty_rows``
    retries: int = 0  # jobs run again after a transient failure (backends/job_policy.py)
    timeouts: int = 0  # jobs that took longer than the policy's timeout
    fallbacks: int = 0  # jobs computed exactly after they kept failing (fallback="exact")
    # results transferred, summed over the site's job records (``run_job`` adds them): the
    # bytes that came back, and one bitstring per shot where the backend computed it (0: not)
    bytes_received: int = 0
    raw_bytes: int = 0
    # (fallback, empty) row counts as tensors on the computing device, summed lazily: turning
    # them into ints on every call would make the host wait for the device each time
    pending_rows: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def add_qaap_rows(self, fallback: torch.Tensor, empty: torch.Tensor) -> None:
        """Count one call's fallback and empty QAAP rows (bool tensors) without a sync."""
        if fallback.device.type == "cpu":  # nothing to wait for: count at once
            self.settled_fallback_rows += int(fallback.sum())
            self.settled_empty_rows += int(empty.sum())
            return
        counts = torch.stack([fallback.sum(), empty.sum()])
        self.pending_rows = counts if self.pending_rows is None else self.pending_rows + counts

    def _settle(self) -> None:
        if self.pending_rows is not None:
            fallback, empty = self.pending_rows.tolist()
            self.settled_fallback_rows += int(fallback)
            self.settled_empty_rows += int(empty)
            self.pending_rows = None

    @property
    def fallback_rows(self) -> int:
        """QAAP rows that fell back to uniform weights (their post-selection never succeeds)."""
        self._settle()
        return self.settled_fallback_rows

    @property
    def empty_rows(self) -> int:
        """QAAP rows with no unmasked key (output 0)."""
        self._settle()
        return self.settled_empty_rows


#: records a backend's job log keeps; older ones drop off (``JobLog.total`` still counts them)
RECORD_LIMIT = 10_000

RecordListener = Callable[[ExecutionRecord], None]


class JobLog(list):  # type: ignore[type-arg]
    """A backend's ``stats.records``: the most recent ``limit`` records, oldest first.

    ``total`` counts every record ever appended, so ``total`` before a call and
    ``since(total)`` after it give the call's records, even once older ones have dropped off
    (index arithmetic on the list does not survive that). ``listeners`` are called with each
    new record, in the appending thread (the scheduler attributes records to jobs so).
    """

    def __init__(self, records: Iterable[ExecutionRecord] = (), limit: int = RECORD_LIMIT) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"JobLog: limit must be an integer ≥ 1; got {limit!r}.")
        super().__init__()
        self.limit = limit
        self.total = 0
        self.listeners: list[RecordListener] = []
        self._lock = threading.Lock()
        self.extend(records)

    def append(self, record: ExecutionRecord) -> None:
        with self._lock:
            super().append(record)
            self.total += 1
            if len(self) > self.limit:
                del self[: len(self) - self.limit]
        for listener in list(self.listeners):  # a copy: a listener may be removed meanwhile
            listener(record)

    def extend(self, records: Iterable[ExecutionRecord]) -> None:
        for record in list(records):  # a copy: ``records`` may be this log
            self.append(record)

    def __iadd__(self, records: Iterable[ExecutionRecord]) -> JobLog:  # type: ignore[override,misc]
        self.extend(records)
        return self

    def insert(self, index: SupportsIndex, record: ExecutionRecord) -> None:
        raise TypeError("JobLog is append-only: records arrive in order (use append).")

    def read_since(self, total_before: int) -> tuple[list[ExecutionRecord], int]:
        """The records appended after ``total`` was ``total_before`` that are still held,
        and ``total`` now (read together, for a cursor that other threads append past)."""
        with self._lock:
            new = min(self.total - total_before, len(self))
            return (list(self[len(self) - new :]) if new > 0 else []), self.total

    def since(self, total_before: int) -> list[ExecutionRecord]:
        """The records appended after ``total`` was ``total_before`` that are still held."""
        return self.read_since(total_before)[0]

    def __reduce__(self) -> tuple[Any, ...]:
        # copy and pickle the records, limit and total (not the lock, nor the listeners)
        return _restore_log, (list(self), self.limit, self.total)


def _restore_log(records: list[ExecutionRecord], limit: int, total: int) -> JobLog:
    log = JobLog(records, limit)
    log.total = total
    return log


@dataclass
class BackendStats:
    """Counters per site label and a bounded log of jobs (``JobLog``), for the report, the
    scheduler and tests."""

    per_site: dict[str, KernelCounters] = field(default_factory=dict)
    records: JobLog = field(default_factory=JobLog)

    def __post_init__(self) -> None:
        if not isinstance(self.records, JobLog):
            self.records = JobLog(self.records)

    def site(self, label: str) -> KernelCounters:
        """The counters of one site, created on first use."""
        return self.per_site.setdefault(label, KernelCounters())

    @property
    def jobs(self) -> int:
        """Jobs run so far (all of them: ``records`` keeps only the most recent)."""
        records = self.records
        return records.total if isinstance(records, JobLog) else len(records)


def job_log(backend: Backend) -> JobLog:
    """``backend.stats.records`` as a ``JobLog``: a plain list a backend assigned there is
    replaced by a log holding its records (the ones kept count as all jobs so far)."""
    records = backend.stats.records
    if not isinstance(records, JobLog):
        records = JobLog(records)
        backend.stats.records = records
    return records


@runtime_checkable
class Backend(Protocol):
    """Runs QAAP and QRCE instances; ``backends/exact.py`` is the reference one."""

    name: str
    capabilities: Capabilities
    stats: BackendStats

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
        """QAAP pooling with SDPA's calling convention; returns (B, H, Sq, Dv) in q's dtype.

        ``form`` ("auto", "quadratic", "linear") picks how an exact backend computes the
        closed form (``qgraph.costmodel.qaap_form``); backends that run circuits ignore it.

        All B × H × Sq instances of the call go out as one job (chunked to
        ``max_circuits_per_job``); sampled backends post-select feature = 0 and fall back to
        uniform weights over unmasked keys for rows with no success (counted).
        """
        ...

    def qrce(
        self,
        token_ids: torch.Tensor,
        angle_table: torch.Tensor,
        weights: torch.Tensor,
        structure: QRCEStructure,
        site: str,
    ) -> torch.Tensor:
        """QRCE read-out features (*token_ids.shape, 2q), each unique token run once."""
        ...

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
        """Vector-Jacobian product of ``qrce`` by ``method``: (grad of table, grad of weights).

        ``grad_out`` has the shape of the features. For "parameter-shift", all shifted
        circuits of the call go out in one job.
        """
        ...
