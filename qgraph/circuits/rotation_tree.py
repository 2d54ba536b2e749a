"""Parameterised amplitude encoding of real vectors: a binary tree of uniformly controlled RY.

Möttönen et al. (PRL 93, 130502, 2004), real case. A unit vector x ∈ ℝ^{2^n} (qiskit order:
index i = Σ_j b_j 2^j, qubit 0 the least-significant bit) is prepared from |0…0⟩ by n
levels. Level m = 0..n−1 acts on qubit t = n−1−m with the m higher qubits t+1..n−1 as
controls; for control value c (bit k of c is qubit t+1+k) it applies RY(θ_m[c]) with

    θ_m[c] = 2·atan2(‖x_upper‖, ‖x_lower‖)    (m < n−1: sub-norms of the two halves of the
                                               block of indices whose high bits are c),
    θ_{n−1}[c] = 2·atan2(x_{2c+1}, x_{2c})    (leaf level: signed, so the signs are exact).

RY(θ)|0⟩ = cos(θ/2)|0⟩ + sin(θ/2)|1⟩, so each level splits the weight of its block between
its halves, and the leaf level also fixes the signs. Zero blocks get θ = 0 (atan2(0, 0)),
which is harmless: their amplitude is already zero.

**Gates.** A uniformly controlled RY with m controls is a Gray-code chain: for
k = 0..2^m−1, RY(φ_k) on the target, then CX from the control whose bit flips between g(k)
and g(k+1) (g(k) = k ⊕ (k >> 1), cyclic). For control value c the CXs conjugate the
rotations into RY(Σ_k (−1)^{popcount(c ∧ g(k))} φ_k), so φ = 2^{−m}·(Walsh–Hadamard of θ_m)
read in Gray order. The chain's last CX is always controlled by the top qubit n−1, and this
module **drops it** on every level (Möttönen's "n−1 fewer CNOTs"): the product P of the
dropped CX(n−1, t) flips qubits 0..n−2 when qubit n−1 is 1. Pushing the dropped gates
through the later levels (they only permute those levels' control values) shows that the
shortened circuit prepares x when it is given the tree angles of P·x (upper half of x
reversed), with each level-m table (m ≥ 2) read with its upper half reversed. Cost:
Σ_{m=1}^{n−1} (2^m − 1) = 2^n − n − 1 CX and 2^n − 1 RY, the same CX count as qiskit's
``StatePreparation`` (Isometry) at 5 and 9 qubits (26 and 502), and n−1 fewer than
``UCRYGate`` chains (2^n − 2; ``tests/test_rotation_tree.py`` measures both).

**Parameters.** The circuit's parameters are the RY angles φ themselves (one plain
``Parameter`` per gate, so qiskit-aer binds arrays of them natively, without evaluating
parameter expressions in Python): ``amplitude_tree_angles(x)`` computes them from x
(tree angles of P·x, permuted, Gray-coded), vectorised over a batch in torch. Parameter
``(2^m − 1) + k`` is the k-th rotation of level m.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from qiskit.circuit import Parameter, ParameterVector, QuantumCircuit

__all__ = [
    "amplitude_tree_angles",
    "amplitude_tree_circuit",
    "append_amplitude_tree",
    "tree_angles",
    "tree_cx_count",
]


def _check_width(x: torch.Tensor) -> int:
    """The qubit count n of a batch of 2^n-amplitude vectors (N, 2^n); raises otherwise."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"amplitude tree: x must be a torch.Tensor; got {type(x).__name__}.")
    if x.dim() != 2 or x.is_complex() or not x.is_floating_point():
        raise ValueError(
            f"amplitude tree: x must be a real (N, 2^n) floating-point tensor; got shape "
            f"{tuple(x.shape)} and dtype {x.dtype}."
        )
    width = x.shape[1]
    n_qubits = width.bit_length() - 1
    if width < 2 or 1 << n_qubits != width:
        raise ValueError(
            f"amplitude tree: the vector length must be a power of two ≥ 2 (2^n amplitudes "
            f"for n qubits); got {width}. Pad with zeros first."
        )
    return n_qubits


def tree_angles(x: torch.Tensor) -> torch.Tensor:
    """Möttönen's tree angles of real vectors x (N, 2^n): (N, 2^n − 1), level by level.

    Entry (2^m − 1) + c is θ_m[c] of the module docstring (root first). The vectors need
    not be normalised (only ratios enter). These are the angles of the *full* tree (every
    chain with its last CX); ``amplitude_tree_angles`` gives those of the circuit here.
    """
    n_qubits = _check_width(x)
    n_rows = x.shape[0]
    # squared norms of blocks of size 2^s, for s = 1..n-1 (level m uses halves of size 2^(n-1-m))
    sums = [x.square()]
    for _ in range(n_qubits - 1):
        sums.append(sums[-1].view(n_rows, -1, 2).sum(-1))
    levels = []
    for level in range(n_qubits - 1):
        halves = sums[n_qubits - 1 - level].view(n_rows, 1 << level, 2).sqrt()
        levels.append(2 * torch.atan2(halves[..., 1], halves[..., 0]))
    leaves = x.view(n_rows, 1 << (n_qubits - 1), 2)
    levels.append(2 * torch.atan2(leaves[..., 1], leaves[..., 0]))
    return torch.cat(levels, dim=1)


