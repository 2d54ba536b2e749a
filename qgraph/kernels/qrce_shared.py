"""QRCE with trainable angles shared by all circuits: a few large matrix products per layer,
and a hand-written adjoint backward.

``qrce_features`` runs one circuit per token with the *same* trainable angles θ for every
token; only the re-upload rotations RY(α_t) differ between tokens. Layer l is

    ψ ← P · (⊗_i R_{axis[l][i]}(θ[l, i])) · (⊗_i RY(α_t[i])) · ψ,

P the CNOT ring (a permutation of basis states), R_P(φ) = exp(−iφP/2). Diagonalising RY,
RY(α) = V·diag(e^{−iα/2}, e^{iα/2})·V† with V = [[1, 1], [i, −i]]/√2 (columns: the +1 and
−1 eigenvectors of Y), so a token's re-upload rotations of a whole layer are

    ⊗_i RY(α_t[i]) = V^{⊗q} · Φ_t · V^{†⊗q},    Φ_t[b] = Π_i e^{−iα_t[i]·z_i(b)/2},

z_i(b) = +1 if bit i of b is 0, else −1: a diagonal Φ_t, the same in every layer, between
token-independent basis changes. A layer is then V^{†⊗q} (shared), one elementwise multiply by
Φ (the only per-token work), K_l = ⊗_i R_i·V (shared) and P (a gather). The shared operators
are tensor products, applied a block of ≤ 4 consecutive qubits at a time as one matrix
product over all tokens and the other qubits (``torch.matmul`` of a (2^k, 2^k) matrix with a
(…, 2^k, M) view of the state): a few large products instead of one tiny per-token matrix per
block. Layer 0 acts on |0…0⟩, and V^{†⊗q}|0…0⟩ = 2^{−q/2}·(1, …, 1). States are batch-last,
(2^q, N), basis index b = Σ_i bit_i·2^i (qubit 0 least significant).

Backward (the adjoint method: no autograd graph, nothing un-computed; the forward keeps each
layer's block input b = Φ·V^{†⊗q}ψ and output c = K_l·b, 2L states). With λ = ∂L/∂c̄
(PyTorch's complex-gradient convention) at a layer's output, walking back one layer at a time:

* α: b = Φ·a, so ∂L/∂Φ̄ gains λ_b·ā (λ_b = K_l^H λ); with ∂Φ[b]/∂α_i = −(i/2)·z_i(b)·Φ[b],
  ∂L/∂α_i = Σ_layers Σ_b (bit_i(b) − ½)·Im(λ_b[b]·conj(b[b])) (summed over the layers first,
  one matrix product at the end);
* θ: with the transition matrix of qubit i, T_i[r, t] = Σ λ[…r…]·conj(c[…t…]) over all
  tokens and the other qubits, a gate G = R_P(θ)·(…) that ends at c has
  ∂L/∂G = (λc^H)·G (G unitary), hence ∂L/∂θ = ½·Im tr(T_i^H P). For P = Z only T_i's
  diagonal is needed, −½·Im(T_00 − T_11), and the diagonals of all qubits come from one
  product λ·c̄ summed over tokens; for P = X it is −½·Im(T_01 + T_10), one dot product of λ
  with c with bit i flipped; R_Y(θ) commutes with RY(α), so at the block input, where
  V†YV = Z, it is the α term of that layer summed over tokens;
* λ then goes back through K_l^H, Φ̄, V^{⊗q} and P⁻¹.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from qgraph.kernels.qrce_adjoint import bit_masks, product_state, ring_permutation

__all__ = ["block_sizes", "shared_simulation"]

#: the largest block of qubits applied as one matrix: a 16×16 product is still cheap per
#: amplitude (16 multiply-adds) and large enough for the matrix-multiply kernels to be efficient
_MAX_BLOCK_QUBITS = 4
#: axis codes of ``shared_simulation``'s ``axes`` tensor
_X, _Y, _Z = 0, 1, 2


def block_sizes(n_qubits: int) -> tuple[int, ...]:
    """Sizes of the consecutive qubit blocks (qubit 0 first): ⌈q/4⌉ blocks, near-equal."""
    n_blocks = -(-n_qubits // _MAX_BLOCK_QUBITS)
    base, extra = divmod(n_qubits, n_blocks)
    return tuple(base + 1 if j < extra else base for j in range(n_blocks))


def _kron(gates: torch.Tensor) -> torch.Tensor:
    """(..., k, 2, 2) gates on k consecutive qubits → (..., 2^k, 2^k), first least significant."""
    block = gates[..., 0, :, :]
    for j in range(1, gates.shape[-3]):
        size = 2 * block.shape[-1]
        outer = gates[..., j, :, None, :, None] * block[..., None, :, None, :]
        block = outer.reshape(*block.shape[:-2], size, size)
    return block


def _eigenbasis(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """V = [[1, 1], [i, −i]]/√2: RY(α) = V·diag(e^{−iα/2}, e^{iα/2})·V†."""
    return torch.tensor([[1, 1], [1j, -1j]], dtype=dtype, device=device) / math.sqrt(2)


@functools.lru_cache(maxsize=32)
def _basis_change_blocks(
    sizes: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """V^{†⊗k} for every block (contiguous, conjugation resolved): into Φ's eigenbasis."""
    v_dagger = _eigenbasis(torch.complex128, device).mH
    return tuple(_kron(v_dagger.expand(k, 2, 2)).to(dtype).contiguous() for k in sizes)


