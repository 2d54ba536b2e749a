"""The quantum-offload operators as real torch ops: ``qgraph::qaap`` and ``qgraph::qrce``.

Each is a ``torch.library.custom_op`` with a fake (shape) implementation and an autograd
formula, so torch.export, torch.compile and the ONNX exporter see one opaque node per
offloaded region. The forward dispatches to a backend by registry key (bound by lowering).
The backward is its own op, dispatched on the ``gradient`` argument: QAAP by the closed
form's VJP (autograd on the exact backend, straight-through on sampled ones; in the form
``form`` resolves to, docs/kernels.md §1.8) or by SPSA on the backend; QRCE by the
backend's ``qrce_gradient`` (autograd or parameter shift).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from qgraph.backends import get_backend
from qgraph.costmodel.qaap_form import resolve_form
from qgraph.kernels.qaap_linear import qaap_linear_attention
from qgraph.kernels.qaap_quadratic import quadratic_attention_backward
from qgraph.kernels.qrce import QRCEStructure
from qgraph.kernels.spsa import spsa_vjp

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
    gradient: str,
    site: str,
    form: str = "auto",
) -> Tensor:
    """Quantum Amplitude Attention Pooling with SDPA's q/k/v/mask convention.

    q (B, H, Sq, D); k, v (B, Hkv, Sk, ·) with H a multiple of Hkv (grouped-query);
    ``dropout_keep`` is the Bernoulli keep mask on the weights, drawn by the graph in
    training mode (None otherwise). ``backend`` is a registry key, ``gradient`` the method
    of the backward ("autograd", "straight-through" or "spsa"), ``form`` the exact closed
    form's ("auto", "quadratic" or "linear"). Returns (B, H, Sq, Dv).
    """
    return get_backend(backend).qaap(
        q, k, v, attn_mask, is_causal, dropout_keep, dropout_p, site, form=form
    )


@qaap.register_fake
def _qaap_fake(
    q, k, v, attn_mask, dropout_keep, is_causal, dropout_p, backend, gradient, site, form="auto"
):
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
    backend: str,
    gradient: str,
    site: str,
    form: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of QAAP w.r.t. q, k, v: the closed form's VJP, or SPSA on the backend."""
    if gradient == "spsa":
        runner = get_backend(backend)

        def evaluate_pair(
            plus: tuple[Tensor, ...], minus: tuple[Tensor, ...]
        ) -> tuple[Tensor, Tensor]:
            # Both perturbed forwards as one batch: one job on the backend.
            batch = q.shape[0]
            stacked = [torch.cat([a, b]) for a, b in zip(plus, minus, strict=True)]
            mask = _repeat_batch(attn_mask, batch)
            keep = _repeat_batch(dropout_keep, batch)
            out = runner.qaap(*stacked, mask, is_causal, keep, dropout_p, site, form=form)
            return out[:batch], out[batch:]

        grad_q, grad_k, grad_v = spsa_vjp(evaluate_pair, (q, k, v), grad_out)
        return grad_q, grad_k, grad_v

    choice, key_keep, causal = resolve_form(
        form, q, k, v, attn_mask, is_causal, dropout_keep, dropout_p
    )
    if choice.form == "quadratic":
        return quadratic_attention_backward(
            grad_out, q, k, v, attn_mask, is_causal, dropout_keep, dropout_p
        )

    # torch.func.vjp, not torch.autograd: an op's implementation runs below the autograd
    # dispatch key, where only functorch transforms record a graph.
    def linear_form(q_: Tensor, k_: Tensor, v_: Tensor) -> Tensor:
        return qaap_linear_attention(q_, k_, v_, key_keep, causal)[0]

    vjp: Any = torch.func.vjp(linear_form, q, k, v)[1]
    grad_q, grad_k, grad_v = vjp(grad_out)
    return grad_q, grad_k, grad_v


