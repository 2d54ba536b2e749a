"""Finite-shot sampling (qgraph.kernels.sampling) and the shots backend.

Statistical tests run at fixed seeds, so each is deterministic; the thresholds are chosen so
that a *correct* sampler would fail at only a tiny fraction of seeds (stated per test),
while the mistakes they guard against (wrong bit order, wrong observable, missing
post-selection, wrong readout factor, wrong shift rule) move the statistic far past them.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from qiskit.quantum_info import Statevector
from scipy.stats import chi2

import qgraph.ops  # noqa: F401  (registers the qgraph:: ops)
from qgraph.backends import Backend, register
from qgraph.backends.shots import ShotsBackend
from qgraph.circuits.qaap import qaap_circuit, qaap_registers
from qgraph.kernels.qaap import qaap_weights
from qgraph.kernels.qrce import (
    QRCEStructure,
    qrce_features,
    qrce_probabilities,
    qrce_token_features,
    readout_signs,
)
from qgraph.kernels.sampling import (
    bitflip_channel,
    estimate_z_features,
    multinomial_counts,
    qaap_kept_probabilities,
    sample_qaap_weights,
)

#: a correct sampler fails a chi-square test at this rate over seeds
CHI2_FALSE_ALARM = 1e-4
#: z-score bound for mean estimates: P(|N(0,1)| > 5) ≈ 5.7e-7 per entry
Z_BOUND = 5.0


def _qrce_probs(n_qubits: int, n_rows: int, seed: int) -> torch.Tensor:
    """Exact probabilities of random QRCE circuits (float64)."""
    structure = QRCEStructure.from_seed(n_qubits, 2, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    angles = (torch.rand(n_rows, n_qubits, generator=generator, dtype=torch.float64) * 2 - 1) * 3
    weights = (torch.rand(2, n_qubits, generator=generator, dtype=torch.float64) * 2 - 1) * 3
    return qrce_probabilities(angles, weights, structure)


# --------------------------------------------------------------------------- QRCE sampling


def test_z_features_mean_over_seeds_is_exact() -> None:
    probs = _qrce_probs(3, n_rows=4, seed=1)
    exact = probs @ readout_signs(3, dtype=torch.float64)
    n_seeds, shots = 200, 100
    mean = sum(
        estimate_z_features(probs, shots, torch.Generator().manual_seed(s)) for s in range(n_seeds)
    )
    assert isinstance(mean, torch.Tensor)
    mean = mean / n_seeds
    # each ±1 observable has variance ≤ 1 per shot: σ ≤ 1/√(200·100) ≈ 0.0071, bound 5σ
    tolerance = Z_BOUND / math.sqrt(n_seeds * shots)
    assert (mean - exact).abs().max() < tolerance
    assert exact.abs().max() > 10 * tolerance  # the comparison is not trivially "all ≈ 0"


def test_sampled_counts_chi_square_at_fixed_seed() -> None:
    # Mix with uniform so every expected count is ≥ 10000·(1/16) = 625 (chi-square valid).
    probs = 0.5 * _qrce_probs(3, n_rows=4, seed=2) + 0.5 / 8
    shots = 10_000
    counts = multinomial_counts(probs, shots, torch.Generator().manual_seed(0))
    assert counts.dtype == torch.int64 and torch.equal(counts.sum(-1), torch.full((4,), shots))
    expected = shots * probs / probs.sum(-1, keepdim=True)
    statistic = float(((counts - expected).square() / expected).sum())
    dof = 4 * (8 - 1)
    # correct sampling: statistic ~ χ²(28); threshold = its 1 − 1e-4 quantile (≈ 61.1)
    assert statistic < chi2.ppf(1 - CHI2_FALSE_ALARM, dof)
    # a sampler with the bit order reversed would be far off (this guards the test's power)
    reversed_order = expected[:, [0, 4, 2, 6, 1, 5, 3, 7]]
    wrong = float(((counts - reversed_order).square() / reversed_order).sum())
    assert wrong > chi2.ppf(1 - CHI2_FALSE_ALARM, dof)


def test_readout_error_scales_expectations() -> None:
    probs = _qrce_probs(3, n_rows=4, seed=3)
    exact = probs @ readout_signs(3, dtype=torch.float64)
    error = 0.1
    # Z_i is scaled by (1 − 2e), Z_iZ_j (two distinct bits) by (1 − 2e)²: exact on the channel
    factors = torch.tensor([1 - 2 * error] * 3 + [(1 - 2 * error) ** 2] * 3, dtype=torch.float64)
    noisy = bitflip_channel(probs, 3, error) @ readout_signs(3, dtype=torch.float64)
    torch.testing.assert_close(noisy, exact * factors, atol=1e-12, rtol=0)
    # and the sampled estimate follows it: σ ≤ 1/√200000 ≈ 0.0022, bound 5σ ≈ 0.011
    shots = 200_000
    sampled = estimate_z_features(probs, shots, torch.Generator().manual_seed(5), error)
    tolerance = Z_BOUND / math.sqrt(shots)
    assert (sampled - exact * factors).abs().max() < tolerance
    # the shrinkage is visible: |exact − exact·factor| ≥ 10 bounds on the largest feature
    assert (exact - exact * factors).abs().max() > 10 * tolerance


def test_z_features_shapes_and_validation() -> None:
    probs = _qrce_probs(4, n_rows=3, seed=0).float()
    out = estimate_z_features(probs, 16, torch.Generator().manual_seed(0))
    assert out.shape == (3, 8) and out.dtype == torch.float32
    assert set((out * 16).round().abs().unique().tolist()) <= set(range(0, 17))
    assert estimate_z_features(probs[:0], 16, None).shape == (0, 8)
    with pytest.raises(ValueError, match="shots must be an int >= 1"):
        estimate_z_features(probs, 0, None)
    with pytest.raises(ValueError, match="readout_error"):
        estimate_z_features(probs, 4, None, readout_error=1.5)
    with pytest.raises(ValueError, match=r"\(N, 2\^q\)"):
        estimate_z_features(torch.ones(2, 6) / 6, 4, None)


# --------------------------------------------------------------------------- QAAP sampling


def _qaap_case(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 2, 4, 4, generator=generator, dtype=torch.float64)
    k = torch.randn(1, 2, 5, 4, generator=generator, dtype=torch.float64)
    keep = torch.ones(4, 5, dtype=torch.bool).tril(diagonal=1)  # row i sees keys 0..i+1
    return q, k, keep


def test_post_selected_distribution_chi_square() -> None:
    q, k, keep = _qaap_case(0)
    shots = 40_000
    weights, sample = sample_qaap_weights(q, k, keep, shots, torch.Generator().manual_seed(1))
    exact, _, _ = qaap_weights(q, k, keep)
    statistic, dof = 0.0, 0
    for row in range(sample.counts.reshape(-1, 5).shape[0]):
        counts = sample.counts.reshape(-1, 5)[row].double()
        probs = exact.reshape(-1, 5)[row]
        visible = keep.expand_as(exact).reshape(-1, 5)[row]
        expected = counts.sum() * probs[visible]
        # Pool categories with expected < 5 into one (the chi-square approximation needs it).
        small = expected < 5
        observed = counts[visible]
        obs_cells = [*observed[~small].tolist(), float(observed[small].sum())]
        exp_cells = [*expected[~small].tolist(), float(expected[small].sum())]
        cells = [(o, e) for o, e in zip(obs_cells, exp_cells, strict=True) if e > 0]
        statistic += sum((o - e) ** 2 / e for o, e in cells)
        dof += len(cells) - 1
    assert dof >= 10
    # correct sampling: statistic ~ χ²(dof) given the per-row success counts
    assert statistic < chi2.ppf(1 - CHI2_FALSE_ALARM, dof)
    # masked keys get nothing, and weights are the normalised counts
    assert (sample.counts.masked_select(~keep.expand_as(exact)) == 0).all()
    assert (weights.masked_select(~keep.expand_as(exact)) == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 2, 4, dtype=torch.float64))


def test_effective_shots_follow_success_probability() -> None:
    q, k, keep = _qaap_case(3)
    shots = 20_000
    _, sample = sample_qaap_weights(q, k, keep, shots, torch.Generator().manual_seed(2))
    # P_i = ‖K_i q̂_i‖² / ‖K_i‖_F² with row i's masked keys zeroed
    k_rows = k[..., None, :, :] * keep[..., None]  # (1, 2, 4, 5, 4)
    q_hat = q / q.norm(dim=-1, keepdim=True)
    numerator = (k_rows @ q_hat[..., None]).squeeze(-1).square().sum(-1)
    p_success = numerator / k_rows.square().sum((-1, -2))
    torch.testing.assert_close(sample.success_probability, p_success)
    # successes ~ Binomial(S, P_i): within 5 standard deviations of S·P_i
    mean = shots * p_success
    sd = (shots * p_success * (1 - p_success)).sqrt()
    assert ((sample.successes.double() - mean).abs() <= Z_BOUND * sd).all()
    assert torch.equal(sample.effective_shots, sample.successes)


def test_zero_success_rows_fall_back_and_are_counted() -> None:
    # Keys along e0 and e1; query 0 along e2 (orthogonal to all keys), query 1 zero,
    # query 2 generic, query 3 sees no key at all.
    k = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [3.0, 1.0, 0.0]]])
    q = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]])
    keep = torch.tensor(
        [[True, True, False], [True, True, True], [True, True, True], [False, False, False]]
    )
    weights, sample = sample_qaap_weights(q, k, keep, 256, torch.Generator().manual_seed(0))
    assert sample.successes[0, :2].tolist() == [0, 0]
    assert sample.fallback[0].tolist() == [True, True, False, False]
    assert sample.empty[0].tolist() == [False, False, False, True]
    assert sample.fallback_rows == 2 and sample.empty_rows == 1
    torch.testing.assert_close(weights[0, 0], torch.tensor([0.5, 0.5, 0.0]))
    torch.testing.assert_close(weights[0, 1], torch.full((3,), 1 / 3))
    assert torch.equal(weights[0, 3], torch.zeros(3))
    assert sample.successes[0, 2] > 0
    counts = sample.as_counts()
    assert (counts.fallback_rows, counts.empty_rows) == (2, 1)
    # the exact closed form agrees on which rows are degenerate
    _, fallback, empty = qaap_weights(q, k, keep)
    assert torch.equal(fallback, sample.fallback) and torch.equal(empty, sample.empty)


@pytest.mark.parametrize(("n_keys", "seed"), [(3, 0), (5, 1)])
def test_readout_model_matches_brute_force_for_one_feature_qubit(n_keys: int, seed: int) -> None:
    # With d = 2 the feature register has one qubit, so "feature ≠ 0" is a single value and
    # the readout model needs no assumption: it must equal the qiskit statevector of the
    # real circuit with every measured bit flipped independently.
    generator = torch.Generator().manual_seed(seed)
    k = torch.randn(n_keys, 2, generator=generator, dtype=torch.float64)
    q = torch.randn(2, generator=generator, dtype=torch.float64)
    keep = torch.ones(n_keys, dtype=torch.bool)
    keep[-1] = False
    error = 0.07
    regs = qaap_registers(n_keys, 2)
    a, b = regs.index_qubits, regs.feature_qubits
    probs = torch.tensor(Statevector(qaap_circuit(k, q, keep)).probabilities())
    noisy = bitflip_channel(probs, a + b, error).reshape(2**a, 2**b)[:n_keys, 0] * keep
    ours, _ = qaap_kept_probabilities(q[None], k, keep[None], error)
    torch.testing.assert_close(ours[0], noisy, atol=1e-12, rtol=0)
    # and without error it is the closed form (q̂·k_j)²/‖K‖_F²
    clean, _ = qaap_kept_probabilities(q[None], k, keep[None])
    clean_ref = probs.reshape(2**a, 2**b)[:n_keys, 0] * keep
    torch.testing.assert_close(clean[0], clean_ref, atol=1e-12, rtol=0)


# --------------------------------------------------------------------------- the backend


def test_constructor_validation() -> None:
    for bad in (0, -3, 1.5, True, "1024"):
        with pytest.raises(ValueError, match="shots must be"):
            ShotsBackend(shots=bad)  # type: ignore[arg-type]
    for bad_error in (0.5, -0.01, 1.0, "0.1"):
        with pytest.raises(ValueError, match=r"readout_error .* \[0, 0\.5\)"):
            ShotsBackend(readout_error=bad_error)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed must be an int"):
        ShotsBackend(seed=1.0)  # type: ignore[arg-type]
    backend = ShotsBackend(shots=8, seed=3, readout_error=0.01)
    assert isinstance(backend, Backend)
    assert backend.name == "shots"
    caps = backend.capabilities
    assert not caps.exact and not caps.differentiable and not caps.needs_transpilation
    assert caps.max_qubits is None and caps.max_circuits_per_job is None
    assert caps.gradient_methods == ("parameter-shift", "straight-through", "spsa")
    assert "shots=8" in repr(backend)


def _qkv(dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 4, 3, 8, generator=generator).to(dtype)  # B=2, H=4, Sq=3, D=8
    k = torch.randn(2, 2, 5, 8, generator=generator).to(dtype)  # Hkv=2 (GQA), Sk=5
    v = torch.randn(2, 2, 5, 6, generator=generator).to(dtype)
    return q, k, v


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_qaap_shapes_dtypes_records(dtype: torch.dtype) -> None:
    backend = ShotsBackend(shots=64, seed=0)
    q, k, v = _qkv(dtype)
    out = backend.qaap(q, k, v, None, False, None, 0.0, "layer0.attn")
    assert out.shape == (2, 4, 3, 6) and out.dtype == dtype
    assert torch.isfinite(out.float()).all()
    (record,) = backend.stats.records
    assert record.kernel == "qaap" and record.site == "layer0.attn"
    assert record.circuits == 2 * 4 * 3 and record.shots == 2 * 4 * 3 * 64
    assert record.bytes_received == 2 * 4 * 3 * (5 + 1) * 8  # (circuits, Sk+1) int64 histogram
    assert record.wall_s >= 0
    counters = backend.stats.site("layer0.attn")
    assert counters.calls == 1 and counters.instances == 24
    backend.qaap(q, k, v, None, False, None, 0.0, "layer0.attn")
    assert backend.stats.jobs == 2 and backend.stats.site("layer0.attn").calls == 2


def _weights_via_identity_values(
    backend: ShotsBackend,
    q: torch.Tensor,
    k: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    dropout_keep: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Pool one-hot values, so the output *is* the weight matrix."""
    n_keys = k.shape[-2]
    eye = torch.eye(n_keys, dtype=q.dtype).expand(*k.shape[:-2], n_keys, n_keys)
    return backend.qaap(q, k, eye, mask, is_causal, dropout_keep, dropout_p, "site")


