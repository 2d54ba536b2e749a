"""Rotation-tree amplitude encoding and the parameterised kernel templates built on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qiskit import QuantumCircuit, transpile
from qiskit.circuit.library import UCRYGate
from qiskit.quantum_info import Operator, Statevector

from qgraph.circuits.qrce import qrce_circuit
from qgraph.circuits.rotation_tree import (
    amplitude_tree_angles,
    amplitude_tree_circuit,
    tree_angles,
    tree_cx_count,
)
from qgraph.circuits.templates import (
    clear_transpile_cache,
    qaap_parameters,
    qaap_template,
    qrce_layer_parameters,
    qrce_layer_template,
    transpile_cache_size,
    transpiled,
)
from qgraph.kernels.qaap import qaap_weights
from qgraph.kernels.qrce import QRCEStructure


def _signed_vectors(n_qubits: int, seed: int) -> torch.Tensor:
    """Random signed unit vectors of 2^n amplitudes, with zero sub-blocks and one-hot rows."""
    gen = torch.Generator().manual_seed(seed)
    size = 1 << n_qubits
    x = torch.randn(8, size, generator=gen, dtype=torch.float64)
    x[1, : size // 2] = 0.0  # zero lower half: root angle π
    x[2, size // 2 :] = 0.0  # zero upper half: root angle 0
    x[3, 0::2] = 0.0  # every leaf pair half zero
    x[4] = 0.0
    x[4, -1] = -1.0  # one-hot with a negative sign, in the reversed upper half
    x[5] = 0.0
    x[5, 0] = -1.0
    x[6] = -x[6].abs()  # all negative
    if size >= 4:
        x[7, 1:3] = 0.0  # zero block straddling two leaf pairs
    return x / x.norm(dim=1, keepdim=True)


def _bound(circuit: QuantumCircuit, values: torch.Tensor) -> QuantumCircuit:
    return circuit.assign_parameters(values.tolist())


@pytest.mark.parametrize("n_qubits", [1, 2, 3, 4, 5])
def test_tree_prepares_signed_vectors(n_qubits: int) -> None:
    x = _signed_vectors(n_qubits, seed=n_qubits)
    angles = amplitude_tree_angles(x)
    assert angles.shape == (x.shape[0], (1 << n_qubits) - 1)
    circuit, params = amplitude_tree_circuit(n_qubits)
    assert len(params) == circuit.num_parameters == angles.shape[1]
    for row in range(x.shape[0]):
        state = Statevector(_bound(circuit, angles[row])).data
        assert np.abs(state.imag).max() < 1e-12
        np.testing.assert_allclose(state.real, x[row].numpy(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("n_qubits", [1, 3, 5])
def test_inverse_tree_maps_the_vector_to_zero(n_qubits: int) -> None:
    x = _signed_vectors(n_qubits, seed=10 + n_qubits)
    angles = amplitude_tree_angles(x)
    forward, _ = amplitude_tree_circuit(n_qubits)
    inverse, _ = amplitude_tree_circuit(n_qubits, inverse=True)
    for row in range(x.shape[0]):
        unitary = _bound(forward, angles[row]).compose(_bound(inverse, -angles[row]))
        assert Operator(unitary).equiv(Operator(QuantumCircuit(n_qubits)))


def test_angles_are_unnormalised_and_float_safe() -> None:
    x = _signed_vectors(4, seed=3)
    np.testing.assert_allclose(amplitude_tree_angles(7.5 * x), amplitude_tree_angles(x), atol=1e-12)
    # float32 input: angles are still float64, and the state matches to float32 accuracy
    angles32 = amplitude_tree_angles(x.float())
    assert angles32.dtype == torch.float64
    state = Statevector(_bound(amplitude_tree_circuit(4)[0], angles32[0])).data.real
    np.testing.assert_allclose(state, x[0].numpy(), atol=1e-6)


def _ucry_tree(theta: np.ndarray, n_qubits: int) -> QuantumCircuit:
    """The textbook tree: level m is a UCRYGate with the m higher qubits as controls."""
    circuit = QuantumCircuit(n_qubits)
    for level in range(n_qubits):
        target = n_qubits - 1 - level
        table = [float(t) for t in theta[(1 << level) - 1 : (1 << (level + 1)) - 1]]
        if level == 0:
            circuit.ry(table[0], target)
        else:
            circuit.append(UCRYGate(table), [target, *range(target + 1, n_qubits)])
    return circuit


def test_tree_angles_drive_qiskits_uniformly_controlled_rotations() -> None:
    # The raw Möttönen angles (leaf atan2 with signs, sub-norms above) through qiskit's own
    # UCRYGate: checks the angle convention independently of the CX-saving circuit.
    x = _signed_vectors(4, seed=7)
    theta = tree_angles(x).numpy()
    for row in range(x.shape[0]):
        state = Statevector(_ucry_tree(theta[row], 4)).data
        np.testing.assert_allclose(state.real, x[row].numpy(), atol=1e-9)


def _cx_count(circuit: QuantumCircuit) -> int:
    compiled = transpile(circuit, basis_gates=["cx", "u"], optimization_level=1, seed_transpiler=0)
    return int(compiled.count_ops().get("cx", 0))


def test_cx_counts_beat_ucry_gates() -> None:
    # Dropping each chain's closing CX saves n − 1 gates against UCRYGate chains (2^n − 2).
    for n_qubits in (2, 3, 5):
        circuit, _ = amplitude_tree_circuit(n_qubits)
        assert _cx_count(circuit) == tree_cx_count(n_qubits) == 2**n_qubits - n_qubits - 1
    theta = tree_angles(_signed_vectors(5, seed=1)).numpy()[0]
    assert _cx_count(_ucry_tree(theta, 5)) == 30


def test_qaap_template_cx_counts_match_state_preparation() -> None:
    # docs/kernels.md §1.7: the StatePreparation circuit costs 27 CX at (n, d) = (8, 4).
    circuit, key_params, query_params = qaap_template(3, 2, measure=False)
    assert (len(key_params), len(query_params)) == (31, 3)
    assert _cx_count(circuit) == 27


@pytest.mark.parametrize(
    ("n_keys", "head_dim", "masked"), [(3, 2, False), (4, 3, True), (5, 1, True)]
)
def test_qaap_template_samples_the_qaap_weights(n_keys: int, head_dim: int, masked: bool) -> None:
    gen = torch.Generator().manual_seed(n_keys * 10 + head_dim)
    rows = 4
    keys = torch.randn(rows, n_keys, head_dim, generator=gen, dtype=torch.float64)
    query = torch.randn(rows, head_dim, generator=gen, dtype=torch.float64)
    keep = torch.rand(rows, n_keys, generator=gen) > 0.3 if masked else None
    if keep is not None:
        keep[:, 0] = True
    values = qaap_parameters(keys, query, keep)
    a, b = max(1, (n_keys - 1).bit_length()), max(1, (head_dim - 1).bit_length())
    circuit, key_params, query_params = qaap_template(a, b, measure=False)
    assert values.shape == (rows, len(key_params) + len(query_params))
    expected, _, _ = qaap_weights(query[:, None, :], keys, None if keep is None else keep[:, None])
    for row in range(rows):
        bound = circuit.assign_parameters(
            dict(zip([*key_params, *query_params], values[row].tolist(), strict=True))
        )
        joint = Statevector(bound).probabilities().reshape(1 << a, 1 << b)[:, 0]
        k_masked = keys[row] if keep is None else keys[row] * keep[row, :, None]
        success = float((k_masked @ (query[row] / query[row].norm())).square().sum())
        success /= float(k_masked.square().sum())
        assert joint.sum() == pytest.approx(success, abs=1e-12)
        np.testing.assert_allclose(joint[:n_keys] / joint.sum(), expected[row, 0], atol=1e-10)
        assert joint[n_keys:].sum() < 1e-20  # padded key slots never occur


def test_qaap_parameters_refuses_unencodable_rows() -> None:
    keys = torch.randn(2, 3, 2)
    query = torch.randn(2, 2)
    query[1] = 0.0
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        qaap_parameters(keys, query)
    with pytest.raises(ValueError, match="rows"):
        qaap_parameters(keys, torch.randn(2, 2), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="k_rows"):
        qaap_parameters(keys, torch.randn(2, 3))


def test_bad_tree_inputs() -> None:
    with pytest.raises(ValueError, match="power of two"):
        amplitude_tree_angles(torch.randn(2, 6))
    with pytest.raises(ValueError, match="real"):
        amplitude_tree_angles(torch.randn(4))
    with pytest.raises(ValueError, match="positive int"):
        amplitude_tree_circuit(0)
    with pytest.raises(ValueError, match="positive int"):
        qaap_template(0, 2)


def test_qrce_layer_template_matches_the_qrce_circuit() -> None:
    structure = QRCEStructure.from_seed(3, 2, seed=5)
    gen = torch.Generator().manual_seed(0)
    angles = torch.randn(3, generator=gen, dtype=torch.float64)
    weights = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    circuit, alpha, theta = qrce_layer_template(structure)
    assert (len(alpha), len(theta), circuit.num_clbits) == (6, 6, 0)
    values = qrce_layer_parameters(angles[None, None].expand(1, 2, 3), weights[None])
    bound = circuit.assign_parameters(dict(zip([*alpha, *theta], values[0].tolist(), strict=True)))
    reference = qrce_circuit(angles, weights, structure)
    np.testing.assert_allclose(Statevector(bound).data, Statevector(reference).data, atol=1e-12)
    measured, _, _ = qrce_layer_template(structure, measure=True)
    assert measured.num_clbits == 3


def test_transpile_cache_transpiles_once_per_key_and_target() -> None:
    from qiskit_aer import AerSimulator

    clear_transpile_cache()
    simulator = AerSimulator()
    circuit, _, _ = qaap_template(1, 1)
    first = transpiled(("qaap", 1, 1, True), circuit, simulator)
    assert transpiled(("qaap", 1, 1, True), circuit, simulator) is first
    assert transpile_cache_size() == 1
    transpiled(("qaap", 1, 1, True), circuit, AerSimulator(method="density_matrix"))
    assert transpile_cache_size() == 2