def _phases(angles: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, q) angles α → (2^q, N) complex Φ[b] = Π_i e^{−iα_i·z_i(b)/2}, rounded to ``dtype``."""
    # per-qubit factors multiplied out (not e^{−i·Σ±α_i/2}, whose float32 angle sum loses
    # absolute precision as it grows), in float64: Φ multiplies the state in every layer, and
    # a float32 product of q factors doubled the float32 error of the features
    half = angles.T.double() / 2
    cos, sin = torch.cos(half), torch.sin(half)
    columns = torch.stack((torch.complex(cos, -sin), torch.complex(cos, sin)), dim=1)
    return product_state(columns).to(dtype)


def _layer_blocks(weights: torch.Tensor, paulis: torch.Tensor) -> list[torch.Tensor]:
    """K_l = ⊗_i R_i(θ[l, i])·V per qubit block: (L, 2^k, 2^k) per block."""
    # built in float64 and rounded once: float32 products of products drift from unitary,
    # and every layer's state goes through these matrices
    half = weights.double() / 2
    wide = paulis.to(torch.complex128)
    eye = torch.eye(2, dtype=wide.dtype, device=wide.device)
    rotations = (
        torch.cos(half)[..., None, None] * eye - 1j * torch.sin(half)[..., None, None] * wide
    )
    rotated = rotations @ _eigenbasis(wide.dtype, wide.device)
    blocks, start = [], 0
    for k in block_sizes(weights.shape[1]):
        blocks.append(_kron(rotated[:, start : start + k]).to(paulis.dtype))
        start += k
    return blocks


def _apply_blocks(
    state: torch.Tensor, blocks: list[torch.Tensor], out: torch.Tensor | None = None
) -> torch.Tensor:
    """Apply one (2^k, 2^k) matrix per consecutive qubit block to a (2^q, N) state."""
    dim, width = state.shape
    start = 0
    for j, block in enumerate(blocks):
        size = block.shape[-1]
        # qubits [start, start + k) are the middle dimension of this view
        view = state.view(dim // (size << start), size, width << start)
        target = out.view(view.shape) if out is not None and j == len(blocks) - 1 else None
        state = torch.matmul(block, view, out=target).view(dim, width)
        start += size.bit_length() - 1
    return state


def _token_sums(adjoint: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """(2^q,) imaginary parts of Σ over tokens of λ[b]·conj(ψ[b])."""
    return torch.linalg.vecdot(state, adjoint, dim=1).imag


def _flipped_sum(adjoint: torch.Tensor, state: torch.Tensor, qubit: int) -> torch.Tensor:
    """Im Σ over tokens and b of λ[b]·conj(ψ[b with bit ``qubit`` flipped]) = Im(T_01 + T_10)."""
    dim, width = state.shape
    partner = state.view(dim >> (qubit + 1), 2, 1 << qubit, width).flip(1)
    # one copy and one BLAS dot product: cheaper than reducing the two half products
    return torch.vdot(partner.reshape(-1), adjoint.reshape(-1)).imag


def _simulate(
    phases: torch.Tensor,
    blocks: list[torch.Tensor],
    readout: torch.Tensor | None,
    ring: torch.Tensor,
    inverse: torch.Tensor,
    keep: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The forward pass: (output, every layer's block input b = Φ·V^{†⊗q}ψ, its output c);
    the states only if ``keep`` (else empty). The output is the probabilities (N, 2^q), or
    ``probabilities @ readout`` (N, F) when a (2^q, F) ``readout`` is given."""
    dim, width = phases.shape
    n_layers = blocks[0].shape[0]
    sizes = tuple(block.shape[-1].bit_length() - 1 for block in blocks)
    basis = list(_basis_change_blocks(sizes, phases.dtype, phases.device))
    kept = (n_layers if keep else 0, dim, width)
    inputs_kept = torch.empty(kept, dtype=phases.dtype, device=phases.device)
    outputs_kept = torch.empty(kept, dtype=phases.dtype, device=phases.device)
    state = phases
    for layer in range(n_layers):
        target = inputs_kept[layer] if keep else None
        if layer == 0:  # V^{†⊗q}|0…0⟩ = 2^{−q/2}·(1, …, 1)
            state = torch.mul(phases, dim**-0.5, out=target)
        else:
            state = torch.mul(phases, _apply_blocks(state.index_select(0, ring), basis), out=target)
        target = outputs_kept[layer] if keep else None
        state = _apply_blocks(state, [block[layer] for block in blocks], target)
    # before the last ring; re² + im² on strided views: 4× faster than squaring the real view
    # and summing its last dimension of 2
    probs = state.real.square() + state.imag.square()
    if readout is None:
        return probs.index_select(0, ring).T, inputs_kept, outputs_kept
    # the last ring folded into the read-out: Σ_b p[ring[b]]·R[b] = Σ_b p[b]·R[inverse[b]]
    return (readout.index_select(0, inverse).T @ probs).T, inputs_kept, outputs_kept


