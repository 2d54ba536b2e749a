"""Which of QAAP's two exact forms to run: the classical roofline of each, from the shapes.

The exact backend computes QAAP either as the quadratic closed form
(``qgraph.kernels.qaap_quadratic``: O(n²·d) FLOPs, n² memory) or as the linear degree-2
feature-map form (``qgraph.kernels.qaap_linear``: O(n·d²·dv), n·d² memory per chunk). Each is
timed with the roofline of ``qgraph.costmodel.classical``,

    time = max(FLOPs / peak, bytes / bandwidth) + ops × per-op overhead,

FLOPs from the kernels' own counts (``quadratic_form_flops``, ``linear_form_flops``), bytes
from the passes each kernel makes over its largest temporaries (counted from the code below),
on the device profile of the tensors' device (``cpu_local`` or ``gpu_h100``). ``auto`` takes
the faster; the linear form needs a mask that depends on the key only (none, padding) or
causal with Sq = Sk, and no dropout on the weights (docs/kernels.md §1.8).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from qgraph.costmodel.profiles import DeviceProfile, load
from qgraph.kernels.qaap_linear import (
    DEFAULT_MEMORY_BUDGET,
    feature_count,
    linear_form_flops,
    quadratic_form_flops,
)
from qgraph.kernels.qaap_quadratic import key_only_keep

__all__ = [
    "FORM_SETTINGS",
    "FormChoice",
    "choose_form",
    "crossover_length",
    "form_seconds",
    "linear_possible",
    "resolve_form",
]

#: what ``qgraph.compile(qaap_form=...)`` accepts
FORM_SETTINGS = ("auto", "quadratic", "linear")
#: passes over the (Sq × Sk) scores, forward and backward (qaap_quadratic.py: dots, square,
#: sum, product; the backward recomputes those, then dA and four in-place updates, 3 products)
_QUADRATIC_PASSES = (5, 17)
#: passes over each row's F features, forward and backward (qaap_linear.py: features written
#: then read by a product; the backward rebuilds them, reads them twice and takes their VJP)
_LINEAR_PASSES = (2, 6)
#: operator launches per call, forward and backward: the top-level aten ops torch.profiler
#: counts in one call through ``qgraph::qaap`` at 2 × 2 heads × 12 × 16 (one chunk); the
#: linear form's backward includes its forward's recomputation, and each further chunk adds
#: its state products
_QUADRATIC_OPS = (44, 60)
_LINEAR_OPS = (98, 220)
_LINEAR_OPS_PER_CHUNK = (4, 12)
_FLOAT_BYTES = 4


def linear_possible(mask_kind: str | None, dropout: bool, n_queries: int, n_keys: int) -> bool:
    """Whether the linear form can compute a site: a key-only or causal (Sq = Sk) mask and
    no dropout on the weights (``mask_kind`` as ``ClassifyMasks`` names it)."""
    if dropout or n_queries == 0 or n_keys == 0:
        return False
    if mask_kind in (None, "none", "padding"):
        return True
    return mask_kind in ("causal", "causal+padding") and n_queries == n_keys


def form_seconds(
    form: str,
    batch_heads: int,
    n_queries: int,
    n_keys: int,
    head_dim: int,
    value_dim: int,
    causal: bool,
    device: str | DeviceProfile = "cpu_local",
    training: bool = True,
) -> float:
    """Roofline seconds of one QAAP call in ``form`` (forward, + backward when training)."""
    profile = load(device)
    if form == "quadratic":
        flops = quadratic_form_flops(
            batch_heads, n_queries, n_keys, head_dim, value_dim, causal, backward=training
        )
        passes = _QUADRATIC_PASSES[0] + (_QUADRATIC_PASSES[1] if training else 0)
        nbytes = passes * batch_heads * n_queries * n_keys * _FLOAT_BYTES
        ops = _QUADRATIC_OPS[0] + (_QUADRATIC_OPS[1] if training else 0)
    elif form == "linear":
        flops = linear_form_flops(
            batch_heads, n_queries, n_keys, head_dim, value_dim, causal, backward=training
        )
        passes = _LINEAR_PASSES[0] + (_LINEAR_PASSES[1] if training else 0)
        rows = n_queries + n_keys
        nbytes = passes * batch_heads * rows * feature_count(head_dim) * _FLOAT_BYTES
        budget = DEFAULT_MEMORY_BUDGET["cpu" if profile.name.startswith("cpu") else "cuda"]
        chunk_bytes = feature_count(head_dim) * _FLOAT_BYTES * batch_heads
        chunks = max(1, -(-max(n_queries, n_keys) * chunk_bytes // budget))
        per_chunk = _LINEAR_OPS_PER_CHUNK[0] + (_LINEAR_OPS_PER_CHUNK[1] if training else 0)
        ops = _LINEAR_OPS[0] + (_LINEAR_OPS[1] if training else 0) + (chunks - 1) * per_chunk
    else:
        raise ValueError(f"QAAP form must be 'quadratic' or 'linear'; got {form!r}.")
    peak = profile.value("peak_flops_fp32" if "peak_flops_fp32" in profile else "peak_flops")
    bandwidth = profile.value("memory_bandwidth")
    overhead = profile.value("per_op_overhead")
    return max(flops / peak, nbytes / bandwidth) + ops * overhead


@dataclass(frozen=True)
class FormChoice:
    """The form a QAAP call runs in and why (for the report and the explanation)."""

    form: str  # "quadratic" or "linear"
    setting: str  # what was asked: "auto", "quadratic" or "linear"
    quadratic_s: float  # roofline seconds of each form (training: forward + backward)
    linear_s: float | None  # None: the linear form cannot compute this call
    reason: str

    def __str__(self) -> str:
        return f"{self.form} ({self.reason})"


def choose_form(
    setting: str,
    batch_heads: int,
    n_queries: int,
    n_keys: int,
    head_dim: int,
    value_dim: int,
    mask_kind: str | None,
    dropout: bool = False,
    device: str = "cpu_local",
    training: bool = True,
) -> FormChoice:
    """The form of one QAAP call: ``setting`` when forced, else the faster roofline.

    A forced "linear" on a call the linear form cannot compute (a query-dependent mask or
    dropout) runs quadratic and says so: both compute the same weights.
    """
    if setting not in FORM_SETTINGS:
        raise ValueError(f"qaap_form must be one of {', '.join(FORM_SETTINGS)}; got {setting!r}.")
    return _choose(
        setting,
        batch_heads,
        n_queries,
        n_keys,
        head_dim,
        value_dim,
        mask_kind,
        dropout,
        device,
        training,
    )


@functools.lru_cache(maxsize=1024)
def _choose(
    setting: str,
    batch_heads: int,
    n_queries: int,
    n_keys: int,
    head_dim: int,
    value_dim: int,
    mask_kind: str | None,
    dropout: bool,
    device: str,
    training: bool,
) -> FormChoice:
    causal = mask_kind in ("causal", "causal+padding")
    shape = (batch_heads, n_queries, n_keys, head_dim, value_dim, causal, device, training)
    quadratic = form_seconds("quadratic", *shape)
    if not linear_possible(mask_kind, dropout, n_queries, n_keys):
        why = "dropout on the weights" if dropout else f"{mask_kind} masks"
        return FormChoice("quadratic", setting, quadratic, None, f"linear cannot take {why}")
    linear = form_seconds("linear", *shape)
    if setting != "auto":
        return FormChoice(setting, setting, quadratic, linear, "set by qaap_form")
    form = "linear" if linear < quadratic else "quadratic"
    reason = f"roofline: linear {linear / quadratic:.2g}× quadratic"
    return FormChoice(form, setting, quadratic, linear, reason)


def crossover_length(
    batch_heads: int,
    head_dim: int,
    value_dim: int,
    causal: bool,
    device: str = "cpu_local",
    training: bool = True,
    limit: int = 1 << 24,
) -> int | None:
    """The shortest sequence length (Sq = Sk) at which the roofline prefers the linear form,
    None below ``limit`` (found by bisection: the quadratic form's time grows faster)."""

    def linear_wins(n: int) -> bool:
        shape = (batch_heads, n, n, head_dim, value_dim, causal, device, training)
        return form_seconds("linear", *shape) < form_seconds("quadratic", *shape)

    if not linear_wins(limit):
        return None
    low, high = 1, limit
    while high - low > 1:
        middle = (low + high) // 2
        if linear_wins(middle):
            high = middle
        else:
            low = middle
    return high


def call_mask_kind(
    attn_mask: torch.Tensor | None, is_causal: bool, n_queries: int, n_keys: int
) -> tuple[str, torch.Tensor | None, bool]:
    """What one call's mask is, as far as the linear form cares: its kind ("none",
    "padding", "causal", "causal+padding" or "arbitrary"), its key-keep mask (..., Sk) and
    whether to run it causally.

    Hugging Face materialises its masks as (B, 1, Sq, Sk), so this reads values: rows that
    are all equal are a padding mask; a mask equal to the lower triangle of its last row is
    causal + padding (GPT-2 passes its causal mask so, with ``is_causal`` False). Each check
    is one pass over a bool (Sq × Sk) tensor, made only when the linear form is a candidate.
    """
    if attn_mask is None:
        return ("causal" if is_causal else "none"), None, is_causal
    key_only, keep = key_only_keep(attn_mask, False, n_queries, n_keys, attn_mask.device)
    if key_only:
        assert keep is not None
        return ("causal+padding" if is_causal else "padding"), keep.squeeze(-2), is_causal
    if not is_causal and n_queries == n_keys:
        assert keep is not None
        last = keep[..., -1:, :]
        tril = torch.ones(n_queries, n_keys, dtype=torch.bool, device=keep.device).tril()
        if torch.equal(keep, (tril & last).expand_as(keep)):
            return "causal+padding", last.squeeze(-2), True
    return "arbitrary", None, is_causal


def resolve_form(
    setting: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None,
    is_causal: bool,
    dropout_keep: torch.Tensor | None,
    dropout_p: float,
) -> tuple[FormChoice, torch.Tensor | None, bool]:
    """The form of one QAAP call from its tensors, and for the linear form the key-keep
    mask and causality to run it with. Forward and backward resolve alike: the choice uses
    training rooflines, so it cannot change between a call's forward and its backward."""
    n_q, n_k = q.shape[-2], k.shape[-2]
    dims = (int(q.shape[:-2].numel()), n_q, n_k, q.shape[-1], v.shape[-1])
    dropout = dropout_keep is not None and dropout_p > 0.0
    device = "cpu_local" if q.device.type == "cpu" else "gpu_h100"
    # The best case first: the mask is only read when the linear form could win.
    hopeful = "causal" if is_causal else "padding"
    choice = choose_form(setting, *dims, hopeful, dropout, device)
    if choice.form == "quadratic":
        return choice, None, is_causal
    kind, key_keep, causal = call_mask_kind(attn_mask, is_causal, n_q, n_k)
    return choose_form(setting, *dims, kind, dropout, device), key_keep, causal
