"""The Aer backend's chunk work and its fan-out over an executor (``backends/aer.py``).

``AerBackend`` (options, QAAP/QRCE row preparation, seeds, records) lives in ``aer.py``;
this module holds what runs one chunk of an op call, in this process or on an executor's
worker, and what ships chunks to an executor and collects them.

Why qgraph fans out its own chunks
----------------------------------
qiskit-aer documents ``executor`` and ``max_job_size`` options (``AerSimulator`` docstring in
``qiskit_aer/backends/aer_simulator.py``: "executor", "a custom executor for asynchronous
running of simulation jobs", and "max_job_size", "run as a set of sub-jobs on the
executor"), but in the installed qiskit-aer (0.18) they do nothing, for any of the three
ways the backend calls Aer:

* ``AerBackend._run_circuits`` (``qiskit_aer/backends/aerbackend.py``) builds
  ``AerJob(self, job_id, self._execute_circuits_job, ...)`` without an executor, so
  ``AerJob.__init__`` (``qiskit_aer/jobs/aerjob.py``) takes ``utils.DEFAULT_EXECUTOR``, a
  module-level ``ThreadPoolExecutor(max_workers=1)`` (``qiskit_aer/jobs/utils.py``).
  ``AerBackend._get_executor``, which would read the option, is defined and never called,
  and ``max_job_size`` appears only in ``BACKEND_RUN_ARG_TYPES``
  (``qiskit_aer/backends/aer_compiler.py``), a type check: the circuit splitting of older
  releases (``AerJobSet``) is gone from ``qiskit_aer/jobs/``.
* (a) exact QAAP calls ``simulator.run(circuit, parameter_binds=[...])`` directly: that
  path; (b) ``SamplerV2._run_pubs`` (``qiskit_aer/primitives/sampler_v2.py``) and (c)
  ``EstimatorV2._run_pub`` (``estimator_v2.py``) end in the same ``self._backend.run(...)``
  with every parameter row of the pub bound into one experiment list.

Tried, not only read: an ``AerSimulator(executor=counting_executor, max_job_size=1)``
running 8 parameter rows through each of the three calls submits nothing to the executor
(``tests/test_fanout.py::test_aer_own_executor_option_distributes_nothing``).

How
---
``fan_out`` submits each chunk to ``executor.submit`` as ``chunk_task`` (module level, so
Dask and process pools pickle it by reference: a worker imports this module) with the
transpiled circuit, its rows and its seed; the task keeps one AerSimulator per
(method, noise, thread options) in its process (``worker_simulator``) and runs the same
chunk function (``qaap_chunk`` / ``qrce_chunk``) that the backend runs in its own process,
so a fanned-out call cannot drift from the in-process one. Dask tasks get a unique key each
(``pure=False``). Results come back in chunk order; executor failures (a dead worker, a
closed connection, a cancelled future, a broken pool) become ``TransientJobError``, and
Dask's re-runs of a dead worker's tasks are counted from the scheduler. Drawing the chunk
seeds, and putting the generator back when a call fails, is the backend's.

Nothing here imports dask or distributed: a Dask client cannot exist unless
``distributed`` is loaded, so its presence in ``sys.modules`` decides (``qgraph[dask]`` stays
optional).
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from qiskit_aer import AerSimulator  # a missing extra surfaces as ModuleNotFoundError
from qiskit_aer.noise import NoiseModel
from qiskit_aer.primitives import EstimatorV2, SamplerV2

from qgraph.backends.job_policy import TransientJobError
from qgraph.backends.qiskit_shared import fake_backend, z_features
from qgraph.backends.running_jobs import RunningJobs

__all__ = [
    "ChunkOutcome",
    "SimulatorSpec",
    "build_simulator",
    "check_executor",
    "chunk_task",
    "exact_estimator",
    "executor_kind",
    "fan_out",
    "qaap_chunk",
    "qrce_chunk",
]

#: AerSimulator options that travel with a fanned-out chunk (the rest are Aer's defaults)
THREAD_OPTIONS: tuple[str, ...] = (
    "max_parallel_threads",
    "max_parallel_experiments",
    "max_parallel_shots",
)


def build_simulator(method: str, noise: str | None) -> tuple[AerSimulator, Any, int]:
    """The simulator, the target templates are transpiled to, and the qubits available."""
    if noise is None:
        simulator = AerSimulator(method=method)
        return simulator, simulator, int(simulator.num_qubits)
    device = fake_backend(noise)
    simulator = AerSimulator(method=method, noise_model=NoiseModel.from_backend(device))
    # templates are transpiled to the device's target
    return simulator, device, min(int(device.num_qubits), int(simulator.num_qubits))


def exact_estimator(simulator: AerSimulator) -> EstimatorV2:
    """An EstimatorV2 on ``simulator`` that returns exact expectation values."""
    return EstimatorV2.from_backend(simulator, options={"default_precision": 0.0})


# ---------------------------------------------------------------------- one chunk's work
# The same functions run a chunk in the backend's process and on an executor's worker.


def _bits_to_ints(bits: np.ndarray) -> np.ndarray:
    """BitArray bytes (..., shots, n_bytes), big-endian → integer outcomes (..., shots)."""
    n_bytes = bits.shape[-1]
    out = np.zeros(bits.shape[:-1], dtype=np.int64)
    for byte in range(n_bytes):
        out = (out << 8) | bits[..., byte].astype(np.int64)
    return out


def _sample(
    simulator: AerSimulator,
    circuit: Any,
    params: tuple[Any, ...],
    values: np.ndarray,
    shots: int,
    seed: int,
) -> np.ndarray:
    """One SamplerV2 job: integer outcomes (N, shots) of register "meas"."""
    sampler = SamplerV2.from_backend(simulator, seed=seed, default_shots=shots)
    result = sampler.run([(circuit, {params: values})]).result()
    bits = result[0].data.meas.array  # (N, shots, n_bytes) uint8
    return _bits_to_ints(np.asarray(bits))


def qaap_chunk(
    simulator: AerSimulator,
    isa: Any,
    params: tuple[Any, ...],
    rows: np.ndarray,
    a: int,
    b: int,
    shots: int | None,
    seed: int | None,
) -> tuple[np.ndarray, int]:
    """P(index = j, feature = 0) (exact) or its counts, (N, 2^a), and the bytes received."""
    n_rows = rows.shape[0]
    if shots is None:
        probe = isa.copy()
        probe.save_probabilities()
        binds = [{p: rows[:, col] for col, p in enumerate(params)}]
        result = simulator.run(probe, parameter_binds=binds).result()
        probs = np.stack([np.asarray(result.data(i)["probabilities"]) for i in range(n_rows)])
        joint = probs.reshape(n_rows, 1 << a, 1 << b)[:, :, 0]
        # contiguous: a chunk's result may be pickled back from a worker
        return np.ascontiguousarray(joint), probs.nbytes
    assert seed is not None  # a sampled chunk always has one
    outcomes = _sample(simulator, isa, params, rows, shots, seed)
    received = outcomes.shape[0] * outcomes.shape[1] * ((a + b + 7) // 8)
    feature = outcomes & ((1 << b) - 1)
    index = outcomes >> b
    flat = np.arange(n_rows)[:, None] * (1 << a) + index
    counts = np.bincount(flat[feature == 0], minlength=n_rows << a).reshape(n_rows, -1)
    return counts.astype(np.float64), received


def qrce_chunk(
    simulator: AerSimulator,
    estimator: EstimatorV2 | None,
    isa: Any,
    params: tuple[Any, ...],
    rows: np.ndarray,
    q: int,
    shots: int | None,
    seed: int | None,
    observables: Sequence[Any],
) -> tuple[np.ndarray, int]:
    """Features (N, 2q) of N QRCE circuits, and the bytes received."""
    if shots is None:
        assert estimator is not None  # the exact mode always brings one
        pub = (isa, list(observables), {params: rows[:, None, :]})
        evs = np.asarray(estimator.run([pub]).result()[0].data.evs)  # (N, 2q)
        return evs, evs.nbytes
    assert seed is not None
    outcomes = _sample(simulator, isa, params, rows, shots, seed)  # (N, shots)
    bits = ((outcomes[:, :, None] >> np.arange(q)) & 1).astype(np.int8)
    received = outcomes.shape[0] * outcomes.shape[1] * ((q + 7) // 8)
    return z_features(bits, q), received


# ---------------------------------------------------------------------- on the workers


@dataclass(frozen=True)
class SimulatorSpec:
    """What a worker needs to build the caller's simulator (a NoiseModel is rebuilt there
    from the fake backend's name rather than pickled with every chunk)."""

    method: str
    noise: str | None
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, method: str, noise: str | None, simulator: AerSimulator) -> SimulatorSpec:
        """The spec of ``simulator``, with the thread options set on it."""
        options = tuple(
            (name, value)
            for name in THREAD_OPTIONS
            if (value := getattr(simulator.options, name, None)) is not None
        )
        return cls(method, noise, options)


