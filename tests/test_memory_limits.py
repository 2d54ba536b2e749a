"""Memory-heavy settings (issue 12): shots stream instead of allocating per shot, and QRCE
statevector sizes are checked against an estimate before anything is allocated.

Statistical checks run at fixed seeds (deterministic); each bound is 5 σ, which a correct
sampler exceeds at a rate of ~6e-7 per entry.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from types import SimpleNamespace

import psutil
import pytest
import torch

import qgraph.ops  # noqa: F401  (registers the qgraph:: ops)
from qgraph.backends.shots import ShotsBackend
from qgraph.errors import InputError
from qgraph.kernels import memory
from qgraph.kernels.qaap import qaap_weights
from qgraph.kernels.qrce import (
    QRCEStructure,
    qrce_features,
    qrce_features_per_layer,
    qrce_probabilities,
)
from qgraph.kernels.sampling import (
    _MAX_DRAWS_PER_CHUNK,
    MAX_SHOTS,
    estimate_z_features,
    multinomial_counts,
)
from qgraph.layers import DISTILL_SAMPLE_ROWS, QRCEEmbedding

BIG_SHOTS = 10**12
Z_BOUND = 5.0


def _tiny_memory(monkeypatch: pytest.MonkeyPatch, available: int = 1024) -> None:
    """Pretend only ``available`` bytes of host memory are free."""
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=available))


# --------------------------------------------------------------------------- many shots


def test_many_shots_above_the_chunk_use_the_binomial_path() -> None:
    probs = torch.rand(4, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shots = 1 << 25  # above _MAX_DRAWS_PER_CHUNK: per-shot draws would be 4 × 2^25 int64
    assert shots > _MAX_DRAWS_PER_CHUNK
    counts = multinomial_counts(probs, shots, torch.Generator().manual_seed(1))
    assert counts.dtype == torch.int64 and counts.shape == (4, 8)
    assert torch.equal(counts.sum(-1), torch.full((4,), shots))
    p = probs / probs.sum(-1, keepdim=True)
    sigma = (shots * p * (1 - p)).sqrt()
    assert ((counts - shots * p).abs() <= Z_BOUND * sigma).all()
    # same seed, same counts; another seed, other counts
    again = multinomial_counts(probs, shots, torch.Generator().manual_seed(1))
    assert torch.equal(counts, again)
    assert not torch.equal(
        counts, multinomial_counts(probs, shots, torch.Generator().manual_seed(2))
    )


def test_binomial_path_has_multinomial_covariance() -> None:
    # The same row 20000 times: per-outcome means and the full covariance n(diag p − p pᵀ).
    # Mean: 5 σ of the mean. Covariance entries: a relative error of 0.1 is > 5 σ of a
    # sample covariance over 20000 rows (σ ≈ √((1 + ρ²)/20000) ≤ 0.01 relative).
    p = torch.tensor([0.05, 0.3, 0.0, 0.15, 0.4, 0.1], dtype=torch.float64)
    rows, shots = 20_000, 1 << 26
    counts = multinomial_counts(p.expand(rows, 6), shots, torch.Generator().manual_seed(5))
    assert torch.equal(counts.sum(-1), torch.full((rows,), shots))
    assert (counts[:, 2] == 0).all()  # an outcome without mass never gets a shot
    data = counts.to(torch.float64)
    expected = shots * (torch.diag(p) - torch.outer(p, p))
    spread = (torch.diag(expected) / rows).sqrt()
    assert ((data.mean(0) - shots * p).abs() <= Z_BOUND * spread + 1e-9).all()
    kept = [0, 1, 3, 4, 5]
    ratio = torch.cov(data.T)[kept][:, kept] / expected[kept][:, kept]
    assert (ratio - 1).abs().max() < 0.1


def test_huge_shots_need_no_per_shot_memory() -> None:
    # 10^15 shots per row: a per-shot draw would need 4 × 8 PB of int64. Completing at all is
    # the check (no time bound asserted).
    probs = torch.rand(4, 8, generator=torch.Generator().manual_seed(3))
    shots = 10**15
    counts = multinomial_counts(probs, shots, torch.Generator().manual_seed(0))
    assert torch.equal(counts.sum(-1), torch.full((4,), shots))
    assert (counts >= 0).all()
    top = MAX_SHOTS - 1  # the largest allowed: float64 still exact
    assert torch.equal(
        multinomial_counts(probs, top, None).sum(-1), torch.full((4,), top, dtype=torch.int64)
    )


def test_binomial_path_rejects_rows_without_mass() -> None:
    probs = torch.tensor([[0.2, 0.8], [0.0, 0.0]])
    with pytest.raises(ValueError, match="positive total mass"):
        multinomial_counts(probs, BIG_SHOTS, None)


def test_shots_limit_is_2_to_the_53() -> None:
    probs = torch.full((1, 2), 0.5)
    for call in (
        lambda: multinomial_counts(probs, MAX_SHOTS, None),
        lambda: estimate_z_features(torch.full((1, 4), 0.25), MAX_SHOTS, None),
        lambda: ShotsBackend(shots=2**53),
    ):
        with pytest.raises(ValueError, match=r"2\^53"):
            call()
    assert MAX_SHOTS == 2**53
    ShotsBackend(shots=2**53 - 1)  # the largest accepted


def test_shots_backend_with_10_to_the_12_shots_qaap() -> None:
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 3, 4, generator=generator, dtype=torch.float64)
    k = torch.randn(1, 2, 5, 4, generator=generator, dtype=torch.float64)
    v = torch.eye(5, dtype=torch.float64).expand(1, 2, 5, 5)  # output = the weights
    backend = ShotsBackend(shots=BIG_SHOTS, seed=0)
    weights = backend.qaap(q, k, v, None, False, None, 0.0, "att")
    exact, _, _ = qaap_weights(q, k, None)
    assert (weights - exact).abs().max() < 1e-4
    assert (weights - exact).abs().max() > 0  # sampled, not the closed form
    (record,) = backend.stats.records
    assert record.shots == 2 * 3 * BIG_SHOTS


def test_shots_backend_with_10_to_the_12_shots_qrce() -> None:
    structure = QRCEStructure.from_seed(4, 2, seed=0)
    generator = torch.Generator().manual_seed(1)
    table = (torch.rand(6, 4, generator=generator) * 2 - 1) * 3
    weights = (torch.rand(2, 4, generator=generator) * 2 - 1) * 3
    token_ids = torch.tensor([[0, 3, 5], [5, 1, 2]])
    backend = ShotsBackend(shots=BIG_SHOTS, seed=0, readout_error=0.0)
    features = backend.qrce(token_ids, table, weights, structure, "emb")
    exact = qrce_features(table, weights, structure)[token_ids]
    assert features.shape == exact.shape and features.dtype == torch.float32
    assert (features - exact).abs().max() < 1e-4
    (record,) = backend.stats.records
    assert record.circuits == 5 and record.shots == 5 * BIG_SHOTS


def test_shots_at_or_below_the_chunk_keep_torch_multinomial() -> None:
    # The path for ordinary shot counts is torch.multinomial, unchanged (seeded results
    # before this change stay the same).
    probs = torch.rand(3, 8, generator=torch.Generator().manual_seed(2))
    shots = 1000
    counts = multinomial_counts(probs, shots, torch.Generator().manual_seed(4))
    draws = torch.multinomial(
        probs, shots, replacement=True, generator=torch.Generator().manual_seed(4)
    )
    expected = torch.stack([torch.bincount(row, minlength=8) for row in draws])
    assert torch.equal(counts, expected)


# --------------------------------------------------------------------------- QRCE estimates


def test_qrce_memory_bytes_scaling() -> None:
    for n_qubits in (2, 5, 8, 20, 30):
        for grad in (True, False):
            one = memory.qrce_memory_bytes(3, n_qubits, 2, requires_grad=grad)
            bigger = memory.qrce_memory_bytes(3, n_qubits + 1, 2, requires_grad=grad)
            assert bigger > one
            if n_qubits >= 12:  # past the ~100 KiB that do not grow with 2^q: it doubles
                assert bigger >= 2 * one
    sizes = [memory.qrce_memory_bytes(u, 12, 3) for u in range(0, 5)]
    steps = {b - a for a, b in itertools.pairwise(sizes)}
    assert len(steps) == 1 and steps.pop() > 0  # linear (affine) in the tokens
    per_token = sizes[1] - sizes[0]
    assert memory.qrce_memory_bytes(1, 13, 3) - memory.qrce_memory_bytes(0, 13, 3) >= 2 * per_token
    # float64 simulates in complex128: more memory; autograd keeps states for backward, and
    # each layer keeps more
    assert memory.qrce_memory_bytes(4, 12, 3, torch.float64) > sizes[4]
    assert memory.qrce_memory_bytes(4, 12, 3, requires_grad=False) < sizes[4]
    assert memory.qrce_memory_bytes(4, 12, 4) > sizes[4]
    # a 12-qubit statevector is 2^12 complex64 = 32 KiB; the estimate counts several
    assert per_token >= 2 * 2**12 * 8
    with pytest.raises(ValueError, match="n_qubits"):
        memory.qrce_memory_bytes(1, 0, 2)


def test_qrce_memory_bytes_is_of_the_measured_order() -> None:
    # Peaks of the CPU simulator (qrce_shared), measured once with torch.profiler's memory
    # events: 1 token, 20 qubits, 3 layers, forward and backward in float32, used 920 MiB on
    # a first call (it builds the cached int64 bit masks) and 364 MiB after; 4 tokens 1,256
    # and 832 MiB. The estimate is above the first-call peak, by at most 25 %.
    assert 1.0 <= memory.qrce_memory_bytes(1, 20, 3) / (920 * 2**20) < 1.25
    assert 1.0 <= memory.qrce_memory_bytes(4, 20, 3) / (1256 * 2**20) < 1.25


def _peak_bytes(run: Callable[[], object]) -> int:
    """The CPU allocator's peak while ``run()`` runs, above what was allocated before: the
    running sum of torch.profiler's allocation and free events, in time order."""
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        run()
    events = prof.profiler.kineto_results.events()  # type: ignore[union-attr]
    changes = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    allocated = peak = 0
    for _, change in changes:
        allocated += change
        peak = max(peak, allocated)
    return peak