def _repeat_batch(mask: Tensor | None, batch: int) -> Tensor | None:
    """A mask broadcast over 2·batch rows (the plus and minus halves of an SPSA pair)."""
    if mask is None or mask.dim() < 4 or mask.shape[0] == 1:
        return mask
    expanded = mask.expand(batch, *mask.shape[1:])
    return torch.cat([expanded, expanded])


@qaap_backward.register_fake
def _qaap_backward_fake(
    grad_out,
    q,
    k,
    v,
    attn_mask,
    dropout_keep,
    is_causal,
    dropout_p,
    backend,
    gradient,
    site,
    form="auto",
):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _qaap_setup_context(ctx, inputs, output):
    q, k, v, attn_mask, dropout_keep, is_causal, dropout_p, backend, gradient, site, form = inputs
    ctx.save_for_backward(q, k, v, attn_mask, dropout_keep)
    ctx.options = (is_causal, dropout_p, backend, gradient, site, form)


def _qaap_grad(ctx, grad_out):
    q, k, v, attn_mask, dropout_keep = ctx.saved_tensors
    grad_q, grad_k, grad_v = torch.ops.qgraph.qaap_backward(
        grad_out, q, k, v, attn_mask, dropout_keep, *ctx.options
    )
    return grad_q, grad_k, grad_v, None, None, None, None, None, None, None, None


qaap.register_autograd(_qaap_grad, setup_context=_qaap_setup_context)


@torch.library.custom_op("qgraph::qrce", mutates_args=())
def qrce(
    token_ids: Tensor,
    angle_table: Tensor,
    weights: Tensor,
    seed: int,
    backend: str,
    gradient: str,
    site: str,
) -> Tensor:
    """Quantum Random Circuit Embedding read-out: (*token_ids.shape, 2q) features.

    ``angle_table`` (V, q) holds each token's re-uploaded angles, ``weights`` (L, q) the
    trainable rotations; ``seed`` fixes the random circuit structure; ``gradient`` is the
    backward's method ("autograd" or "parameter-shift").
    """
    structure = QRCEStructure.from_seed(angle_table.shape[-1], weights.shape[0], seed)
    return get_backend(backend).qrce(token_ids, angle_table, weights, structure, site)


@qrce.register_fake
def _qrce_fake(token_ids, angle_table, weights, seed, backend, gradient, site):
    return angle_table.new_empty((*token_ids.shape, 2 * angle_table.shape[-1]))


@torch.library.custom_op("qgraph::qrce_backward", mutates_args=())
def qrce_backward(
    grad_out: Tensor,
    token_ids: Tensor,
    angle_table: Tensor,
    weights: Tensor,
    seed: int,
    backend: str,
    gradient: str,
    site: str,
) -> tuple[Tensor, Tensor]:
    """Gradients of the QRCE features w.r.t. the angle table and weights, on the backend."""
    structure = QRCEStructure.from_seed(angle_table.shape[-1], weights.shape[0], seed)
    return get_backend(backend).qrce_gradient(
        grad_out, token_ids, angle_table, weights, structure, gradient, site
    )


@qrce_backward.register_fake
def _qrce_backward_fake(grad_out, token_ids, angle_table, weights, seed, backend, gradient, site):
    return torch.empty_like(angle_table), torch.empty_like(weights)


def _qrce_setup_context(ctx, inputs, output):
    token_ids, angle_table, weights, seed, backend, gradient, site = inputs
    ctx.save_for_backward(token_ids, angle_table, weights)
    ctx.options = (seed, backend, gradient, site)


def _qrce_grad(ctx, grad_out):
    token_ids, angle_table, weights = ctx.saved_tensors
    grad_table, grad_weights = torch.ops.qgraph.qrce_backward(
        grad_out, token_ids, angle_table, weights, *ctx.options
    )
    return None, grad_table, grad_weights, None, None, None, None


qrce.register_autograd(_qrce_grad, setup_context=_qrce_setup_context)
