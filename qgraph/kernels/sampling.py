"""Finite-shot sampling of the two kernels' circuits: the ideal QPU with S shots per circuit.

Everything here starts from the exact outcome distribution of a circuit (the closed form of
``qgraph.kernels.qaap``, the statevector of ``qgraph.kernels.qrce``) and draws ``shots``
outcomes per circuit, seeded by the caller's ``torch.Generator``, on the device of the
inputs. Counts, not samples, are what come back. Up to 2^24 shots per circuit the draws are
``torch.multinomial`` (with replacement), whose memory grows with the shots; above that the
counts come from conditional binomial draws whose memory is O(circuits × outcomes) whatever
the shots (``multinomial_counts``). Shots must stay below 2^53 (``MAX_SHOTS``), the largest
count float64 holds exactly.

**Readout error model.** Each measured bit is flipped independently with probability e
(symmetric, the same for every qubit, no correlations, no state-preparation or gate error).
The shots are independent draws and the flips are independent of the outcome, so flipping
the bits of a shot drawn from p is, shot by shot, the same distribution as drawing the shot
from p′ = (A ⊗ … ⊗ A) p with A = [[1−e, e], [e, 1−e]] on every bit. The code therefore
applies that channel to the probabilities (``bitflip_channel``) and draws once from p′: the
same statistics as flipping each sampled bit, at a fraction of the cost (no q random numbers
per shot). Under this model ⟨Z_i⟩ is scaled by exactly (1 − 2e) and ⟨Z_iZ_j⟩ (i ≠ j) by
(1 − 2e)².
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from qgraph.kernels.qaap import QAAPCounts, pooled_weights, qaap_register_sizes
from qgraph.kernels.qrce import readout_signs

__all__ = [
    "MAX_SHOTS",
    "QAAPSample",
    "bitflip_channel",
    "estimate_z_features",
    "multinomial_counts",
    "qaap_kept_probabilities",
    "sample_qaap_counts",
    "sample_qaap_weights",
]

#: draws per torch.multinomial call (rows are chunked to stay below it): ~128 MiB of int64;
#: more shots than this per circuit are drawn by conditional binomials instead
_MAX_DRAWS_PER_CHUNK = 1 << 24

#: shots per circuit must be below this: binomial counts are float64, exact up to 2^53
MAX_SHOTS = 1 << 53


def _check_shots(shots: object) -> int:
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"sampling: shots must be an int >= 1; got {shots!r}.")
    if shots >= MAX_SHOTS:
        raise ValueError(
            f"sampling: shots must be below 2^53 = {MAX_SHOTS} (counts are drawn in float64, "
            f"exact only up to 2^53); got {shots}."
        )
    return shots


def _check_error(readout_error: float) -> float:
    if not (isinstance(readout_error, (int, float)) and 0.0 <= readout_error <= 1.0):
        raise ValueError(
            f"sampling: readout_error is a bit-flip probability in [0, 1]; got {readout_error!r}."
        )
    return float(readout_error)


def bitflip_channel(probs: torch.Tensor, n_bits: int, error: float) -> torch.Tensor:
    """Outcome distribution after flipping each of ``n_bits`` bits independently w.p. ``error``.

    ``probs`` is (..., 2^n_bits) over basis indices (bit i of the index is qubit i). Returns
    p′ = (A ⊗ … ⊗ A) p with A = [[1−e, e], [e, 1−e]], same shape and dtype. O(n·2^n) per row.
    """
    if probs.shape[-1] != 2**n_bits:
        raise ValueError(
            f"bitflip_channel: last dimension {probs.shape[-1]} is not 2^{n_bits} outcomes."
        )
    if error == 0.0:
        return probs
    shape = probs.shape
    out = probs.reshape(-1, 2**n_bits)
    for bit in range(n_bits):
        view = out.reshape(-1, 2 ** (n_bits - 1 - bit), 2, 2**bit)
        out = ((1.0 - error) * view + error * view.flip(-2)).reshape(-1, 2**n_bits)
    return out.reshape(shape)


def multinomial_counts(
    probs: torch.Tensor, shots: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Outcome counts of ``shots`` independent draws per row: (N, C) int64, rows sum to shots.

    ``probs`` (N, C) need not be normalised but every row needs positive, finite mass.
    ``shots`` must lie in [1, 2^53).

    Up to 2^24 shots (``_MAX_DRAWS_PER_CHUNK``) the draws are ``torch.multinomial`` (which
    normalises each row), in chunks of rows of at most 2^24 draws; memory grows with the
    shots. Above that, the counts are drawn without any per-shot memory
    (``_binomial_split_counts``): O(N × C) whatever the shots. Either way the generator's
    stream is consumed in a fixed order, so results depend only on the seed and the inputs,
    not on timing.
    """
    shots = _check_shots(shots)
    n_rows, n_outcomes = probs.shape
    if shots > _MAX_DRAWS_PER_CHUNK and n_rows > 0:
        return _binomial_split_counts(probs.detach(), shots, generator)
    counts = torch.zeros(n_rows, n_outcomes, dtype=torch.int64, device=probs.device)
    if n_rows == 0:
        return counts
    weights = probs.detach().clamp_min(0.0)
    if weights.dtype not in (torch.float32, torch.float64):
        weights = weights.float()
    rows_per_chunk = max(1, _MAX_DRAWS_PER_CHUNK // shots)
    for start in range(0, n_rows, rows_per_chunk):
        chunk = weights[start : start + rows_per_chunk]
        draws = torch.multinomial(chunk, shots, replacement=True, generator=generator)
        offsets = torch.arange(chunk.shape[0], device=probs.device)[:, None] * n_outcomes
        flat = torch.bincount((draws + offsets).reshape(-1), minlength=chunk.shape[0] * n_outcomes)
        counts[start : start + chunk.shape[0]] = flat.reshape(chunk.shape[0], n_outcomes)
    return counts


def _binomial_split_counts(
    probs: torch.Tensor, shots: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Multinomial counts by conditional binomials, with no memory per shot: (N, C) int64.

    The chain rule of the multinomial (numpy's ``multinomial`` draws count_j ~ Binomial(
    remaining shots, p_j / remaining mass) outcome after outcome), applied to a binary tree
    of the outcomes instead of a chain, so it is vectorised over rows *and* outcomes: the
    shots n of a node split as left ~ Binomial(n, m_left / (m_left + m_right)) and right =
    n − left, with m the summed probability under each child. The C outcomes (zero-padded to
    a power of two) take ⌈log₂ C⌉ levels of ``torch.binomial`` calls, all in float64 (counts
    exact below 2^53) with the caller's generator. Every split conserves its shots exactly,
    so each row sums to ``shots``; a ratio is clamped to [0, 1], a node without mass sends
    nothing left, and a draw is clamped to [0, n] (rounding cannot move shots between
    outcomes or rows). Memory: O(N × C) float64.
    """
    weights = probs.to(torch.float64).clamp_min(0.0)
    total = weights.sum(-1)
    if not bool(torch.all(torch.isfinite(total) & (total > 0))):
        raise ValueError(
            "multinomial_counts: every row of probs needs finite, positive total mass; got a "
            "row with zero, negative-only, NaN or infinite probabilities."
        )
    n_rows, n_outcomes = weights.shape
    depth = max(0, (n_outcomes - 1).bit_length())
    weights = torch.nn.functional.pad(weights, (0, 2**depth - n_outcomes))
    masses = [weights]  # masses[k]: (N, 2^(depth-k)), the mass under each node of level k
    for _ in range(depth):
        masses.append(masses[-1].view(n_rows, -1, 2).sum(-1))
    counts = torch.full((n_rows, 1), float(shots), dtype=torch.float64, device=weights.device)
    node = masses.pop()
    while masses:  # the root's children first, the outcomes last; levels freed as we go
        children = masses.pop()
        left_mass = children.view(n_rows, -1, 2)[..., 0]
        ratio = torch.where(node > 0, left_mass / node, torch.zeros_like(node)).clamp(0, 1)
        left = torch.binomial(counts, ratio, generator=generator)
        left = torch.minimum(left.clamp_min(0.0), counts)
        counts = torch.stack([left, counts - left], dim=-1).view(n_rows, -1)
        node = children
    return counts[:, :n_outcomes].to(torch.int64)


def estimate_z_features(
    probs: torch.Tensor,
    shots: int,
    generator: torch.Generator | None,
    readout_error: float = 0.0,
    transfer: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Sampled QRCE read-out: ⟨Z_i⟩ and ⟨Z_i Z_{i+1 mod q}⟩ from ``shots`` shots per circuit.

    Args:
        probs: (N, 2^q) exact basis-state probabilities (qiskit order: qubit 0 is bit 0).
        shots: shots per circuit (≥ 1).
        generator: seeds the draws; must live on ``probs``' device (None: torch's global RNG).
        readout_error: probability that each measured bit flips (module docstring).
        transfer: what the (N, 2^q) outcome histogram goes through on its way back (a
            backend's result codec); None: nothing.

    Returns:
        (N, 2q) estimates in probs' dtype (float32 for half inputs): the mean of each
        observable's ±1 eigenvalue over the shots. All 2q observables are diagonal in the Z
        basis, so one measurement setting per circuit gives them all, from the same shots.
        Each estimate is unbiased for the (readout-degraded) expectation, with variance
        (1 − ⟨O⟩²)/shots ≤ 1/shots.
    """
    shots = _check_shots(shots)
    error = _check_error(readout_error)
    n_states = probs.shape[-1]
    n_qubits = n_states.bit_length() - 1
    if probs.dim() != 2 or n_states != 2**n_qubits or n_qubits < 2:
        raise ValueError(
            f"estimate_z_features: probs must be (N, 2^q) with q >= 2; got {tuple(probs.shape)}."
        )
    dtype = probs.dtype if probs.dtype in (torch.float32, torch.float64) else torch.float32
    noisy = bitflip_channel(probs.detach().to(dtype), n_qubits, error)
    counts = multinomial_counts(noisy, shots, generator)
    if transfer is not None:
        counts = transfer(counts)
    if shots > _MAX_DRAWS_PER_CHUNK:  # counts this large are not exact in float32: sum in float64
        signs64 = readout_signs(n_qubits, probs.device, torch.float64)
        return ((counts.to(torch.float64) @ signs64) / shots).to(dtype)
    signs = readout_signs(n_qubits, probs.device, dtype)
    return (counts.to(dtype) @ signs) / shots


@dataclass
class QAAPSample:
    """What the sampled QAAP circuits returned, per query row (shapes (..., Sq[, Sk])).

    ``counts``: post-selected shots per key (observed feature = 0, observed index an
    unmasked key). ``successes``: their sum, the row's effective shots (≈ S·P_i). ``success_
    probability``: the probability that one shot is kept (P_i = ‖K q̂_i‖²/‖K‖_F² without
    readout error). ``fallback``: rows with no kept shot that fell back to uniform weights
    over their unmasked keys; ``empty``: rows with no unmasked key (zero weights).
    """

    counts: torch.Tensor
    successes: torch.Tensor
    success_probability: torch.Tensor
    fallback: torch.Tensor
    empty: torch.Tensor
    shots: int

    @property
    def fallback_rows(self) -> int:
        """Rows that fell back to uniform weights."""
        return int(self.fallback.sum())

    @property
    def empty_rows(self) -> int:
        """Rows with no unmasked key."""
        return int(self.empty.sum())

    @property
    def effective_shots(self) -> torch.Tensor:
        """Post-selected shots per row (the same tensor as ``successes``)."""
        return self.successes

    def as_counts(self) -> QAAPCounts:
        """The exact backend's per-call counters, for the same bookkeeping."""
        return QAAPCounts(fallback_rows=self.fallback_rows, empty_rows=self.empty_rows)


def qaap_kept_probabilities(
    q: torch.Tensor,
    k: torch.Tensor,
    keep: torch.Tensor | None,
    readout_error: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probability that one shot of row i is kept *and* reads index j: (..., Sq, Sk).

    Without readout error this is (q̂_i·k_j)²/‖K_i‖_F² on unmasked keys (K_i: K with row i's
    masked keys zeroed) and 0 on masked ones; with readout error it follows the model in
    ``sample_qaap_weights``. Rows whose circuit cannot be built (zero-norm query, all
    unmasked keys zero, no unmasked key) are all zero. Also returns the expanded bool keep
    mask (..., Sq, Sk).
    """
    error = _check_error(readout_error)
    dtype = q.dtype
    tiny = torch.finfo(dtype).tiny
    n_keys, dim = k.shape[-2], k.shape[-1]
    q = q.detach()
    k = k.detach()
    q_norm = q.norm(dim=-1, keepdim=True)
    q_hat = q / q_norm.clamp_min(tiny)
    scores = (q_hat @ k.transpose(-2, -1)).square()  # (..., Sq, Sk)
    if keep is None:
        keep = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device)
    keep = keep.expand_as(scores)
    scores = scores.masked_fill(~keep, 0.0)
    key_norms = k.square().sum(-1)[..., None, :].expand_as(scores).masked_fill(~keep, 0.0)
    frobenius = key_norms.sum(-1, keepdim=True)  # ‖K_i‖_F² with row i's masked keys zeroed
    buildable = (frobenius > tiny) & (q_norm > tiny)
    safe_frobenius = torch.where(buildable, frobenius, torch.ones_like(frobenius))
    accept = torch.where(buildable, scores / safe_frobenius, torch.zeros_like(scores))
    if error > 0.0:
        index_bits, feature_bits = qaap_register_sizes(n_keys, dim)
        stays_zero = (1.0 - error) ** feature_bits
        becomes_zero = (1.0 - stays_zero) / (2**feature_bits - 1)
        rejected = torch.where(
            buildable,
            (key_norms - scores).clamp_min(0.0) / safe_frobenius,
            torch.zeros_like(scores),
        )
        observed_zero = accept * stays_zero + rejected * becomes_zero  # true index j
        padded = torch.nn.functional.pad(observed_zero, (0, 2**index_bits - n_keys))
        accept = bitflip_channel(padded, index_bits, error)[..., :n_keys].masked_fill(~keep, 0.0)
    return accept, keep


def sample_qaap_weights(
    q: torch.Tensor,
    k: torch.Tensor,
    keep: torch.Tensor | None,
    shots: int,
    generator: torch.Generator | None,
    readout_error: float = 0.0,
) -> tuple[torch.Tensor, QAAPSample]:
    """QAAP attention weights estimated from ``shots`` shots of each query's circuit.

    Args:
        q: (..., Sq, D) queries; k: (..., Sk, D) keys (kv heads already expanded), real
            float32/float64 (the backend upcasts half precision first).
        keep: bool, broadcastable to (..., Sq, Sk), True = the query may see the key
            (``qgraph.kernels.qaap.keep_mask``); None = every key.
        shots: S, shots per query row.
        generator: seeds the draws; must live on q's device (None: torch's global RNG).
        readout_error: e, bit-flip probability of each measured bit (see below).

    The circuit of row i amplitude-encodes K with the masked keys of that row zeroed, applies
    U_i† (U_i|0⟩ = |q̂_i⟩) to the feature register and measures everything. Without readout
    error its outcomes are (index j, feature 0) with probability (q̂_i·k_j)²/‖K_i‖_F², and
    "feature ≠ 0" (rejected) with the rest. S outcomes are drawn per row over these Sk + 1
    categories; the kept ones (feature = 0) give â_ij = c_ij / Σ_l c_il, whose expectation
    given ≥ 1 success is the exact a_ij of ``qaap_weights``.

    Readout error (e > 0), the model and its one assumption: the index register has
    a = max(1, ⌈log₂ Sk⌉) bits and the feature register b = max(1, ⌈log₂ D⌉); every bit
    flips independently with probability e. The closed form gives P(j, feature = 0) and
    also, exactly, P(j, feature ≠ 0) = (‖k_j‖² − (q̂_i·k_j)²)/‖K_i‖_F² (the feature register
    of index j holds U_i†k_j, of squared norm ‖k_j‖²), but not how that mass splits over the
    2^b − 1 non-zero feature values (that depends on how U_i is synthesised). **Assumption**:
    it is spread uniformly over them, so a true non-zero feature reads as 0 with probability
    (1 − (1−e)^b)/(2^b − 1), and a true 0 stays 0 with probability (1 − e)^b. The index bits
    then flip through the same channel as ``bitflip_channel``. Post-selection keeps a shot if
    its observed feature is 0 *and* its observed index is an unmasked key below Sk (an index
    we know cannot carry amplitude is discarded, as a real post-processor would).

    Rows whose circuit cannot be built (zero-norm query, or all unmasked keys zero) have no
    kept shot by construction. Rows with no kept shot fall back to uniform weights over their
    unmasked keys (``fallback``, counted); rows with no unmasked key get zero weights
    (``empty``), as in ``qaap_weights``.

    Returns:
        ``(weights (..., Sq, Sk) in q's dtype, QAAPSample)``.
    """
    shots = _check_shots(shots)
    counts, success_probability, keep = sample_qaap_counts(
        q, k, keep, shots, generator, readout_error
    )
    weights, fallback, empty = pooled_weights(counts.to(q.dtype), shots, keep)
    info = QAAPSample(
        counts=counts,
        successes=counts.sum(-1),
        success_probability=success_probability,
        fallback=fallback,
        empty=empty,
        shots=shots,
    )
    return weights, info


def sample_qaap_counts(
    q: torch.Tensor,
    k: torch.Tensor,
    keep: torch.Tensor | None,
    shots: int,
    generator: torch.Generator | None,
    readout_error: float = 0.0,
    transfer: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Post-selected shot counts of each query's QAAP circuit (see ``sample_qaap_weights``).

    ``transfer`` is what the (circuits, Sk + 1) histogram (kept shots per key, then the
    rejected ones) goes through on its way back (a backend's result codec); None: nothing.

    Returns ``(counts (..., Sq, Sk) int64, success_probability (..., Sq), keep (..., Sq, Sk))``:
    kept shots per unmasked key, the probability that one shot is kept, and the expanded
    bool keep mask.
    """
    shots = _check_shots(shots)
    n_keys = k.shape[-2]
    accept, keep = qaap_kept_probabilities(q, k, keep, readout_error)
    success_probability = accept.sum(-1)
    rest = (1.0 - success_probability).clamp_min(0.0)
    # a row with (numerically) no mass at all is "rejected with certainty"
    rest = torch.where(success_probability + rest > 0, rest, torch.ones_like(rest))
    categories = torch.cat([accept, rest[..., None]], dim=-1)
    drawn = multinomial_counts(categories.reshape(-1, n_keys + 1), shots, generator)
    if transfer is not None:
        drawn = transfer(drawn)
    counts = drawn[:, :n_keys].reshape(accept.shape)
    return counts, success_probability, keep