class _ChunkResult(NamedTuple):
    """What a chunk sends back: its values, the bytes Aer returned, where it ran."""

    values: np.ndarray
    received: int
    worker: str | None  # the Dask worker's address, None elsewhere
    pid: int


#: per worker process: one simulator (and exact estimator) per spec, built on first use
_WORKER_SIMULATORS: dict[SimulatorSpec, tuple[AerSimulator, EstimatorV2]] = {}
_WORKER_LOCK = threading.Lock()


def worker_simulator(spec: SimulatorSpec) -> tuple[AerSimulator, EstimatorV2]:
    """This process's simulator and exact estimator for ``spec``."""
    with _WORKER_LOCK:
        kept = _WORKER_SIMULATORS.get(spec)
        if kept is None:
            simulator = build_simulator(spec.method, spec.noise)[0]
            if spec.options:
                simulator.set_options(**dict(spec.options))
            kept = (simulator, exact_estimator(simulator))
            _WORKER_SIMULATORS[spec] = kept
        return kept


def _dask_worker_address() -> str | None:
    """The address of the Dask worker running this task; None outside one. Never imports
    distributed: a process that has not imported it is no Dask worker."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    try:
        return str(distributed.get_worker().address)
    except ValueError:  # distributed is loaded, but this is not a worker's task
        return None


def chunk_task(
    spec: SimulatorSpec,
    kind: str,
    isa: Any,
    params: tuple[Any, ...],
    rows: np.ndarray,
    shots: int | None,
    seed: int | None,
    extra: tuple[Any, ...],
) -> _ChunkResult:
    """One chunk of an op call, run on an executor's worker.

    ``kind`` "qaap": ``extra`` = (a, b); "qrce": ``extra`` = (q, observables)."""
    simulator, estimator = worker_simulator(spec)
    if kind == "qaap":
        a, b = extra
        values, received = qaap_chunk(simulator, isa, params, rows, a, b, shots, seed)
    else:
        q, observables = extra
        values, received = qrce_chunk(
            simulator, estimator, isa, params, rows, q, shots, seed, observables
        )
    return _ChunkResult(values, received, _dask_worker_address(), os.getpid())


def _scheduler_suspicious(dask_scheduler: Any, keys: list[str]) -> dict[str, int]:
    """On the scheduler: how often each task's worker died while running it."""
    counts: dict[str, int] = {}
    for key in keys:
        task = dask_scheduler.tasks.get(key)
        counts[key] = int(getattr(task, "suspicious", 0)) if task is not None else 0
    return counts


