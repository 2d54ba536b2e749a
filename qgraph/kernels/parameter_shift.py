"""Parameter-shift gradients of the QRCE read-out, for backends that can only run circuits.

Every rotation of the QRCE circuit is G(φ) = exp(−iφP/2) with P² = I, so every expectation
value f is c₀ + c₁ cos φ + c₂ sin φ in each single gate angle φ and

    ∂f/∂φ = [f(φ + π/2) − f(φ − π/2)] / 2          (exact, not a finite difference)

(docs/kernels.md §2.4 has the derivation). In QRCE:

* the token angle α_t[i] is re-uploaded in all L layers: by the product rule its derivative
  is the sum over layers l of the shift rule applied to the occurrence in layer l alone
  (the other L − 1 occurrences keep α_t[i]);
* θ[l, i] occurs once per circuit but is shared by every token: its gradient sums the
  per-token shift rule over tokens.

Per token that is 2·L·q shifted circuits for α and 2·L·q for θ, 4·L·q in all. The shifted
circuits need per-layer angles, so they are described as (layer_angles, layer_weights) pairs
of shape (N, L, q) (``qgraph.kernels.qrce.qrce_features_per_layer``), and a backend supplies
``evaluate(layer_angles, layer_weights) -> (N, 2q)``: exactly on the exact backend, from
samples on the shots backend, as real circuits on Aer or hardware. ``evaluate`` is called
once per VJP with all U·4·L·q circuits, so a backend can send them as one job.

Row order of the shifted batch (``qrce_shifted_parameters``): row
``((u·4 + s)·L + l)·q + i`` is token u with slot (l, i) shifted, where s = 0: α + π/2,
s = 1: α − π/2, s = 2: θ + π/2, s = 3: θ − π/2.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from qgraph.kernels.qaap import compute_dtype
from qgraph.kernels.qrce import QRCEStructure, unique_tokens

__all__ = [
    "SHIFT",
    "Evaluate",
    "StructureEvaluate",
    "qrce_parameter_shift_vjp",
    "qrce_shifted_parameters",
    "token_parameter_shift",
]

#: the shift of the two-term rule for gates exp(−iφP/2)
SHIFT = math.pi / 2

#: runs N circuits given per-layer angles (N, L, q) and weights (N, L, q); returns (N, 2q)
Evaluate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: the same, also told the structure: ``qrce_features_per_layer`` itself is one
StructureEvaluate = Callable[[torch.Tensor, torch.Tensor, QRCEStructure], torch.Tensor]

#: the four shifted copies per (token, layer, qubit): (sign on α, sign on θ)
_SHIFT_SIGNS = ((1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0))


def _check(angles: torch.Tensor, weights: torch.Tensor, structure: QRCEStructure) -> None:
    if not isinstance(structure, QRCEStructure):
        raise TypeError(
            f"parameter shift: structure must be a QRCEStructure; got {type(structure).__name__}."
        )
    q, n_layers = structure.n_qubits, structure.n_layers
    if angles.dim() != 2 or angles.shape[1] != q:
        raise ValueError(
            f"parameter shift: angles must have shape (U, q={q}); got {tuple(angles.shape)}."
        )
    if tuple(weights.shape) != (n_layers, q):
        raise ValueError(
            f"parameter shift: weights must have shape (L={n_layers}, q={q}); got "
            f"{tuple(weights.shape)}."
        )
    if not (angles.is_floating_point() and weights.is_floating_point()):
        raise TypeError(
            f"parameter shift: angles and weights must be real floating-point tensors; got "
            f"{angles.dtype} and {weights.dtype}."
        )


def qrce_shifted_parameters(
    angles: torch.Tensor, weights: torch.Tensor, structure: QRCEStructure
) -> tuple[torch.Tensor, torch.Tensor]:
    """All parameter-shifted circuits of U tokens, as per-layer parameters.

    Args:
        angles: (U, q) re-upload angles of the tokens.
        weights: (L, q) trainable angles.
        structure: the circuit's size and rotation axes.

    Returns:
        ``(layer_angles, layer_weights)``, both (U·4·L·q, L, q), in the compute dtype (float64
        for float64 inputs, float32 otherwise: a ±π/2 shift is not representable in half
        precision) and detached. Row order is in the module docstring; every row equals the
        unshifted circuit except in its one shifted slot.
    """
    _check(angles, weights, structure)
    q, n_layers = structure.n_qubits, structure.n_layers
    work = compute_dtype(torch.promote_types(angles.dtype, weights.dtype))
    device = angles.device
    n_tokens, n_slots = angles.shape[0], n_layers * q
    signs = torch.tensor(_SHIFT_SIGNS, dtype=work, device=device)  # (4, 2)
    # one-hot of the shifted slot: (L·q, L, q), value π/2 in slot (l, i) of row l·q + i
    one_hot = (torch.eye(n_slots, dtype=work, device=device) * SHIFT).reshape(n_slots, n_layers, q)
    base_angles = angles.detach().to(work)[:, None, None, None, :]  # (U, 1, 1, 1, q)
    base_weights = weights.detach().to(work)[None, None, None]  # (1, 1, 1, L, q)
    layer_angles = base_angles + signs[:, 0, None, None, None] * one_hot  # (U, 4, L·q, L, q)
    layer_weights = base_weights + signs[:, 1, None, None, None] * one_hot  # (1, 4, L·q, L, q)
    shape = (n_tokens * 4 * n_slots, n_layers, q)
    layer_weights = layer_weights.expand(n_tokens, 4, n_slots, n_layers, q)
    return layer_angles.reshape(shape), layer_weights.reshape(shape)


def qrce_parameter_shift_vjp(
    grad_out: torch.Tensor,
    angles: torch.Tensor,
    weights: torch.Tensor,
    structure: QRCEStructure,
    evaluate: Evaluate,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vector-Jacobian product of the QRCE features by the parameter-shift rule.

    Args:
        grad_out: (U, 2q) upstream gradient of the features of each token.
        angles: (U, q) re-upload angles of the tokens (distinct tokens: deduplicate first,
            see ``token_parameter_shift``).
        weights: (L, q) trainable angles.
        structure: the circuit's size and rotation axes.
        evaluate: ``evaluate(layer_angles, layer_weights) -> (N, 2q)`` features of N circuits;
            called exactly once, with the N = U·4·L·q circuits of ``qrce_shifted_parameters``.

    Returns:
        ``(grad_angles (U, q), grad_weights (L, q))`` with
        grad_angles[u, i] = Σ_k grad_out[u, k] ∂F_k(u)/∂α_u[i] and
        grad_weights[l, i] = Σ_u Σ_k grad_out[u, k] ∂F_k(u)/∂θ[l, i], in the dtypes of
        ``angles`` and ``weights``. Exact if ``evaluate`` is; unbiased if ``evaluate`` is.
    """
    _check(angles, weights, structure)
    q, n_layers = structure.n_qubits, structure.n_layers
    n_tokens = angles.shape[0]
    if tuple(grad_out.shape) != (n_tokens, 2 * q):
        raise ValueError(
            f"parameter shift: grad_out must have shape (U={n_tokens}, 2q={2 * q}); got "
            f"{tuple(grad_out.shape)}."
        )
    layer_angles, layer_weights = qrce_shifted_parameters(angles, weights, structure)
    n_rows = layer_angles.shape[0]
    values = evaluate(layer_angles, layer_weights)
    if tuple(values.shape) != (n_rows, 2 * q):
        raise ValueError(
            f"parameter shift: evaluate returned shape {tuple(values.shape)}; expected "
            f"({n_rows}, {2 * q}): one row of 2q features per shifted circuit."
        )
    work = layer_angles.dtype
    values = values.detach().to(work).reshape(n_tokens, 4, n_layers, q, 2 * q)
    grad = grad_out.detach().to(work)
    d_angles = (values[:, 0] - values[:, 1]) / 2  # (U, L, q, 2q): ∂F/∂(one occurrence)
    d_weights = (values[:, 2] - values[:, 3]) / 2  # (U, L, q, 2q): ∂F(u)/∂θ[l, i]
    grad_angles = torch.einsum("ulik,uk->ui", d_angles, grad)  # sum over the L occurrences
    grad_weights = torch.einsum("ulik,uk->li", d_weights, grad)  # sum over tokens
    return grad_angles.to(angles.dtype), grad_weights.to(weights.dtype)


