"""Gate-level QAAP circuits (Quantum Amplitude Attention Pooling), built with qiskit.

One circuit serves one (batch, head, query) instance: keys K (n × d), one query q (d,), and an
optional key mask. n is padded to 2^a and d to 2^b (a, b ≥ 1), masked key rows are zeroed,
and K is amplitude-encoded on a + b qubits,

    |ψ_K⟩ = Σ_{j,r} K[j, r] / ‖K‖_F |j⟩|r⟩        (amplitude index r + 2^b·j),

so the feature register is the low b qubits and the index register the high a qubits. Then
U† with U|0⟩ = |q̂⟩ acts on the feature register, and

    P(index = j, feature = 0) = (q̂ · k_j)² / ‖K‖_F².

Post-selected on feature = 0, the index register follows the QAAP attention weights of
``qgraph.kernels.qaap.qaap_weights``; the success probability is ‖K q̂‖² / ‖K‖_F².
docs/kernels.md has the derivation and the honest cost (O(n·d) gates per query circuit).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from qiskit import QuantumCircuit, QuantumRegister, transpile
from qiskit.circuit.library import StatePreparation
from qiskit.quantum_info import Statevector

from qgraph.kernels.qaap import SUCCESS_ATOL, qaap_register_sizes


@dataclass(frozen=True)
class QAAPRegisters:
    """Qubit counts of a QAAP circuit: ``index_qubits`` (a) for the keys, ``feature_qubits`` (b)
    for the head dimension. The feature register is the low b qubits of the circuit."""

    index_qubits: int
    feature_qubits: int

    @property
    def n_qubits(self) -> int:
        """All qubits of the circuit, a + b."""
        return self.index_qubits + self.feature_qubits


def qaap_registers(n_keys: int, head_dim: int) -> QAAPRegisters:
    """Register sizes for n_keys keys of width head_dim: a = ⌈log2 n⌉, b = ⌈log2 d⌉, both ≥ 1."""
    if isinstance(n_keys, bool) or not isinstance(n_keys, int) or n_keys < 1:
        raise ValueError(f"QAAP circuit: n_keys must be a positive int, got {n_keys!r}")
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1:
        raise ValueError(f"QAAP circuit: head_dim must be a positive int, got {head_dim!r}")
    index_qubits, feature_qubits = qaap_register_sizes(n_keys, head_dim)
    return QAAPRegisters(index_qubits=index_qubits, feature_qubits=feature_qubits)


def _as_numpy(x: Any, dtype: Any) -> np.ndarray:
    """A torch tensor or array-like as a numpy array of ``dtype`` (detached, on the CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bool or dtype is bool:
            return x.numpy().astype(dtype)
        return x.to(torch.float64).numpy().astype(dtype)
    return np.asarray(x, dtype=dtype)


def qaap_circuit(keys: Any, query: Any, keep: Any = None) -> QuantumCircuit:
    """The QAAP circuit of one query over keys (no measurements).

    ``keys`` is (n, d), ``query`` (d,), ``keep`` an optional (n,) bool mask (True = attend);
    torch tensors or numpy arrays. Qubits: the "feature" register (b low qubits), then the
    "index" register (a high qubits). Measuring every qubit gives
    P(index = j, feature = 0) = (q̂ · k_j)² / ‖K‖_F² with masked rows of K zeroed.

    Raises ValueError for wrong shapes, non-finite values, a zero-norm query or an all-zero
    (masked) K: those cannot be amplitude-encoded.
    """
    k = _as_numpy(keys, np.float64)
    q = _as_numpy(query, np.float64)
    if k.ndim != 2 or k.shape[0] < 1 or k.shape[1] < 1:
        raise ValueError(
            f"QAAP circuit: keys must have shape (n_keys, head_dim) with both ≥ 1, "
            f"got shape {tuple(k.shape)}"
        )
    n, d = k.shape
    if q.shape != (d,):
        raise ValueError(
            f"QAAP circuit: query must have shape ({d},) to match keys of shape {(n, d)}, "
            f"got shape {tuple(q.shape)}"
        )
    if keep is not None:
        mask = _as_numpy(keep, bool)
        if mask.shape != (n,):
            raise ValueError(
                f"QAAP circuit: keep must have shape ({n},) to match keys of shape {(n, d)}, "
                f"got shape {tuple(mask.shape)}"
            )
        k = np.where(mask[:, None], k, 0.0)
    if not (np.isfinite(k).all() and np.isfinite(q).all()):
        raise ValueError("QAAP circuit: keys and query must be finite (found inf or NaN)")
    q_norm = float(np.linalg.norm(q))
    if q_norm == 0.0:
        raise ValueError(
            "QAAP circuit: the query has zero norm, so |q̂⟩ cannot be prepared; the closed "
            "form (qgraph.kernels.qaap.qaap_weights) falls back to uniform weights over the "
            "unmasked keys for such a row"
        )
    k_norm = float(np.linalg.norm(k))
    if k_norm == 0.0:
        raise ValueError(
            "QAAP circuit: the (masked) keys are all zero, so |ψ_K⟩ cannot be amplitude-"
            "encoded; the closed form (qgraph.kernels.qaap.qaap_weights) falls back to "
            "uniform weights over the unmasked keys for such a row (or zero output if none)"
        )

    regs = qaap_registers(n, d)
    n_pad, d_pad = 2**regs.index_qubits, 2**regs.feature_qubits
    k_pad = np.zeros((n_pad, d_pad))
    k_pad[:n, :d] = k / k_norm
    q_pad = np.zeros(d_pad)
    q_pad[:d] = q / q_norm

    feature = QuantumRegister(regs.feature_qubits, "feature")
    index = QuantumRegister(regs.index_qubits, "index")
    circuit = QuantumCircuit(feature, index, name="qaap")
    # Row-major flattening puts amplitude K[j, r] at index r + 2^b·j; qiskit's qubit 0 is the
    # least significant bit, so the first b qubits (the feature register) hold r.
    circuit.append(StatePreparation(k_pad.reshape(-1), label="ψ_K"), [*feature, *index])
    circuit.append(StatePreparation(q_pad, label="q̂").inverse(), list(feature))
    return circuit


def qaap_index_distribution(
    circuit: QuantumCircuit, n_keys: int, head_dim: int
) -> tuple[np.ndarray, float]:
    """From Statevector(circuit): (P(j | feature=0) for j < n_keys,
    success probability P(feature=0)).

    Raises ValueError when the circuit's width does not fit (n_keys, head_dim), or when the
    post-selection never succeeds (the query is orthogonal to every unmasked key): the
    conditional distribution is then undefined, and QAAP falls back to uniform weights over
    the unmasked keys, as ``qgraph.kernels.qaap.qaap_weights`` does.
    """
    regs = qaap_registers(n_keys, head_dim)
    if circuit.num_qubits != regs.n_qubits:
        raise ValueError(
            f"QAAP circuit: a circuit for {n_keys} keys of width {head_dim} has "
            f"{regs.n_qubits} qubits ({regs.index_qubits} index + {regs.feature_qubits} "
            f"feature), got {circuit.num_qubits}"
        )
    probs = Statevector(circuit).probabilities()
    joint = probs.reshape(2**regs.index_qubits, 2**regs.feature_qubits)  # [j, r]
    success = float(joint[:, 0].sum())
    if success <= SUCCESS_ATOL:
        raise ValueError(
            f"QAAP circuit: post-selection on feature = 0 has probability {success:.3g}: the "
            "query is orthogonal to every unmasked key; QAAP falls back to uniform weights "
            "over the unmasked keys for such a row"
        )
    return joint[:n_keys, 0] / success, success


@lru_cache(maxsize=64)
def _transpiled_cost(
    n_keys: int, head_dim: int, basis: tuple[str, ...], seed: int
) -> tuple[int, int, int]:
    rng = np.random.default_rng(seed)
    keys = rng.standard_normal((n_keys, head_dim))
    query = rng.standard_normal(head_dim)
    circuit = qaap_circuit(keys, query)
    compiled = transpile(
        circuit, basis_gates=list(basis), optimization_level=1, seed_transpiler=seed
    )
    two_qubit = sum(1 for inst in compiled.data if inst.operation.num_qubits == 2)
    return compiled.num_qubits, compiled.depth(), two_qubit


def qaap_transpiled_cost(
    n_keys: int, head_dim: int, basis: tuple[str, ...] = ("cx", "u"), seed: int = 0
) -> dict[str, int]:
    """Cost of one QAAP query circuit: {"qubits", "depth", "two_qubit_gates"}.

    Measured, not estimated: a random instance (keys and query from
    ``numpy.random.default_rng(seed)``) is transpiled with ``qiskit.transpile(basis_gates=basis,
    optimization_level=1)`` on all-to-all connectivity (no device routing). Cached per
    arguments.
    """
    regs = qaap_registers(n_keys, head_dim)  # validates the sizes
    qubits, depth, two_qubit = _transpiled_cost(n_keys, head_dim, tuple(basis), int(seed))
    assert qubits == regs.n_qubits
    return {"qubits": qubits, "depth": depth, "two_qubit_gates": two_qubit}