def test_qaap_masks_respected() -> None:
    q, k, _ = _qkv(torch.float32, seed=1)
    backend = ShotsBackend(shots=128, seed=4)
    causal = _weights_via_identity_values(backend, q, k[..., :3, :], None, True)
    assert (causal.triu(diagonal=1) == 0).all()  # query i never sees key j > i
    torch.testing.assert_close(causal.sum(-1), torch.ones(2, 4, 3))
    bool_mask = torch.tensor([True, False, True, True, False]).expand(3, 5)
    masked = _weights_via_identity_values(backend, q, k, bool_mask, False)
    assert (masked[..., [1, 4]] == 0).all()
    additive = torch.zeros(3, 5).masked_fill(~bool_mask, float("-inf"))
    masked_add = _weights_via_identity_values(backend, q, k, additive, False)
    assert (masked_add[..., [1, 4]] == 0).all()
    torch.testing.assert_close(masked_add.sum(-1), torch.ones(2, 4, 3))


def test_qaap_dropout_and_many_shots_limit() -> None:
    q, k, v = _qkv(torch.float64, seed=2)
    keep_mask = torch.rand(2, 4, 3, 5, generator=torch.Generator().manual_seed(0)) > 0.3
    plain = _weights_via_identity_values(ShotsBackend(shots=256, seed=9), q, k, None, False)
    dropped = _weights_via_identity_values(
        ShotsBackend(shots=256, seed=9), q, k, None, False, keep_mask, 0.3
    )
    torch.testing.assert_close(dropped, plain * keep_mask / 0.7)  # same seed → same samples
    # Many shots → the closed form. Given n_i kept shots, â_ij is a binomial proportion with
    # sd = √(a_ij(1 − a_ij)/n_i) ≤ 0.5/√n_i, and n_i ~ Binomial(S, P_i) ≥ 0.9·S·P_i here (S·P_i
    # ≥ 1800 for every row, so 0.9 is > 4 sd below the mean). Tolerance: 5 sd per entry.
    shots = 1 << 16
    weights = _weights_via_identity_values(ShotsBackend(shots=shots, seed=1), q, k, None, False)
    k_heads = k.repeat_interleave(2, dim=1)
    exact, _, _ = qaap_weights(q, k_heads, None)
    _, sample = sample_qaap_weights(q, k_heads, None, 1, torch.Generator().manual_seed(0))
    p_success = sample.success_probability
    assert float((shots * p_success).min()) >= 1800
    tolerance = Z_BOUND * 0.5 / (0.9 * shots * p_success).sqrt()
    assert ((weights - exact).abs() <= tolerance[..., None]).all()
    # power: the exact weights are far from uniform compared with the tolerance
    assert (exact - 0.2).abs().max() > 5 * float(tolerance.max())
    # and the pooled output is the same weights applied to v
    out = ShotsBackend(shots=shots, seed=1).qaap(q, k, v, None, False, None, 0.0, "s")
    torch.testing.assert_close(out, weights @ v.repeat_interleave(2, dim=1))