# ---------------------------------------------------------------------- executors


def _is_dask_client(executor: Any) -> bool:
    """Whether ``executor`` is a ``dask.distributed.Client`` (without importing dask: one
    cannot exist unless distributed is loaded)."""
    distributed = sys.modules.get("distributed")
    return distributed is not None and isinstance(executor, distributed.Client)


def executor_kind(executor: Any) -> str:
    """A name for the executor's kind (never its address: it goes in reprs and logs)."""
    if _is_dask_client(executor):
        return "dask.distributed.Client"
    return type(executor).__name__


def check_executor(executor: Any) -> None:
    """Raise ValueError unless ``executor`` is None or has ``submit(fn, *args)``."""
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise ValueError(
            f"AerBackend(executor=...) takes a dask.distributed.Client or a "
            f"concurrent.futures.Executor (an object with submit(fn, *args)); got "
            f"{type(executor).__name__}. Pass executor=None to run every chunk in this process."
        )


def _transient_executor_error(error: BaseException) -> bool:
    """Whether a chunk's failure is the executor's (a worker died, a connection closed, the
    pool broke or the future was cancelled), which running the call again can fix."""
    if isinstance(error, (concurrent.futures.BrokenExecutor, concurrent.futures.CancelledError)):
        return True
    if "distributed" not in sys.modules:
        return False
    from distributed import KilledWorker
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError

    return isinstance(error, (KilledWorker, CommClosedError, FutureCancelledError))


