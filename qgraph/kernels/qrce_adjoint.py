"""QRCE circuits whose every rotation has its own angle: a batched statevector simulator with a
hand-written adjoint (reverse-mode) backward, and helpers both QRCE simulators share.

``qrce_features_per_layer`` / ``qrce_probabilities_per_layer`` (parameter-shift gradients
move one occurrence of an angle, so no angle is shared) build one fused 2×2 gate per
(layer, qubit, circuit),
G = R_axis(θ)·RY(α), and hands them here as ``gates`` of shape (L, q, 2, 2, N): the circuit
index is the *last* (fastest) dimension. Everything below keeps that "batch-last" layout:
states are (2^q, N), basis index b = Σ_i bit_i·2^i (qubit 0 least significant).

Forward, per circuit:

* layer 0 acts on |0…0⟩, so its state is the Kronecker product of the gates' first columns;
* every later layer applies its q single-qubit gates one qubit at a time: viewing the state
  as (A, 2, B, N) with B = 2^i puts qubit i in the middle dimension, and the gate is four
  broadcast multiplies by per-circuit (N,) coefficients, elementwise with no per-circuit
  loop and no copies of the layout (a batched ``bmm`` of tiny per-circuit matrices spends
  most of its time in per-matrix overhead);
* after every layer the CNOT ring permutes basis states: one ``index_select`` of rows;
* the output is |ψ|², permuted by the last ring.

Backward (the adjoint method of statevector simulators): with λ = ∂L/∂ψ̄ (PyTorch's
complex-gradient convention, the one its own ``matmul`` backward uses), a layer ψ' = (⊗G_i)ψ
gives, for the gate on qubit i,

    ∂L/∂G_i = T_i · G_i,    T_i[r, t] = Σ_{b: bit_i(b)=r, bit_i(b')=t} λ'[b] · conj(ψ'[b'])

where b' is b with bit i set to t: T_i is the "transition matrix" of qubit i traced over the
others, taken *after* the layer. Why: ∂L/∂G_i = Σ λ'[r,·] conj(φ[s,·]) with φ = G_i^† ψ' the
state without G_i (gates on different qubits commute), and G_i is unitary, so
conj(φ[s]) = Σ_t G_i[t, s] conj(ψ'[t]). All q transition matrices of a layer come from the
same (ψ', λ'), so nothing is un-computed gate by gate; λ then goes back through the layer
(λ = (⊗G_i^†) λ') and the ring (a permutation: the inverse gather). The forward keeps the
state after each layer (L states; the old autograd graph kept ⌈q/2⌉ per layer plus its
transients), so ψ is never un-computed and carries no round-off from doing so.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

__all__ = ["bit_masks", "product_state", "ring_permutation", "simulate_probabilities"]


@functools.lru_cache(maxsize=32)
def ring_permutation(n_qubits: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather indices of the CNOT ring and of its inverse, each (2^q,) int64.

    ``state[perm]`` applies the whole ring CX(0,1), CX(1,2), …, CX(q-2,q-1), CX(q-1,0)
    (the last only if q > 2) to a batch-last state; ``state[inverse]`` undoes it. For a basis
    permutation f the new amplitudes are ``new[b] = old[f⁻¹(b)]``; each CX is its own
    inverse, so gates g_0, …, g_k in order give ``new[b] = old[g_0(…g_k(b))]``.
    """
    gates = [(i, i + 1) for i in range(n_qubits - 1)]
    if n_qubits > 2:
        gates.append((n_qubits - 1, 0))
    basis = np.arange(2**n_qubits, dtype=np.int64)
    index = basis.copy()
    for control, target in gates:
        flipped = basis ^ (((basis >> control) & 1) << target)  # CX as a map of basis states
        index = index[flipped]
    inverse = np.empty_like(index)
    inverse[index] = basis
    return torch.as_tensor(index, device=device), torch.as_tensor(inverse, device=device)