@pytest.mark.parametrize("grad", [True, False], ids=["forward+backward", "forward"])
def test_qrce_memory_bytes_covers_the_measured_peak(grad: bool) -> None:
    n_tokens, n_qubits, n_layers = 64, 12, 3
    structure = QRCEStructure.from_seed(n_qubits, n_layers, seed=0)
    generator = torch.Generator().manual_seed(0)
    angles = (torch.rand(n_tokens, n_qubits, generator=generator) * 6 - 3).requires_grad_(grad)
    weights = (torch.rand(n_layers, n_qubits, generator=generator) * 6 - 3).requires_grad_(grad)

    def shared() -> None:
        with torch.set_grad_enabled(grad):
            features = qrce_features(angles, weights, structure)
            if grad:
                features.backward(torch.ones_like(features))

    def per_layer() -> None:  # the parameter-shift circuits' simulator
        expand = (n_tokens, n_layers, n_qubits)
        with torch.set_grad_enabled(grad):
            features = qrce_features_per_layer(
                angles[:, None].expand(expand), weights[None].expand(expand), structure
            )
            if grad:
                features.backward(torch.ones_like(features))

    estimate = memory.qrce_memory_bytes(n_tokens, n_qubits, n_layers, requires_grad=grad)
    measured = _peak_bytes(shared)
    # a 64-token peak is dozens of 2^12-amplitude states: a measurement that saw nothing is
    # not a pass
    assert measured > 8 * n_tokens * 2**n_qubits * 8 if grad else measured > 0
    assert measured <= estimate <= 2 * measured
    assert _peak_bytes(per_layer) <= estimate