def _backward(
    ctx: Any, grad_out: torch.Tensor, saved: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(∂L/∂angles, ∂L/∂weights) by the adjoint method (module doc)."""
    axes, readout, inverse, inputs_kept, outputs_kept, phases, *blocks = saved
    n_layers, dim, width = outputs_kept.shape
    n_qubits = axes.shape[1]
    sizes = tuple(block.shape[-1].bit_length() - 1 for block in blocks)
    basis_back = [b.mH for b in _basis_change_blocks(sizes, phases.dtype, phases.device)]
    # (bit_i(b) − ½): ∂(phase of Φ[b])/∂α_i up to the factor −1 (module doc)
    half_signs = bit_masks(n_qubits, grad_out.dtype, phases.device)[1::2].T - 0.5
    if readout is None:
        grad_probs = grad_out.T.index_select(0, inverse)
    else:
        grad_probs = readout.index_select(0, inverse) @ grad_out.T
    adjoint = (2 * grad_probs) * outputs_kept[-1]  # p = |c|²: ∂L/∂c̄ = 2·(∂L/∂p)·c
    conj_phases = phases.conj().resolve_conj()
    want_angles, want_weights = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    phase_terms = torch.zeros_like(phases) if want_angles else None
    codes = axes.tolist()
    rows: list[torch.Tensor] = []
    for layer in range(n_layers - 1, -1, -1):
        row = torch.zeros(n_qubits, dtype=grad_out.dtype, device=grad_out.device)
        state = outputs_kept[layer]
        if want_weights and _Z in codes[layer]:  # T_i's diagonal at the layer output
            row += torch.where(axes[layer] == _Z, _token_sums(adjoint, state) @ half_signs, 0)
        for qubit, code in enumerate(codes[layer]):
            if want_weights and code == _X:  # T_01 + T_10 at the layer output
                row[qubit] = -0.5 * _flipped_sum(adjoint, state, qubit)
        adjoint = _apply_blocks(adjoint, [block[layer].mH for block in blocks])
        state = inputs_kept[layer]
        if want_weights and _Y in codes[layer]:  # at the block input, where V†YV = Z
            row += torch.where(axes[layer] == _Y, _token_sums(adjoint, state) @ half_signs, 0)
        rows.append(row)
        if phase_terms is not None:
            phase_terms.addcmul_(adjoint, state.conj())
        if layer > 0:
            adjoint = _apply_blocks(adjoint * conj_phases, basis_back).index_select(0, inverse)
    grad_angles = None
    if phase_terms is not None:
        # ∂L/∂α_i = Σ_b (bit_i(b) − ½)·Im(Σ_layers λ_b·conj(b)), as one matrix product
        terms = torch.view_as_real(phase_terms).view(dim, 2 * width).T @ half_signs
        grad_angles = terms.view(width, 2, n_qubits)[:, 1]
    grad_weights = torch.stack(rows[::-1]) if want_weights else None
    return grad_angles, grad_weights


class _SharedSimulation(torch.autograd.Function):
    """(angles (N, q), weights (L, q), paulis (L, q, 2, 2), axes (L, q), readout, ring,
    inverse ring) → (output, kept block inputs (L, 2^q, N), kept block outputs, Φ, *blocks).

    Everything the backward needs besides the inputs is an output (marked
    non-differentiable), not stashed on ``ctx``, so that ``torch.func.vjp`` can transform the
    function (``setup_context`` style).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        angles: torch.Tensor,
        weights: torch.Tensor,
        paulis: torch.Tensor,
        axes: torch.Tensor,
        readout: torch.Tensor | None,
        ring: torch.Tensor,
        inverse: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        phases = _phases(angles, paulis.dtype)
        blocks = _layer_blocks(weights, paulis)
        return (*_simulate(phases, blocks, readout, ring, inverse, keep=True), phases, *blocks)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        _angles, _weights, _paulis, axes, readout, _ring, inverse = inputs
        _, *kept = output
        ctx.mark_non_differentiable(*kept)
        # no zero-filled gradients for the 2L + 1 kept states (they would double the peak)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(axes, readout, inverse, *kept)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor | None, *_kept: Any) -> tuple[Any, ...]:  # type: ignore[override]
        if grad_out is None:
            return None, None, None, None, None, None, None
        grad_angles, grad_weights = _backward(ctx, grad_out, ctx.saved_tensors)
        return grad_angles, grad_weights, None, None, None, None, None


def shared_simulation(
    angles: torch.Tensor,
    weights: torch.Tensor,
    paulis: torch.Tensor,
    axes: torch.Tensor,
    readout: torch.Tensor | None = None,
) -> torch.Tensor:
    """Simulate QRCE circuits whose trainable angles are shared by all circuits.

    Args:
        angles: (N, q) real re-upload angles α, one row per circuit.
        weights: (L, q) real trainable angles θ, same dtype as ``angles``.
        paulis: (L, q, 2, 2) complex Pauli generator of every trainable rotation
            (complex128 for float64 angles, else complex64).
        axes: (L, q) int64 axis codes of the same rotations: 0 = x, 1 = y, 2 = z.
        readout: optional (2^q, F) real matrix; if given the output is
            ``probabilities @ readout`` (e.g. the ±1 eigenvalues of the read-out observables).

    Returns:
        (N, 2^q) basis-state probabilities (qubit 0 least significant), or (N, F) with a
        ``readout``, in the dtype of ``angles`` (a transposed view). Differentiable w.r.t.
        ``angles`` and ``weights`` by the adjoint method (module doc), also under
        ``torch.func.vjp``; not twice differentiable.
    """
    ring, inverse = ring_permutation(angles.shape[1], angles.device)
    if torch.is_grad_enabled() and (angles.requires_grad or weights.requires_grad):
        out: torch.Tensor = _SharedSimulation.apply(
            angles, weights, paulis, axes, readout, ring, inverse
        )[0]
        return out
    phases = _phases(angles, paulis.dtype)
    blocks = _layer_blocks(weights, paulis)
    return _simulate(phases, blocks, readout, ring, inverse, keep=False)[0]
