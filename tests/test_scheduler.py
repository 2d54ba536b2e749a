"""HybridScheduler: pipelined = sequential, caches invalidated on updates, timeline, jobs.

Small models (2-layer BERT, width 32, batch 4 × 8 tokens) keep the module under a minute;
latencies are tens of milliseconds and the timing assertions loose (shared machines).
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from typing import Any

import pytest
import torch
import torch.fx as fx

import qgraph
from qgraph.backends.exact import ExactBackend
from qgraph.backends.latency import LatencyBackend
from qgraph.backends.shots import ShotsBackend
from qgraph.kernels.qrce import QRCEStructure
from qgraph.models import ModelCase, encoder_model, hf_model
from qgraph.scheduler import HybridScheduler, partition_dag


def small_bert(batch: int = 4) -> ModelCase:
    return hf_model("bert", layers=2, hidden=32, heads=2, vocab=100, batch=batch, seq_len=8)


@pytest.fixture(scope="module")
def case() -> ModelCase:
    return small_bert()


@pytest.fixture(scope="module")
def exact_cm(case: ModelCase) -> qgraph.CompiledModule:
    return qgraph.compile(case.model, case.args, case.kwargs, qrce_qubits=4, policy="all")


def slices(case: ModelCase, k: int) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    size = case.args[0].shape[0] // k
    return [
        (
            (case.args[0][m * size : (m + 1) * size],),
            {"attention_mask": case.kwargs["attention_mask"][m * size : (m + 1) * size]},
        )
        for m in range(k)
    ]


# -- equivalence ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cache", [True, False])
def test_pipelined_equals_sequential_and_cm(
    case: ModelCase, exact_cm: qgraph.CompiledModule, cache: bool
) -> None:
    with torch.no_grad():
        direct = exact_cm(*case.args, **case.kwargs)
        sequential = [exact_cm(*a, **kw) for a, kw in slices(case, 2)]
        with HybridScheduler(exact_cm, microbatches=2, cache=cache) as scheduler:
            piped = scheduler.run(*case.args, **case.kwargs)
        with HybridScheduler(exact_cm, microbatches=1, cache=cache) as scheduler:
            whole = scheduler.run(*case.args, **case.kwargs)
    assert type(piped) is type(direct)
    for name in ("last_hidden_state", "pooler_output"):
        seq = torch.cat([getattr(s, name) for s in sequential])
        torch.testing.assert_close(getattr(piped, name), seq, rtol=0, atol=1e-6)
        torch.testing.assert_close(getattr(piped, name), getattr(direct, name))
        torch.testing.assert_close(getattr(whole, name), getattr(direct, name), rtol=0, atol=0)


def test_autograd_through_run_and_concurrent_backward(
    case: ModelCase, exact_cm: qgraph.CompiledModule
) -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(32, 3)
    params = [*exact_cm.parameters(), *head.parameters()]

    def grads_of(run: Any) -> list[torch.Tensor]:
        for p in params:
            p.grad = None
        run()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    def loss_of(out: Any) -> torch.Tensor:
        return head(out.last_hidden_state).square().mean() + head.weight.square().sum()

    reference = grads_of(lambda: loss_of(exact_cm(*case.args, **case.kwargs)).backward())
    scheduler = HybridScheduler(exact_cm, microbatches=2)
    plain = grads_of(lambda: loss_of(scheduler.run(*case.args, **case.kwargs)).backward())

    def concurrent() -> None:
        scheduler.backward(loss_of(scheduler.run(*case.args, **case.kwargs)))

    overlapped = grads_of(concurrent)
    scheduler.close()
    assert any(float(g.abs().sum()) > 0 for g in reference)
    for ref, a, b in zip(reference, plain, overlapped, strict=True):
        torch.testing.assert_close(a, ref, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(b, ref, rtol=1e-4, atol=1e-6)


# -- caches --------------------------------------------------------------------------------------


def test_qrce_cache_is_invalidated_by_an_optimizer_step(case: ModelCase) -> None:
    cm = qgraph.compile(case.model, case.args, case.kwargs, qrce_qubits=4, policy="all")
    scheduler = HybridScheduler(cm)
    with torch.no_grad():
        before = scheduler.run(*case.args, **case.kwargs).last_hidden_state
        again = scheduler.run(*case.args, **case.kwargs).last_hidden_state
    summary = scheduler.summary()
    assert summary.qrce_computed_tokens == 0  # the second run was served from the cache
    assert summary.quantum_calls == 3 and len(scheduler.timeline.of_kind("cache")) == 1
    torch.testing.assert_close(again, before, rtol=0, atol=0)

    layer = next(iter(cm.quantum_layers.values()))
    optimizer = torch.optim.Adam([layer.angles, layer.weights], lr=0.3)
    scheduler.run(*case.args, **case.kwargs).last_hidden_state.square().sum().backward()
    optimizer.step()
    with torch.no_grad():
        after = scheduler.run(*case.args, **case.kwargs).last_hidden_state
        expected = cm(*case.args, **case.kwargs).last_hidden_state
    assert scheduler.summary().qrce_computed_tokens > 0
    # a stale cache would return `before`
    assert not torch.allclose(after, before, atol=1e-4)
    torch.testing.assert_close(after, expected)

    # an edit through .data does not bump the version counter; the snapshot check catches it
    with torch.no_grad():
        scheduler.run(*case.args, **case.kwargs)
    layer.angles.data.add_(0.3)
    with torch.no_grad():
        edited = scheduler.run(*case.args, **case.kwargs).last_hidden_state
        torch.testing.assert_close(edited, cm(*case.args, **case.kwargs).last_hidden_state)


def test_qrce_rows_are_shared_between_microbatches(
    case: ModelCase, exact_cm: qgraph.CompiledModule
) -> None:
    scheduler = HybridScheduler(exact_cm, microbatches=2)
    scheduler.clear_cache()
    with torch.no_grad():
        scheduler.run(*case.args, **case.kwargs)
    summary = scheduler.summary()
    assert summary.qrce_tokens == case.args[0].numel()
    assert summary.qrce_computed_tokens == int(torch.unique(case.args[0]).numel())
    assert summary.qrce_unique_tokens >= summary.qrce_computed_tokens


# -- the latency wrapper -------------------------------------------------------------------------


class SleepCounter:
    """Replaces ``time.sleep`` and counts the sleeps in progress at once: the latency
    wrapper's waits, so overlap is measured by counts, not bounded by wall-clock time."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._real_sleep, self._lock = time.sleep, threading.Lock()
        self.waiting = self.most_waiting = 0
        monkeypatch.setattr(time, "sleep", self.sleep)

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.waiting += 1
            self.most_waiting = max(self.most_waiting, self.waiting)
        self._real_sleep(seconds)
        with self._lock:
            self.waiting -= 1


