"""Jobs that fail, hang or keep failing: retries, timeouts, fallback, and a training run that
survives 10 % failing jobs bit for bit."""

from __future__ import annotations

import copy
import sys
import time

import pytest
import torch

import qgraph
from qgraph.backends.exact import ExactBackend
from qgraph.backends.faults import FaultyBackend
from qgraph.backends.frontend import QAAPRows
from qgraph.backends.job_policy import JobFailedError, JobPolicy, TransientJobError, run_job
from qgraph.backends.shots import ShotsBackend
from qgraph.models import encoder_model

NO_WAIT = JobPolicy(retries=6, backoff_s=0.0)


def _attention_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(1, 2, 3, 4, generator=g) for _ in range(3))  # type: ignore[return-value]


def _train(backend: qgraph.backends.Backend, steps: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    case = encoder_model(layers=1, d_model=16, heads=2, vocab=40, batch=2, seq_len=5)
    cm = qgraph.compile(
        case.model,
        case.args,
        case.kwargs,
        backend=backend,
        policy="all",
        qrce_qubits=3,
        qrce_layers=1,
    )
    cm.train()
    optimizer = torch.optim.SGD(cm.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        out = cm(*case.args, **case.kwargs)
        out.square().mean().backward()
        optimizer.step()
    return {name: p.detach().clone() for name, p in cm.named_parameters()}


def test_training_through_ten_percent_failing_jobs_ends_bit_identical() -> None:
    clean = ShotsBackend(shots=64, seed=3)
    faulty = FaultyBackend(ShotsBackend(shots=64, seed=3), failure_rate=0.1, seed=7)
    faulty.job_policy = NO_WAIT
    steps = 200
    expected = _train(clean, steps)
    got = _train(faulty, steps)
    assert faulty.injected > 0.05 * faulty.inner.stats.jobs  # about 10 % of the jobs failed
    retries = sum(c.retries for c in faulty.stats.per_site.values())
    assert retries == faulty.injected  # each fault was retried, none fell back
    assert sum(c.fallbacks for c in faulty.stats.per_site.values()) == 0
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_a_job_that_keeps_failing_names_backend_kernel_and_site() -> None:
    backend = FaultyBackend(ExactBackend(), failure_rate=0.999999, seed=0)
    backend.job_policy = JobPolicy(retries=2, backoff_s=0.0)
    q, k, v = _attention_inputs()
    with pytest.raises(
        JobFailedError, match=r"'faulty\(exact\)': the qaap job of site 'L0' failed .* 3 times"
    ):
        backend.qaap(q, k, v, None, False, None, 0.0, "L0")
    assert backend.stats.site("L0").retries == 2


def test_the_exact_fallback_gives_the_exact_result_and_is_counted() -> None:
    backend = FaultyBackend(ShotsBackend(shots=8), failure_rate=0.999999, seed=0)
    backend.job_policy = JobPolicy(retries=1, backoff_s=0.0, fallback="exact")
    q, k, v = _attention_inputs()
    out = backend.qaap(q, k, v, None, False, None, 0.0, "L0")
    torch.testing.assert_close(out, ExactBackend().qaap(q, k, v, None, False, None, 0.0, "x"))
    counters = backend.stats.site("L0")
    assert (counters.retries, counters.fallbacks) == (1, 1)


def test_a_permanent_error_is_not_retried_and_keeps_its_type() -> None:
    class Broken(ExactBackend):
        calls = 0

        def qaap_rows(self, *args: object, **kwargs: object) -> QAAPRows:
            Broken.calls += 1
            raise ValueError("a bad shape")

    backend = Broken()
    backend.job_policy = NO_WAIT
    q, k, v = _attention_inputs()
    with pytest.raises(ValueError, match="a bad shape") as raised:
        backend.qaap(q, k, v, None, False, None, 0.0, "L0")
    assert Broken.calls == 1
    if sys.version_info >= (3, 11):
        assert "the qaap job of site 'L0'" in "".join(raised.value.__notes__)


def test_a_hung_job_times_out_and_is_retried() -> None:
    class HangsOnce(ExactBackend):
        hung = False

        def qaap_rows(self, *args: object, **kwargs: object) -> QAAPRows:
            if not HangsOnce.hung:
                HangsOnce.hung = True
                time.sleep(2.0)  # the retry does not wait for this
            return super().qaap_rows(*args, **kwargs)  # type: ignore[arg-type]

    backend = HangsOnce()
    backend.job_policy = JobPolicy(timeout_s=0.2, retries=1, backoff_s=0.0)
    q, k, v = _attention_inputs()
    out = backend.qaap(q, k, v, None, False, None, 0.0, "L0")
    torch.testing.assert_close(out, ExactBackend().qaap(q, k, v, None, False, None, 0.0, "x"))
    counters = backend.stats.site("L0")
    assert (counters.timeouts, counters.retries) == (1, 1)


def test_run_job_waits_longer_before_each_retry() -> None:
    waits: list[float] = []
    attempts = iter([TransientJobError("a"), TransientJobError("b"), None])

    def call() -> str:
        error = next(attempts)
        if error is not None:
            raise error
        return "done"

    stats = ExactBackend().stats
    policy = JobPolicy(retries=3, backoff_s=0.5, backoff_factor=2.0)
    done = run_job(call, policy, stats, "qaap", "s", "a job", lambda: "exact", sleep=waits.append)
    assert done == "done"
    assert waits == [0.5, 1.0] and stats.site("s").retries == 2
    assert [r.outcome for r in stats.records] == ["retried", "retried"]


def test_the_wrapper_leaves_its_inner_backend_as_it_was() -> None:
    inner = ShotsBackend(shots=16, seed=1)
    faulty = FaultyBackend(copy.deepcopy(inner), failure_rate=0.5, seed=2)
    faulty.job_policy = NO_WAIT
    q, k, v = _attention_inputs()
    torch.testing.assert_close(
        faulty.qaap(q, k, v, None, False, None, 0.0, "s"),
        inner.qaap(q, k, v, None, False, None, 0.0, "s"),
        rtol=0,
        atol=0,
    )


class _GradientFails(ShotsBackend):
    """Forward jobs succeed; the QRCE gradient's job fails for good."""

    def qrce_layer_rows(self, *args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError("the device went offline for good")


def _failing_step() -> tuple[qgraph.CompiledModule, torch.Tensor]:
    torch.manual_seed(0)
    case = encoder_model(layers=1, d_model=16, heads=2, vocab=40, batch=2, seq_len=5)
    cm = qgraph.compile(
        case.model,
        case.args,
        case.kwargs,
        backend=_GradientFails(shots=32),
        policy="all",
        qrce_qubits=3,
        qrce_layers=1,
    )
    cm.train()
    for p in cm.parameters():
        p.grad = torch.ones_like(p)  # a gradient accumulated before this step
    return cm, cm(*case.args, **case.kwargs).square().mean()


def test_a_failed_backward_leaves_partial_gradients_unless_atomic() -> None:
    cm, loss = _failing_step()
    with pytest.raises(RuntimeError, match="offline for good"):
        loss.backward()
    changed = [n for n, p in cm.named_parameters() if not torch.equal(p.grad, torch.ones_like(p))]
    assert changed  # plain autograd: part of the step's gradient was added already

    cm, loss = _failing_step()
    with pytest.raises(RuntimeError, match="offline for good"):
        qgraph.atomic_backward(loss, cm)
    for name, p in cm.named_parameters():
        assert torch.equal(p.grad, torch.ones_like(p)), name
