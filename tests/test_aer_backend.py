"""The Aer backend: gate-level circuits against the closed forms, shots, chunking, noise."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any

import pytest
import torch

pytest.importorskip("qiskit_aer")

from qgraph.backends.aer import AerBackend
from qgraph.backends.base import Backend
from qgraph.backends.job_policy import JobFailedError, JobPolicy
from qgraph.circuits.templates import transpile_cache_size
from qgraph.distributed import rank_seed, seed_for_rank
from qgraph.kernels.qaap import qaap_attention, qaap_weights
from qgraph.kernels.qrce import QRCEStructure, qrce_features, qrce_token_features

F64 = torch.float64


def _qaap_inputs(batch: int, heads: int, queries: int, keys: int, dim: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, queries, dim, generator=gen, dtype=F64)
    k = torch.randn(batch, heads, keys, dim, generator=gen, dtype=F64)
    v = torch.randn(batch, heads, keys, 3, generator=gen, dtype=F64)
    return q, k, v


@pytest.fixture(scope="module")
def exact() -> AerBackend:
    return AerBackend(shots=None)


def test_is_a_backend(exact: AerBackend) -> None:
    assert isinstance(exact, Backend)
    assert exact.name == "aer"
    caps = exact.capabilities
    assert caps.exact and caps.needs_transpilation and caps.max_qubits == 30
    assert not caps.differentiable
    assert set(caps.gradient_methods) == {"parameter-shift", "straight-through", "spsa"}
    assert not AerBackend(shots=64).capabilities.exact


def test_exact_qrce_equals_statevector(exact: AerBackend) -> None:
    structure = QRCEStructure.from_seed(3, 2, seed=11)
    gen = torch.Generator().manual_seed(1)
    table = torch.randn(7, 3, generator=gen, dtype=F64)
    weights = torch.randn(2, 3, generator=gen, dtype=F64)
    ids = torch.tensor([[0, 3, 3, 6], [1, 0, 5, 3]])
    jobs = exact.stats.jobs
    features = exact.qrce(ids, table, weights, structure, site="emb")
    expected = qrce_features(table, weights, structure)[ids]
    assert features.shape == (2, 4, 6) and features.dtype == F64
    torch.testing.assert_close(features, expected, atol=1e-6, rtol=0)
    assert exact.stats.jobs == jobs + 1
    assert exact.stats.records[-1].circuits == 5  # unique tokens only
    assert exact.stats.site("emb").instances == 5


def test_exact_qaap_equals_closed_form_with_mask(exact: AerBackend) -> None:
    q, k, v = _qaap_inputs(1, 1, 4, 4, 2, seed=2)
    mask = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    out = exact.qaap(q, k, v, mask, False, None, 0.0, site="att")
    expected, counts = qaap_attention(q, k, v, mask)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert counts.empty_rows == 1
    assert exact.stats.site("att").empty_rows == 1
    assert exact.stats.records[-1].circuits == 3  # the empty row is not run


def test_exact_qaap_gqa_causal_fallback_and_dtype(exact: AerBackend) -> None:
    q, k, v = _qaap_inputs(2, 1, 3, 3, 3, seed=3)
    q = q.expand(2, 2, 3, 3).clone()
    q[0, 1, 2] = 0.0  # zero-norm query: falls back to uniform weights
    # a query exactly orthogonal to both keys it may see (causal row 1): never post-selects
    k[1, 0, 0] = torch.tensor([1.0, 0.0, 0.0])
    k[1, 0, 1] = torch.tensor([0.0, 2.0, 0.0])
    q[1, 0, 1] = torch.tensor([0.0, 0.0, 1.5])
    out = exact.qaap(q.float(), k.float(), v.float(), None, True, None, 0.0, site="gqa")
    expected, counts = qaap_attention(q.float(), k.float(), v.float(), None, True)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert exact.stats.site("gqa").fallback_rows == counts.fallback_rows == 2


def test_chunking_splits_jobs_without_changing_results(exact: AerBackend) -> None:
    chunked = AerBackend(shots=None, max_circuits_per_job=3)
    q, k, v = _qaap_inputs(1, 1, 7, 5, 2, seed=4)
    out = chunked.qaap(q, k, v, None, False, None, 0.0, site="att")
    assert [r.circuits for r in chunked.stats.records] == [3, 3, 1]
    torch.testing.assert_close(out, exact.qaap(q, k, v, None, False, None, 0.0, "att"))
    assert chunked.capabilities.max_circuits_per_job == 3


def _planar_qaap_inputs(batch: int, heads: int, queries: int, keys: int, seed: int):
    """d = 2 keys at angles jπ/4 and queries π/8 (+ jitter) away from them: every weight is
    ≥ ~0.1 and P(success) ≈ 1/2, so every χ² cell expects well over 5 counts."""
    gen = torch.Generator().manual_seed(seed)
    jitter = 0.05 * (2 * torch.rand(batch, heads, keys + queries, generator=gen, dtype=F64) - 1)
    key_angle = torch.arange(keys, dtype=F64) * torch.pi / 4 + jitter[..., :keys]
    query_angle = (
        torch.pi / 8 + torch.arange(queries, dtype=F64) * torch.pi / 4 + jitter[..., keys:]
    )
    key_norm = 0.8 + 0.4 * torch.rand(batch, heads, keys, generator=gen, dtype=F64)
    query_norm = 0.5 + torch.rand(batch, heads, queries, generator=gen, dtype=F64)
    k = key_norm[..., None] * torch.stack([key_angle.cos(), key_angle.sin()], -1)
    q = query_norm[..., None] * torch.stack([query_angle.cos(), query_angle.sin()], -1)
    return q, k


def _chi_square_threshold(df: int) -> float:
    from scipy.stats import chi2

    return float(chi2.ppf(0.999, df))


def test_sampled_qaap_weights_follow_the_closed_form() -> None:
    # v = identity, so the output rows are the estimated weights â_ij. Given the S_i
    # post-selected shots of row i, its counts S_i·â_ij are Multinomial(S_i, a_ij), so
    # Σ_i Σ_j (c_ij − S_i a_ij)² / (S_i a_ij) is χ² with Σ_i (k_i − 1) degrees of freedom
    # (k_i keys with a_ij > 0). The threshold is the 0.999 quantile: a correct sampler fails
    # at one seed in a thousand; the seed is fixed, so the test is deterministic. The same
    # statistic against uniform weights shows the test can fail.
    batch, heads, queries, keys = 2, 2, 4, 4
    q, k = _planar_qaap_inputs(batch, heads, queries, keys, seed=5)
    v = torch.eye(keys, dtype=F64).expand(batch, heads, keys, keys)
    backend = AerBackend(shots=4000, seed=123)
    for _ in range(2):
        before = backend.stats.jobs
        estimate = backend.qaap(q, k, v, None, False, None, 0.0, site="att")
        assert backend.stats.jobs == before + 1  # one job served all B·H·Sq instances
        record = backend.stats.records[-1]
        assert record.circuits == batch * heads * queries
        assert record.shots == 4000 * batch * heads * queries
    assert backend.stats.site("att").calls == 2
    exact, _, _ = qaap_weights(q, k, None)
    post_selected = backend.last_qaap_shots
    assert post_selected is not None and post_selected.shape == (batch, heads, queries)
    shots = post_selected.to(F64)[..., None]
    assert float((shots * exact).min()) >= 5.0  # χ² approximation: ≥ 5 expected per cell
    counts = estimate * shots
    assert torch.allclose(counts, counts.round(), atol=1e-9)

    def statistic(model: torch.Tensor) -> float:
        return float(((counts - shots * model).square() / (shots * model)).sum())

    threshold = _chi_square_threshold(batch * heads * queries * (keys - 1))
    assert statistic(exact) < threshold
    assert statistic(torch.full_like(exact, 1 / keys)) > 10 * threshold


def test_sampled_qrce_features_within_shot_noise() -> None:
    structure = QRCEStructure.from_seed(3, 2, seed=2)
    gen = torch.Generator().manual_seed(6)
    table = torch.randn(5, 3, generator=gen, dtype=F64)
    weights = torch.randn(2, 3, generator=gen, dtype=F64)
    ids = torch.arange(5)
    shots = 2000
    features = AerBackend(shots=shots, seed=9).qrce(ids, table, weights, structure, site="e")
    expected = qrce_token_features(ids, table, weights, structure)
    sigma = ((1 - expected.square()).clamp_min(1e-3) / shots).sqrt()
    assert ((features - expected).abs() / sigma).max() < 5.0  # 5σ over 30 features
    assert (features - expected).abs().max() > 0  # sampled, not exact


def test_parameter_shift_gradient_equals_autograd(exact: AerBackend) -> None:
    pytest.importorskip("qgraph.kernels.parameter_shift", reason="parameter_shift module absent")
    structure = QRCEStructure.from_seed(3, 2, seed=4)
    gen = torch.Generator().manual_seed(8)
    table = torch.randn(6, 3, generator=gen, dtype=F64, requires_grad=True)
    weights = torch.randn(2, 3, generator=gen, dtype=F64, requires_grad=True)
    ids = torch.tensor([[0, 2, 2], [5, 0, 1]])
    grad_out = torch.randn(2, 3, 6, generator=gen, dtype=F64)
    (qrce_token_features(ids, table, weights, structure) * grad_out).sum().backward()
    before = exact.stats.jobs
    grad_table, grad_weights = exact.qrce_gradient(
        grad_out, ids, table.detach(), weights.detach(), structure, "parameter-shift", "emb"
    )
    torch.testing.assert_close(grad_table, table.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad_weights, weights.grad, atol=1e-5, rtol=0)
    assert exact.stats.jobs == before + 1  # every shifted circuit in one job
    record = exact.stats.records[-1]
    assert (record.kernel, record.circuits) == ("qrce-gradient", 4 * 4 * 2 * 3)  # U·4·L·q


def test_noisy_qrce_on_a_fake_device() -> None:
    pytest.importorskip("qiskit_ibm_runtime")
    backend = AerBackend(shots=512, noise="fake_manila", seed=1)
    assert backend.capabilities.max_qubits == 5 and not backend.capabilities.exact
    structure = QRCEStructure.from_seed(2, 2, seed=3)
    gen = torch.Generator().manual_seed(2)
    table = torch.randn(4, 2, generator=gen)
    weights = torch.randn(2, 2, generator=gen)
    features = backend.qrce(torch.tensor([0, 1, 3]), table, weights, structure, site="e")
    assert features.shape == (3, 4) and features.dtype == torch.float32
    assert bool(torch.isfinite(features).all()) and float(features.abs().max()) <= 1.0
    # q = 2: both ZZ features are the same observable, measured on the same shots
    torch.testing.assert_close(features[:, 2], features[:, 3])


def test_reseed_gives_what_a_fresh_backend_with_that_seed_gives() -> None:
    """``reseed`` (what ``qgraph.distributed.seed_for_rank`` calls per data-parallel rank)
    restarts the shot seeds; transpilation keeps the constructor's seed."""
    structure = QRCEStructure.from_seed(3, 2, seed=12)
    gen = torch.Generator().manual_seed(4)
    table = torch.randn(5, 3, generator=gen, dtype=F64)
    weights = torch.randn(2, 3, generator=gen, dtype=F64)
    q, k, v = _qaap_inputs(1, 1, 5, 4, 2, seed=6)

    def run(backend: AerBackend) -> list[torch.Tensor]:
        # 5 circuits a call in chunks of 2: each call draws several chunk seeds
        qrce = backend.qrce(torch.arange(5), table, weights, structure, site="emb")
        return [qrce, backend.qaap(q, k, v, None, False, None, 0.0, site="att")]

    def assert_same(got: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)

    backend = AerBackend(shots=64, seed=3, max_circuits_per_job=2)
    before = run(backend)
    transpiled = transpile_cache_size()
    backend.reseed(40513)
    assert backend.seed == 40513
    reseeded = run(backend)
    assert transpile_cache_size() == transpiled  # the circuits transpiled with seed 3
    fresh = AerBackend(shots=64, seed=40513, max_circuits_per_job=2)
    assert_same(reseeded, run(fresh))
    assert not torch.equal(reseeded[0], before[0])  # the two seeds give different shots
    backend.reseed()  # no seed: start the current seed's stream again
    assert_same(run(backend), reseeded)

    derived = seed_for_rank(backend, rank=1)  # from the seed it has on its first call
    assert derived == rank_seed(40513, 1) and backend.seed == derived
    assert_same(run(backend), run(AerBackend(shots=64, seed=derived, max_circuits_per_job=2)))

    for bad in (True, 1.5, "7", -1):
        with pytest.raises(ValueError, match=r"AerBackend.reseed: seed must be a non-negative"):
            backend.reseed(bad)  # type: ignore[arg-type]
    assert backend.seed == derived  # a refused seed changes nothing


