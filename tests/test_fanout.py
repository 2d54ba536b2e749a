"""Quantum fan-out: one op call's chunks on a Dask LocalCluster or a concurrent.futures
executor give exactly the single-process numbers, survive a killed worker, and say where
they ran (backends/aer.py, issue 14 item 2)."""

from __future__ import annotations

import concurrent.futures
import functools
import importlib
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("qiskit_aer")
pytest.importorskip("distributed")
pytest.importorskip("psutil")

import distributed
import psutil
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp
from qiskit_aer import AerSimulator
from qiskit_aer.primitives import EstimatorV2, SamplerV2

from qgraph.backends.aer import AerBackend
from qgraph.backends.job_policy import JobFailedError, JobPolicy
from qgraph.kernels.qrce import QRCEStructure

# the cluster tests share one LocalCluster; under `pytest --dist loadgroup` they share a process
pytestmark = pytest.mark.xdist_group("dask-cluster")

F64 = torch.float64
JOB_SIZE = 4  # circuits per chunk: every call below splits into several chunks
NO_WAIT = JobPolicy(retries=2, backoff_s=0.0)
STRUCTURE = QRCEStructure.from_seed(3, 2, seed=5)


def _qaap_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """16 query rows (2 heads × 8 queries) over 4 keys of width 4: 4 qubits a circuit."""
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(1, 2, 8, 4, generator=gen, dtype=F64)
    k = torch.randn(1, 2, 4, 4, generator=gen, dtype=F64)
    v = torch.randn(1, 2, 4, 3, generator=gen, dtype=F64)
    return q, k, v


def _qrce_inputs(tokens: int = 12) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    table = torch.randn(tokens, 3, generator=gen, dtype=F64)
    weights = torch.randn(2, 3, generator=gen, dtype=F64)
    return torch.arange(tokens), table, weights


def _run_all(backend: AerBackend) -> list[torch.Tensor]:
    """A QAAP call (16 circuits), a QRCE call (12) and a parameter-shift QRCE gradient of
    one token (12): each goes out in several chunks of JOB_SIZE."""
    q, k, v = _qaap_inputs()
    ids, table, weights = _qrce_inputs()
    backend.job_policy = NO_WAIT
    out = [backend.qaap(q, k, v, None, False, None, 0.0, site="att")]
    out.append(backend.qrce(ids, table, weights, STRUCTURE, site="emb"))
    one = ids[:1]
    grad = torch.ones(1, STRUCTURE.n_features, dtype=F64)
    out.extend(
        backend.qrce_gradient(grad, one, table, weights, STRUCTURE, "parameter-shift", "emb")
    )
    return out


@functools.cache
def _reference(shots: int | None) -> tuple[list[torch.Tensor], AerBackend]:
    """The single-process run (executor=None) with the same chunking; computed once."""
    backend = AerBackend(shots=shots, seed=11, max_job_size=JOB_SIZE)
    return _run_all(backend), backend


def _assert_same(got: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b), (a - b).abs().max()


def _done(backend: AerBackend) -> list[Any]:
    return [r for r in backend.stats.records if r.outcome == "done"]


# ---------------------------------------------------------------------- the cluster


def _descendants() -> set[int]:
    return {child.pid for child in psutil.Process().children(recursive=True)}


