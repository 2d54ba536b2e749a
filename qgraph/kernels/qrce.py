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

How it is simulated (U circuits at once, no per-circuit Python loop; states are
"batch-last", (2^q, U), so every operation is one large tensor operation):

* ``qrce_features`` / ``qrce_probabilities`` (θ shared by all tokens) use
  ``qgraph.kernels.qrce_shared``: the re-upload rotations of a whole layer are diagonal in the
  eigenbasis of Y (one elementwise multiply per layer), and the shared parts (basis changes
  and trainable rotations) are tensor products applied a block of ≤ 4 qubits at a time as
  matrix products over all tokens;
* the ``*_per_layer`` functions (every slot its own angles) use ``qgraph.kernels.qrce_adjoint``:
  one fused 2×2 gate R_axis(θ)·RY(α) per (layer, qubit, circuit), applied qubit by qubit with
  elementwise multiplies;
* the CNOT ring is a permutation of basis states: one precomputed index gather per layer;
* the read-out is ``probabilities @ signs`` with a precomputed (2^q, 2q) ±1 matrix.

Both simulators have a hand-written adjoint (reverse-mode) backward in a
``torch.autograd.Function``: the forward keeps one or two states per layer, the backward walks
the layers back once, with no autograd graph of the simulation; ``torch.func.vjp`` works on
them (not double backward). Gradients w.r.t. the angles and the weights equal those of plain
autograd through the circuit (``tests/test_qrce_adjoint.py``). float64 inputs compute in
float64/complex128, everything else in float32/complex64 (fp16/bf16 results are cast back to
the input dtype).

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
from qgraph.kernels.qrce_adjoint import simulate_probabilities
from qgraph.kernels.qrce_shared import shared_simulation

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


@functools.lru_cache(maxsize=32)
def _axis_codes(structure: QRCEStructure, device: torch.device) -> torch.Tensor:
    """(L, q) int64: index of each trainable rotation's axis in ``AXIS_NAMES``."""
    codes = [[AXIS_NAMES.index(axis) for axis in row] for row in structure.axes]
    return torch.tensor(codes, dtype=torch.int64, device=device)


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


def _fused_gates_per_layer(
    layer_angles: torch.Tensor,
    layer_weights: torch.Tensor,
    structure: QRCEStructure,
    cdtype: torch.dtype,
) -> torch.Tensor:
    """(L, q, 2, 2, N): R_axis(θ[n, l, i]) · RY(α[n, l, i]) for every slot, circuit index last
    (the layout ``qrce_adjoint.simulate_probabilities`` works in)."""
    alpha = layer_angles.permute(1, 2, 0) / 2  # (L, q, N)
    theta = layer_weights.permute(1, 2, 0) / 2
    cos, sin = torch.cos(alpha), torch.sin(alpha)
    re_upload = torch.stack((torch.stack((cos, -sin), 2), torch.stack((sin, cos), 2)), 2)
    eye = torch.eye(2, dtype=cdtype, device=layer_angles.device)[..., None]
    paulis = _axis_paulis(structure, layer_angles.device, cdtype)[..., None]  # (L, q, 2, 2, 1)
    trainable = (
        torch.cos(theta)[:, :, None, None] * eye - 1j * torch.sin(theta)[:, :, None, None] * paulis
    )
    # 2×2 products per slot, elementwise over the circuits: Σ_k R[r, k]·RY[k, s]
    return (trainable[:, :, :, :, None] * re_upload[:, :, None]).sum(3)


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
        times ``readout_signs``. Differentiable once, like ``qrce_features``.
    """
    _check_inputs(angles, weights, structure)
    out_dtype, rdtype, cdtype = _work_dtypes(angles, weights)
    probs = _shared(angles.to(rdtype), weights.to(rdtype), structure, cdtype, None)
    return probs.contiguous().to(out_dtype)


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
        ``angles`` and ``weights``. Differentiable w.r.t. both inputs (an adjoint-method
        backward, ``qgraph.kernels.qrce_shared``; also under ``torch.func.vjp``), once: a
        second derivative raises.
    """
    _check_inputs(angles, weights, structure)
    out_dtype, rdtype, cdtype = _work_dtypes(angles, weights)
    signs = _readout_signs(structure.n_qubits, angles.device, rdtype)
    features = _shared(angles.to(rdtype), weights.to(rdtype), structure, cdtype, signs)
    return features.contiguous().to(out_dtype)


def _shared(
    angles: torch.Tensor,
    weights: torch.Tensor,
    structure: QRCEStructure,
    cdtype: torch.dtype,
    readout: torch.Tensor | None,
) -> torch.Tensor:
    """``shared_simulation`` with the structure's Pauli generators and axis codes."""
    paulis = _axis_paulis(structure, angles.device, cdtype)
    codes = _axis_codes(structure, angles.device)
    return shared_simulation(angles, weights, paulis, codes, readout)


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
        Differentiable once (adjoint-method backward, ``qgraph.kernels.qrce_adjoint``).
    """
    _check_layer_inputs(layer_angles, layer_weights, structure)
    out_dtype, rdtype, cdtype = _work_dtypes(layer_angles, layer_weights)
    gates = _fused_gates_per_layer(
        layer_angles.to(rdtype), layer_weights.to(rdtype), structure, cdtype
    )
    return simulate_probabilities(gates).contiguous().to(out_dtype)


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
        Differentiable once (adjoint-method backward, ``qgraph.kernels.qrce_adjoint``).
    """
    _check_layer_inputs(layer_angles, layer_weights, structure)
    out_dtype, rdtype, cdtype = _work_dtypes(layer_angles, layer_weights)
    gates = _fused_gates_per_layer(
        layer_angles.to(rdtype), layer_weights.to(rdtype), structure, cdtype
    )
    probs = simulate_probabilities(gates)
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