def _reverse_upper_half(values: torch.Tensor) -> torch.Tensor:
    """(N, 2^k) → the same with entries 2^(k−1)..2^k−1 in reverse order (k ≥ 1)."""
    half = values.shape[1] // 2
    return torch.cat([values[:, :half], values[:, half:].flip(1)], dim=1)


def _walsh_hadamard(values: torch.Tensor) -> torch.Tensor:
    """Unnormalised fast Walsh–Hadamard transform along dim 1: out[u] = Σ_c (−1)^{u·c} v[c]."""
    n_rows, size = values.shape
    h = 1
    while h < size:
        pairs = values.view(n_rows, -1, 2, h)
        values = torch.stack([pairs[:, :, 0] + pairs[:, :, 1], pairs[:, :, 0] - pairs[:, :, 1]], 2)
        values = values.reshape(n_rows, size)
        h *= 2
    return values


@functools.lru_cache(maxsize=32)
def _gray_order(n_controls: int) -> torch.Tensor:
    """g(k) = k ⊕ (k >> 1) for k < 2^m."""
    k = torch.arange(1 << n_controls)
    return k ^ (k >> 1)


def amplitude_tree_angles(x: torch.Tensor) -> torch.Tensor:
    """The parameters of ``amplitude_tree_circuit(n)`` that prepare Σ_i x̂_i|i⟩, batched.

    Args:
        x: (N, 2^n) real vectors (normalised here: only the direction matters; an all-zero
            row gives all-zero angles, i.e. |0…0⟩, and must be handled by the caller).

    Returns:
        (N, 2^n − 1) float64 RY angles in the circuit's parameter order (computed in
        float64 whatever x's dtype, since they are bound into circuits as doubles).
    """
    n_qubits = _check_width(x)
    work = x.to(torch.float64)
    if n_qubits >= 2:
        work = _reverse_upper_half(work)  # the state the full tree must make: P·x
    theta = tree_angles(work)
    levels = []
    for level in range(n_qubits):
        table = theta[:, (1 << level) - 1 : (1 << (level + 1)) - 1]
        if level >= 2:
            table = _reverse_upper_half(table)  # control values permuted by the dropped CXs
        phi = _walsh_hadamard(table)[:, _gray_order(level)] / (1 << level)
        levels.append(phi)
    return torch.cat(levels, dim=1)


def _tree_ops(n_qubits: int) -> list[tuple[str, int, int]]:
    """The gate list: ("ry", parameter index, qubit) or ("cx", control, target)."""
    ops: list[tuple[str, int, int]] = []
    for level in range(n_qubits):
        target = n_qubits - 1 - level
        size = 1 << level
        for k in range(size):
            ops.append(("ry", size - 1 + k, target))
            if k == size - 1:
                break  # the chain's closing CX (control n−1) is dropped, see the module doc
            flipped_bit = ((k + 1) & -(k + 1)).bit_length() - 1  # g(k) ⊕ g(k+1) = 2^ctz(k+1)
            ops.append(("cx", target + 1 + flipped_bit, target))
    return ops


def tree_cx_count(n_qubits: int) -> int:
    """CX gates in the tree on n qubits: 2^n − n − 1."""
    return (1 << n_qubits) - n_qubits - 1


def append_amplitude_tree(
    circuit: QuantumCircuit,
    qubits: Sequence[int],
    params: Sequence[Parameter],
    inverse: bool = False,
) -> None:
    """Append the tree on ``qubits`` (qubits[0] the least-significant bit) to ``circuit``.

    With ``inverse=True`` the gates come in reverse order, each RY still taking its own
    parameter: bind those to the **negated** angles (RY(φ)† = RY(−φ)) to get the inverse
    preparation U† with U|0⟩ = |x̂⟩. Negating values instead of writing RY(−p) keeps every
    gate parameter a plain ``Parameter``.
    """
    n_qubits = len(qubits)
    if len(params) != (1 << n_qubits) - 1:
        raise ValueError(
            f"amplitude tree: {n_qubits} qubits need {(1 << n_qubits) - 1} parameters; got "
            f"{len(params)}."
        )
    ops = _tree_ops(n_qubits)
    if inverse:
        ops = ops[::-1]
    for kind, first, second in ops:
        if kind == "ry":
            circuit.ry(params[first], qubits[second])
        else:
            circuit.cx(qubits[first], qubits[second])


def amplitude_tree_circuit(
    n_qubits: int, name: str = "x", inverse: bool = False
) -> tuple[QuantumCircuit, ParameterVector]:
    """The rotation-tree circuit on n qubits and its 2^n − 1 parameters (no measurements).

    Bound to ``amplitude_tree_angles(x)[row]`` it maps |0…0⟩ to Σ_i x̂_i|i⟩; with
    ``inverse=True`` and the negated angles it maps Σ_i x̂_i|i⟩ to |0…0⟩.
    """
    if isinstance(n_qubits, bool) or not isinstance(n_qubits, int) or n_qubits < 1:
        raise ValueError(f"amplitude tree: n_qubits must be a positive int; got {n_qubits!r}.")
    params = ParameterVector(name, (1 << n_qubits) - 1)
    circuit = QuantumCircuit(n_qubits, name=f"amplitude_tree_{n_qubits}")
    append_amplitude_tree(circuit, range(n_qubits), list(params), inverse=inverse)
    return circuit, params
