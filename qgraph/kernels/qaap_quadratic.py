"""QAAP's closed form as the exact backend runs it: a lean forward and a hand-written backward.

``qaap_attention`` (``qgraph.kernels.qaap``) states the closed form plainly: weights
a_ij = s_ij / T_i with s_ij = (q̂_i·k_j)² on the keys row i may see and T_i = Σ_j s_ij, a
uniform fallback for rows with T_i ≤ SUCCESS_ATOL·‖K_i‖², then o = a·V. Differentiating that
under autograd costs a dozen (Sq × Sk) temporaries. This module computes the same numbers
with fewer passes over the score matrix:

* forward o_i = (s_i·V)/T_i, dividing the (Sq × Dv) product instead of the (Sq × Sk) scores;
  a padding mask (one that depends on the key only) zeroes the masked keys before the
  product instead of masking scores; fallback rows take the mean of their visible values.
* backward, for the rows that did not fall back (fallback rows do not depend on q or k):
  ∂o_i/∂s_ij = (v_j − o_i)/T_i, so with dA = G·Vᵀ and δ_i = g_i·o_i,
  ∂s = (dA − δ)/T, ∂(q̂·k) = 2 (q̂·k) ∂s, ∂q̂ = ∂(q̂·k)·K, ∂K = ∂(q̂·k)ᵀ·q̂ and
  ∂q = ∂q̂/‖q‖ (∂q̂ has no component along q̂); ∂V = (s/T)ᵀ·G plus the fallback rows'
  uniform share.

Masks that depend on the query (causal, arbitrary) and dropout on the weights take the
general path, which forms the weights once. Both paths equal ``qaap_attention`` and its
autograd gradients (tests/test_qaap_quadratic.py). Half precision computes in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qgraph.kernels.qaap import SUCCESS_ATOL, compute_dtype, expand_kv_heads, keep_mask

__all__ = ["key_only_keep", "quadratic_attention", "quadratic_attention_backward"]


def key_only_keep(
    attn_mask: torch.Tensor | None,
    is_causal: bool,
    n_queries: int,
    n_keys: int,
    device: torch.device,
) -> tuple[bool, torch.Tensor | None]:
    """Whether the mask depends on the key only, and the keep mask: (..., 1, Sk) when it
    does (None: no mask), else the whole keep mask of ``keep_mask`` (causal included).

    A mask broadcast over the queries (size or stride 0 along Sq) is read from its first
    query row; a materialised one (Hugging Face's (B, 1, Sq, Sk) padding masks) is key-only
    when all its rows are equal, one pass over a bool tensor.
    """
    if is_causal:  # top-left aligned: query i sees keys 0..i, whatever Sk is
        return False, keep_mask(attn_mask, True, n_queries, n_keys, device)
    if attn_mask is None:
        return True, None
    mask = attn_mask if attn_mask.dim() >= 2 else attn_mask.unsqueeze(0)
    if mask.shape[-2] == 1 or mask.stride(-2) == 0:
        return True, keep_mask(mask[..., :1, :], False, 1, n_keys, device)
    keep = keep_mask(mask, False, n_queries, n_keys, device)
    assert keep is not None
    first = keep[..., :1, :]
    if torch.equal(keep, first.expand_as(keep)):
        return True, first
    return False, keep


@dataclass
class _Closed:
    """The recomputable pieces shared by forward and backward (compute dtype, heads expanded)."""

    q_hat: torch.Tensor  # (..., H, Sq, D)
    q_norm: torch.Tensor  # (..., H, Sq, 1), clamped at tiny
    keys: torch.Tensor  # (..., H, Sk, D), padding-masked keys zeroed
    values: torch.Tensor  # (..., H, Sk, Dv)
    dots: torch.Tensor  # (..., H, Sq, Sk) q̂·k
    scores: torch.Tensor  # dots², zero where masked
    inv_total: torch.Tensor  # (..., Sq, 1) 1/T, 0 on fallback and empty rows
    fallback: torch.Tensor  # (..., Sq, 1) bool, T ≤ atol·scale (empty rows included)
    n_visible: torch.Tensor  # (..., Sq | 1, 1) visible keys per row
    keep: torch.Tensor | None  # bool broadcastable to (..., Sq, Sk); None: every key
    key_only: bool  # keep is (..., 1, Sk) and masked keys are zeroed in ``keys``


def _closed_form(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None,
    is_causal: bool,
) -> _Closed:
    work = compute_dtype(q.dtype)
    n_heads, n_q, n_k = q.shape[-3], q.shape[-2], k.shape[-2]
    qf = q.to(work)
    keys = expand_kv_heads(k.to(work), n_heads)
    values = expand_kv_heads(v.to(work), n_heads)
    key_only, keep = key_only_keep(attn_mask, is_causal, n_q, n_k, q.device)
    if key_only and keep is not None:
        keys = keys.masked_fill(~keep.mT, 0.0)  # masked keys: zero amplitude, zero score
    q_norm = qf.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(work).tiny)
    q_hat = qf / q_norm
    dots = q_hat @ keys.mT
    scores = dots.square()
    key_norms = keys.square().sum(-1, keepdim=True)  # (..., Sk, 1)
    if keep is None:
        scale = key_norms.sum(-2, keepdim=True)
        n_visible = torch.full((1, 1), n_k, dtype=work, device=q.device)
    elif key_only:
        scale = key_norms.sum(-2, keepdim=True)
        n_visible = keep.sum(-1, keepdim=True).to(work)
    else:
        scores = scores.masked_fill(~keep, 0.0)
        scale = keep.to(work) @ key_norms
        n_visible = keep.sum(-1, keepdim=True).to(work)
    total = scores.sum(-1, keepdim=True)
    fallback = total <= SUCCESS_ATOL * scale
    inv_total = total.reciprocal().masked_fill(fallback, 0.0)
    return _Closed(
        q_hat, q_norm, keys, values, dots, scores, inv_total, fallback, n_visible, keep, key_only
    )


def _uniform(c: _Closed) -> torch.Tensor:
    """Uniform weights over each row's visible keys, broadcastable to the scores."""
    share = 1.0 / c.n_visible.clamp_min(1.0)
    return share if c.keep is None else c.keep.to(share.dtype) * share


def _weights(c: _Closed, dropout_keep: torch.Tensor | None, dropout_p: float) -> torch.Tensor:
    """The (..., Sq, Sk) pooling weights of the general path, dropout applied."""
    weights = torch.where(c.fallback, _uniform(c), c.scores * c.inv_total)
    if dropout_keep is not None and dropout_p > 0.0:
        weights = weights * dropout_keep.to(weights.dtype) / (1.0 - dropout_p)
    return weights


def _row_counts(c: _Closed, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """(fallback, empty) rows (..., H, Sq) as ``QAAPCounts`` counts them."""
    empty = (c.n_visible == 0).expand(*shape[:-1], 1)
    fallback = c.fallback.expand(*shape[:-1], 1) & ~empty
    return fallback.squeeze(-1), empty.squeeze(-1)


def _lean(dropout_keep: torch.Tensor | None, dropout_p: float, c: _Closed) -> bool:
    return c.key_only and (dropout_keep is None or dropout_p == 0.0)


def quadratic_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    dropout_keep: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """QAAP's closed form with SDPA's convention, equal to ``qaap_attention`` (no autograd).

    Returns ``(out, fallback, empty)``: out (..., H, Sq, Dv) in q's dtype; fallback and empty
    (..., H, Sq) bool, the rows ``QAAPCounts`` counts (as tensors: counting them needs no
    synchronisation). Differentiate with ``quadratic_attention_backward``.
    """
    c = _closed_form(q, k, v, attn_mask, is_causal)
    if _lean(dropout_keep, dropout_p, c):
        pooled = (c.scores @ c.values) * c.inv_total
        if c.keep is None:
            mean = c.values.mean(-2, keepdim=True)
        else:
            mean = (c.keep.to(c.values.dtype) @ c.values) / c.n_visible.clamp_min(1.0)
        out = torch.where(c.fallback, mean, pooled)
    else:
        out = _weights(c, dropout_keep, dropout_p) @ c.values
    fallback, empty = _row_counts(c, out.shape)
    return out.to(q.dtype), fallback, empty


def _sum_groups(grad: torch.Tensor, n_kv_heads: int) -> torch.Tensor:
    """Undo ``expand_kv_heads``: sum the gradients of the query heads sharing a kv head."""
    n_heads = grad.shape[-3]
    if n_heads == n_kv_heads:
        return grad
    group = n_heads // n_kv_heads
    return grad.unflatten(-3, (n_kv_heads, group)).sum(-3)


def quadratic_attention_backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    dropout_keep: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``quadratic_attention``'s output w.r.t. (q, k, v), in their dtypes.

    Recomputes the scores (one matmul) rather than keeping them from the forward, as
    flash-attention backwards do; see the module docstring for the formulas.
    """
    c = _closed_form(q, k, v, attn_mask, is_causal)
    grad = grad_out.to(c.values.dtype)
    if _lean(dropout_keep, dropout_p, c):
        scaled = grad * c.inv_total  # fallback rows: 0
        grad_v = c.scores.mT @ scaled
        fallback_grad = (grad * c.fallback).sum(-2, keepdim=True)  # (..., 1, Dv)
        if c.keep is None:
            grad_v = grad_v + fallback_grad / c.n_visible
        else:
            share = c.keep.mT.to(grad.dtype) / c.n_visible.clamp_min(1.0)  # (..., Sk, 1)
            grad_v = grad_v + share * fallback_grad
        out = (c.scores @ c.values) * c.inv_total
        d_weights = grad @ c.values.mT
    else:
        weights = _weights(c, dropout_keep, dropout_p)
        grad_v = weights.mT @ grad
        out = weights @ c.values
        d_weights = grad @ c.values.mT
        if dropout_keep is not None and dropout_p > 0.0:
            d_weights = d_weights * dropout_keep.to(grad.dtype) / (1.0 - dropout_p)
    delta = (grad * out).sum(-1, keepdim=True)
    d_dots = d_weights.sub_(delta).mul_(c.inv_total).mul_(c.dots).mul_(2.0)
    if c.keep is not None and not c.key_only:
        d_dots = d_dots.masked_fill_(~c.keep, 0.0)
    grad_q_hat = d_dots @ c.keys
    grad_k = d_dots.mT @ c.q_hat
    # ∂q = (∂q̂ − q̂ (q̂·∂q̂))/‖q‖, and q̂·∂q̂ = 2 Σ_j s_ij ∂s_ij = 2 (Σ_j a_ij dA_ij − δ_i) = 0:
    # the weights do not change with ‖q_i‖, so the radial term vanishes identically.
    grad_q = grad_q_hat / c.q_norm
    n_kv = k.shape[-3]
    return (
        grad_q.to(q.dtype),
        _sum_groups(grad_k, n_kv).to(k.dtype),
        _sum_groups(grad_v, n_kv).to(v.dtype),
    )