def test_latency_wrapper_adds_latency_per_job(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = LatencyBackend("exact", 0.05)
    assert backend.capabilities == qgraph.backends.get_backend("exact").capabilities
    q = torch.randn(2, 2, 4, 4)
    start = time.perf_counter()
    for _ in range(3):
        backend.qaap(q, q, q, None, False, None, 0.0, "site")
    assert time.perf_counter() - start >= 0.15
    assert backend.calls["qaap"] == 3 and len(backend.stats.records) == 3
    for record in backend.stats.records:
        assert record.queue_s is not None and record.queue_s >= 0.05
        assert record.wall_s >= record.queue_s and record.circuits == 2 * 2 * 4
    # concurrent jobs wait concurrently
    sleeps = SleepCounter(monkeypatch)
    backend = LatencyBackend("exact", 0.5)  # long enough for four threads to start
    threads = [
        threading.Thread(target=backend.qaap, args=(q, q, q, None, False, None, 0.0, "site"))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sleeps.most_waiting == 4 and backend.calls["qaap"] == 4


def test_latency_wrapper_keeps_inner_records_and_queue() -> None:
    inner = ShotsBackend(shots=64, seed=0)
    backend = LatencyBackend(inner, 0.01)
    structure = QRCEStructure.from_seed(3, 1, 0)
    table, weights = torch.rand(10, 3), torch.rand(1, 3)
    backend.qrce(torch.tensor([[1, 2, 2]]), table, weights, structure, "s")
    (record,) = backend.stats.records
    assert record.kernel == "qrce" and record.circuits == 2 and record.shots == 2 * 64
    assert record.queue_s is not None and record.queue_s >= 0.01
    assert record.bytes_received == inner.stats.records[-1].bytes_received
    assert backend.shots == 64  # options read through


@pytest.mark.parametrize("latency", [-0.1, math.nan, math.inf, "1", True])
def test_latency_must_be_a_finite_nonnegative_number(latency: Any) -> None:
    with pytest.raises(ValueError, match="latency_s"):
        LatencyBackend("exact", latency)


def test_latency_wraps_only_backends() -> None:
    with pytest.raises(ValueError, match="wraps a qgraph backend"):
        LatencyBackend(object(), 0.1)  # type: ignore[arg-type]


def test_pipelining_overlaps_latency(case: ModelCase, monkeypatch: pytest.MonkeyPatch) -> None:
    latency = 0.2
    cm = qgraph.compile(
        case.model, case.args, case.kwargs, backend=LatencyBackend("exact", latency), policy="all"
    )
    with torch.no_grad(), HybridScheduler(cm, microbatches=2, cache=False) as scheduler:
        scheduler.run(*case.args, **case.kwargs)  # warm-up
        sleeps = SleepCounter(monkeypatch)
        scheduler.run(*case.args, **case.kwargs)
    assert sleeps.most_waiting >= 2  # both slices' jobs waited at once
    jobs = scheduler.summary().jobs
    assert jobs == 6  # (1 QRCE + 2 QAAP) × 2 slices
    # the slices' jobs overlap: at some moment jobs of both micro-batches are in flight
    quantum = scheduler.timeline.of_kind("quantum")
    assert {event.microbatch for event in quantum} == {0, 1}
    overlapping = [
        (a, b)
        for a in quantum
        for b in quantum
        if a.microbatch == 0 and b.microbatch == 1 and a.start_s < b.end_s and b.start_s < a.end_s
    ]
    assert overlapping, [(e.name, e.microbatch, e.start_s, e.end_s) for e in quantum]
    assert scheduler.timeline.wall_s >= 3 * latency  # each slice waits for its three jobs
    for event in scheduler.timeline.of_kind("quantum"):
        assert event.queue_s is not None and event.queue_s >= latency
        assert event.run_s is not None and event.thread.startswith("qgraph-job")


# -- timeline ------------------------------------------------------------------------------------


def test_timeline_chrome_trace(tmp_path: Any, case: ModelCase, exact_cm: Any) -> None:
    with torch.no_grad(), HybridScheduler(exact_cm, microbatches=2, cache=False) as scheduler:
        scheduler.run(*case.args, **case.kwargs)
    path = scheduler.timeline.to_chrome_trace(tmp_path / "trace.json")
    document = json.loads(path.read_text())
    events = [e for e in document["traceEvents"] if e["ph"] == "X"]
    quantum = [e for e in events if e["cat"] == "quantum"]
    quantum_nodes = sum(
        1 for n in exact_cm.graph_module.graph.nodes if str(n.target).startswith("qgraph.")
    )
    assert len(quantum) == 2 * quantum_nodes == scheduler.summary().quantum_calls
    assert all(isinstance(e["ts"], float) and e["dur"] >= 0 for e in events)
    assert {"pid", "tid", "name"} <= set(events[0])
    classical = [e for e in events if e["cat"] == "classical"]
    assert {e["tid"] for e in classical} == {0} and {e["tid"] for e in quantum} - {0}
    summary = scheduler.summary()
    assert summary.classical_s > 0 and summary.quantum_s > 0 and summary.microbatches == 2


# -- bad input -----------------------------------------------------------------------------------


def test_microbatches_must_divide_the_batch(case: ModelCase, exact_cm: Any) -> None:
    scheduler = HybridScheduler(exact_cm, microbatches=3)
    with pytest.raises(ValueError, match=r"microbatches=3 does not divide the batch size 4"):
        scheduler.run(*case.args, **case.kwargs)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="microbatches"):
            HybridScheduler(exact_cm, microbatches=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="CompiledModule"):
        HybridScheduler(case.model)  # type: ignore[arg-type]


def test_errors_in_jobs_reach_the_caller(case: ModelCase, exact_cm: Any) -> None:
    bad_ids = case.args[0].clone()
    bad_ids[0, 0] = 10_000  # beyond the vocabulary: the QRCE job raises in its worker
    with HybridScheduler(exact_cm, microbatches=2, max_workers=1) as scheduler:
        with torch.no_grad(), pytest.raises(ValueError, match="token ids must lie"):
            scheduler.run(bad_ids, **case.kwargs)
        with torch.inference_mode():  # still usable, and inference mode reaches the workers
            out = scheduler.run(*case.args, **case.kwargs).last_hidden_state
            torch.testing.assert_close(out, exact_cm(*case.args, **case.kwargs).last_hidden_state)
    assert out.is_inference()


# -- jobs per step on a sampled backend ----------------------------------------------------------


@pytest.mark.parametrize("batch", [2, 8])
def test_one_job_per_quantum_call_on_a_sampled_backend(batch: int) -> None:
    case = small_bert(batch)
    inner = ShotsBackend(shots=128, seed=0)
    backend = LatencyBackend(inner, 0.0)  # counts the calls
    cm = qgraph.compile(
        case.model, case.args, case.kwargs, backend=backend, qrce_qubits=4, policy="all"
    )
    optimizer = torch.optim.SGD(cm.parameters(), lr=1e-3)
    scheduler = HybridScheduler(cm, microbatches=2)
    jobs_before, calls_before = inner.stats.jobs, sum(backend.calls.values())
    out = scheduler.run(*case.args, **case.kwargs)
    scheduler.backward(out.last_hidden_state.square().mean())
    optimizer.step()
    jobs = inner.stats.jobs - jobs_before
    calls = sum(backend.calls.values()) - calls_before
    # forward: 1 QRCE + 2 QAAP per slice; backward: 1 QRCE parameter-shift job per slice
    # (QAAP's straight-through backward runs no circuits), whatever the batch size
    assert calls == jobs == 2 * (3 + 1)
    summary = scheduler.summary()
    assert summary.jobs == jobs and summary.quantum_calls == calls
    assert summary.shots == sum(r.shots for r in inner.stats.records.since(jobs_before))
    assert summary.bytes_received > 0 and summary.raw_shot_bytes > 0
    assert summary.bytes_saved == summary.raw_shot_bytes - summary.bytes_received
    scheduler.close()


# -- partition DAG -------------------------------------------------------------------------------


def test_partition_dag_is_acyclic_where_naive_grouping_is_not() -> None:
    # x -> a -> Q -> b, x -> c -> b: putting all classical nodes in one group gives a cycle
    graph = fx.Graph()
    x = graph.placeholder("x")
    a = graph.call_function(torch.relu, (x,))
    quantum = graph.call_function(
        torch.ops.qgraph.qaap.default,
        (a, a, a, None, None, False, 0.0, "exact", "autograd", "s"),
    )
    c = graph.call_function(torch.neg, (x,))
    b = graph.call_function(torch.add, (quantum, c))
    graph.output(b)
    dag = partition_dag(fx.GraphModule(torch.nn.Module(), graph))
    kinds = dict(dag.graph.nodes(data="kind"))
    assert sorted(kinds.values()) == ["classical", "classical", "quantum"]
    part = {n: p for p, d in dag.graph.nodes(data=True) for n in d["nodes"]}
    assert part["relu"] == part["neg"] != part["add"]
    q = part[quantum.name]
    assert set(dag.graph.edges) == {
        (part["relu"], q),
        (part["relu"], part["add"]),
        (q, part["add"]),
    }


def test_partition_dag_of_a_run_bounds_the_step(case: ModelCase) -> None:
    cm = qgraph.compile(
        case.model, case.args, case.kwargs, backend=LatencyBackend("exact", 0.02), policy="all"
    )
    with torch.no_grad(), HybridScheduler(cm, cache=False) as scheduler:
        scheduler.run(*case.args, **case.kwargs)
    dag = scheduler.partition_dag()
    assert len(dag.partitions("quantum")) == 3
    assert 3 * 0.02 <= dag.quantum_critical_path_s <= scheduler.timeline.wall_s
    assert 0 < dag.classical_critical_path_s <= scheduler.summary().classical_s + 1e-9
    assert dag.ideal_bound_s <= scheduler.timeline.wall_s
    length, path = dag.critical_path()
    assert path and length <= scheduler.timeline.wall_s


def test_ctrl_c_stops_a_run_whose_job_hangs_and_the_job_is_left_on_a_daemon_thread() -> None:
    release, job_ended = threading.Event(), threading.Event()

    class Hangs(ExactBackend):
        def qaap_rows(self, *args: Any, **kwargs: Any) -> Any:
            release.wait(30)  # a job that never answers (until the test lets it)
            job_ended.set()
            return super().qaap_rows(*args, **kwargs)

    case = encoder_model(layers=1, d_model=16, heads=2, vocab=40, batch=2, seq_len=5)
    cm = qgraph.compile(case.model, case.args, case.kwargs, backend=Hangs(), policy="all")
    scheduler = HybridScheduler(cm, microbatches=1)
    # Python's own Ctrl-C handler: pytest-xdist workers may ignore SIGINT
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupt = threading.Timer(0.5, signal.pthread_kill, (threading.get_ident(), signal.SIGINT))
    interrupt.start()
    try:
        with torch.no_grad(), pytest.raises(KeyboardInterrupt):
            scheduler.run(*case.args, **case.kwargs)
        # run() returned while the job still hangs: nothing waited for it
        hung = [t for t in threading.enumerate() if t.name.startswith("qgraph-job")]
        assert not job_ended.is_set() and hung and all(t.daemon for t in hung)
    finally:
        release.set()
        interrupt.cancel()
        signal.signal(signal.SIGINT, previous)
        scheduler.close()
