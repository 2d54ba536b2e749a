"""Per-layer QRCE evaluation and parameter-shift gradients against autograd and qiskit."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from qiskit import QuantumCircuit
from qiskit.quantum_info import Pauli, Statevector

from qgraph.backends.exact import ExactBackend
from qgraph.kernels.parameter_shift import (
    SHIFT,
    Evaluate,
    qrce_parameter_shift_vjp,
    qrce_shifted_parameters,
    token_parameter_shift,
)
from qgraph.kernels.qrce import (
    QRCEStructure,
    qrce_features,
    qrce_features_per_layer,
    qrce_probabilities,
    qrce_probabilities_per_layer,
    qrce_token_features,
    readout_signs,
)


def _uniform(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Angles uniform in [-π, π), float64."""
    return (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi


def _exact_evaluate(structure: QRCEStructure) -> Evaluate:
    return lambda layer_angles, layer_weights: qrce_features_per_layer(
        layer_angles, layer_weights, structure
    )


# --------------------------------------------------------------------------- per-layer kernel


@pytest.mark.parametrize(("n_qubits", "n_layers"), [(2, 1), (3, 2), (5, 3), (8, 4)])
def test_per_layer_equals_shared_when_repeated(n_qubits: int, n_layers: int) -> None:
    structure = QRCEStructure.from_seed(n_qubits, n_layers, seed=n_qubits + 3)
    generator = torch.Generator().manual_seed(n_qubits * 10 + n_layers)
    angles = _uniform((6, n_qubits), generator)
    weights = _uniform((n_layers, n_qubits), generator)
    layer_angles = angles[:, None, :].expand(6, n_layers, n_qubits)
    layer_weights = weights[None].expand(6, n_layers, n_qubits)
    shared = qrce_features(angles, weights, structure)
    per_layer = qrce_features_per_layer(layer_angles, layer_weights, structure)
    assert per_layer.shape == (6, 2 * n_qubits) and per_layer.dtype == torch.float64
    torch.testing.assert_close(per_layer, shared, atol=1e-6, rtol=0)
    probs = qrce_probabilities_per_layer(layer_angles, layer_weights, structure)
    assert probs.shape == (6, 2**n_qubits)
    torch.testing.assert_close(probs, qrce_probabilities(angles, weights, structure))
    torch.testing.assert_close(probs.sum(-1), torch.ones(6, dtype=torch.float64))
    signs = readout_signs(n_qubits, dtype=torch.float64)
    torch.testing.assert_close(probs @ signs, shared, atol=1e-12, rtol=0)


def test_per_layer_angles_actually_differ_per_layer() -> None:
    # Guards against an implementation that silently uses layer 0's angles everywhere.
    structure = QRCEStructure.from_seed(3, 2, seed=1)
    generator = torch.Generator().manual_seed(0)
    layer_angles = _uniform((4, 2, 3), generator)
    layer_weights = _uniform((4, 2, 3), generator)
    same = layer_angles[:, :1].expand(4, 2, 3)
    assert not torch.allclose(
        qrce_features_per_layer(layer_angles, layer_weights, structure),
        qrce_features_per_layer(same, layer_weights, structure),
    )


def _qiskit_per_layer_circuit(
    layer_angles: torch.Tensor, layer_weights: torch.Tensor, axes: tuple[tuple[str, ...], ...]
) -> QuantumCircuit:
    """The QRCE circuit with per-layer angles, written with qiskit gates directly."""
    n_layers, n_qubits = layer_angles.shape
    circuit = QuantumCircuit(n_qubits)
    for layer in range(n_layers):
        for qubit in range(n_qubits):
            circuit.ry(float(layer_angles[layer, qubit]), qubit)
            rotation = {"x": circuit.rx, "y": circuit.ry, "z": circuit.rz}[axes[layer][qubit]]
            rotation(float(layer_weights[layer, qubit]), qubit)
        for qubit in range(n_qubits - 1):
            circuit.cx(qubit, qubit + 1)
        if n_qubits > 2:
            circuit.cx(n_qubits - 1, 0)
    return circuit


def test_per_layer_matches_qiskit_statevector() -> None:
    # q = 3, L = 2, every axis used, every circuit its own per-layer angles.
    axes = (("x", "y", "z"), ("z", "x", "y"))
    structure = QRCEStructure(n_qubits=3, n_layers=2, seed=0, axes=axes)
    generator = torch.Generator().manual_seed(42)
    layer_angles = _uniform((5, 2, 3), generator)
    layer_weights = _uniform((5, 2, 3), generator)
    ours_probs = qrce_probabilities_per_layer(layer_angles, layer_weights, structure)
    ours = qrce_features_per_layer(layer_angles, layer_weights, structure)
    rows, feature_rows = [], []
    for n in range(5):
        state = Statevector(_qiskit_per_layer_circuit(layer_angles[n], layer_weights[n], axes))
        probs = state.probabilities()  # qiskit order: qubit 0 is the least-significant bit
        rows.append(probs.tolist())
        z = [float(state.expectation_value(_pauli_z(3, (i,))).real) for i in range(3)]
        zz = [float(state.expectation_value(_pauli_z(3, (i, (i + 1) % 3))).real) for i in range(3)]
        feature_rows.append(z + zz)
    torch.testing.assert_close(
        ours_probs, torch.tensor(rows, dtype=torch.float64), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        ours, torch.tensor(feature_rows, dtype=torch.float64), atol=1e-6, rtol=0
    )


def _pauli_z(n_qubits: int, qubits: tuple[int, ...]) -> Pauli:
    label = ["I"] * n_qubits
    for qubit in qubits:
        label[n_qubits - 1 - qubit] = "Z"  # qiskit labels: rightmost character is qubit 0
    return Pauli("".join(label))


def test_readout_signs_known_values() -> None:
    signs = readout_signs(3)
    assert signs.shape == (8, 6) and signs.dtype == torch.float32
    # basis 0b011: qubits 0 and 1 are 1 → Z = (-1, -1, +1); Z0Z1 = +1, Z1Z2 = -1, Z2Z0 = -1
    assert signs[3].tolist() == [-1, -1, 1, 1, -1, -1]
    assert signs[0].tolist() == [1] * 6
    assert readout_signs(2, "cpu", torch.float64).dtype == torch.float64


def test_per_layer_bad_inputs() -> None:
    structure = QRCEStructure.from_seed(3, 2, seed=0)
    good = torch.zeros(4, 2, 3)
    with pytest.raises(ValueError, match=r"layer_angles must have shape \(N, L=2, q=3\)"):
        qrce_features_per_layer(torch.zeros(4, 3), good, structure)
    with pytest.raises(ValueError, match=r"layer_weights must have shape"):
        qrce_features_per_layer(good, torch.zeros(4, 3, 3), structure)
    with pytest.raises(ValueError, match="has 4 rows but layer_weights 5"):
        qrce_features_per_layer(good, torch.zeros(5, 2, 3), structure)
    with pytest.raises(TypeError, match="layer_angles must be a real floating-point"):
        qrce_features_per_layer(good.long(), good, structure)


# --------------------------------------------------------------------------- parameter shift


def test_shifted_parameters_layout() -> None:
    structure = QRCEStructure.from_seed(3, 2, seed=0)
    generator = torch.Generator().manual_seed(1)
    angles, weights = _uniform((2, 3), generator), _uniform((2, 3), generator)
    layer_angles, layer_weights = qrce_shifted_parameters(angles, weights, structure)
    n_tokens, n_layers, q = 2, 2, 3
    assert layer_angles.shape == layer_weights.shape == (n_tokens * 4 * n_layers * q, n_layers, q)
    rows_a = layer_angles.reshape(n_tokens, 4, n_layers, q, n_layers, q)
    rows_w = layer_weights.reshape(n_tokens, 4, n_layers, q, n_layers, q)
    for u in range(n_tokens):
        for s, (sign_a, sign_w) in enumerate([(1, 0), (-1, 0), (0, 1), (0, -1)]):
            for layer in range(n_layers):
                for i in range(q):
                    delta_a = rows_a[u, s, layer, i] - angles[u][None].expand(n_layers, q)
                    delta_w = rows_w[u, s, layer, i] - weights
                    expected = torch.zeros(n_layers, q, dtype=torch.float64)
                    expected[layer, i] = SHIFT
                    torch.testing.assert_close(delta_a, sign_a * expected, atol=1e-12, rtol=0)
                    torch.testing.assert_close(delta_w, sign_w * expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize(("n_qubits", "n_layers", "seed"), [(2, 1, 0), (3, 2, 1), (4, 3, 2)])
def test_shift_vjp_equals_autograd(n_qubits: int, n_layers: int, seed: int) -> None:
    structure = QRCEStructure.from_seed(n_qubits, n_layers, seed=seed)
    generator = torch.Generator().manual_seed(100 + seed)
    angles = _uniform((5, n_qubits), generator)
    weights = _uniform((n_layers, n_qubits), generator)
    grad_out = torch.randn(5, 2 * n_qubits, generator=generator, dtype=torch.float64)
    vjp: Any = torch.func.vjp(lambda a, w: qrce_features(a, w, structure), angles, weights)[1]
    want_a, want_w = vjp(grad_out)
    got_a, got_w = qrce_parameter_shift_vjp(
        grad_out, angles, weights, structure, _exact_evaluate(structure)
    )
    assert got_a.shape == (5, n_qubits) and got_w.shape == (n_layers, n_qubits)
    torch.testing.assert_close(got_a, want_a, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_w, want_w, atol=1e-5, rtol=0)


def test_token_shift_equals_autograd_with_repeated_tokens() -> None:
    structure = QRCEStructure.from_seed(3, 2, seed=5)
    generator = torch.Generator().manual_seed(7)
    table = _uniform((10, 3), generator)
    weights = _uniform((2, 3), generator)
    token_ids = torch.tensor([[3, 1, 3, 7, 1], [7, 7, 0, 3, 9]])  # 5 distinct of 10 positions
    grad_out = torch.randn(2, 5, 6, generator=generator, dtype=torch.float64)
    vjp: Any = torch.func.vjp(
        lambda t, w: qrce_token_features(token_ids, t, w, structure), table, weights
    )[1]
    want_table, want_weights = vjp(grad_out)
    got_table, got_weights = token_parameter_shift(
        grad_out, token_ids, table, weights, structure, qrce_features_per_layer
    )
    assert got_table.shape == (10, 3) and got_weights.shape == (2, 3)
    torch.testing.assert_close(got_table, want_table, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_weights, want_weights, atol=1e-5, rtol=0)
    absent = [t for t in range(10) if t not in {0, 1, 3, 7, 9}]
    assert torch.equal(got_table[absent], torch.zeros(len(absent), 3, dtype=torch.float64))
    assert got_table[3].abs().sum() > 0  # present tokens do get a gradient


def test_evaluate_called_once_with_all_shifted_circuits() -> None:
    structure = QRCEStructure.from_seed(3, 2, seed=0)
    generator = torch.Generator().manual_seed(3)
    angles, weights = _uniform((4, 3), generator), _uniform((2, 3), generator)
    calls: list[tuple[int, ...]] = []

    def evaluate(layer_angles: torch.Tensor, layer_weights: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(layer_angles.shape))
        assert layer_weights.shape == layer_angles.shape
        return qrce_features_per_layer(layer_angles, layer_weights, structure)

    qrce_parameter_shift_vjp(torch.ones(4, 6), angles.float(), weights.float(), structure, evaluate)
    assert calls == [(4 * 4 * 2 * 3, 2, 3)]  # U·4·L·q rows, one call


def test_token_shift_empty_ids_needs_no_circuit() -> None:
    structure = QRCEStructure.from_seed(3, 1, seed=0)
    table, weights = torch.rand(4, 3), torch.rand(1, 3)

    def evaluate(*_: object) -> torch.Tensor:
        raise AssertionError("no circuit should run for an empty batch")

    grad_table, grad_weights = token_parameter_shift(
        torch.zeros(2, 0, 6),
        torch.zeros(2, 0, dtype=torch.long),
        table,
        weights,
        structure,
        evaluate,
    )
    assert torch.equal(grad_table, torch.zeros(4, 3))
    assert torch.equal(grad_weights, torch.zeros(1, 3))


def test_shift_dtypes_follow_inputs() -> None:
    structure = QRCEStructure.from_seed(3, 2, seed=0)
    table = torch.rand(6, 3).to(torch.float16)
    weights = torch.rand(2, 3)
    ids = torch.tensor([0, 2, 2])
    grad_table, grad_weights = token_parameter_shift(
        torch.ones(3, 6), ids, table, weights, structure, qrce_features_per_layer
    )
    assert grad_table.dtype == torch.float16 and grad_weights.dtype == torch.float32
    layer_angles, _ = qrce_shifted_parameters(table[ids], weights, structure)
    assert layer_angles.dtype == torch.float32  # shifts are computed above half precision


def test_shift_rejects_bad_shapes() -> None:
    structure = QRCEStructure.from_seed(3, 2, seed=0)
    angles, weights = torch.rand(2, 3), torch.rand(2, 3)
    with pytest.raises(ValueError, match=r"grad_out must have shape \(U=2, 2q=6\)"):
        qrce_parameter_shift_vjp(torch.ones(2, 5), angles, weights, structure, lambda a, w: a)
    with pytest.raises(ValueError, match="evaluate returned shape"):
        qrce_parameter_shift_vjp(
            torch.ones(2, 6), angles, weights, structure, lambda a, w: torch.zeros(3, 6)
        )
    with pytest.raises(ValueError, match=r"weights must have shape \(L=2, q=3\)"):
        qrce_parameter_shift_vjp(
            torch.ones(2, 6), angles, torch.rand(3, 3), structure, lambda a, w: a
        )


def test_exact_backend_parameter_shift_equals_autograd() -> None:
    backend = ExactBackend()
    structure = QRCEStructure.from_seed(4, 2, seed=9)
    generator = torch.Generator().manual_seed(11)
    table = _uniform((8, 4), generator)
    weights = _uniform((2, 4), generator)
    token_ids = torch.tensor([[1, 5, 5], [2, 1, 7]])
    grad_out = torch.randn(2, 3, 8, generator=generator, dtype=torch.float64)
    by_autograd = backend.qrce_gradient(
        grad_out, token_ids, table, weights, structure, "autograd", "emb"
    )
    by_shift = backend.qrce_gradient(
        grad_out, token_ids, table, weights, structure, "parameter-shift", "emb"
    )
    for got, want in zip(by_shift, by_autograd, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
