"""State that lives as long as the process stays bounded under load (issue 12): the backend
registry holds configured instances weakly, and a backend's job log keeps the most recent
records while counting all of them."""

from __future__ import annotations

import copy
import gc
import pickle
import weakref
from typing import Any

import pytest
import torch

import qgraph
from qgraph import backends
from qgraph.backends import (
    BackendStats,
    ExecutionRecord,
    JobLog,
    get_backend,
    job_log,
    register,
)
from qgraph.backends.base import RECORD_LIMIT
from qgraph.backends.exact import ExactBackend
from qgraph.backends.faults import FaultyBackend
from qgraph.backends.latency import LatencyBackend
from qgraph.backends.shots import ShotsBackend
from qgraph.dynamo import parse_options
from qgraph.errors import UnknownBackendError
from qgraph.kernels.qrce import QRCEStructure
from qgraph.models import encoder_model
from qgraph.scheduler.records import backend_taps, listening, tap

GONE = "was registered by an instance that no longer exists; keep a reference"


def _registered() -> int:
    return len(backends._REGISTERED) + len(backends._PINNED)


def _record(n: int, kernel: str = "qaap") -> ExecutionRecord:
    return ExecutionRecord(kernel=kernel, site=f"s{n}", circuits=n, shots=0, wall_s=0.0)


# -- the registry ------------------------------------------------------------------------------


def test_dropped_instances_leave_the_registry() -> None:
    gc.collect()
    before = _registered()
    keys = [register(ShotsBackend(shots=16, seed=n)) for n in range(1000)]
    gc.collect()
    assert len(set(keys)) == 1000
    assert _registered() <= before + 1  # none of the thousand is held
    with pytest.raises(UnknownBackendError, match=f"backend '{keys[0]}' {GONE}"):
        get_backend(keys[0])
    # the named backends stay, the same instance each time
    exact = id(get_backend("exact"))
    gc.collect()
    assert id(get_backend("exact")) == exact


def test_a_referenced_instance_stays_registered_under_one_key() -> None:
    backend = ShotsBackend(shots=16)
    key = register(backend)
    gc.collect()
    assert get_backend(key) is backend and register(backend) == key
    # a key never handed out is still just unknown
    with pytest.raises(UnknownBackendError, match="unknown backend 'shots#999999999'"):
        get_backend("shots#999999999")


def test_wrappers_are_held_weakly_too() -> None:
    inner = ShotsBackend(shots=16)
    latency = LatencyBackend(inner, 0.0)  # defines __getattr__
    faulty = FaultyBackend(ExactBackend(), failure_rate=0.0)
    latency_ref, faulty_ref = weakref.ref(latency), weakref.ref(faulty)
    keys = register(latency), register(faulty)
    assert backends._PINNED == {}
    del latency, faulty
    gc.collect()
    assert latency_ref() is None and faulty_ref() is None
    for key in keys:
        with pytest.raises(UnknownBackendError, match=GONE):
            get_backend(key)


class _SlottedBackend:
    """A backend whose class refuses weak references."""

    __slots__ = ("capabilities", "name", "stats")

    def __init__(self) -> None:
        exact = get_backend("exact")
        self.name, self.capabilities, self.stats = "slotted", exact.capabilities, BackendStats()

    def qaap(self, *args: Any) -> Any:
        return get_backend("exact").qaap(*args)

    def qrce(self, *args: Any) -> Any:
        return get_backend("exact").qrce(*args)

    def qrce_gradient(self, *args: Any) -> Any:
        return get_backend("exact").qrce_gradient(*args)


def test_an_instance_without_weak_references_is_held_strongly() -> None:
    key = register(_SlottedBackend())  # type: ignore[arg-type]
    gc.collect()
    assert get_backend(key).name == "slotted" and key in backends._PINNED
    del backends._PINNED[key]


def _tiny() -> Any:
    torch.manual_seed(0)
    return encoder_model(layers=1, d_model=16, heads=2, vocab=40, batch=2, seq_len=5)


def _compile(case: Any, backend: Any) -> qgraph.CompiledModule:
    return qgraph.compile(
        case.model,
        case.args,
        case.kwargs,
        backend=backend,
        policy="all",
        qrce_qubits=3,
        qrce_layers=1,
    )


def test_a_compiled_module_keeps_its_backend_registered_while_alive() -> None:
    case = _tiny()
    cm = _compile(case, ShotsBackend(shots=32, seed=0))  # nobody else holds the instance
    key = cm.report.backend
    assert key.startswith("shots#")
    gc.collect()
    cm(*case.args, **case.kwargs)
    assert cm.backend is get_backend(key) and cm.backend.stats.jobs > 0
    # use_backend moves the reference: the first instance goes, the new one stays
    cm.use_backend(ShotsBackend(shots=16, seed=1))
    new_key = cm.report.backend
    gc.collect()
    with pytest.raises(UnknownBackendError, match=GONE):
        get_backend(key)
    cm(*case.args, **case.kwargs)
    assert get_backend(new_key).stats.jobs > 0
    del cm
    gc.collect()
    with pytest.raises(
        UnknownBackendError,
        match=f"backend '{new_key}' {GONE} to it or pass it to qgraph.compile again",
    ):
        get_backend(new_key)


def test_a_compiled_module_holds_a_backend_it_was_given_by_key() -> None:
    # compile_options keep what was passed (here a key string): the module holds the instance
    case = _tiny()
    backend = ShotsBackend(shots=32, seed=0)
    cm = _compile(case, register(backend))
    other = ShotsBackend(shots=16, seed=1)
    other_key = register(other)
    del backend
    gc.collect()
    cm(*case.args, **case.kwargs)
    assert cm.backend.stats.jobs > 0
    cm.use_backend(other_key)
    del other
    gc.collect()
    cm(*case.args, **case.kwargs)
    assert get_backend(other_key).stats.jobs > 0