def token_parameter_shift(
    grad_out: torch.Tensor,
    token_ids: torch.Tensor,
    angle_table: torch.Tensor,
    weights: torch.Tensor,
    structure: QRCEStructure,
    evaluate: StructureEvaluate,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Parameter-shift VJP of ``qrce_token_features``: gradients of the table and weights.

    Repeated tokens share one circuit: ``grad_out`` (*token_ids.shape, 2q) is summed over
    the positions of each distinct token, ``qrce_parameter_shift_vjp`` runs once on the
    distinct tokens (one ``evaluate`` call, none if ``token_ids`` is empty), and the result
    is scattered into a (V, q) table that is zero for tokens not in ``token_ids``.
    ``evaluate(layer_angles, layer_weights, structure)`` takes the structure as well, so
    ``qrce_features_per_layer`` can be passed as it is (exact parameter shift).

    Returns:
        ``(grad_table (V, q), grad_weights (L, q))`` in the dtypes of ``angle_table`` and
        ``weights``.
    """
    unique_ids, inverse = unique_tokens(token_ids, angle_table, structure)
    n_features = structure.n_features
    expected = (*token_ids.shape, n_features)
    if tuple(grad_out.shape) != expected:
        raise ValueError(
            f"parameter shift: grad_out must have the features' shape {expected}; got "
            f"{tuple(grad_out.shape)}."
        )
    grad_table = torch.zeros_like(angle_table, memory_format=torch.contiguous_format)
    if unique_ids.numel() == 0:
        return grad_table, torch.zeros_like(weights, memory_format=torch.contiguous_format)
    work = compute_dtype(torch.promote_types(angle_table.dtype, weights.dtype))
    flat_grad = grad_out.detach().reshape(-1, n_features).to(device=angle_table.device, dtype=work)
    per_token = torch.zeros(unique_ids.numel(), n_features, dtype=work, device=angle_table.device)
    per_token.index_add_(0, inverse, flat_grad)
    grad_angles, grad_weights = qrce_parameter_shift_vjp(
        per_token,
        angle_table.detach()[unique_ids],
        weights.detach(),
        structure,
        lambda layer_angles, layer_weights: evaluate(layer_angles, layer_weights, structure),
    )
    grad_table[unique_ids] = grad_angles.to(angle_table.dtype)
    return grad_table, grad_weights.to(weights.dtype)
