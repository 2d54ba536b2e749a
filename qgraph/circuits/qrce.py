"""Gate-level qiskit circuits for QRCE (Quantum Random Circuit Embedding).

The same circuit that ``qgraph.kernels.qrce`` simulates (the module docstring there has the
definition), written with qiskit's standard gates so sampled and hardware backends can run
it. Per layer: RY(α_i) re-upload on every qubit, the trainable R_{axes[l][i]}(θ[l, i]), then
the CNOT ring CX(0,1), …, CX(q-2,q-1), CX(q-1,0) (the last one only when q > 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from qiskit.circuit import ParameterVector, QuantumCircuit
from qiskit.quantum_info import SparsePauliOp

from qgraph.kernels.qrce import QRCEStructure

__all__ = ["append_layer", "qrce_circuit", "qrce_observables", "qrce_template"]


def qrce_template(
    structure: QRCEStructure,
) -> tuple[QuantumCircuit, ParameterVector, ParameterVector]:
    """Parameterised QRCE circuit, without measurements.

    Returns ``(circuit, alpha, theta)``: ``alpha`` holds the q re-upload angles of one
    token, ``theta`` the L·q trainable angles in row-major (layer, qubit) order, i.e.
    ``theta[l * q + i]`` is θ[l, i].
    """
    q, n_layers = structure.n_qubits, structure.n_layers
    alpha = ParameterVector("alpha", q)
    theta = ParameterVector("theta", n_layers * q)
    circuit = QuantumCircuit(q, name=f"qrce_q{q}_l{n_layers}_s{structure.seed}")
    for layer in range(n_layers):
        append_layer(circuit, structure, layer, alpha, theta[layer * q : (layer + 1) * q])
    return circuit, alpha, theta


def append_layer(
    circuit: QuantumCircuit,
    structure: QRCEStructure,
    layer: int,
    alpha: Sequence[Any],
    theta: Sequence[Any],
) -> None:
    """One QRCE layer: RY(α_i) re-uploads, the layer's rotations R_axis(θ_i), then the CX
    ring (a chain for q = 2). ``alpha`` and ``theta`` hold q parameters or numbers each."""
    q = structure.n_qubits
    for i in range(q):
        circuit.ry(alpha[i], i)
    for i, axis in enumerate(structure.axes[layer]):
        if axis == "x":
            circuit.rx(theta[i], i)
        elif axis == "y":
            circuit.ry(theta[i], i)
        else:
            circuit.rz(theta[i], i)
    for i in range(q - 1):
        circuit.cx(i, i + 1)
    if q > 2:
        circuit.cx(q - 1, 0)


def qrce_observables(structure: QRCEStructure) -> list[SparsePauliOp]:
    """The 2q read-out observables in feature order: Z_0..Z_{q-1}, then Z_i Z_{(i+1) mod q}.

    Built from sparse (Pauli, qubit indices) lists, so qiskit's label order (rightmost
    character = qubit 0) is handled by qiskit itself.
    """
    q = structure.n_qubits
    singles = [SparsePauliOp.from_sparse_list([("Z", [i], 1.0)], num_qubits=q) for i in range(q)]
    pairs = [
        SparsePauliOp.from_sparse_list([("ZZ", [i, (i + 1) % q], 1.0)], num_qubits=q)
        for i in range(q)
    ]
    return singles + pairs


def _as_float_array(
    name: str, value: torch.Tensor | npt.ArrayLike, shape: tuple[int, ...]
) -> np.ndarray:
    """A float64 numpy copy of ``value`` (tensor, array or nested sequence) of that shape."""
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(value, dtype=np.float64)
    if array.shape != shape:
        raise ValueError(
            f"QRCE circuit: {name} must have shape {shape}; got {array.shape}. "
            "Pass one token's q angles and the (L, q) weights."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"QRCE circuit: {name} must be finite; got {array}.")
    return array


def qrce_circuit(
    angles_row: torch.Tensor | npt.ArrayLike,
    weights: torch.Tensor | npt.ArrayLike,
    structure: QRCEStructure,
) -> QuantumCircuit:
    """The QRCE circuit of one token with all parameters bound.

    Args:
        angles_row: the token's q re-upload angles (tensor, array or sequence).
        weights: the (L, q) trainable angles.
        structure: the circuit's size and rotation axes.
    """
    q, n_layers = structure.n_qubits, structure.n_layers
    alpha_values = _as_float_array("angles_row", angles_row, (q,))
    theta_values = _as_float_array("weights", weights, (n_layers, q)).reshape(-1)
    circuit, alpha, theta = qrce_template(structure)
    return circuit.assign_parameters({alpha: alpha_values.tolist(), theta: theta_values.tolist()})
