"""FLOP formulas of the classical attention that qgraph replaces: the one place they live
(the analysis pass that counts a graph's FLOPs and the cost model's roofline both read them)."""

from __future__ import annotations

__all__ = ["SOFTMAX_FLOPS_PER_ELEMENT", "attention_flops"]

#: max, subtract, exp, sum, divide: about 5 FLOPs per softmax element
SOFTMAX_FLOPS_PER_ELEMENT = 5


def attention_flops(rows: int, n_keys: int, head_dim: int, value_dim: int) -> int:
    """FLOPs of softmax attention for ``rows`` query rows (batch × heads × queries) over
    ``n_keys`` keys: QKᵀ (2·D per pair) + softmax + AV (2·Dv per pair)."""
    return rows * n_keys * (2 * head_dim + SOFTMAX_FLOPS_PER_ELEMENT + 2 * value_dim)