def test_qrce_memory_error_messages() -> None:
    assert memory.qrce_memory_error(1, 8, 2, "qgraph.compile(qrce_qubits=...)") is None
    message = memory.qrce_memory_error(1, 40, 2, "qgraph.compile(qrce_qubits=...)")
    assert message is not None
    assert message.startswith("qgraph.compile(qrce_qubits=...)")
    message = memory.qrce_memory_error(1, 40, 2, "caller")
    assert message is not None
    for part in ("qrce_qubits", "GiB", "40 qubits", "1 token", "doubles"):
        assert part in message, part


def test_qrce_memory_error_uses_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    needed = memory.qrce_memory_bytes(16, 10, 2)
    _tiny_memory(monkeypatch, needed)
    assert memory.qrce_memory_error(16, 10, 2, "x") is None
    _tiny_memory(monkeypatch, needed - 1)
    message = memory.qrce_memory_error(16, 10, 2, "x")
    assert message is not None and "16 token(s)" in message and "host memory" in message


# --------------------------------------------------------------------------- checks in place


def test_distill_refuses_before_simulating(monkeypatch: pytest.MonkeyPatch) -> None:
    module = QRCEEmbedding(vocab_size=50, embed_dim=6, n_qubits=4, n_layers=2, seed=0)
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    simulated: list[int] = []

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        simulated.append(1)
        raise AssertionError("simulated despite the memory check")

    monkeypatch.setattr("qgraph.layers.qrce_features", spy)
    _tiny_memory(monkeypatch)
    table = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    with pytest.raises(InputError, match="tokens simulated at once") as raised:
        module.distill_from(table)
    assert "50 token(s)" in str(raised.value)  # min(len(table), DISTILL_SAMPLE_ROWS)
    assert "distill_from" in str(raised.value)
    assert not simulated
    for name, p in module.named_parameters():  # nothing changed
        assert torch.equal(p.detach(), before[name]), name


