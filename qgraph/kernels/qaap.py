"""Quantum Amplitude Attention Pooling (QAAP): the exact closed form.

For one query q_i and keys k_1..k_n, amplitude-encoding K and measuring the index register
after U_i† (with U_i|0⟩ = |q̂_i⟩) on the feature register gives, post-selected on feature = 0,

    a_ij = (q̂_i · k_j)² / Σ_l (q̂_i · k_l)²        (masked keys are zeroed before encoding)

and QAAP pools o_i = Σ_j a_ij v_j. docs/kernels.md has the derivation. This module is the
closed form of that distribution: the exact backend runs it, the sampled backends sample it,
and the circuit builders in ``qgraph.circuits.qaap`` are cross-checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Additive-mask entries at or below this value mean "masked key" (HF writes finfo.min,
#: older code -10000); QAAP can drop keys but cannot weight them by an additive bias.
ADDITIVE_MASK_THRESHOLD = -1.0e4

#: A row whose post-selection probability is at or below this falls back to uniform weights:
#: it is statevector round-off, not signal (about 10^24 shots would be needed for one success).
SUCCESS_ATOL = 1.0e-24


def register_bits(size: int) -> int:
    """Qubits of a register that holds ``size`` amplitudes: max(1, ⌈log₂ size⌉).

    A single key or a head of width 1 still needs one qubit; padding to a power of two is
    what the ⌈·⌉ counts.
    """
    return max(1, (int(size) - 1).bit_length())


def qaap_register_sizes(n_keys: int, head_dim: int) -> tuple[int, int]:
    """QAAP's (index, feature) register widths (a, b) for ``n_keys`` keys of ``head_dim``:
    the one place this rule lives (circuits, sampler, cost model, scheduler read it)."""
    return register_bits(n_keys), register_bits(head_dim)


@dataclass
class QAAPCounts:
    """Rows that did not follow the (q̂·k)² rule, counted per call.

    ``fallback_rows``: rows whose weights were all zero (zero-norm query, or every unmasked
    key orthogonal to it / zero): the circuit would never post-select, so QAAP falls back to
    uniform weights over the unmasked keys. ``empty_rows``: rows with no unmasked key at all;
    their output is zero.
    """

    fallback_rows: int = 0
    empty_rows: int = 0


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels compute in: float64 stays, everything else runs in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def expand_kv_heads(kv: torch.Tensor, n_query_heads: int) -> torch.Tensor:
    """Grouped-query attention: repeat each of the Hkv key/value heads for its query heads.

    ``kv`` is (..., Hkv, S, D); query head h reads kv head h // (H // Hkv), as in
    ``scaled_dot_product_attention(enable_gqa=True)`` and Hugging Face's ``repeat_kv``.
    """
    n_kv_heads = kv.shape[-3]
    if n_kv_heads == n_query_heads:
        return kv
    if n_query_heads % n_kv_heads != 0:
        raise ValueError(
            f"QAAP: {n_query_heads} query heads cannot share {n_kv_heads} key/value heads; "
            "grouped-query attention needs the query heads to be a multiple of the kv heads."
        )
    return kv.repeat_interleave(n_query_heads // n_kv_heads, dim=-3)


def keep_mask(
    attn_mask: torch.Tensor | None,
    is_causal: bool,
    n_queries: int,
    n_keys: int,
    device: torch.device,
) -> torch.Tensor | None:
    """Which keys each query may see, as a bool tensor broadcastable to (..., Sq, Sk).

    A bool ``attn_mask`` follows SDPA (True = attend); a float one is additive, with entries
    ≤ ``ADDITIVE_MASK_THRESHOLD`` meaning masked. ``is_causal`` is SDPA's top-left aligned
    lower triangle.
    """
    keep: torch.Tensor | None = None
    if attn_mask is not None:
        keep = attn_mask if attn_mask.dtype == torch.bool else attn_mask > ADDITIVE_MASK_THRESHOLD
    if is_causal:
        causal = torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril()
        keep = causal if keep is None else keep & causal
    return keep


def qaap_scores(
    q: torch.Tensor, k: torch.Tensor, keep: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The closed form of a QAAP circuit's post-selected outcomes, up to one factor per row.

    Returns ``(scores, scale)``: scores (..., Sq, Sk) = (q̂_i·k_j)² on unmasked keys and 0 on
    masked ones, and scale (..., Sq, 1) = ‖K_i‖_F², the squared norm of the keys row i's
    circuit encodes, so that scores / scale = P(index = j, feature = 0). Differentiable in
    the scores; the scale is detached (it only decides fallbacks).
    """
    tiny = torch.finfo(q.dtype).tiny
    q_hat = q / q.norm(dim=-1, keepdim=True).clamp_min(tiny)
    scores = (q_hat @ k.transpose(-2, -1)).square()
    key_norms = k.detach().square().sum(-1, keepdim=True)  # (..., Sk, 1)
    if keep is None:
        scale = key_norms.sum(-2, keepdim=True)  # (..., 1, 1)
    else:
        scores = scores.masked_fill(~keep, 0.0)
        scale = keep.to(k.dtype) @ key_norms  # (..., Sq, 1), from the unexpanded mask
    return scores, scale.expand(*scores.shape[:-1], 1)


