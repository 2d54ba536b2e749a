"""The job policy as a user sets it: on ``qgraph.compile``, with a classical fallback, counted
in the report and the scheduler's timeline, and atomic backward passes under the scheduler."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import qgraph
from qgraph.backends.exact import ExactBackend
from qgraph.backends.faults import FaultyBackend
from qgraph.backends.job_policy import JobPolicy, TransientJobError
from qgraph.backends.shots import ShotsBackend
from qgraph.models import encoder_model
from qgraph.scheduler import HybridScheduler

NO_WAIT = JobPolicy(retries=8, backoff_s=0.0)


def _case():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return encoder_model(layers=1, d_model=16, heads=2, vocab=40, batch=2, seq_len=5)


def _compile(backend: object, **options: object) -> tuple[qgraph.CompiledModule, object]:
    case = _case()
    cm = qgraph.compile(
        case.model,
        case.args,
        case.kwargs,
        backend=backend,
        **{"policy": "all", "qrce_qubits": 3, "qrce_layers": 1, **options},  # type: ignore[arg-type]
    )
    return cm, case


def test_compile_sets_the_policy_on_the_backend() -> None:
    backend = FaultyBackend(ExactBackend(), failure_rate=0.3, seed=1)
    cm, _ = _compile(backend, job_policy=NO_WAIT)
    assert backend.job_policy == NO_WAIT
    # the same policy again is fine; another one under the first module is refused
    _compile(backend, job_policy=NO_WAIT)
    with pytest.raises(qgraph.InputError, match=r"already runs under JobPolicy.*own backend"):
        _compile(backend, job_policy=JobPolicy(retries=1))
    assert cm.backend.job_policy == NO_WAIT


def test_compile_refuses_a_policy_that_is_not_a_job_policy() -> None:
    with pytest.raises(qgraph.InputError, match=r"job_policy must be a JobPolicy .* got dict"):
        _compile(ExactBackend(), job_policy={"retries": 3})


def test_the_classical_fallback_computes_softmax_attention() -> None:
    backend = FaultyBackend(ShotsBackend(shots=8), failure_rate=0.999999, seed=0)
    backend.job_policy = JobPolicy(retries=0, fallback="classical")
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 4, generator=g) for _ in range(3))
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    mask[1, :, :, 3:] = False  # padding of the second sequence
    out = backend.qaap(q, k, v, mask, False, None, 0.0, "L0")
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    causal = backend.qaap(q, k, v, None, True, None, 0.0, "L0")
    torch.testing.assert_close(causal, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    assert backend.stats.site("L0").fallbacks == 2


def test_under_the_classical_fallback_a_module_computes_what_it_did_before_offload() -> None:
    # attention falls back to softmax attention; QRCE (its table is gone) to exact simulation
    backend = FaultyBackend(ShotsBackend(shots=8), failure_rate=0.999999, seed=0)
    cm, case = _compile(backend, job_policy=JobPolicy(retries=0, fallback="classical"))
    reference, _ = _compile(ExactBackend(), policy=lambda site: site.kind == "embedding")
    assert {s.op for s in cm.report.quantum_sites} == {"qaap", "qrce"}
    assert {s.op for s in reference.report.quantum_sites} == {"qrce"}
    cm.eval()
    reference.eval()
    torch.testing.assert_close(cm(*case.args, **case.kwargs), reference(*case.args, **case.kwargs))


def test_retries_are_counted_per_site_in_the_report() -> None:
    backend = FaultyBackend(ExactBackend(), failure_rate=0.3, seed=4)
    cm, case = _compile(backend, job_policy=NO_WAIT)
    assert cm.report.jobs() == {}  # nothing has run yet
    for _ in range(5):
        cm(*case.args, **case.kwargs)
    jobs = cm.report.jobs()
    assert set(jobs) == {s.key for s in cm.report.quantum_sites}
    assert sum(site["retries"] for site in jobs.values()) == backend.injected > 0
    assert all(site["calls"] == 5 for site in jobs.values())
    printed = str(cm.report)
    assert f"{backend.injected} retries, 0 timeouts, 0 fallbacks" in printed


def test_the_timeline_counts_retries_and_fallbacks_of_the_step() -> None:
    backend = FaultyBackend(ShotsBackend(shots=16), failure_rate=0.3, seed=5)
    cm, case = _compile(backend, job_policy=NO_WAIT)
    scheduler = HybridScheduler(cm, microbatches=2)
    steps_with_faults = 0
    for _ in range(10):
        before = backend.injected
        scheduler.run(*case.args, **case.kwargs)
        summary = scheduler.timeline.summary()
        assert summary.retries == backend.injected - before  # every fault of the step
        assert summary.jobs == sum(e.jobs for e in scheduler.timeline.of_kind("quantum")) > 0
        assert summary.fallbacks == 0
        if summary.retries:
            steps_with_faults += 1
            trace = scheduler.timeline.chrome_trace()
            assert any(e.get("args", {}).get("retries") for e in trace["traceEvents"])
    assert steps_with_faults > 0


def test_a_timeout_inside_a_scheduled_job_keeps_its_records_with_the_job() -> None:
    # the attempt runs in a thread of its own under timeout_s: its records still count
    backend = ShotsBackend(shots=16, seed=0)
    cm, case = _compile(backend, job_policy=JobPolicy(timeout_s=30.0))
    scheduler = HybridScheduler(cm, microbatches=2)
    scheduler.run(*case.args, **case.kwargs)
    summary = scheduler.timeline.summary()
    assert summary.jobs == len(cm.report.quantum_sites) * 2 and summary.shots > 0


class _FailingShift(ShotsBackend):
    """A sampled backend whose parameter-shift jobs (QRCE backward) always fail."""

    def qrce_layer_rows(self, *args: object, **kwargs: object) -> torch.Tensor:
        raise TransientJobError("the shifted circuits' job was lost")


def test_a_failed_backward_under_the_scheduler_leaves_no_partial_gradients() -> None:
    backend = _FailingShift(shots=16, seed=0)
    cm, case = _compile(backend, job_policy=JobPolicy(retries=0))
    cm.train()
    scheduler = HybridScheduler(cm, microbatches=2)
    out = scheduler.run(*case.args, **case.kwargs)
    with pytest.raises(qgraph.JobFailedError, match="qrce-gradient job"):
        scheduler.backward(out.square().mean())
    assert all(p.grad is None for p in cm.parameters())
    # gradients that were there before the failed step stay as they were
    for p in cm.parameters():
        p.grad = torch.ones_like(p)
    out = scheduler.run(*case.args, **case.kwargs)
    with pytest.raises(qgraph.JobFailedError):
        scheduler.backward(out.square().mean())
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in cm.parameters())
