"""Quantum Random Circuit Embedding (QRCE): a batched torch statevector simulator.

The circuit, for q qubits, L layers and a structure seed s (``qgraph.circuits.qrce`` builds
the same circuit gate by gate in qiskit, and the tests cross-check the two):

    start in |0…0⟩; for each layer l = 0..L-1:
      1. re-upload the token:  RY(α_t[i]) on every qubit i;
      2. trainable rotation:   R_{axes[l][i]}(θ[l, i]) on every qubit i, R_P(φ) = exp(-iφP/2);
      3. entangle:             CX(0,1), CX(1,2), …, CX(q-2,q-1), then CX(q-1,0) if q > 2.

``axes`` is drawn once from ``numpy.random.default_rng(s).integers(0, 3, size=(L, q))``
(0 → "x", 1 → "y", 2 → "z"). The 2q read-out features are ⟨Z_0⟩, …, ⟨Z_{q-1}⟩ and then
⟨Z_i Z_{(i+1) mod q}⟩ for i = 0..q-1. Qubit 0 is the least-significant bit of a basis
index, as in qiskit.

How the simulator is batched (U tokens at once, no per-token Python loop):

* the two rotations of each (layer, qubit) are fused into one 2×2 matrix per token;
* before the first entangler the state is a product state, so it is built directly as the
  Kronecker product of the fused matrices' first columns (their action on |0⟩);
* in later layers the rotations are applied two qubits at a time: the pair's 4×4 matrix
  (Kronecker product of two 2×2s) multiplies the two lowest qubits with one batched
  ``bmm``, whose output layout also rotates those qubits to the top, so the next pair is
  again the lowest; after the whole register has gone round, the order is the original;
* the CNOT ring is a permutation of basis states: one precomputed index gather per layer;
* the read-out is ``probabilities @ signs`` with a precomputed (2^q, 2q) ±1 matrix.

Everything is ordinary (complex) autograd, so gradients w.r.t. the angles and the weights
come for free. float64 inputs compute in float64/complex128, everything else in
float32/complex64 (fp16/bf16 results are cast back to the input dtype).

Entry points:

* ``qrce_features(angles (U, q), weights (L, q))``: the embedding read-out, one circuit per
  token, the same θ for every token; ``qrce_probabilities`` gives the basis-state
  probabilities of the same circuits (what a sampler draws from);
* ``qrce_features_per_layer(layer_angles (N, L, q), layer_weights (N, L, q))`` and
  ``qrce_probabilities_per_layer``: the same circuit, but every row has its own re-upload
  angle and its own trainable angle in every (layer, qubit) slot. Parameter-shift
  gradients need this: a shifted circuit moves *one* occurrence of a re-uploaded angle, so
  the angle is no longer the same in every layer (``qgraph.kernels.parameter_shift``);
* ``qrce_token_features(token_ids, angle_table, weights)``: ids of any shape, each distinct
  token simulated once (``unique_tokens`` does the validation and dedup);
* ``readout_signs(q)``: the (2^q, 2q) ±1 eigenvalue matrix, features = probabilities @ signs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from qgraph.kernels.memory import check_qrce_memory

__all__ = [
    "AXIS_NAMES",
    "QRCEStructure",
    "qrce_features",
    "qrce_features_per_layer",
    "qrce_probabilities",
    "qrce_probabilities_per_layer",
    "qrce_token_features",
    "readout_signs",
    "unique_tokens",
]

#: rng draw → rotation axis of the trainable layer.
AXIS_NAMES: tuple[str, str, str] = ("x", "y", "z")

#: Pauli matrices by axis name (the generators of RX, RY, RZ).
_PAULI: dict[str, tuple[tuple[complex, complex], tuple[complex, complex]]] = {
    "x": ((0, 1), (1, 0)),
    "y": ((0, -1j), (1j, 0)),
    "z": ((1, 0), (0, -1)),
}

#: Qubits per fused multi-qubit rotation in the layers after the first (see the module doc).
_QUBITS_PER_BLOCK = 2


@dataclass(frozen=True)
class QRCEStructure:
    """The fixed (non-trainable) part of a QRCE circuit: its size and rotation axes.

    ``axes[l][i]`` is the axis ("x", "y" or "z") of the trainable rotation on qubit i in
    layer l. Build it with :meth:`from_seed`; constructing it directly (e.g. with hand-picked
    axes in tests) is allowed and validated.
    """

    n_qubits: int
    n_layers: int
    seed: int
    axes: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        _check_size(self.n_qubits, self.n_layers)
        shape_ok = len(self.axes) == self.n_layers and all(
            len(row) == self.n_qubits for row in self.axes
        )
        if not shape_ok:
            raise ValueError(
                f"QRCE: axes must have shape (n_layers={self.n_layers}, "
                f"n_qubits={self.n_qubits}); got rows of lengths {[len(r) for r in self.axes]}. "
                "Use QRCEStructure.from_seed to draw a consistent structure."
            )
        bad = sorted({a for row in self.axes for a in row if a not in AXIS_NAMES})
        if bad:
            raise ValueError(
                f"QRCE: rotation axes must be 'x', 'y' or 'z'; got {bad}. "
                "Use QRCEStructure.from_seed to draw valid axes."
            )

    @classmethod
    def from_seed(cls, n_qubits: int, n_layers: int, seed: int) -> QRCEStructure:
        """Draw the rotation axes with ``numpy.random.default_rng(seed)`` (deterministic)."""
        _check_size(n_qubits, n_layers)
        draws = np.random.default_rng(seed).integers(0, 3, size=(n_layers, n_qubits))
        axes = tuple(tuple(AXIS_NAMES[int(d)] for d in row) for row in draws)
        return cls(n_qubits=n_qubits, n_layers=n_layers, seed=seed, axes=axes)

    @property
    def n_features(self) -> int:
        """Read-out size: q single-qubit ⟨Z⟩ plus q nearest-neighbour ⟨ZZ⟩ on the ring."""
        return 2 * self.n_qubits


def _check_size(n_qubits: int, n_layers: int) -> None:
    """Raise if the circuit size is not a valid QRCE size."""
    if isinstance(n_qubits, bool) or not isinstance(n_qubits, (int, np.integer)):
        raise TypeError(f"QRCE: n_qubits must be an int; got {type(n_qubits).__name__}.")
    if isinstance(n_layers, bool) or not isinstance(n_layers, (int, np.integer)):
        raise TypeError(f"QRCE: n_layers must be an int; got {type(n_layers).__name__}.")
    if n_qubits < 2:
        raise ValueError(
            f"QRCE needs at least 2 qubits (the read-out has ZZ pairs); got n_qubits={n_qubits}. "
            "Pass n_qubits >= 2."
        )
    if n_layers < 1:
        raise ValueError(
            f"QRCE needs at least 1 layer; got n_layers={n_layers}. Pass n_layers >= 1."
        )


# --------------------------------------------------------------------------- cached constants


@functools.lru_cache(maxsize=32)
def _ring_permutation(n_qubits: int, device: torch.device) -> torch.Tensor:
    """Gather indices of the CNOT ring: ``state[:, perm]`` applies the whole ring.

    For a basis permutation f, the new amplitudes are ``new[b] = old[f⁻¹(b)]``. Each CX is
    its own inverse, so applying gates g_0, …, g_k in order gives ``new[b] = old[g_0(…g_k(b))]``.
    """
    gates = [(i, i + 1) for i in range(n_qubits - 1)]
    if n_qubits > 2:
        gates.append((n_qubits - 1, 0))
    basis = np.arange(2**n_qubits, dtype=np.int64)
    index = basis.copy()
    for control, target in gates:
        flipped = basis ^ (((basis >> control) & 1) << target)  # CX as a map of basis states
        index = index[flipped]
    return torch.as_tensor(index, device=device)


@functools.lru_cache(maxsize=32)
def _readout_signs(n_qubits: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(2^q, 2q) eigenvalues, column by column: i is Z_i, q+i is Z_i Z_{(i+1) mod q}."""
    basis = torch.arange(2**n_qubits, device=device)
    signs = torch.empty(2**n_qubits, 2 * n_qubits, dtype=dtype, device=device)
    for i in range(n_qubits):
        signs[:, i] = 1 - 2 * ((basis >> i) & 1)  # +1 for bit 0, -1 for bit 1
    for i in range(n_qubits):
        signs[:, n_qubits + i] = signs[:, i] * signs[:, (i + 1) % n_qubits]
    return signs


