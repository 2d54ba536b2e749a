"""QAAP's exact closed form in linear time: the degree-2 feature-map factorisation.

QAAP pools o_i = Σ_j a_ij v_j with a_ij = (q̂_i·k_j)² / Σ_l (q̂_i·k_l)² over the keys query i
may see (``qgraph.kernels.qaap``). Because (q̂·k)² = φ(q̂)·φ(k) for a degree-2 feature map,

    Σ_j (q̂_i·k_j)² [v_j, 1] = φ(q̂_i)ᵀ Σ_j φ(k_j) [v_j, 1]ᵀ,

so numerator and normaliser come from one (F, dv + 1) state per head, built in O(n·F·dv)
instead of the O(n²·d) score matrix (docs/kernels.md §1.8). φ lists the products
x_a·x_{(a+s) mod d} for the cyclic shifts s = 0..⌊d/2⌋, F = d·(⌊d/2⌋ + 1) features (2112 for
d = 64, d/2 more than the d(d+1)/2 distinct pairs): a shifted view of x times x, with no
gather. The query side carries how often each shift's pairs occur in Σ_{a,b} (1 or 2), so
no √2 rounding enters. Causal attention is the standard chunked linear-attention scheme: exact
(q̂·k)² scores inside a chunk, the running state for the chunks before it.

The result equals ``qaap_attention`` (same fallback rule and counts) for the masks this form
supports: none, a padding mask (``key_keep``, see ``padding_keys``), causal, causal + padding.
Other masks and dropout on the weights need the quadratic form. Nothing of size n·d² is held:
sequences are cut into chunks whose features fit a memory budget, and the backward
(hand-written, ``_Poly2Sum``) recomputes features chunk by chunk instead of saving them.

Accuracy: the algebra is exact (float64 agrees with the closed form to ~1e-15), but its d²
products cancel when q̂ is nearly orthogonal to the visible keys: a row with a small
post-selection probability P_i = Σ_j (q̂_i·k_j)² / Σ_j ‖k_j‖² errs by up to ~eps·max|v|/P_i
(the closed form by ~eps/√P_i); rows with P_i ≳ 1/d agree to ~1e-6 in float32.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from qgraph.errors import InputError
from qgraph.kernels.qaap import SUCCESS_ATOL, compute_dtype, expand_kv_heads
from qgraph.kernels.qaap_quadratic import key_only_keep

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "feature_count",
    "linear_form_flops",
    "padding_keys",
    "qaap_linear_attention",
    "quadratic_form_flops",
]

#: bytes the temporaries of one chunk step may take. On CPU, steps near the caches are fastest:
#: fwd + bwd at n = 2048, d = 64, 12 heads, one thread: 1.20 s (no mask) / 1.80 s (causal) with
#: 10 MiB, 1.34 / 1.66 s with 5 MiB, 1.25 / 1.85 s with 20 MiB (shared machine, ±10 %). A GPU
#: wants long steps to amortise launches (its budget is a guess, not measured).
DEFAULT_MEMORY_BUDGET = {"cpu": 10 << 20, "cuda": 512 << 20}
#: chunk lengths the budget may pick: short chunks starve the state matmuls (their inner
#: dimension is the chunk), long ones make the causal intra-chunk scores (c² per chunk) cost
#: more than the state they stand in for
_MIN_CHUNK, _MAX_CHUNK = 64, 1024


def _shifts(head_dim: int) -> int:
    """⌊d/2⌋ + 1: the cyclic shifts s whose pairs (a, a+s mod d) cover every unordered pair."""
    return head_dim // 2 + 1


def feature_count(head_dim: int) -> int:
    """F = d·(⌊d/2⌋ + 1), the features of a head of width d (2112 for d = 64)."""
    return head_dim * _shifts(head_dim)


@functools.lru_cache(maxsize=32)
def _query_weight(d: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(S, 1): how often shift s's pairs occur in Σ_{a,b}: once for s = 0 and for s = d/2
    (whose pairs the shift already lists in both orders), twice otherwise."""
    weight = torch.full((_shifts(d), 1), 2.0, dtype=dtype, device=device)
    weight[0] = 1.0
    if d % 2 == 0:
        weight[d // 2] = 1.0
    return weight


def _windows(x: torch.Tensor) -> torch.Tensor:
    """(..., S, d) view: row s holds x_{(a+s) mod d} for a < d (no gather)."""
    d = x.shape[-1]
    return torch.cat([x, x[..., : _shifts(d) - 1]], dim=-1).unfold(-1, d, 1)


def _features(x: torch.Tensor, query: bool) -> torch.Tensor:
    """φ(x) (..., F): x_a·x_{(a+s) mod d} for shifts s ≤ d/2, so that φ_q(q)·φ_k(k) = (q·k)²
    when the query side carries each shift's multiplicity (``_query_weight``)."""
    phi = x.unsqueeze(-2) * _windows(x)
    if query:
        phi = phi * _query_weight(x.shape[-1], x.device, x.dtype)
    return phi.flatten(-2)


def _features_vjp(x: torch.Tensor, grad: torch.Tensor, query: bool) -> torch.Tensor:
    """∂/∂x of Σ_{s,a} grad_{s,a}·φ_{s,a}(x), φ_{s,a} = w_s·x_a·x_{a+s}: grad·x_{a+s} summed
    over s reaches x_a, and grad·x_a reaches x_{a+s}, a cyclic shift by s per row (done by
    re-reading the rows with a stride one shorter, not by a scatter: it also runs under vmap)."""
    d = x.shape[-1]
    shifts = _shifts(d)
    g = grad.unflatten(-1, (shifts, d))
    if query:
        g = g * _query_weight(d, x.device, x.dtype)
    first = (g * _windows(x)).sum(-2)
    # y[s, a] belongs at a + s. Rows of 2d + 1 holding y twice (and one more entry), re-read
    # as rows of 2d: row s starts s entries earlier, so its column d + c is y[s, (c − s) mod d].
    y = g * x.unsqueeze(-2)
    y = torch.cat([y, y, y[..., :1]], dim=-1).flatten(-2)[..., : shifts * 2 * d]
    second = y.unflatten(-1, (shifts, 2 * d))[..., d:].sum(-2)
    return first + second


def _tril(n: int, device: torch.device) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()  # SDPA's is_causal


def _plan(
    heads: int,
    group: int,
    length: int,
    d: int,
    m: int,
    itemsize: int,
    budget: int,
    chunk: int | None = None,
) -> tuple[int, int]:
    """(chunk length, heads per block) whose step temporaries fit ``budget`` bytes: per row
    about five feature-sized vectors (the features, their gradient, the shifted copies of
    ``_features_vjp``), a state row and a row of intra-chunk scores. Long chunks first (they
    feed the matmuls), then as many heads as fit; a given ``chunk`` is kept, heads fitted."""
    per_row = (5 * feature_count(d) + m + _MAX_CHUNK) * itemsize
    rows = max(1, budget // per_row)
    if chunk is None:
        chunk = min(max(1, length), _MAX_CHUNK, max(_MIN_CHUNK, rows // group))
    block = max(1, min(heads, rows // (group * chunk)))
    return chunk, block


def _spans(length: int, chunk: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk, length)) for s in range(0, length, chunk)]


class _Poly2Sum(torch.autograd.Function):
    """P[h, g, i] = Σ_{j visible} (q[h, g, i]·k[h, j])² w[h, j], chunked.

    q (Hk, G, Sq, d) normalised queries (G query heads share each key head), k (Hk, Sk, d)
    keys with masked ones zeroed, w (Hk, Sk, m) values with a column of ones appended (its
    sum is the normaliser). Visible: every key, or j ≤ i when causal. Also returns the final
    state Σ_j φ(k_j) w_jᵀ (Hk, F, m), non-differentiable, which the backward reuses.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(  # type: ignore[override]
        q: torch.Tensor, k: torch.Tensor, w: torch.Tensor, causal: bool, chunk: int, block: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        outs, states = [], []
        for h0 in range(0, k.shape[0], block):
            qb, kb, wb = q[h0 : h0 + block], k[h0 : h0 + block], w[h0 : h0 + block]
            out, state = (_causal_forward if causal else _full_forward)(qb, kb, wb, chunk)
            outs.append(out)
            states.append(state)
        return torch.cat(outs), torch.cat(states)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        q, k, w, causal, chunk, block = inputs
        ctx.save_for_backward(q, k, w, output[1])
        ctx.mark_non_differentiable(output[1])
        ctx.options = (causal, chunk, block)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor, _grad_state: Any) -> tuple[Any, ...]:  # type: ignore[override]
        q, k, w, state = ctx.saved_tensors
        causal, chunk, block = ctx.options
        parts = []
        for h0 in range(0, k.shape[0], block):
            sl = slice(h0, h0 + block)
            if causal:
                parts.append(_causal_backward(q[sl], k[sl], w[sl], grad_out[sl], chunk))
            else:
                parts.append(_full_backward(q[sl], k[sl], w[sl], state[sl], grad_out[sl], chunk))
        dq, dk, dw = (torch.cat(list(grads)) for grads in zip(*parts, strict=True))
        return dq, dk, dw, None, None, None


def _full_forward(
    q: torch.Tensor, k: torch.Tensor, w: torch.Tensor, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """No causal mask: one state per head from all keys, then applied to every query."""
    heads, group, n_q, d = q.shape
    state = q.new_zeros(heads, feature_count(d), w.shape[-1])
    for a, b in _spans(k.shape[1], chunk):
        state = state + _features(k[:, a:b], False).transpose(-2, -1) @ w[:, a:b]
    rows = q.reshape(heads, group * n_q, d)  # the G heads of a group are just more queries
    out = torch.cat(
        [_features(rows[:, a:b], True) @ state for a, b in _spans(group * n_q, chunk)], dim=1
    )
    return out.reshape(heads, group, n_q, -1), state


def _full_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    w: torch.Tensor,
    state: torch.Tensor,
    grad: torch.Tensor,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """With P = φ(Q)·S and S = φ(K)ᵀW: ∂S = φ(Q)ᵀ∂P, ∂φ(Q) = ∂P·Sᵀ, ∂W = φ(K)·∂S,
    ∂φ(K) = W·∂Sᵀ, each chunk by chunk."""
    heads, group, n_q, d = q.shape
    rows = q.reshape(heads, group * n_q, d)
    grad_rows = grad.reshape(heads, group * n_q, -1)
    grad_state = q.new_zeros(state.shape)
    dq = []
    for a, b in _spans(group * n_q, chunk):
        grad_state = (
            grad_state + _features(rows[:, a:b], True).transpose(-2, -1) @ grad_rows[:, a:b]
        )
        dphi = grad_rows[:, a:b] @ state.transpose(-2, -1)
        dq.append(_features_vjp(rows[:, a:b], dphi, True))
    dk, dw = [], []
    for a, b in _spans(k.shape[1], chunk):
        dw.append(_features(k[:, a:b], False) @ grad_state)
        dk.append(_features_vjp(k[:, a:b], w[:, a:b] @ grad_state.transpose(-2, -1), False))
    return torch.cat(dq, 1).reshape(q.shape), torch.cat(dk, 1), torch.cat(dw, 1)


def _causal_forward(
    q: torch.Tensor, k: torch.Tensor, w: torch.Tensor, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal: chunk t gets φ(Q_t)·S_{<t} from the keys of earlier chunks plus its own
    masked (q̂·k)² scores; S then takes in chunk t's keys."""
    heads, group, _, d = q.shape
    state = q.new_zeros(heads, feature_count(d), w.shape[-1])
    outs = []
    for a, b in _spans(k.shape[1], chunk):
        qc, kc, wc = q[:, :, a:b], k[:, a:b], w[:, a:b]
        scores = (qc @ kc.unsqueeze(1).transpose(-2, -1)).square()
        out = (scores * _tril(b - a, q.device)) @ wc.unsqueeze(1)
        if a > 0:
            inter = _features(qc.reshape(heads, group * (b - a), d), True) @ state
            out = out + inter.reshape(out.shape)
        outs.append(out)
        state = state + _features(kc, False).transpose(-2, -1) @ wc
    return torch.cat(outs, dim=2), state


def _causal_backward(
    q: torch.Tensor, k: torch.Tensor, w: torch.Tensor, grad: torch.Tensor, chunk: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two sweeps that recompute the states: forward (S_{<t}: ∂Q, and the intra-chunk
    terms of all three), then backward (∂S_{>t} = Σ_{later chunks} φ(Q)ᵀ∂P: ∂K, ∂W)."""
    heads, group, _, d = q.shape
    spans = _spans(k.shape[1], chunk)
    state = q.new_zeros(heads, feature_count(d), w.shape[-1])
    dq, dk, dw = [], [], []
    for a, b in spans:
        qc, kc, wc, gc = q[:, :, a:b], k[:, a:b], w[:, a:b], grad[:, :, a:b]
        mask = _tril(b - a, q.device)
        dots = qc @ kc.unsqueeze(1).transpose(-2, -1)  # (H, G, c, c)
        # P = Σ_j dots² w_j, so ∂dots_ij = 2·dots_ij·(∂P_i·w_j) on the visible pairs.
        ddots = 2 * dots * (gc @ wc.unsqueeze(1).transpose(-2, -1)) * mask
        dqc = ddots @ kc.unsqueeze(1)
        dk.append((ddots.transpose(-2, -1) @ qc).sum(1))
        dw.append(((dots.square() * mask).transpose(-2, -1) @ gc).sum(1))
        if a > 0:
            g_rows = gc.reshape(heads, group * (b - a), -1)
            dphi = g_rows @ state.transpose(-2, -1)
            inter = _features_vjp(qc.reshape(heads, group * (b - a), d), dphi, True)
            dqc = dqc + inter.reshape(dqc.shape)
        dq.append(dqc)
        state = state + _features(kc, False).transpose(-2, -1) @ wc
    grad_state = torch.zeros_like(state)
    for t in range(len(spans) - 1, -1, -1):
        a, b = spans[t]
        if t < len(spans) - 1:
            kc, wc = k[:, a:b], w[:, a:b]
            dw[t] = dw[t] + _features(kc, False) @ grad_state
            dphi = wc @ grad_state.transpose(-2, -1)
            dk[t] = dk[t] + _features_vjp(kc, dphi, False)
        rows = q[:, :, a:b].reshape(heads, group * (b - a), d)
        g_rows = grad[:, :, a:b].reshape(heads, group * (b - a), -1)
        grad_state = grad_state + _features(rows, True).transpose(-2, -1) @ g_rows
    return torch.cat(dq, 2), torch.cat(dk, 1), torch.cat(dw, 1)


def padding_keys(attn_mask: torch.Tensor, n_queries: int, n_keys: int) -> torch.Tensor | None:
    """The key-keep mask (..., Sk) of an SDPA-style ``attn_mask`` that only depends on the key.

    ``attn_mask`` is bool (True = attend) or additive (entries ≤ ``ADDITIVE_MASK_THRESHOLD``
    mask the key; other biases are dropped, as in ``keep_mask``), broadcastable to
    (..., Sq, Sk). Returns None when some key is visible to one query and not to another of
    the same head (causal, sliding-window, arbitrary masks): those need the quadratic form.
    Without a mask there is nothing to extract: call ``qaap_linear_attention`` with
    ``key_keep=None``.
    """
    if attn_mask.dim() == 1:  # SDPA broadcasts a 1-D mask over the queries: keys only
        attn_mask = attn_mask.unsqueeze(0)
    if attn_mask.shape[-2] not in (1, n_queries):
        raise InputError(
            f"padding_keys: attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to "
            f"(..., {n_queries}, {n_keys}); pass SDPA's mask, e.g. (B, 1, 1, Sk) or (B, 1, Sq, Sk)."
        )
    if attn_mask.shape[-1] not in (1, n_keys):
        raise InputError(
            f"padding_keys: attn_mask has {attn_mask.shape[-1]} key columns for {n_keys} keys; "
            f"pass SDPA's mask, e.g. (B, 1, 1, Sk) or (B, 1, Sq, Sk)."
        )
    key_only, first = key_only_keep(attn_mask, False, n_queries, n_keys, attn_mask.device)
    if not key_only:
        return None
    assert first is not None
    return first.squeeze(-2).expand(*first.shape[:-2], n_keys)


def _check(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_keep: torch.Tensor | None,
    causal: bool,
    sizes: dict[str, int | None],
) -> None:
    """One message per bad input, naming the fix."""
    if q.dim() < 3 or k.dim() != q.dim() or v.dim() != q.dim():
        raise InputError(
            "qaap_linear_attention: q, k, v must be (..., heads, length, dim) with the same "
            f"number of dims; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}."
        )
    if q.shape[-2] == 0 or k.shape[-2] == 0:
        raise InputError(
            f"qaap_linear_attention: {q.shape[-2]} queries and {k.shape[-2]} keys; skip the "
            "call for an empty sequence (qaap_attention returns zeros for it)."
        )
    for name, value in sizes.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise InputError(
                f"qaap_linear_attention: {name} must be a positive int or None; got {value!r}."
            )
    if q.shape[:-3] != k.shape[:-3] or k.shape[:-1] != v.shape[:-1]:
        raise InputError(
            "qaap_linear_attention: q, k, v must share batch dims and k, v their heads and "
            f"length; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}. Expand the batch "
            "dims before the call."
        )
    if q.shape[-3] % k.shape[-3] != 0:
        raise InputError(
            f"qaap_linear_attention: {q.shape[-3]} query heads cannot share {k.shape[-3]} "
            "key/value heads; grouped-query attention needs a multiple of the kv heads."
        )
    if q.shape[-1] != k.shape[-1]:
        raise InputError(
            f"qaap_linear_attention: queries have dim {q.shape[-1]} but keys {k.shape[-1]}; "
            "they must match."
        )
    if causal and q.shape[-2] != k.shape[-2]:
        raise InputError(
            f"qaap_linear_attention: is_causal needs as many queries as keys (got {q.shape[-2]}"
            f" and {k.shape[-2]}); use qaap_attention for a causal mask over unequal lengths."
        )
    if key_keep is None:
        return
    if key_keep.dtype != torch.bool:
        raise InputError(
            f"qaap_linear_attention: key_keep must be bool (True = keep), got {key_keep.dtype}; "
            "turn an SDPA mask into one with padding_keys(attn_mask, Sq, Sk)."
        )
    try:
        torch.broadcast_shapes(key_keep.shape, (*q.shape[:-2], k.shape[-2]))
    except RuntimeError:
        raise InputError(
            f"qaap_linear_attention: key_keep {tuple(key_keep.shape)} does not broadcast to "
            f"(..., heads, keys) = {(*q.shape[:-2], k.shape[-2])}; drop the query dim of an "
            "SDPA mask with padding_keys."
        ) from None


def qaap_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_keep: torch.Tensor | None = None,
    is_causal: bool = False,
    chunk_size: int | None = None,
    memory_budget: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """QAAP pooling in O(n·d²·dv), equal to ``qaap_attention`` for padding and causal masks.

    Args:
        q: (..., H, Sq, D) queries.
        k, v: (..., Hkv, Sk, D) and (..., Hkv, Sk, Dv); H a multiple of Hkv (GQA: query head
            h reads kv head h // (H // Hkv)).
        key_keep: bool, broadcastable to (..., H, Sk), True = the key may be seen (a padding
            mask; ``padding_keys`` extracts it from an SDPA mask), or None.
        is_causal: SDPA's top-left lower triangle; needs Sq == Sk. Combines with key_keep.
        chunk_size: keys (and queries) per chunk; None picks it from the memory budget.
        memory_budget: bytes one chunk step's temporaries may take; None:
            ``DEFAULT_MEMORY_BUDGET`` of the device type (CUDA's for any accelerator).

    Returns:
        ``(out, fallback, empty)``: out (..., H, Sq, Dv) in q's dtype; fallback and empty
        (..., H, Sq) bool, the rows ``qaap_attention`` counts in ``QAAPCounts``: rows that
        fell back to uniform weights over their visible keys, and rows with no visible key
        (output 0). Half precision computes in float32, float64 stays float64.
    """
    _check(q, k, v, key_keep, is_causal, {"chunk_size": chunk_size, "memory_budget": memory_budget})
    work = compute_dtype(q.dtype)
    *batch, n_heads, n_q, d = q.shape
    n_k, dv = k.shape[-2], v.shape[-1]
    kf, vf = k.to(work), v.to(work)
    if key_keep is not None and key_keep.dim() >= 2 and key_keep.shape[-2] != 1:
        # A padding mask that may differ within a GQA group: give every query head its keys.
        kf, vf = expand_kv_heads(kf, n_heads), expand_kv_heads(vf, n_heads)
    n_kv = kf.shape[-3]
    group = n_heads // n_kv
    # (..., H, Sq, D) -> (N·Hkv, G, Sq, D): the G query heads of a group share one state.
    qf = q.to(work).reshape(-1, n_kv, group, n_q, d).flatten(0, 1)
    kf, vf = kf.reshape(-1, n_k, d), vf.reshape(-1, n_k, dv)
    q_hat = qf / qf.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(work).tiny)

    if key_keep is None:
        keep = torch.ones(kf.shape[:-1], dtype=torch.bool, device=q.device)
    else:
        keep = key_keep.expand(*batch, n_kv, n_k).reshape(-1, n_k)
        kf = kf.masked_fill(~keep.unsqueeze(-1), 0.0)  # masked keys: zero amplitude
    # QAAP is invariant to one scale of all keys of a head: dividing by the largest entry
    # keeps k⊗k within range (no overflow of ‖k‖⁴, no underflow of tiny keys to zero).
    top = kf.detach().abs().amax((-2, -1), keepdim=True)
    kf = kf / torch.where(top > 0, top, torch.ones_like(top))
    norms = kf.detach().square().sum(-1)  # (N·Hkv, Sk), for the fallback rule
    w = torch.cat([vf, torch.ones_like(vf[..., :1])], dim=-1)  # the ones column sums to den

    budget = memory_budget or DEFAULT_MEMORY_BUDGET["cpu" if q.device.type == "cpu" else "cuda"]
    chunk, block = _plan(
        kf.shape[0], group, max(n_q, n_k), d, dv + 1, kf.element_size(), budget, chunk_size
    )
    pooled, _ = _Poly2Sum.apply(q_hat, kf, w, is_causal, chunk, block)
    num, den = pooled[..., :dv], pooled[..., dv:]

    # The rule of qaap.pooled_weights, with the visible-key sums as totals or prefix sums.
    kept = keep.to(work)
    if is_causal:
        scale = norms.cumsum(-1)[:, None, :, None]
        n_visible = kept.cumsum(-1)[:, None, :, None]
        value_sum = (vf * kept.unsqueeze(-1)).cumsum(-2).unsqueeze(1)
    else:
        scale = norms.sum(-1)[:, None, None, None]
        n_visible = kept.sum(-1)[:, None, None, None]
        value_sum = (vf * kept.unsqueeze(-1)).sum(-2)[:, None, None, :]
    empty = (n_visible == 0).expand_as(den)
    fallback = den.detach() <= SUCCESS_ATOL * scale
    uniform = value_sum / n_visible.clamp_min(1)
    # where() alone would still back-propagate NaN from 0/0 into the unused branch.
    safe_den = torch.where(fallback, torch.ones_like(den), den)
    out = torch.where(fallback, uniform, num / safe_den)
    shape = (*batch, n_heads, n_q)
    return (
        out.reshape(*shape, dv).to(q.dtype),
        (fallback & ~empty).reshape(shape),
        empty.reshape(shape),
    )


def linear_form_flops(
    batch_heads: int,
    n_queries: int,
    n_keys: int,
    head_dim: int,
    value_dim: int,
    causal: bool,
    *,
    backward: bool = False,
    chunk_size: int | None = None,
) -> int:
    """Floating-point operations of ``qaap_linear_attention`` (forward, or forward + backward).

    Counts its matmuls (2 per multiply-add) and its per-feature element-wise work, with
    F = d·(⌊d/2⌋ + 1) features and m = dv + 1 state columns: forward 2·F·m per query and per key
    (state build and read-out) plus 3·F per row for the features; backward twice the state
    matmuls again plus the d×d feature gradients. Causal adds the intra-chunk scores,
    2·c·(d + m) per row forward and 2·c·(3d + 2m) backward, for chunk length c (by default the
    one the CPU budget picks, as the kernel does), and its backward rebuilds the states.
    """
    f, m, d = feature_count(head_dim), value_dim + 1, head_dim
    rows = n_queries + n_keys
    total = 2 * f * m * rows + 3 * f * rows
    if backward:
        total += 4 * f * m * rows + (3 * f + 2 * d * d) * rows
    if causal:
        budget = DEFAULT_MEMORY_BUDGET["cpu"]
        chunk = chunk_size or _plan(batch_heads, 1, n_keys, d, m, 4, budget)[0]
        chunk = min(chunk, n_keys)
        total += 2 * chunk * (d + m) * n_queries
        if backward:
            total += 2 * chunk * (3 * d + 2 * m) * n_queries + (2 * f * m + 3 * f) * n_keys
    return int(batch_heads * total)


def quadratic_form_flops(
    batch_heads: int,
    n_queries: int,
    n_keys: int,
    head_dim: int,
    value_dim: int,
    causal: bool,
    *,
    backward: bool = False,
) -> int:
    """Floating-point operations of ``qaap_attention`` (the closed form), same conventions.

    Scores and pooling are two (Sq × Sk) matmuls, 2·Sq·Sk·(d + dv), plus about 6 element-wise
    operations per score (square, mask, sum, divide, the fallback select); the backward has
    four such matmuls and about 8 element-wise operations per score. The causal mask is
    applied to the full Sq × Sk matrix, so ``causal`` costs the same.
    """
    del causal  # the closed form computes every score and masks afterwards
    pairs = n_queries * n_keys
    total = 2 * pairs * (head_dim + value_dim) + 6 * pairs
    if backward:
        total += 4 * pairs * (head_dim + value_dim) + 8 * pairs
    return int(batch_heads * total)