def test_qaap_fallback_counted_per_site() -> None:
    k = torch.tensor([[[[1.0, 0.0], [2.0, 0.0]]]])  # every key along e0
    q = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])  # query 0 orthogonal to every key
    backend = ShotsBackend(shots=32, seed=0)
    out = backend.qaap(q, k, torch.eye(2)[None, None], None, False, None, 0.0, "att")
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.5, 0.5]))
    counters = backend.stats.site("att")
    assert counters.fallback_rows == 1 and counters.empty_rows == 0


def test_determinism_per_seed_and_reseed() -> None:
    q, k, v = _qkv(torch.float32, seed=3)
    first = ShotsBackend(shots=32, seed=7)
    second = ShotsBackend(shots=32, seed=7)
    other = ShotsBackend(shots=32, seed=8)
    a = first.qaap(q, k, v, None, False, None, 0.0, "s")
    assert torch.equal(a, second.qaap(q, k, v, None, False, None, 0.0, "s"))
    assert not torch.equal(a, other.qaap(q, k, v, None, False, None, 0.0, "s"))
    again = first.qaap(q, k, v, None, False, None, 0.0, "s")
    assert not torch.equal(a, again)  # the stream continues, like a second hardware run
    first.reseed()
    assert torch.equal(a, first.qaap(q, k, v, None, False, None, 0.0, "s"))
    first.reseed(8)
    fresh_other = ShotsBackend(shots=32, seed=8)
    assert torch.equal(
        first.qaap(q, k, v, None, False, None, 0.0, "s"),
        fresh_other.qaap(q, k, v, None, False, None, 0.0, "s"),
    )