def test_distill_counts_at_most_the_sample_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    module = QRCEEmbedding(vocab_size=5000, embed_dim=4, n_qubits=3, n_layers=1, seed=0)
    _tiny_memory(monkeypatch)
    with pytest.raises(InputError, match=f"{DISTILL_SAMPLE_ROWS} token"):
        module.distill_from(torch.randn(5000, 4))


def test_distill_runs_when_memory_is_plenty() -> None:
    module = QRCEEmbedding(vocab_size=40, embed_dim=6, n_qubits=4, n_layers=2, seed=0)
    r2 = module.distill_from(torch.randn(40, 6, generator=torch.Generator().manual_seed(1)))
    assert math.isfinite(r2)


def test_kernel_refuses_too_many_tokens_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # 64 tokens × 16 qubits with autograd: the estimate is ~0.5 GiB (above the 64 MiB
    # below which the kernel skips the check); with "1 KiB free" it must refuse up front.
    structure = QRCEStructure.from_seed(16, 2, seed=0)
    angles = torch.zeros(64, 16, requires_grad=True)
    weights = torch.zeros(2, 16, requires_grad=True)
    assert memory.qrce_memory_bytes(64, 16, 2) > memory._ALWAYS_FITS_BYTES
    _tiny_memory(monkeypatch)
    with pytest.raises(InputError, match="tokens simulated at once") as raised:
        qrce_features(angles, weights, structure)
    assert "QRCE kernel" in str(raised.value) and "64 token(s)" in str(raised.value)
    with pytest.raises(InputError, match="QRCE kernel"):
        qrce_probabilities(angles, weights, structure)
    layer_angles = angles.detach()[:, None].expand(64, 2, 16)
    layer_weights = weights.detach()[None].expand(64, 2, 16)
    with pytest.raises(InputError, match="QRCE kernel"):
        qrce_features_per_layer(layer_angles, layer_weights, structure)


def test_kernel_skips_the_check_for_small_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def counting() -> SimpleNamespace:
        calls.append(1)
        return SimpleNamespace(available=1024)

    monkeypatch.setattr(psutil, "virtual_memory", counting)
    structure = QRCEStructure.from_seed(4, 2, seed=0)
    qrce_features(torch.zeros(3, 4), torch.zeros(2, 4), structure)
    assert not calls  # a few KiB: no system call on the hot path
