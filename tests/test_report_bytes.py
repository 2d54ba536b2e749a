"""The results' bytes per site: summed from every job record by ``run_job`` and shown in the
report (``Report.jobs`` and the printed "results:" line)."""

from __future__ import annotations

import re
import threading

import pytest
import torch

import qgraph
from qgraph.backends.base import BackendStats, ExecutionRecord
from qgraph.backends.exact import ExactBackend
from qgraph.backends.job_policy import JobPolicy, run_job
from qgraph.backends.shots import ShotsBackend
from qgraph.models import encoder_model
from qgraph.scheduler import HybridScheduler

RESULTS_LINE = re.compile(
    r"results: [\d.]+ (B|kB|MB|GB) received for [\d.]+ (B|kB|MB|GB) of raw shots \(([\d.]+)x\)"
)


def _compile(backend: object) -> tuple[qgraph.CompiledModule, object]:
    torch.manual_seed(0)
    case = encoder_model(layers=1, d_model=16, heads=2, vocab=40, batch=2, seq_len=8)
    cm = qgraph.compile(
        case.model,
        case.args,
        case.kwargs,
        policy="all",
        qrce_qubits=4,
        qrce_layers=1,
        backend=backend,
    )
    return cm, case


def _record(site: str, received: int, raw: int) -> ExecutionRecord:
    return ExecutionRecord("qaap", site, 1, 8, 0.0, bytes_received=received, raw_bytes=raw)


def test_the_report_shows_what_the_codec_sent_per_site() -> None:
    backend = ShotsBackend(shots=1024, seed=0, codec=True)
    cm, case = _compile(backend)
    assert {s.op for s in cm.report.quantum_sites} == {"qaap", "qrce"}
    assert "results:" not in str(cm.report)  # nothing has run yet
    out = cm(*case.args, **case.kwargs)
    out.float().square().mean().backward()  # the QRCE gradient's shifted circuits too
    jobs = cm.report.jobs()
    assert set(jobs) == {s.key for s in cm.report.quantum_sites}
    for site in jobs.values():
        raw, received = site["raw_bytes"], site["bytes_received"]
        assert isinstance(raw, int) and isinstance(received, int)
        assert 0 < received < raw
        assert site["compression_ratio"] == pytest.approx(raw / received)
    # every record of the backend counted once, at its own site
    records = list(backend.stats.records)
    assert sum(r.raw_bytes for r in records) == sum(s["raw_bytes"] for s in jobs.values())  # type: ignore[misc]
    for label, counters in backend.stats.per_site.items():
        mine = [r for r in records if r.site == label]
        assert counters.bytes_received == sum(r.bytes_received for r in mine) > 0
    printed = str(cm.report)
    match = RESULTS_LINE.search(printed)
    assert match is not None, printed
    raw_total = sum(r.raw_bytes for r in records)
    received_total = sum(r.bytes_received for r in records)
    assert float(match.group(3)) == pytest.approx(raw_total / received_total, rel=5e-3)
    # one line per site under the total, as there are two sites with bytes
    for key in jobs:
        assert re.search(rf"  {re.escape(key)}: .* received for .* of raw shots", printed)


def test_an_exact_backend_has_no_results_line() -> None:
    cm, case = _compile(ExactBackend())
    cm(*case.args, **case.kwargs)
    jobs = cm.report.jobs()
    assert jobs and all(site["calls"] == 1 for site in jobs.values())
    for site in jobs.values():
        assert site["raw_bytes"] == site["bytes_received"] == 0
        assert site["compression_ratio"] is None
    printed = str(cm.report)
    assert "jobs so far: " in printed and "results:" not in printed


def test_without_the_codec_raw_bytes_are_still_counted() -> None:
    # the plain shots backend sends int64 histograms: more than the raw shots at 16 shots
    cm, case = _compile(ShotsBackend(shots=16, seed=0))
    cm(*case.args, **case.kwargs)
    for site in cm.report.jobs().values():
        assert site["raw_bytes"] and site["bytes_received"]
    assert RESULTS_LINE.search(str(cm.report)) is not None


def test_bytes_of_scheduled_concurrent_jobs_add_up() -> None:
    backend = ShotsBackend(shots=256, seed=0, codec=True)
    cm, case = _compile(backend)
    scheduler = HybridScheduler(cm, microbatches=2)
    scheduler.run(*case.args, **case.kwargs)
    summary = scheduler.timeline.summary()
    jobs = cm.report.jobs()
    assert summary.raw_shot_bytes == sum(s["raw_bytes"] for s in jobs.values()) > 0  # type: ignore[misc]
    assert summary.bytes_received == sum(s["bytes_received"] for s in jobs.values())  # type: ignore[misc]


def test_run_job_credits_each_record_to_the_job_that_appended_it() -> None:
    stats = BackendStats()
    policy = JobPolicy(retries=0)
    both_running = threading.Barrier(2)

    def job(site: str, received: int) -> None:
        def call() -> None:
            both_running.wait(timeout=10)  # the two jobs append to the one log at once
            for _ in range(50):
                stats.records.append(_record(site, received, 10 * received))

        run_job(call, policy, stats, "qaap", site, site, lambda: None)

    threads = [threading.Thread(target=job, args=(s, n)) for s, n in (("a", 1), ("b", 1000))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (stats.site("a").bytes_received, stats.site("a").raw_bytes) == (50, 500)
    assert (stats.site("b").bytes_received, stats.site("b").raw_bytes) == (50_000, 500_000)
    # a record appended outside any job (a wrapper copying its inner backend's) counts nowhere
    stats.records.append(_record("a", 7, 70))
    assert stats.site("a").bytes_received == 50


def test_run_job_counts_a_job_run_in_its_own_thread_under_a_timeout() -> None:
    stats = BackendStats()
    stats.records = []  # type: ignore[assignment]  # a backend that assigned a plain list

    def call() -> str:
        stats.records.append(_record("s", 3, 30))
        return threading.current_thread().name

    thread = run_job(call, JobPolicy(timeout_s=30.0), stats, "qaap", "s", "s", lambda: "")
    assert thread == "qgraph-job"
    assert (stats.site("s").bytes_received, stats.site("s").raw_bytes) == (3, 30)
    assert not stats.records.listeners  # type: ignore[attr-defined]  # the counter is gone