def _is_resource_tracker(process: Any) -> bool:
    try:
        return "resource_tracker" in " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A LocalCluster of 2 single-thread worker processes; on close, none of its processes
    may remain."""
    before = _descendants()
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        # no dashboard, but the scheduler still serves /health on a port: any free one, so
        # that clusters of parallel test processes do not race for 8787
        scheduler_kwargs={"dashboard_address": ":0"},
    )
    dask_client = distributed.Client(cluster)
    started = _descendants() - before
    try:
        # the task function's module (torch, qiskit) loads once per worker, before any timing
        dask_client.run(importlib.import_module, "qgraph.backends.aer")
        yield dask_client
    finally:
        dask_client.close()
        cluster.close()
    # its worker processes, including any a nanny restarted; multiprocessing's resource
    # tracker (one per parent process, not the cluster's) lives as long as this process
    assert started, "the LocalCluster started no worker processes"
    spawned = [
        process
        for process in psutil.Process().children(recursive=True)
        if process.pid not in before and not _is_resource_tracker(process)
    ]
    _, leftover = psutil.wait_procs(spawned, timeout=10)
    assert not leftover, f"the LocalCluster left processes behind: {leftover}"


@pytest.mark.parametrize("shots", [None, 64], ids=["exact", "shots"])
def test_dask_chunks_equal_the_single_process_run_and_use_both_workers(
    client: Any, shots: int | None
) -> None:
    expected, reference = _reference(shots)
    backend = AerBackend(shots=shots, seed=11, max_job_size=JOB_SIZE, executor=client)
    with distributed.get_task_stream(client) as stream:
        got = _run_all(backend)
    _assert_same(got, expected)  # exact: bit for bit; shots: the same counts
    assert all(r.outcome == "done" for r in backend.stats.records)  # nothing was retried

    # one record per chunk, as the single-process run has, with the same circuits and bytes
    mine, theirs = _done(backend), _done(reference)
    assert [(r.kernel, r.site, r.circuits, r.shots, r.bytes_received) for r in mine] == [
        (r.kernel, r.site, r.circuits, r.shots, r.bytes_received) for r in theirs
    ]
    assert len(mine) >= 3 * 2  # every kernel went out in several chunks

    # Dask's own account: our tasks ran on both workers, and the records say which
    ran_on = {
        task["key"]: task["worker"]
        for task in stream.data
        if str(task["key"]).startswith("qgraph-aer-")
    }
    assert len(ran_on) == len(mine)
    assert set(ran_on.values()) == set(client.scheduler_info()["workers"])
    assert len(set(ran_on.values())) == 2
    assert sorted(r.device for r in mine) == sorted(ran_on.values())
    assert all(r.device is None for r in theirs)

    text = repr(backend)
    assert "executor='dask.distributed.Client'" in text and "max_job_size=4" in text
    assert "tcp://" not in text and client.scheduler.address not in text


def test_a_worker_killed_mid_job_is_survived_by_a_retry(client: Any, tmp_path: Path) -> None:
    expected, _ = _reference(shots=64)
    marker = tmp_path / "killed"

    class KillFirstChunk(distributed.WorkerPlugin):
        """Kills its worker's process the first time one of our chunks starts executing
        (defined here, so that Dask ships it by value)."""

        name = "qgraph-test-kill-first-chunk"

        def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
            if finish == "executing" and str(key).startswith("qgraph-aer-"):
                try:
                    marker.touch(exist_ok=False)  # only the first chunk, on any worker
                except FileExistsError:
                    return
                os._exit(1)

    client.register_plugin(KillFirstChunk())
    try:
        backend = AerBackend(shots=64, seed=11, max_job_size=JOB_SIZE, executor=client)
        got = _run_all(backend)
    finally:
        client.unregister_worker_plugin(KillFirstChunk.name)
    assert marker.exists(), "no worker was killed: the test did not test anything"
    _assert_same(got, expected)
    # Dask ran the killed chunk again on a live worker; the backend logged and counted it
    # (every chunk the dead worker held counts once: the one it ran, and any queued behind)
    retried = [r for r in backend.stats.records if r.outcome == "retried"]
    assert retried and all(r.kernel == "qaap" and r.site == "att" for r in retried)
    assert backend.stats.site("att").retries == len(retried)
    assert all(r.device and r.device.startswith("tcp://") for r in _done(backend))


# ---------------------------------------------------------------------- other executors


def test_a_thread_pool_gives_the_single_process_numbers() -> None:
    for shots in (None, 64):
        expected, reference = _reference(shots)
        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
            backend = AerBackend(shots=shots, seed=11, max_job_size=JOB_SIZE, executor=pool)
            got = _run_all(backend)
        _assert_same(got, expected)
        assert len(_done(backend)) == len(_done(reference))
        assert all(r.device is None for r in _done(backend))  # this process
        assert "executor='ThreadPoolExecutor'" in repr(backend)


class _BreaksOnce(concurrent.futures.ThreadPoolExecutor):
    """A pool whose first ``breaks`` submissions fail as a dead process pool's do."""

    def __init__(self, breaks: int) -> None:
        super().__init__(max_workers=2)
        self.breaks = breaks

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        if self.breaks > 0:
            self.breaks -= 1
            broken: concurrent.futures.Future[Any] = concurrent.futures.Future()
            broken.set_exception(concurrent.futures.process.BrokenProcessPool("a worker died"))
            return broken
        return super().submit(fn, *args, **kwargs)