def pooled_weights(
    scores: torch.Tensor, scale: torch.Tensor | float, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """QAAP's weights from measured (or exact) post-selected outcomes: the one fallback rule.

    Args:
        scores: (..., Sq, Sk) non-negative, P(index = j, feature = 0) · scale per row (exact
            probabilities, closed-form scores, or kept-shot counts); zero on masked keys.
        scale: per row (..., Sq, 1) or a number (shots for counts, 1 for probabilities).
        keep: bool, broadcastable to (..., Sq, Sk), True = the query may see the key.

    Returns ``(weights, fallback, empty)`` as ``qaap_weights``: a row whose post-selection
    probability Σ_j scores / scale is ≤ ``SUCCESS_ATOL`` falls back to uniform weights over
    its unmasked keys; a row with no unmasked key gets zero weights. Differentiable.
    """
    total = scores.sum(dim=-1, keepdim=True)
    n_visible = keep.sum(dim=-1, keepdim=True)  # on the unexpanded mask: cheap
    empty = (n_visible == 0).expand_as(total)
    fallback = total.detach() <= SUCCESS_ATOL * scale
    uniform = keep.to(scores.dtype) / n_visible.clamp_min(1).to(scores.dtype)
    # where() alone would still back-propagate NaN from 0/0 into the unused branch.
    safe_total = torch.where(fallback, torch.ones_like(total), total)
    weights = torch.where(fallback, uniform, scores / safe_total)
    return weights, (fallback & ~empty).squeeze(-1), empty.squeeze(-1)


def qaap_weights(
    q: torch.Tensor, k: torch.Tensor, keep: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The QAAP attention weights for queries q (..., Sq, D) over keys k (..., Sk, D).

    Returns ``(weights, fallback, empty)``: weights (..., Sq, Sk) summing to 1 over the
    unmasked keys of each row; ``fallback`` (..., Sq) marks rows that fell back to uniform
    weights, ``empty`` rows with no unmasked key (all-zero weights). Differentiable.
    """
    scores, scale = qaap_scores(q, k, keep)
    if keep is None:
        keep = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device)
    return pooled_weights(scores, scale, keep)


def qaap_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    dropout_keep: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, QAAPCounts]:
    """QAAP pooling with SDPA's calling convention: q (B, H, Sq, D), k/v (B, Hkv, Sk, ·).

    The weighting is QAAP's; everything else (heads, GQA sharing, masks, dropout on the
    weights in training) is what the replaced attention op did. ``dropout_keep`` is the
    Bernoulli keep mask drawn by the caller, so forward and backward see the same one.
    Half-precision inputs are computed in float32 and the result cast back.
    """
    out_dtype = q.dtype
    work = compute_dtype(q.dtype)
    n_heads = q.shape[-3]
    qf = q.to(work)
    kf = expand_kv_heads(k.to(work), n_heads)
    vf = expand_kv_heads(v.to(work), n_heads)
    keep = keep_mask(attn_mask, is_causal, q.shape[-2], k.shape[-2], q.device)
    weights, fallback, empty = qaap_weights(qf, kf, keep)
    if dropout_keep is not None and dropout_p > 0.0:
        weights = weights * dropout_keep.to(work) / (1.0 - dropout_p)
    out = (weights @ vf).to(out_dtype)
    counts = QAAPCounts(fallback_rows=int(fallback.sum()), empty_rows=int(empty.sum()))
    return out, counts