# --------------------------------------------------------------------------- QRCE on the backend


def _qrce_case(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(21)
    table = ((torch.rand(9, 3, generator=generator, dtype=torch.float64) * 2 - 1) * 3).to(dtype)
    weights = ((torch.rand(2, 3, generator=generator, dtype=torch.float64) * 2 - 1) * 3).to(dtype)
    token_ids = torch.tensor([[4, 1, 4, 8], [1, 1, 0, 4]])  # 4 distinct tokens
    return table, weights, token_ids


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_qrce_shapes_dtypes_records(dtype: torch.dtype) -> None:
    structure = QRCEStructure.from_seed(3, 2, seed=4)
    table, weights, token_ids = _qrce_case(dtype)
    backend = ShotsBackend(shots=100, seed=0)
    out = backend.qrce(token_ids, table, weights, structure, "emb")
    assert out.shape == (2, 4, 6) and out.dtype == dtype
    assert torch.equal(out[0, 0], out[0, 2])  # one circuit per distinct token
    (record,) = backend.stats.records
    assert (record.kernel, record.site, record.circuits, record.shots) == ("qrce", "emb", 4, 400)
    assert record.bytes_received == 4 * 2**3 * 8
    counters = backend.stats.site("emb")
    assert counters.calls == 1 and counters.instances == 4


def test_qrce_many_shots_approaches_exact_and_readout_shrinks() -> None:
    structure = QRCEStructure.from_seed(3, 2, seed=4)
    table, weights, token_ids = _qrce_case()
    exact = qrce_token_features(token_ids, table, weights, structure)
    shots = 1 << 16
    sampled = ShotsBackend(shots=shots, seed=1).qrce(token_ids, table, weights, structure, "e")
    tolerance = Z_BOUND / math.sqrt(shots)  # σ ≤ 1/√S per feature ≈ 0.0039; bound ≈ 0.02
    assert (sampled - exact).abs().max() < tolerance
    error = 0.05
    noisy = ShotsBackend(shots=shots, seed=1, readout_error=error).qrce(
        token_ids, table, weights, structure, "e"
    )
    factors = torch.tensor([1 - 2 * error] * 3 + [(1 - 2 * error) ** 2] * 3, dtype=torch.float64)
    assert (noisy - exact * factors).abs().max() < tolerance


def test_qrce_gradient_approximates_exact_gradient() -> None:
    structure = QRCEStructure.from_seed(3, 2, seed=4)
    table, weights, token_ids = _qrce_case()
    grad_out = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    vjp: Any = torch.func.vjp(
        lambda t, w: qrce_features(t[token_ids.reshape(-1)], w, structure).reshape(2, 4, 6),
        table,
        weights,
    )[1]
    exact_table, exact_weights = vjp(grad_out)
    shots = 1 << 16
    backend = ShotsBackend(shots=shots, seed=5)
    grad_table, grad_weights = backend.qrce_gradient(
        grad_out, token_ids, table, weights, structure, "parameter-shift", "emb"
    )
    assert grad_table.shape == (9, 3) and grad_weights.shape == (2, 3)
    assert grad_table.dtype == grad_weights.dtype == torch.float64
    (record,) = backend.stats.records
    n_unique, n_layers, q = 4, 2, 3
    assert record.kernel == "qrce-gradient" and record.site == "emb"
    assert record.circuits == n_unique * 4 * n_layers * q
    assert record.shots == record.circuits * shots
    # Variance bound: Σ_k g_k·Ẑ_k of one circuit lies in ±Σ_k|g_k|, so its variance is
    # ≤ (Σ_k|g_k|)²/S; a shift term (F₊ − F₋)/2 has variance ≤ (Σ|g|)²/(2S). The table
    # gradient of token t sums L such terms (g = grad_out summed over t's positions); the
    # weight gradient sums one term per distinct token. Tolerance: 5 of these bounds.
    ids, inverse = torch.unique(token_ids.reshape(-1), return_inverse=True)
    per_token = torch.zeros(len(ids), 6, dtype=torch.float64)
    per_token.index_add_(0, inverse, grad_out.reshape(-1, 6))
    spread = per_token.abs().sum(-1).square()  # (Σ_k|g_k|)² per distinct token
    sd_table = (n_layers * spread / (2 * shots)).sqrt()
    sd_weights = math.sqrt(float(spread.sum()) / (2 * shots))
    assert ((grad_table[ids] - exact_table[ids]).abs() <= Z_BOUND * sd_table[:, None]).all()
    assert ((grad_weights - exact_weights).abs() <= Z_BOUND * sd_weights).all()
    absent = [t for t in range(9) if t not in ids.tolist()]
    assert torch.equal(grad_table[absent], torch.zeros(len(absent), 3, dtype=torch.float64))
    # the test has power: the exact gradients are well above the tolerance somewhere
    assert (exact_table[ids].abs() > 3 * Z_BOUND * sd_table[:, None]).any()
    assert (exact_weights.abs() > 3 * Z_BOUND * sd_weights).any()


def test_qrce_gradient_rejects_other_methods() -> None:
    structure = QRCEStructure.from_seed(3, 2, seed=4)
    table, weights, token_ids = _qrce_case()
    backend = ShotsBackend(shots=4)
    for method in ("autograd", "spsa", "bogus"):
        with pytest.raises(ValueError, match="'parameter-shift' only"):
            backend.qrce_gradient(
                torch.ones(2, 4, 6), token_ids, table, weights, structure, method, "e"
            )
    assert backend.stats.jobs == 0


def test_ops_run_on_the_shots_backend() -> None:
    # Through the real custom ops: forward sampled, QRCE backward by parameter shift.
    backend = ShotsBackend(shots=64, seed=0)
    key = register(backend)
    table, weights, token_ids = _qrce_case(torch.float32)
    table.requires_grad_()
    weights.requires_grad_()
    features = torch.ops.qgraph.qrce(token_ids, table, weights, 4, key, "parameter-shift", "emb")
    assert features.shape == (2, 4, 6) and features.dtype == torch.float32
    features.sum().backward()
    assert table.grad is not None and weights.grad is not None
    assert table.grad.shape == (9, 3) and weights.grad.shape == (2, 3)
    assert [r.kernel for r in backend.stats.records] == ["qrce", "qrce-gradient"]
    q, k, v = _qkv(torch.float32)
    out = torch.ops.qgraph.qaap(q, k, v, None, None, True, 0.0, key, "straight-through", "att")
    assert out.shape == (2, 4, 3, 6)
    assert backend.stats.records[-1].kernel == "qaap"
