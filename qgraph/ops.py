"""The quantum-offload operators as real torch ops: ``qgraph::qaap`` and ``qgraph::qrce``.

Each is a ``torch.library.custom_op`` with a fake (shape) implementation and an autograd
formula, so torch.export, torch.compile and the ONNX exporter see one opaque node per
offloaded region. The forward dispatches to a backend by name (bound by lowering); the
backward is its own op computing the exact closed-form vector-Jacobian product, which is
autograd on the exact backend and the straight-through estimator on sampled ones.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from qgraph.backends import get_backend
from qgraph.kernels.qaap import qaap_attention
from qgraph.kernels.qrce import QRCEStructure, qrce_token_features

__all__ = ["qaap", "qaap_backward", "qrce", "qrce_backward"]


@torch.library.custom_op("qgraph::qaap", mutates_args=())
def qaap(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None,
    dropout_keep: Tensor | None,
    is_causal: bool,
    dropout_p: float,
    backend: str,
    site: str,
) -> Tensor:
    """Quantum Amplitude Attention Pooling with SDPA's q/k/v/mask convention.

    q (B, H, Sq, D); k, v (B, Hkv, Sk, ·) with H a multiple of Hkv (grouped-query);
    ``dropout_keep`` is the Bernoulli keep mask on the weights, drawn by the graph in
    training mode (None otherwise). Returns (B, H, Sq, Dv) in q's dtype.
    """
    return get_backend(backend).qaap(q, k, v, attn_mask, is_causal, dropout_keep, dropout_p, site)


@qaap.register_fake
def _qaap_fake(q, k, v, attn_mask, dropout_keep, is_causal, dropout_p, backend, site):
    return q.new_empty((*q.shape[:-1], v.shape[-1]))


@torch.library.custom_op("qgraph::qaap_backward", mutates_args=())
def qaap_backward(
    grad_out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None,
    dropout_keep: Tensor | None,
    is_causal: bool,
    dropout_p: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of the closed-form QAAP output with respect to q, k and v."""

    # torch.func.vjp, not torch.autograd: an op's implementation runs below the autograd
    # dispatch key, where only functorch transforms record a graph.
    def closed_form(q_: Tensor, k_: Tensor, v_: Tensor) -> Tensor:
        return qaap_attention(q_, k_, v_, attn_mask, is_causal, dropout_keep, dropout_p)[0]

    vjp: Any = torch.func.vjp(closed_form, q, k, v)[1]
    grad_q, grad_k, grad_v = vjp(grad_out)
    return grad_q, grad_k, grad_v


@qaap_backward.register_fake
def _qaap_backward_fake(grad_out, q, k, v, attn_mask, dropout_keep, is_causal, dropout_p):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _qaap_setup_context(ctx, inputs, output):
    q, k, v, attn_mask, dropout_keep, is_causal, dropout_p, _backend, _site = inputs
    ctx.save_for_backward(q, k, v, attn_mask, dropout_keep)
    ctx.is_causal = is_causal
    ctx.dropout_p = dropout_p


def _qaap_grad(ctx, grad_out):
    q, k, v, attn_mask, dropout_keep = ctx.saved_tensors
    grad_q, grad_k, grad_v = torch.ops.qgraph.qaap_backward(
        grad_out, q, k, v, attn_mask, dropout_keep, ctx.is_causal, ctx.dropout_p
    )
    return grad_q, grad_k, grad_v, None, None, None, None, None, None


qaap.register_autograd(_qaap_grad, setup_context=_qaap_setup_context)


@torch.library.custom_op("qgraph::qrce", mutates_args=())
def qrce(
    token_ids: Tensor, angle_table: Tensor, weights: Tensor, seed: int, backend: str, site: str
) -> Tensor:
    """Quantum Random Circuit Embedding read-out: (*token_ids.shape, 2q) features.

    ``angle_table`` (V, q) holds each token's re-uploaded angles, ``weights`` (L, q) the
    trainable rotations; ``seed`` fixes the random circuit structure.
    """
    structure = QRCEStructure.from_seed(angle_table.shape[-1], weights.shape[0], seed)
    return get_backend(backend).qrce(token_ids, angle_table, weights, structure, site)


@qrce.register_fake
def _qrce_fake(token_ids, angle_table, weights, seed, backend, site):
    return angle_table.new_empty((*token_ids.shape, 2 * angle_table.shape[-1]))


@torch.library.custom_op("qgraph::qrce_backward", mutates_args=())
def qrce_backward(
    grad_out: Tensor, token_ids: Tensor, angle_table: Tensor, weights: Tensor, seed: int
) -> tuple[Tensor, Tensor]:
    """Exact gradients of the QRCE features with respect to the angle table and weights."""
    structure = QRCEStructure.from_seed(angle_table.shape[-1], weights.shape[0], seed)

    def features(table: Tensor, rotations: Tensor) -> Tensor:
        return qrce_token_features(token_ids, table, rotations, structure)

    vjp: Any = torch.func.vjp(features, angle_table, weights)[1]
    grad_table, grad_weights = vjp(grad_out)
    return grad_table, grad_weights


@qrce_backward.register_fake
def _qrce_backward_fake(grad_out, token_ids, angle_table, weights, seed):
    return torch.empty_like(angle_table), torch.empty_like(weights)


def _qrce_setup_context(ctx, inputs, output):
    token_ids, angle_table, weights, seed, _backend, _site = inputs
    ctx.save_for_backward(token_ids, angle_table, weights)
    ctx.seed = seed


def _qrce_grad(ctx, grad_out):
    token_ids, angle_table, weights = ctx.saved_tensors
    grad_table, grad_weights = torch.ops.qgraph.qrce_backward(
        grad_out, token_ids, angle_table, weights, ctx.seed
    )
    return None, grad_table, grad_weights, None, None, None


qrce.register_autograd(_qrce_grad, setup_context=_qrce_setup_context)