def test_a_broken_pool_is_transient_and_the_retry_draws_the_same_seeds() -> None:
    expected, _ = _reference(shots=64)
    with _BreaksOnce(breaks=1) as pool:
        backend = AerBackend(shots=64, seed=11, max_job_size=JOB_SIZE, executor=pool)
        got = _run_all(backend)
    # the job policy ran the call again; its seeds were put back, so nothing changed
    _assert_same(got, expected)
    assert backend.stats.site("att").retries == 1
    assert backend.stats.records[0].outcome == "retried"

    with _BreaksOnce(breaks=10) as pool:
        backend = AerBackend(shots=64, seed=11, max_job_size=JOB_SIZE, executor=pool)
        backend.job_policy = JobPolicy(retries=1, backoff_s=0.0)
        q, k, v = _qaap_inputs()
        with pytest.raises(JobFailedError, match="failed transiently 2 times") as info:
            backend.qaap(q, k, v, None, False, None, 0.0, site="att")
    message = str(info.value)
    assert "executor (_BreaksOnce) (chunk 1 of 4)" in message and "BrokenProcessPool" in message


def test_a_failing_chunk_keeps_its_error() -> None:
    """An error of the simulation itself is no executor failure: not retried, same type."""

    class Failing(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            future.set_exception(ValueError("bad circuit"))
            return future

    with Failing() as pool:
        backend = AerBackend(shots=64, max_job_size=JOB_SIZE, executor=pool)
        ids, table, weights = _qrce_inputs()
        with pytest.raises(ValueError, match="bad circuit"):
            backend.qrce(ids, table, weights, STRUCTURE, site="emb")
    assert backend.stats.site("emb").retries == 0


# ---------------------------------------------------------------------- inputs, pickling


def test_bad_executor_and_job_size_name_the_fix() -> None:
    with pytest.raises(ValueError, match=r"dask.distributed.Client or a concurrent.futures"):
        AerBackend(executor=object())
    with pytest.raises(ValueError, match="executor=None to run every chunk in this process"):
        AerBackend(executor="tcp://127.0.0.1:8786")
    for bad in (0, -3, 2.5, True, "8"):
        with pytest.raises(ValueError, match=r"max_job_size must be a positive int .* or None"):
            AerBackend(max_job_size=bad)  # type: ignore[arg-type]
    backend = AerBackend()
    with pytest.raises(ValueError, match=r"takes a dask\.distributed\.Client"):
        backend.executor = 42
    # chunks are at most max_circuits_per_job, whatever max_job_size says
    assert AerBackend(max_circuits_per_job=3, max_job_size=8).capabilities.max_circuits_per_job == 3
    assert repr(AerBackend()).endswith("max_circuits_per_job=4096)")  # unchanged without one


def test_a_pickled_backend_drops_its_executor_and_says_so() -> None:
    expected, _ = _reference(shots=64)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        backend = AerBackend(shots=64, seed=11, max_job_size=JOB_SIZE, executor=pool)
        copy = pickle.loads(pickle.dumps(backend))
        assert backend.executor is pool  # the original keeps it
    assert copy.executor is None
    ids, table, weights = _qrce_inputs()
    with pytest.raises(RuntimeError, match=r"pickled with an executor \(ThreadPoolExecutor\)"):
        copy.qrce(ids, table, weights, STRUCTURE, site="emb")
    copy.executor = None  # run here from now on: the same numbers
    copy.job_policy = NO_WAIT
    got = _run_all(copy)
    _assert_same(got, expected)


# ---------------------------------------------------------------------- Aer's own options


def test_aer_own_executor_option_distributes_nothing() -> None:
    """Why the backend fans out its own chunks: qiskit-aer (0.18) accepts ``executor`` and
    ``max_job_size`` and never submits to the executor, for any call the backend makes. If
    this fails, Aer honours them again: revisit the fan-out path (backends/aer_fanout.py)."""

    class Counting(concurrent.futures.ThreadPoolExecutor):
        submitted = 0

        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            Counting.submitted += 1
            return super().submit(fn, *args, **kwargs)

    theta = Parameter("t")
    circuit = QuantumCircuit(2)
    circuit.ry(theta, 0)
    circuit.cx(0, 1)
    rows = np.linspace(0.0, 1.0, 8)
    with Counting(max_workers=2) as pool:
        simulator = AerSimulator(executor=pool, max_job_size=1)
        probe = circuit.copy()
        probe.save_probabilities()
        result = simulator.run(probe, parameter_binds=[{theta: rows}]).result()
        assert len(result.results) == 8  # (a) every row in one job
        measured = circuit.copy()
        measured.measure_all()
        SamplerV2.from_backend(simulator, seed=1, default_shots=8).run(
            [(measured, rows[:, None])]
        ).result()  # (b)
        EstimatorV2.from_backend(simulator).run(
            [(circuit, [SparsePauliOp("ZZ")], rows[:, None, None])]
        ).result()  # (c)
    assert Counting.submitted == 0