@functools.lru_cache(maxsize=32)
def bit_masks(n_qubits: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(2q, 2^q) 0/1 rows: row 2i + r selects the basis states whose bit i is r (cached: do
    not modify in place)."""
    basis = torch.arange(2**n_qubits, device=device)
    bits = (basis[None, :] >> torch.arange(n_qubits, device=device)[:, None]) & 1  # (q, 2^q)
    return torch.stack((1 - bits, bits), dim=1).reshape(2 * n_qubits, -1).to(dtype)


def product_state(columns: torch.Tensor) -> torch.Tensor:
    """(q, 2, N) single-qubit states → (2^q, N) product state, qubit 0 least significant."""
    state = columns[0]
    for i in range(1, columns.shape[0]):
        state = (columns[i][:, None] * state[None]).reshape(2 ** (i + 1), -1)
    return state


def _apply_gate(
    state: torch.Tensor, gate: torch.Tensor, qubit: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """One single-qubit gate (2, 2, N) on ``qubit`` of a (2^q, N) state; returns (2^q, N)."""
    dim, width = state.shape
    high = dim >> (qubit + 1)
    view = state.view(high, 2, 1 << qubit, width)
    zero, one = view[:, 0], view[:, 1]
    result = torch.empty_like(view) if out is None else out.view(high, 2, 1 << qubit, width)
    # four multiplies and two adds on half states: fewer passes over memory than building
    # the bit-flipped partner state and mixing the two
    torch.add(zero * gate[0, 0], one * gate[0, 1], out=result[:, 0])
    torch.add(zero * gate[1, 0], one * gate[1, 1], out=result[:, 1])
    return result.view(dim, width)


def _apply_layer(
    state: torch.Tensor, gates: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """All q single-qubit gates (q, 2, 2, N) of a layer on a (2^q, N) state."""
    n_qubits = gates.shape[0]
    for qubit in range(n_qubits):
        last = qubit == n_qubits - 1
        state = _apply_gate(state, gates[qubit], qubit, out if last else None)
    return state


def _transitions(state: torch.Tensor, adjoint: torch.Tensor) -> torch.Tensor:
    """(q, 2, 2, N): every qubit's transition matrix T_i (module doc) of λ' and ψ'."""
    dim, width = state.shape
    n_qubits = dim.bit_length() - 1
    conj_state = state.conj()
    # diagonal entries of all qubits at once: Σ over bit_i = r of λ'·conj(ψ'), one matmul of
    # the (2q, 2^q) bit masks with the (2^q, N) products (as reals: complex × 0/1 mask)
    product = torch.view_as_real(adjoint * conj_state).reshape(dim, 2 * width)
    masks = bit_masks(n_qubits, product.dtype, state.device)
    diagonal = torch.view_as_complex((masks @ product).view(n_qubits, 2, width, 2))
    out = torch.empty(n_qubits, 2, 2, width, dtype=state.dtype, device=state.device)
    out[:, 0, 0] = diagonal[:, 0]
    out[:, 1, 1] = diagonal[:, 1]
    for qubit in range(n_qubits):
        high = dim >> (qubit + 1)
        lam = adjoint.view(high, 2, 1 << qubit, width)
        psi = conj_state.view(high, 2, 1 << qubit, width)
        out[qubit, 0, 1] = (lam[:, 0] * psi[:, 1]).sum((0, 1))
        out[qubit, 1, 0] = (lam[:, 1] * psi[:, 0]).sum((0, 1))
    return out


def _forward(gates: torch.Tensor, ring: torch.Tensor, keep: bool) -> torch.Tensor:
    """Run the circuits; returns the states after each layer's rotations (before its ring),
    (L, 2^q, N) if ``keep``, else (1, 2^q, N) with only the last."""
    n_layers, n_qubits, _, _, width = gates.shape
    shape = (n_layers if keep else 1, 1 << n_qubits, width)
    states = torch.empty(shape, dtype=gates.dtype, device=gates.device)
    state = product_state(gates[0, :, :, 0])  # layer 0 acts on |0…0⟩
    if keep:
        states[0] = state
    for layer in range(1, n_layers):
        target = states[layer] if keep else None
        state = _apply_layer(state.index_select(0, ring), gates[layer], target)
    return states if keep else state[None]


def _probabilities(state: torch.Tensor, ring: torch.Tensor) -> torch.Tensor:
    """|amplitude|² after the last ring, (N, 2^q) (a transposed view of a batch-last tensor)."""
    probs = state.real.square() + state.imag.square()
    return probs.index_select(0, ring).T


class _AdjointSimulation(torch.autograd.Function):
    """gates (L, q, 2, 2, N) → (probabilities (N, 2^q), the L per-layer states).

    The states are an output (marked non-differentiable) rather than stashed on ``ctx`` so
    that ``torch.func.vjp`` can transform the function (``setup_context`` style).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        gates: torch.Tensor, ring: torch.Tensor, inverse: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        states = _forward(gates, ring, keep=True)
        return _probabilities(states[-1], ring), states

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        gates, _ring, inverse = inputs
        _, states = output
        ctx.mark_non_differentiable(states)
        ctx.set_materialize_grads(False)  # no zero-filled gradient for the kept states
        ctx.save_for_backward(gates, states, inverse)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(  # type: ignore[override]
        ctx: Any, grad_probs: torch.Tensor | None, _grad_states: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, None, None]:
        if grad_probs is None:
            return None, None, None
        gates, states, inverse = ctx.saved_tensors
        n_layers = gates.shape[0]
        # p = |ψ|² permuted by the ring: ∂L/∂ψ̄ = 2·(∂L/∂p, un-permuted)·ψ
        adjoint = 2 * grad_probs.T.index_select(0, inverse) * states[-1]
        grad = torch.empty_like(gates)
        for layer in range(n_layers - 1, -1, -1):
            transitions = _transitions(states[layer], adjoint)  # (q, 2, 2, N)
            # ∂L/∂G = T·G, per qubit and circuit: a 2×2 product over the middle index
            grad[layer] = (transitions[:, :, :, None] * gates[layer][:, None]).sum(2)
            if layer > 0:
                dagger = gates[layer].transpose(1, 2).conj()
                adjoint = _apply_layer(adjoint, dagger).index_select(0, inverse)
        return grad, None, None


def simulate_probabilities(gates: torch.Tensor) -> torch.Tensor:
    """Basis-state probabilities of QRCE circuits given their fused gates.

    Args:
        gates: (L, q, 2, 2, N) complex, ``gates[l, i, :, :, n]`` the 2×2 gate of qubit i in
            layer l of circuit n (applied before layer l's CNOT ring).

    Returns:
        (N, 2^q) real probabilities (qubit 0 least significant), a transposed view.
        Differentiable w.r.t. ``gates`` by the adjoint method (module doc), also under
        ``torch.func.vjp``; not twice differentiable. Without autograd only the current
        state is kept.
    """
    n_qubits = gates.shape[1]
    ring, inverse = ring_permutation(n_qubits, gates.device)
    if torch.is_grad_enabled() and gates.requires_grad:
        probs, _ = _AdjointSimulation.apply(gates, ring, inverse)
        return probs
    return _probabilities(_forward(gates, ring, keep=False)[-1], ring)
