"""QRCE: the batched torch simulator against qiskit, and its contracts (dtypes, errors, grads)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from qiskit.quantum_info import Statevector

import qgraph.kernels.qrce as qrce_module
from qgraph.circuits.qrce import qrce_circuit, qrce_observables, qrce_template
from qgraph.kernels.qrce import QRCEStructure, qrce_features, qrce_token_features


def _random_inputs(
    structure: QRCEStructure, n_tokens: int, seed: int, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    q, n_layers = structure.n_qubits, structure.n_layers
    angles = (torch.rand(n_tokens, q, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi
    weights = (torch.rand(n_layers, q, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi
    return angles.to(dtype), weights.to(dtype)


def _qiskit_features(
    angles: torch.Tensor, weights: torch.Tensor, structure: QRCEStructure
) -> torch.Tensor:
    observables = qrce_observables(structure)
    rows = []
    for row in angles:
        state = Statevector(qrce_circuit(row, weights, structure))
        rows.append([state.expectation_value(obs).real for obs in observables])
    return torch.tensor(rows, dtype=torch.float64)


# --------------------------------------------------------------------------- vs qiskit


@pytest.mark.parametrize("n_qubits", [2, 3, 5])
@pytest.mark.parametrize("n_layers", [1, 3])
def test_matches_qiskit_statevector(n_qubits: int, n_layers: int) -> None:
    structure = QRCEStructure.from_seed(n_qubits, n_layers, seed=7 + n_qubits)
    angles, weights = _random_inputs(structure, n_tokens=4, seed=n_qubits * 10 + n_layers)
    ours = qrce_features(angles, weights, structure)
    assert ours.shape == (4, 2 * n_qubits)
    assert ours.dtype == torch.float64
    reference = _qiskit_features(angles, weights, structure)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)


def test_matches_qiskit_with_every_axis() -> None:
    # Hand-picked axes so RX, RY and RZ (and their sign conventions) are all exercised, on
    # every qubit position, whatever the seeded draws happen to be.
    axes = (("x", "y", "z", "x"), ("z", "x", "y", "z"), ("y", "z", "x", "y"))
    structure = QRCEStructure(n_qubits=4, n_layers=3, seed=0, axes=axes)
    angles, weights = _random_inputs(structure, n_tokens=5, seed=3)
    reference = _qiskit_features(angles, weights, structure)
    torch.testing.assert_close(
        qrce_features(angles, weights, structure), reference, atol=1e-6, rtol=0
    )


def test_template_parameters_and_observables() -> None:
    structure = QRCEStructure.from_seed(3, 2, seed=1)
    circuit, alpha, theta = qrce_template(structure)
    assert len(alpha) == 3 and len(theta) == 6
    assert circuit.num_parameters == 9
    assert circuit.num_clbits == 0  # no measurements
    ops = circuit.count_ops()
    assert ops["cx"] == 2 * 3  # q CNOTs per layer on the ring (q > 2)
    labels = [obs.paulis[0].to_label() for obs in qrce_observables(structure)]
    # qiskit labels: rightmost character is qubit 0
    assert labels == ["IIZ", "IZI", "ZII", "IZZ", "ZZI", "ZIZ"]


# --------------------------------------------------------------------------- known values


def test_known_value_all_zero_q2() -> None:
    # alpha = theta = 0: every rotation is the identity, |00> stays |00> under CX(0,1)
    # (q = 2 has no closing CX(1,0)), so all Z and ZZ expectations are +1.
    structure = QRCEStructure.from_seed(2, 1, seed=0)
    features = qrce_features(
        torch.zeros(1, 2, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64), structure
    )
    torch.testing.assert_close(features, torch.ones(1, 4, dtype=torch.float64))


def test_known_value_flipped_qubit0_q2() -> None:
    # RY(pi)|0> = |1> on qubit 0; CX(0,1) then flips qubit 1: |q1 q0> = |11>.
    # <Z0> = <Z1> = -1, <Z0 Z1> = <Z1 Z0> = +1.
    structure = QRCEStructure.from_seed(2, 1, seed=0)
    angles = torch.tensor([[math.pi, 0.0]], dtype=torch.float64)
    features = qrce_features(angles, torch.zeros(1, 2, dtype=torch.float64), structure)
    expected = torch.tensor([[-1.0, -1.0, 1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(features, expected, atol=1e-12, rtol=0)


def test_known_value_ring_order_q3() -> None:
    # Qubit 0 set by RY(pi); CX(0,1) sets q1, CX(1,2) sets q2, CX(2,0) clears q0:
    # (q0, q1, q2) = (0, 1, 1). Z = (+1, -1, -1); Z0Z1 = -1, Z1Z2 = +1, Z2Z0 = -1.
    # Applying the ring in any other order gives a different state, so this pins the order.
    structure = QRCEStructure.from_seed(3, 1, seed=0)
    angles = torch.tensor([[math.pi, 0.0, 0.0]], dtype=torch.float64)
    features = qrce_features(angles, torch.zeros(1, 3, dtype=torch.float64), structure)
    expected = torch.tensor([[1.0, -1.0, -1.0, -1.0, 1.0, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(features, expected, atol=1e-12, rtol=0)


# --------------------------------------------------------------------------- structure


def test_structure_is_deterministic_per_seed() -> None:
    a = QRCEStructure.from_seed(4, 3, seed=11)
    b = QRCEStructure.from_seed(4, 3, seed=11)
    c = QRCEStructure.from_seed(4, 3, seed=12)
    assert a == b
    assert a.axes != c.axes
    draws = np.random.default_rng(11).integers(0, 3, size=(3, 4))
    assert a.axes == tuple(tuple("xyz"[d] for d in row) for row in draws)
    assert a.n_features == 8
    assert len(a.axes) == 3 and all(len(row) == 4 for row in a.axes)


# --------------------------------------------------------------------------- token gather


def test_token_features_dedupes_and_gathers(monkeypatch: pytest.MonkeyPatch) -> None:
    structure = QRCEStructure.from_seed(3, 2, seed=5)
    table, weights = _random_inputs(structure, n_tokens=10, seed=9)
    token_ids = torch.tensor([[3, 1, 3, 7, 1], [7, 7, 0, 3, 9]])
    batch_sizes: list[int] = []
    original = qrce_module.qrce_features

    def spy(angles: torch.Tensor, w: torch.Tensor, s: QRCEStructure) -> torch.Tensor:
        batch_sizes.append(angles.shape[0])
        return original(angles, w, s)

    monkeypatch.setattr(qrce_module, "qrce_features", spy)
    table = table.requires_grad_()
    features = qrce_token_features(token_ids, table, weights, structure)
    assert batch_sizes == [len(set(token_ids.flatten().tolist()))]  # 5 unique of 10
    assert features.shape == (2, 5, 6)

    per_token = original(table[token_ids.reshape(-1)], weights, structure).reshape(2, 5, 6)
    torch.testing.assert_close(features, per_token, atol=1e-12, rtol=0)
    # gradients accumulate over repeated tokens exactly as the per-token computation does
    (grad_dedup,) = torch.autograd.grad(features.square().sum(), table)
    (grad_direct,) = torch.autograd.grad(per_token.square().sum(), table)
    torch.testing.assert_close(grad_dedup, grad_direct, atol=1e-12, rtol=0)


def test_token_features_empty_ids() -> None:
    structure = QRCEStructure.from_seed(3, 1, seed=0)
    table, weights = _random_inputs(structure, n_tokens=4, seed=0)
    out = qrce_token_features(torch.empty(2, 0, dtype=torch.long), table, weights, structure)
    assert out.shape == (2, 0, 6)


# --------------------------------------------------------------------------- gradients


def test_gradcheck_against_finite_differences() -> None:
    structure = QRCEStructure.from_seed(3, 2, seed=4)
    angles, weights = _random_inputs(structure, n_tokens=3, seed=2)
    angles.requires_grad_()
    weights.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, w: qrce_features(a, w, structure), (angles, weights), eps=1e-6, atol=1e-8
    )


# --------------------------------------------------------------------------- precision


def test_float32_and_float64_agree() -> None:
    structure = QRCEStructure.from_seed(5, 3, seed=1)
    angles, weights = _random_inputs(structure, n_tokens=8, seed=1)
    out64 = qrce_features(angles, weights, structure)
    out32 = qrce_features(angles.float(), weights.float(), structure)
    assert out64.dtype == torch.float64 and out32.dtype == torch.float32
    # complex64 statevector over 3 layers: errors are a few float32 ulps (~1e-7)
    torch.testing.assert_close(out32.double(), out64, atol=1e-5, rtol=0)


# Half-precision inputs are upcast to float32 for the simulation and the result is rounded
# back. Compared with float32 on the *same* (already half-representable) inputs, the only
# difference is that final rounding. Features lie in [-1, 1]; the largest rounding error
# there is half an ulp of [0.5, 1): 2^-12 for fp16 (10 mantissa bits), 2^-9 for bf16 (7 bits).
# We allow one full ulp (2^-11, 2^-8), i.e. twice the bound, leaving room for float32 noise.
@pytest.mark.parametrize(
    ("dtype", "tolerance"), [(torch.float16, 2.0**-11), (torch.bfloat16, 2.0**-8)]
)
def test_half_precision_inputs(dtype: torch.dtype, tolerance: float) -> None:
    structure = QRCEStructure.from_seed(4, 2, seed=3)
    angles, weights = _random_inputs(structure, n_tokens=16, seed=5, dtype=dtype)
    out = qrce_features(angles, weights, structure)
    assert out.dtype == dtype
    reference = qrce_features(angles.float(), weights.float(), structure)
    torch.testing.assert_close(out.float(), reference, atol=tolerance, rtol=0)
    # and it is a real rounding, not a float32 tensor in disguise
    assert not torch.equal(out.float(), reference)


# --------------------------------------------------------------------------- bad inputs


def test_bad_structure_sizes() -> None:
    with pytest.raises(ValueError, match="at least 2 qubits"):
        QRCEStructure.from_seed(1, 2, seed=0)
    with pytest.raises(ValueError, match="at least 1 layer"):
        QRCEStructure.from_seed(3, 0, seed=0)
    with pytest.raises(ValueError, match="'x', 'y' or 'z'"):
        QRCEStructure(n_qubits=2, n_layers=1, seed=0, axes=(("x", "w"),))
    with pytest.raises(ValueError, match="axes must have shape"):
        QRCEStructure(n_qubits=2, n_layers=1, seed=0, axes=(("x",),))


def test_bad_feature_inputs() -> None:
    structure = QRCEStructure.from_seed(3, 2, seed=0)
    angles, weights = _random_inputs(structure, n_tokens=4, seed=0)
    with pytest.raises(ValueError, match=r"angles must have shape \(U, q=3\).*\(4, 2\)"):
        qrce_features(angles[:, :2], weights, structure)
    with pytest.raises(ValueError, match=r"angles must have shape \(U, q=3\).*unsqueeze"):
        qrce_features(angles[0], weights, structure)
    with pytest.raises(ValueError, match=r"weights must have shape \(L=2, q=3\).*\(3, 3\)"):
        qrce_features(angles, torch.zeros(3, 3, dtype=torch.float64), structure)
    with pytest.raises(TypeError, match="angles must be a real floating-point tensor"):
        qrce_features(angles.long(), weights, structure)
    with pytest.raises(TypeError, match="structure must be a QRCEStructure"):
        qrce_features(angles, weights, "seed=0")  # type: ignore[arg-type]


def test_bad_token_ids() -> None:
    structure = QRCEStructure.from_seed(3, 2, seed=0)
    table, weights = _random_inputs(structure, n_tokens=5, seed=0)
    with pytest.raises(TypeError, match="token_ids must be an integer tensor"):
        qrce_token_features(torch.tensor([0.0, 1.0]), table, weights, structure)
    with pytest.raises(ValueError, match=r"max id 10 .*table has 5 rows"):
        qrce_token_features(torch.tensor([0, 10, 2]), table, weights, structure)
    with pytest.raises(ValueError, match=r"min id -1.*table has 5 rows"):
        qrce_token_features(torch.tensor([0, -1]), table, weights, structure)
    with pytest.raises(ValueError, match=r"angle_table must have shape \(V, q=3\)"):
        qrce_token_features(torch.tensor([0, 1]), table[:, :2], weights, structure)
    with pytest.raises(TypeError, match="angle_table must be a real floating-point tensor"):
        qrce_token_features(torch.tensor([0, 1]), table.long(), weights, structure)


def test_bad_circuit_inputs() -> None:
    structure = QRCEStructure.from_seed(3, 2, seed=0)
    with pytest.raises(ValueError, match=r"angles_row must have shape \(3,\)"):
        qrce_circuit([0.1, 0.2], np.zeros((2, 3)), structure)
    with pytest.raises(ValueError, match=r"weights must have shape \(2, 3\)"):
        qrce_circuit([0.1, 0.2, 0.3], np.zeros((3, 2)), structure)