def test_a_pickled_module_keeps_the_backend_of_its_copy() -> None:
    case = _tiny()
    cm = _compile(case, ShotsBackend(shots=32, seed=0))
    twin = copy.deepcopy(cm)  # compiles again, with a copy of the instance
    del cm
    gc.collect()
    twin(*case.args, **case.kwargs)
    assert twin.backend.stats.jobs > 0


def test_torch_compile_settings_keep_their_backend() -> None:
    settings = parse_options({"backend": ShotsBackend(shots=16), "policy": "all"})
    gc.collect()
    assert get_backend(settings.backend) is settings.instance
    key = settings.backend
    del settings
    gc.collect()
    with pytest.raises(UnknownBackendError, match=GONE):
        get_backend(key)


# -- the job log -------------------------------------------------------------------------------


def test_the_job_log_keeps_the_most_recent_records_and_counts_all() -> None:
    assert RECORD_LIMIT == 10_000 and JobLog().limit == RECORD_LIMIT
    log = JobLog(limit=5)
    for n in range(12):
        log.append(_record(n))
    assert len(log) == 5 and log.total == 12
    assert [r.circuits for r in log] == [7, 8, 9, 10, 11]
    log.extend([_record(12), _record(13)])
    log += [_record(14)]
    assert log.total == 15 and [r.circuits for r in log] == [10, 11, 12, 13, 14]
    with pytest.raises(TypeError, match="append-only"):
        log.insert(0, _record(99))
    with pytest.raises(ValueError, match="limit"):
        JobLog(limit=0)


def test_since_is_right_across_the_bound() -> None:
    log = JobLog(limit=4)
    assert log.since(0) == []
    for n in range(3):
        log.append(_record(n))
    mark = log.total  # 3
    for n in range(3, 9):
        log.append(_record(n))  # records 0..4 drop off
    assert [r.circuits for r in log.since(mark)] == [5, 6, 7, 8]  # 3, 4 were dropped
    assert [r.circuits for r in log.since(7)] == [7, 8]
    assert [r.circuits for r in log.since(8)] == [8]
    assert log.since(9) == [] and log.since(100) == []
    assert log.read_since(7) == ([log[-2], log[-1]], 9)


def test_stats_count_every_job_and_convert_a_plain_list() -> None:
    stats = BackendStats(records=JobLog(limit=2))
    for n in range(5):
        stats.records.append(_record(n))
    assert stats.jobs == 5 and len(stats.records) == 2
    converted = BackendStats(records=[_record(0), _record(1)])  # type: ignore[arg-type]
    assert isinstance(converted.records, JobLog) and converted.jobs == 2
    # a backend that assigns a plain list later gets a log of it from tap()/job_log()
    backend = ExactBackend()
    backend.stats.records = [_record(0)]  # type: ignore[assignment]
    assert backend.stats.jobs == 1
    log = tap(backend)
    assert log is backend.stats.records and isinstance(log, JobLog) and log.total == 1
    assert tap(backend) is log and job_log(backend) is log  # converted once, never swapped


def test_listeners_hear_each_record_while_listening() -> None:
    log = JobLog(limit=2)
    heard: list[ExecutionRecord] = []
    with listening([log], heard.append):
        for n in range(4):
            log.append(_record(n))
    log.append(_record(4))  # no longer listening
    assert [r.circuits for r in heard] == [0, 1, 2, 3] and log.listeners == []


def test_the_job_log_copies_and_pickles_with_its_total() -> None:
    log = JobLog(limit=3)
    for n in range(5):
        log.append(_record(n))
    log.listeners.append(lambda record: None)
    for twin in (copy.deepcopy(log), copy.copy(log), pickle.loads(pickle.dumps(log))):
        assert isinstance(twin, JobLog) and twin == log
        assert twin.total == 5 and twin.limit == 3 and twin.listeners == []


def test_the_scheduler_listens_to_the_backends_own_log() -> None:
    case = _tiny()
    backend = ShotsBackend(shots=32, seed=0)
    cm = _compile(case, backend)
    (log,) = backend_taps(cm.graph_module)
    assert log is backend.stats.records


@pytest.mark.parametrize("exclusive", [True, False])
def test_latency_wrapper_attributes_records_when_the_inner_log_wraps(exclusive: bool) -> None:
    inner = ShotsBackend(shots=64, seed=0)
    inner.stats.records = JobLog([_record(n) for n in range(5)], limit=3)  # already wrapped
    backend = LatencyBackend(inner, 0.0, exclusive=exclusive)
    structure = QRCEStructure.from_seed(3, 1, 0)
    table, weights = torch.rand(10, 3), torch.rand(1, 3)
    for tokens in ([[1, 2, 2]], [[1, 2, 3]], [[4, 4, 4]], [[1, 2, 3, 5]]):
        backend.qrce(torch.tensor(tokens), table, weights, structure, "s")
        record = backend.stats.records[-1]
        assert record is not inner.stats.records[-1]  # a copy with the wait added
        assert record.kernel == "qrce" and record.shots == record.circuits * 64 > 0
        assert record.circuits == len(set(tokens[0]))
        assert record.bytes_received == inner.stats.records[-1].bytes_received
    assert backend.stats.jobs == 4 == len(backend.stats.records)
    assert inner.stats.jobs == 9 and len(inner.stats.records) == 3