def test_cancel_running_cancels_the_chunks_a_call_waits_for() -> None:
    class Never(concurrent.futures.Executor):
        """Runs nothing: every chunk stays pending until it is cancelled."""

        def __init__(self) -> None:
            self.futures: list[concurrent.futures.Future[Any]] = []

        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            self.futures.append(concurrent.futures.Future())
            return self.futures[-1]

    never = Never()
    backend = AerBackend(shots=16, max_job_size=2, executor=never)
    backend.job_policy = JobPolicy(retries=0, backoff_s=0.0)
    q, k, v = _qaap_inputs(1, 1, 5, 4, 2, seed=6)
    finished = threading.Event()
    cancelled: list[int] = []

    def cancel() -> None:  # from another thread, as a Ctrl-C handler or a watchdog would
        give_up = time.monotonic() + 120  # a broken cancel_running fails, never hangs
        while not finished.is_set():
            cancelled.append(backend.cancel_running("att"))
            if not any(cancelled) and time.monotonic() > give_up:
                for future in [f for f in never.futures if not f.done()]:
                    future.set_exception(RuntimeError("cancel_running found nothing"))
            finished.wait(0.001)

    thread = threading.Thread(target=cancel)
    thread.start()
    try:
        with pytest.raises(JobFailedError, match=r"executor \(Never\).*CancelledError"):
            backend.qaap(q, k, v, None, False, None, 0.0, site="att")
    finally:
        finished.set()
        thread.join()
    assert sum(cancelled) >= 1
    assert backend.cancel_running() == 0  # the call let go of its futures


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="unknown Aer method 'stabilizer'"):
        AerBackend(method="stabilizer")
    with pytest.raises(ValueError, match="shots"):
        AerBackend(shots=0)
    with pytest.raises(ValueError, match="noiseless"):
        AerBackend(shots=None, noise="fake_manila")
    try:
        import qiskit_ibm_runtime  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install 'qgraph\[ibm\]'"):
            AerBackend(noise="fake_nowhere")
    else:
        expected = r"noise='fake_nowhere'.*unknown fake backend.*fake_manila"
        with pytest.raises(ValueError, match=expected):
            AerBackend(noise="fake_nowhere")
    # density matrices hold 15 qubits here; 1024 keys of width 64 need 10 + 6 = 16
    small = AerBackend(method="density_matrix", shots=None)
    q = torch.randn(1, 1, 1, 64)
    k = torch.randn(1, 1, 1024, 64)
    with pytest.raises(ValueError, match="needs 16 qubits but aer density_matrix has 15"):
        small.qaap(q, k, k, None, False, None, 0.0, site="att")
    structure = QRCEStructure.from_seed(2, 1, seed=0)
    with pytest.raises(ValueError, match="parameter-shift"):
        small.qrce_gradient(
            torch.zeros(1, 4),
            torch.tensor([0]),
            torch.zeros(1, 2),
            torch.zeros(1, 2),
            structure,
            "autograd",
            "emb",
        )