def readout_signs(
    n_qubits: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The (2^q, 2q) ±1 matrix of the read-out observables' eigenvalues on basis states.

    Row b is basis state b (qubit 0 the least-significant bit, as in qiskit); column i is the
    eigenvalue of Z_i (+1 if bit i of b is 0, −1 if it is 1) and column q + i that of
    Z_i Z_{(i+1) mod q}. All 2q observables are diagonal in the Z basis, so for any
    probability (or count) vector p over basis states, ``p @ readout_signs(q)`` is the 2q
    features (or their un-normalised sums). Cached per (q, device, dtype): do not modify the
    returned tensor in place.
    """
    _check_size(n_qubits, 1)
    return _readout_signs(int(n_qubits), torch.device(device or "cpu"), dtype)


@functools.lru_cache(maxsize=32)
def _axis_paulis(
    structure: QRCEStructure, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """(L, q, 2, 2) complex: the Pauli generator of each trainable rotation."""
    paulis = [[_PAULI[axis] for axis in row] for row in structure.axes]
    return torch.tensor(paulis, dtype=dtype, device=device)


# --------------------------------------------------------------------------- validation


def _check_float_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"QRCE: {name} must be a torch.Tensor; got {type(value).__name__}.")
    if not value.is_floating_point():
        raise TypeError(
            f"QRCE: {name} must be a real floating-point tensor; got dtype {value.dtype}. "
            f"Convert it first, e.g. {name}.float()."
        )
    return value


def _check_inputs(angles: torch.Tensor, weights: torch.Tensor, structure: QRCEStructure) -> None:
    if not isinstance(structure, QRCEStructure):
        raise TypeError(
            f"QRCE: structure must be a QRCEStructure; got {type(structure).__name__}. "
            "Build one with QRCEStructure.from_seed(n_qubits, n_layers, seed)."
        )
    _check_float_tensor("angles", angles)
    _check_float_tensor("weights", weights)
    q, n_layers = structure.n_qubits, structure.n_layers
    if angles.dim() != 2 or angles.shape[1] != q:
        raise ValueError(
            f"QRCE: angles must have shape (U, q={q}), one row of q angles per token; got "
            f"{tuple(angles.shape)}. For a single token use angles.unsqueeze(0)."
        )
    if tuple(weights.shape) != (n_layers, q):
        raise ValueError(
            f"QRCE: weights must have shape (L={n_layers}, q={q}); got {tuple(weights.shape)}. "
            "The structure's n_layers/n_qubits must match the weights."
        )
    if angles.device != weights.device:
        raise ValueError(
            f"QRCE: angles are on {angles.device} but weights on {weights.device}; "
            "move both to the same device."
        )
    check_qrce_memory(angles.shape[0], q, n_layers, angles, weights)


# --------------------------------------------------------------------------- the simulator


def _rotation(half_cos: torch.Tensor, half_sin: torch.Tensor, pauli: torch.Tensor) -> torch.Tensor:
    """R_P(φ) = cos(φ/2)·I − i·sin(φ/2)·P, batched over the leading dims of the angle."""
    eye = torch.eye(2, dtype=pauli.dtype, device=pauli.device)
    return half_cos[..., None, None] * eye - 1j * half_sin[..., None, None] * pauli


def _fused_gates(
    angles: torch.Tensor, weights: torch.Tensor, structure: QRCEStructure, cdtype: torch.dtype
) -> torch.Tensor:
    """(L, U, q, 2, 2): R_axis(θ[l, i]) · RY(α_t[i]) for every layer, token and qubit."""
    pauli_y = torch.tensor(_PAULI["y"], dtype=cdtype, device=angles.device)
    re_upload = _rotation(torch.cos(angles / 2), torch.sin(angles / 2), pauli_y)  # (U, q, 2, 2)
    paulis = _axis_paulis(structure, angles.device, cdtype)
    trainable = _rotation(torch.cos(weights / 2), torch.sin(weights / 2), paulis)  # (L, q, 2, 2)
    return torch.matmul(trainable[:, None], re_upload[None])


def _fused_gates_per_layer(
    layer_angles: torch.Tensor,
    layer_weights: torch.Tensor,
    structure: QRCEStructure,
    cdtype: torch.dtype,
) -> torch.Tensor:
    """(L, N, q, 2, 2): R_axis(θ[n, l, i]) · RY(α[n, l, i]), every slot its own angles."""
    device = layer_angles.device
    # layer-major from the start, so the gates come out contiguous in (L, N, q) order
    alpha = layer_angles.transpose(0, 1)
    theta = layer_weights.transpose(0, 1)
    pauli_y = torch.tensor(_PAULI["y"], dtype=cdtype, device=device)
    re_upload = _rotation(torch.cos(alpha / 2), torch.sin(alpha / 2), pauli_y)  # (L, N, q, 2, 2)
    paulis = _axis_paulis(structure, device, cdtype)[:, None]  # (L, 1, q, 2, 2)
    trainable = _rotation(torch.cos(theta / 2), torch.sin(theta / 2), paulis)
    return torch.matmul(trainable, re_upload)


def _kron_columns(columns: torch.Tensor) -> torch.Tensor:
    """(U, q, 2) single-qubit states → (U, 2^q) product state (qubit 0 least significant)."""
    n_tokens, n_qubits, _ = columns.shape
    state = columns[:, 0]
    for i in range(1, n_qubits):
        state = (columns[:, i, :, None] * state[:, None, :]).reshape(n_tokens, 2 ** (i + 1))
    return state


def _kron_block(gates: torch.Tensor) -> torch.Tensor:
    """(U, k, 2, 2) gates on k consecutive qubits → (U, 2^k, 2^k), first qubit least significant."""
    n_tokens = gates.shape[0]
    block = gates[:, 0]
    for j in range(1, gates.shape[1]):
        size = 2 * block.shape[-1]
        block = (gates[:, j, :, None, :, None] * block[:, None, :, None, :]).reshape(
            n_tokens, size, size
        )
    return block


def _apply_layer_rotations(state: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Apply one layer's single-qubit gates (U, q, 2, 2) to the state (U, 2^q).

    Blocks of ``_QUBITS_PER_BLOCK`` qubits at a time: the block is always the lowest qubits
    of the current layout; ``bmm(block, state.view(U, R, G).mT)`` gives a (U, G, R) result,
    i.e. the block's qubits become the highest. After all blocks the register has rotated
    by q, back to the original order.
    """
    n_tokens, dim = state.shape
    n_qubits = gates.shape[1]
    for start in range(0, n_qubits, _QUBITS_PER_BLOCK):
        block = _kron_block(gates[:, start : start + _QUBITS_PER_BLOCK])
        size = block.shape[-1]
        state = torch.bmm(block, state.view(n_tokens, dim // size, size).mT).reshape(n_tokens, dim)
    return state


def _simulate_probabilities(gates: torch.Tensor, structure: QRCEStructure) -> torch.Tensor:
    """Run the circuit for fused gates (L, N, q, 2, 2); returns (N, 2^q) probabilities."""
    ring = _ring_permutation(structure.n_qubits, gates.device)
    state = _kron_columns(gates[0, :, :, :, 0])  # layer 0 rotations act on |0…0⟩
    state = state[:, ring]
    for layer in range(1, structure.n_layers):
        state = _apply_layer_rotations(state, gates[layer])
        state = state[:, ring]
    return state.real.square() + state.imag.square()


def _work_dtypes(*inputs: torch.Tensor) -> tuple[torch.dtype, torch.dtype, torch.dtype]:
    """(output, real compute, complex compute) dtypes for the given real inputs."""
    out_dtype = functools.reduce(torch.promote_types, [x.dtype for x in inputs])
    rdtype = torch.float64 if out_dtype == torch.float64 else torch.float32
    cdtype = torch.complex128 if rdtype == torch.float64 else torch.complex64
    return out_dtype, rdtype, cdtype


def qrce_probabilities(
    angles: torch.Tensor, weights: torch.Tensor, structure: QRCEStructure
) -> torch.Tensor:
    """Basis-state probabilities of the QRCE circuits of a batch of tokens.

    Args:
        angles: (U, q) re-upload angles, one row per token.
        weights: (L, q) trainable rotation angles, shared by all tokens.
        structure: the circuit's size and rotation axes.

    Returns:
        (U, 2^q) probabilities, basis index b = Σ_i bit_i·2^i (qubit 0 least significant,
        qiskit's order), in the promoted dtype of the inputs; ``qrce_features`` is this
        times ``readout_signs``. Differentiable.
    """
    probs, out_dtype = _token_probabilities(angles, weights, structure)
    return probs.to(out_dtype)


def qrce_features(
    angles: torch.Tensor, weights: torch.Tensor, structure: QRCEStructure
) -> torch.Tensor:
    """Exact QRCE read-out for a batch of tokens.

    Args:
        angles: (U, q) re-upload angles, one row per token.
        weights: (L, q) trainable rotation angles, shared by all tokens.
        structure: the circuit's size and rotation axes.

    Returns:
        (U, 2q) features ⟨Z_0⟩..⟨Z_{q-1}⟩, ⟨Z_0Z_1⟩..⟨Z_{q-1}Z_0⟩, in the promoted dtype of
        ``angles`` and ``weights``. Differentiable by autograd w.r.t. both inputs.
    """
    probs, out_dtype = _token_probabilities(angles, weights, structure)
    features = probs @ _readout_signs(structure.n_qubits, angles.device, probs.dtype)
    return features.to(out_dtype)


def _token_probabilities(
    angles: torch.Tensor, weights: torch.Tensor, structure: QRCEStructure
) -> tuple[torch.Tensor, torch.dtype]:
    """Checked inputs → (U, 2^q) probabilities in the real compute dtype, and the dtype the
    caller returns (the inputs' promoted one)."""
    _check_inputs(angles, weights, structure)
    out_dtype, rdtype, cdtype = _work_dtypes(angles, weights)
    gates = _fused_gates(angles.to(rdtype), weights.to(rdtype), structure, cdtype)
    return _simulate_probabilities(gates, structure), out_dtype


def _check_layer_inputs(
    layer_angles: torch.Tensor, layer_weights: torch.Tensor, structure: QRCEStructure
) -> None:
    if not isinstance(structure, QRCEStructure):
        raise TypeError(
            f"QRCE: structure must be a QRCEStructure; got {type(structure).__name__}. "
            "Build one with QRCEStructure.from_seed(n_qubits, n_layers, seed)."
        )
    _check_float_tensor("layer_angles", layer_angles)
    _check_float_tensor("layer_weights", layer_weights)
    q, n_layers = structure.n_qubits, structure.n_layers
    for name, value in (("layer_angles", layer_angles), ("layer_weights", layer_weights)):
        if value.dim() != 3 or tuple(value.shape[1:]) != (n_layers, q):
            raise ValueError(
                f"QRCE: {name} must have shape (N, L={n_layers}, q={q}), one angle per row, "
                f"layer and qubit; got {tuple(value.shape)}. For shared weights use "
                "weights[None].expand(N, L, q); for re-uploaded angles "
                "angles[:, None, :].expand(N, L, q)."
            )
    if layer_angles.shape[0] != layer_weights.shape[0]:
        raise ValueError(
            f"QRCE: layer_angles has {layer_angles.shape[0]} rows but layer_weights "
            f"{layer_weights.shape[0]}; both need one row per circuit."
        )
    if layer_angles.device != layer_weights.device:
        raise ValueError(
            f"QRCE: layer_angles are on {layer_angles.device} but layer_weights on "
            f"{layer_weights.device}; move both to the same device."
        )
    check_qrce_memory(layer_angles.shape[0], q, n_layers, layer_angles, layer_weights)


def qrce_probabilities_per_layer(
    layer_angles: torch.Tensor, layer_weights: torch.Tensor, structure: QRCEStructure
) -> torch.Tensor:
    """Basis-state probabilities of N QRCE circuits whose every rotation has its own angle.

    Args:
        layer_angles: (N, L, q); ``layer_angles[n, l, i]`` is the re-upload RY angle of qubit
            i in layer l of circuit n.
        layer_weights: (N, L, q); ``layer_weights[n, l, i]`` is the trainable R_axis angle of
            qubit i in layer l of circuit n (axes from ``structure``).
        structure: the circuit's size and rotation axes.

    Returns:
        (N, 2^q) probabilities in qiskit's basis order, in the promoted input dtype.
        Differentiable.
    """
    _check_layer_inputs(layer_angles, layer_weights, structure)
    out_dtype, rdtype, cdtype = _work_dtypes(layer_angles, layer_weights)
    gates = _fused_gates_per_layer(
        layer_angles.to(rdtype), layer_weights.to(rdtype), structure, cdtype
    )
    return _simulate_probabilities(gates, structure).to(out_dtype)


def qrce_features_per_layer(
    layer_angles: torch.Tensor, layer_weights: torch.Tensor, structure: QRCEStructure
) -> torch.Tensor:
    """QRCE read-out of N circuits whose every rotation has its own angle.

    ``qrce_features(angles, weights)`` equals
    ``qrce_features_per_layer(angles[:, None, :].expand(U, L, q), weights[None].expand(U, L, q))``.

    Args:
        layer_angles: (N, L, q) re-upload angles per circuit, layer and qubit.
        layer_weights: (N, L, q) trainable angles per circuit, layer and qubit.
        structure: the circuit's size and rotation axes.

    Returns:
        (N, 2q) features (same order as ``qrce_features``), promoted input dtype.
        Differentiable.
    """
    _check_layer_inputs(layer_angles, layer_weights, structure)
    out_dtype, rdtype, cdtype = _work_dtypes(layer_angles, layer_weights)
    gates = _fused_gates_per_layer(
        layer_angles.to(rdtype), layer_weights.to(rdtype), structure, cdtype
    )
    probs = _simulate_probabilities(gates, structure)
    features = probs @ _readout_signs(structure.n_qubits, layer_angles.device, rdtype)
    return features.to(out_dtype)


def unique_tokens(
    token_ids: torch.Tensor, angle_table: torch.Tensor, structure: QRCEStructure
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate token ids against the angle table and deduplicate them.

    Returns ``(unique_ids, inverse)``: the sorted distinct ids (on the table's device) and,
    for every entry of ``token_ids.reshape(-1)``, its position in ``unique_ids``. Raises
    TypeError/ValueError with the messages ``qrce_token_features`` documents.
    """
    if not isinstance(token_ids, torch.Tensor):
        raise TypeError(f"QRCE: token_ids must be a torch.Tensor; got {type(token_ids).__name__}.")
    if token_ids.is_floating_point() or token_ids.is_complex() or token_ids.dtype == torch.bool:
        raise TypeError(
            f"QRCE: token_ids must be an integer tensor; got dtype {token_ids.dtype}. "
            "Convert with token_ids.long()."
        )
    _check_float_tensor("angle_table", angle_table)
    if angle_table.dim() != 2 or angle_table.shape[1] != structure.n_qubits:
        raise ValueError(
            f"QRCE: angle_table must have shape (V, q={structure.n_qubits}); got "
            f"{tuple(angle_table.shape)}: one row of q angles per vocabulary entry."
        )
    vocab_size = angle_table.shape[0]
    token_ids = token_ids.to(angle_table.device)
    if token_ids.numel() > 0:
        low, high = (int(v) for v in torch.aminmax(token_ids))
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"QRCE: token ids must lie in [0, {vocab_size}); got max id {high} and min id "
                f"{low}, but the angle table has {vocab_size} rows. Check the tokenizer/vocab "
                "size or enlarge the table."
            )
    unique_ids, inverse = torch.unique(token_ids.reshape(-1), return_inverse=True)
    return unique_ids, inverse


def qrce_token_features(
    token_ids: torch.Tensor,
    angle_table: torch.Tensor,
    weights: torch.Tensor,
    structure: QRCEStructure,
) -> torch.Tensor:
    """QRCE features for token ids of any shape, simulating each distinct token once.

    Args:
        token_ids: integer tensor of any shape, each id in [0, V).
        angle_table: (V, q) re-upload angles, one row per vocabulary entry.
        weights: (L, q) trainable rotation angles.
        structure: the circuit's size and rotation axes.

    Returns:
        (*token_ids.shape, 2q) features; gradients flow to ``angle_table`` and ``weights``.
    """
    unique_ids, inverse = unique_tokens(token_ids, angle_table, structure)
    features = qrce_features(angle_table[unique_ids], weights, structure)
    return features[inverse].reshape(*token_ids.shape, structure.n_features)
