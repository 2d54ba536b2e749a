"""The QRCE simulators' hand-written adjoint backward against plain autograd through the circuit.

``_reference`` below is a deliberately simple statevector simulation, written gate by gate with
ordinary complex autograd (one einsum per single-qubit gate, one index per CNOT), so it shares
no code with ``qgraph.kernels.qrce_shared`` / ``qrce_adjoint``: its gradients are the ones the
adjoint method must reproduce. ``tests/test_qrce_kernel.py`` checks the forward against qiskit.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from qgraph.kernels.qrce import (
    QRCEStructure,
    qrce_features,
    qrce_features_per_layer,
    qrce_probabilities,
    qrce_probabilities_per_layer,
    readout_signs,
)

_PAULIS = {
    "x": ((0, 1), (1, 0)),
    "y": ((0, -1j), (1j, 0)),
    "z": ((1, 0), (0, -1)),
}


def _rotation(angle: torch.Tensor, axis: str) -> torch.Tensor:
    """(N,) angles → (N, 2, 2) exp(−i·angle·P/2)."""
    pauli = torch.tensor(_PAULIS[axis], dtype=torch.complex128)
    half = angle.to(torch.float64)[:, None, None] / 2
    return torch.cos(half) * torch.eye(2, dtype=torch.complex128) - 1j * torch.sin(half) * pauli


def _reference(
    layer_angles: torch.Tensor, layer_weights: torch.Tensor, structure: QRCEStructure
) -> torch.Tensor:
    """(N, L, q) angles and weights → (N, 2^q) probabilities, float64 autograd, gate by gate."""
    n_rows, n_layers, n_qubits = layer_angles.shape
    dim = 2**n_qubits
    state = torch.zeros(n_rows, dim, dtype=torch.complex128)
    state[:, 0] = 1
    basis = torch.arange(dim)
    ring = [(i, i + 1) for i in range(n_qubits - 1)] + ([(n_qubits - 1, 0)] if n_qubits > 2 else [])
    for layer in range(n_layers):
        for qubit in range(n_qubits):
            gate = _rotation(layer_weights[:, layer, qubit], structure.axes[layer][qubit])
            gate = gate @ _rotation(layer_angles[:, layer, qubit], "y")
            view = state.view(n_rows, dim >> (qubit + 1), 2, 1 << qubit)
            state = torch.einsum("nrs,nasb->narb", gate, view).reshape(n_rows, dim)
        for control, target in ring:
            state = state[:, basis ^ (((basis >> control) & 1) << target)]
    return state.real.square() + state.imag.square()


def _shared_reference(
    angles: torch.Tensor, weights: torch.Tensor, structure: QRCEStructure
) -> torch.Tensor:
    n_rows, (n_layers, n_qubits) = angles.shape[0], weights.shape
    return _reference(
        angles[:, None, :].expand(n_rows, n_layers, n_qubits),
        weights[None].expand(n_rows, n_layers, n_qubits),
        structure,
    )


def _inputs(
    structure: QRCEStructure, n_rows: int, seed: int, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shape = (structure.n_layers, structure.n_qubits)
    angles = (
        (torch.rand(n_rows, structure.n_qubits, generator=generator, dtype=torch.float64) - 0.5)
        * 4
        * math.pi
    )
    weights = (torch.rand(*shape, generator=generator, dtype=torch.float64) - 0.5) * 4 * math.pi
    return angles.to(dtype), weights.to(dtype)


def _grads(output: torch.Tensor, inputs: tuple[torch.Tensor, ...], seed: int) -> tuple[Any, ...]:
    """Gradients of Σ output·C for a fixed random cotangent C."""
    cotangent = torch.randn(output.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad((output * cotangent.to(output.dtype)).sum(), inputs)


# every branch of the θ gradient (x, y and z axes), block sizes 1 to 4, a partial last block
# (q = 5: blocks 3 + 2, q = 9: 3 + 3 + 3) and one layer only
SIZES = [(2, 1, 0), (3, 2, 1), (4, 3, 2), (5, 2, 3), (8, 2, 4), (9, 2, 5)]


@pytest.mark.parametrize(("n_qubits", "n_layers", "seed"), SIZES)
def test_features_and_gradients_match_autograd_reference(
    n_qubits: int, n_layers: int, seed: int
) -> None:
    structure = QRCEStructure.from_seed(n_qubits, n_layers, seed=seed)
    angles, weights = _inputs(structure, n_rows=6, seed=seed)
    angles.requires_grad_()
    weights.requires_grad_()
    ours = qrce_features(angles, weights, structure)
    reference = _shared_reference(angles, weights, structure) @ readout_signs(
        n_qubits, dtype=torch.float64
    )
    torch.testing.assert_close(ours, reference, atol=1e-12, rtol=0)
    inputs = (angles, weights)
    for got, want in zip(_grads(ours, inputs, seed), _grads(reference, inputs, seed), strict=True):
        torch.testing.assert_close(got, want, atol=1e-11, rtol=0)


@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_every_axis_alone(axis: str) -> None:
    # all trainable rotations on one axis: each branch of the θ gradient carries the whole
    # weight gradient (a wrong sign or a missing term shows up in every entry)
    structure = QRCEStructure(n_qubits=4, n_layers=3, seed=0, axes=((axis,) * 4,) * 3)
    angles, weights = _inputs(structure, n_rows=5, seed=7)
    angles.requires_grad_()
    weights.requires_grad_()
    ours = _grads(qrce_probabilities(angles, weights, structure), (angles, weights), 1)
    reference = _grads(_shared_reference(angles, weights, structure), (angles, weights), 1)
    for got, want in zip(ours, reference, strict=True):
        torch.testing.assert_close(got, want, atol=1e-11, rtol=0)


def test_per_layer_gradients_match_autograd_reference() -> None:
    # every slot its own angles (parameter-shift rows), mixed axes, 3 layers
    structure = QRCEStructure(
        n_qubits=4,
        n_layers=3,
        seed=0,
        axes=(("x", "y", "z", "x"), ("z", "z", "y", "x"), ("y", "x", "z", "y")),
    )
    generator = torch.Generator().manual_seed(3)
    layer_angles = (
        (torch.rand(5, 3, 4, generator=generator, dtype=torch.float64) - 0.5) * 6
    ).requires_grad_()
    layer_weights = (
        (torch.rand(5, 3, 4, generator=generator, dtype=torch.float64) - 0.5) * 6
    ).requires_grad_()
    inputs = (layer_angles, layer_weights)
    reference = _reference(layer_angles, layer_weights, structure)
    probs = qrce_probabilities_per_layer(layer_angles, layer_weights, structure)
    torch.testing.assert_close(probs, reference, atol=1e-12, rtol=0)
    for got, want in zip(_grads(probs, inputs, 2), _grads(reference, inputs, 2), strict=True):
        torch.testing.assert_close(got, want, atol=1e-11, rtol=0)
    features = qrce_features_per_layer(layer_angles, layer_weights, structure)
    signed = _reference(layer_angles, layer_weights, structure) @ readout_signs(
        4, dtype=torch.float64
    )
    for got, want in zip(_grads(features, inputs, 4), _grads(signed, inputs, 4), strict=True):
        torch.testing.assert_close(got, want, atol=1e-11, rtol=0)


def test_float32_gradients_close_to_float64_reference() -> None:
    # the benchmark's size, complex64 end to end: the gradients come back in float32 (the
    # inputs' dtype) and, summed over 256 tokens, within 1e-5 (relative) of float64
    structure = QRCEStructure.from_seed(8, 4, seed=0)
    angles, weights = _inputs(structure, n_rows=256, seed=11)
    x32, w32 = angles.float().requires_grad_(), weights.float().requires_grad_()
    x64, w64 = angles.clone().requires_grad_(), weights.clone().requires_grad_()
    ours = _grads(qrce_features(x32, w32, structure), (x32, w32), 5)
    reference = _grads(qrce_features(x64, w64, structure), (x64, w64), 5)
    for got, want in zip(ours, reference, strict=True):
        assert got.dtype == torch.float32
        scale = max(1.0, float(want.abs().max()))
        assert float((got.double() - want).abs().max()) / scale < 1e-5


def test_vjp_equals_backward_and_single_input_gradients() -> None:
    # the exact backend differentiates qrce_features with torch.func.vjp
    structure = QRCEStructure.from_seed(5, 3, seed=2)
    angles, weights = _inputs(structure, n_rows=7, seed=2)
    cotangent = torch.randn(7, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _, vjp = torch.func.vjp(lambda a, w: qrce_features(a, w, structure), angles, weights)
    by_vjp = vjp(cotangent)
    a, w = angles.clone().requires_grad_(), weights.clone().requires_grad_()
    (qrce_features(a, w, structure) * cotangent).sum().backward()
    torch.testing.assert_close(by_vjp[0], a.grad, atol=1e-13, rtol=0)
    torch.testing.assert_close(by_vjp[1], w.grad, atol=1e-13, rtol=0)
    # only one input tracked: the same gradient for it
    a3 = angles.clone().requires_grad_()
    (grad_a,) = torch.autograd.grad((qrce_features(a3, weights, structure) * cotangent).sum(), a3)
    w3 = weights.clone().requires_grad_()
    (grad_w,) = torch.autograd.grad((qrce_features(angles, w3, structure) * cotangent).sum(), w3)
    torch.testing.assert_close(grad_a, a.grad, atol=1e-13, rtol=0)
    torch.testing.assert_close(grad_w, w.grad, atol=1e-13, rtol=0)


def test_no_grad_forward_equals_tracked_forward() -> None:
    structure = QRCEStructure.from_seed(6, 3, seed=4)
    angles, weights = _inputs(structure, n_rows=9, seed=4)
    with torch.no_grad():
        plain = qrce_features(angles, weights, structure)
    tracked = qrce_features(angles.requires_grad_(), weights, structure)
    torch.testing.assert_close(plain, tracked.detach(), atol=0, rtol=0)


def test_double_backward_is_refused() -> None:
    # the adjoint backward is not itself differentiable: a second derivative (here with a
    # cotangent that depends on the input, as in a gradient penalty) must fail loudly instead
    # of returning a silently partial one
    structure = QRCEStructure.from_seed(3, 2, seed=0)
    angles, weights = _inputs(structure, n_rows=2, seed=0)
    angles.requires_grad_()
    loss = qrce_features(angles, weights, structure).square().sum()
    (grad,) = torch.autograd.grad(loss, angles, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


def test_float32_features_within_1e6_of_float64() -> None:
    # the benchmark's circuit and batch: the complex64 simulation (Φ and the block matrices
    # are built in float64 and rounded once) stays within 1e-6 of float64 on the same inputs
    structure = QRCEStructure.from_seed(8, 4, seed=0)
    angles, weights = _inputs(structure, n_rows=1024, seed=0, dtype=torch.float32)
    ours = qrce_features(angles, weights, structure)
    reference = qrce_features(angles.double(), weights.double(), structure)
    assert float((ours.double() - reference).abs().max()) < 1e-6