def _dask_retries(client: Any, keys: list[str]) -> list[int]:
    """Per task, how often Dask ran it again because its worker died (0 where the
    scheduler does not say: it is bookkeeping, never a reason to fail the call)."""
    try:
        counts = client.run_on_scheduler(_scheduler_suspicious, keys=keys)
    except Exception:
        return [0] * len(keys)
    return [int(counts.get(key, 0)) for key in keys]


# ---------------------------------------------------------------------- the fan-out


class ChunkOutcome(NamedTuple):
    """One chunk of a fanned-out call, as the backend records it."""

    values: np.ndarray
    received: int  # bytes Aer returned
    device: str | None  # the Dask worker's address, "pid <n>" of another process, or None
    wall_s: float  # from the first submission until this chunk was done
    retries: int  # how often Dask ran it again after its worker died


def fan_out(
    executor: Any,
    running: RunningJobs,
    spec: SimulatorSpec,
    kernel: str,
    site: str,
    kind: str,
    isa: Any,
    params: tuple[Any, ...],
    values: np.ndarray,
    chunks: Sequence[slice],
    seeds: Sequence[int | None],
    shots: int | None,
    extra: tuple[Any, ...],
) -> list[ChunkOutcome]:
    """Run ``chunk_task`` on ``executor`` for each chunk of ``values`` (with its seed); the
    outcomes in chunk order.

    On failure every future of the call is cancelled and executor failures become
    TransientJobError (the job policy retries the call); other errors keep their type."""
    dask = _is_dask_client(executor)
    call_id = uuid.uuid4().hex[:12]
    keys = [f"qgraph-aer-{kernel}-{call_id}-{i}" for i in range(len(chunks))]
    done_at: dict[int, float] = {}
    futures: list[Any] = []
    results: list[_ChunkResult] = []
    submitted = time.perf_counter()
    try:
        for i, (chunk, seed) in enumerate(zip(chunks, seeds, strict=True)):
            args = (spec, kind, isa, params, values[chunk], shots, seed, extra)
            if dask:  # a unique key: identical chunks of two calls must both run
                future = executor.submit(chunk_task, *args, key=keys[i], pure=False)
            else:
                future = executor.submit(chunk_task, *args)
            future.add_done_callback(lambda _, i=i: done_at.setdefault(i, time.perf_counter()))
            futures.append(future)
            running.track(site, future)
        for future in futures:
            results.append(future.result())
        retries = _dask_retries(executor, keys) if dask else [0] * len(chunks)
    except BaseException as exc:
        for future in futures:
            future.cancel()
        if isinstance(exc, Exception) and _transient_executor_error(exc):
            # the chunk being collected, or being submitted
            failed = len(results) if len(futures) == len(chunks) else len(futures)
            where = f" (chunk {failed + 1} of {len(chunks)})"
            raise TransientJobError(
                f"backend 'aer': the {kernel} call of site {site!r} failed on its "
                f"executor ({executor_kind(executor)}){where}: {type(exc).__name__}: "
                f"{exc}. The job policy retries the call; check the cluster's workers if "
                "it keeps failing."
            ) from exc
        raise
    finally:
        running.untrack(site, futures)
    now = time.perf_counter()
    me = os.getpid()
    return [
        ChunkOutcome(
            values=result.values,
            received=result.received,
            device=result.worker or (None if result.pid == me else f"pid {result.pid}"),
            wall_s=done_at.get(i, now) - submitted,
            retries=retries[i],
        )
        for i, result in enumerate(results)
    ]
