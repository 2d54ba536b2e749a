"""Parameterised circuit templates: one circuit per kernel shape, bound per instance.

Gate-level backends (Aer, IBM) send every instance of an op call as one job: a single
template circuit with a parameter array of shape (N, n_params). That needs circuits whose
instances differ only in parameter values:

* **QAAP** (``qaap_template``): the keys K and the query q̂ enter through the RY angles of
  rotation trees (``qgraph.circuits.rotation_tree``) instead of ``StatePreparation`` of
  fixed data; one template per register shape (a, b), reused for every (batch, head, query)
  by binding ``qaap_parameters``. The circuit is the one of ``qgraph.circuits.qaap`` (tree
  encoding of K with amplitude index r + 2^b·j on a + b qubits, feature register = the low
  b qubits, then U† with U|0⟩ = |q̂⟩ on the feature register) and has the same CX count as
  the ``StatePreparation`` version (27 at (a, b) = (3, 2), 513 at (5, 4): docs/kernels.md).
* **QRCE** (``qrce_layer_template``): ``qgraph.circuits.qrce.qrce_template`` with a separate
  re-upload parameter per layer occurrence (L·q α's and L·q θ's), so the same template runs
  the forward pass (α repeated over layers) and every parameter-shifted circuit (one
  occurrence shifted).
* ``transpiled``: transpile a template once per (kernel, shape, target) and cache it.

Parameter values are always given to the primitives as ``{tuple(params): array}`` so that
qiskit's own parameter ordering never matters.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import Any

import numpy as np
import torch
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import ParameterVector

from qgraph.circuits.qrce import append_layer
from qgraph.circuits.rotation_tree import amplitude_tree_angles, append_amplitude_tree
from qgraph.kernels.qaap import qaap_register_sizes
from qgraph.kernels.qrce import QRCEStructure

__all__ = [
    "clear_transpile_cache",
    "qaap_parameters",
    "qaap_template",
    "qrce_layer_parameters",
    "qrce_layer_template",
    "transpile_cache_size",
    "transpiled",
]


# --------------------------------------------------------------------------- QAAP


def _check_register(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"QAAP template: {name} must be a positive int; got {value!r}.")
    return int(value)


@functools.lru_cache(maxsize=64)
def qaap_template(
    index_qubits: int, feature_qubits: int, measure: bool = True
) -> tuple[QuantumCircuit, ParameterVector, ParameterVector]:
    """The QAAP circuit for 2^a keys of width 2^b, parameterised by the data.

    Returns ``(circuit, key_params, query_params)``: ``key_params`` (2^(a+b) − 1) are the
    rotation-tree angles of the flattened, normalised keys on all a + b qubits;
    ``query_params`` (2^b − 1) drive the *inverse* tree of q̂ on the feature register (the
    low b qubits) and take the negated tree angles of q̂ (``qaap_parameters`` does both).
    With ``measure`` every qubit is measured into the register "meas" (clbit i = qubit i);
    without, the circuit has no classical bits (for saved probabilities or statevectors).
    Cached per arguments: treat the result as read-only.
    """
    a = _check_register("index_qubits", index_qubits)
    b = _check_register("feature_qubits", feature_qubits)
    key_params = ParameterVector("k", (1 << (a + b)) - 1)
    query_params = ParameterVector("q", (1 << b) - 1)
    circuit = QuantumCircuit(a + b, name=f"qaap_a{a}_b{b}")
    append_amplitude_tree(circuit, range(a + b), list(key_params))
    append_amplitude_tree(circuit, range(b), list(query_params), inverse=True)
    if measure:
        circuit.measure_all()
    return circuit, key_params, query_params


def qaap_parameters(
    k_rows: torch.Tensor, q_rows: torch.Tensor, keep: torch.Tensor | None = None
) -> np.ndarray:
    """Parameter values of ``qaap_template(a, b)`` for N instances: (N, n_key + n_query).

    Args:
        k_rows: (N, n, d) keys of each instance.
        q_rows: (N, d) its query.
        keep: optional (N, n) bool, True = attend; masked keys are zeroed before encoding.

    The keys are padded to (2^a, 2^b) with a = ⌈log₂ n⌉, b = ⌈log₂ d⌉ (both ≥ 1), flattened
    row-major (amplitude index r + 2^b·j) and normalised; q is padded to 2^b and normalised.
    Columns are ``key_params`` then ``query_params`` (negated angles, for the inverse tree),
    float64. Raises ValueError for a row that cannot be encoded (zero-norm query, or all
    keys zero after masking): QAAP handles those rows classically (fallback / empty).
    """
    if k_rows.dim() != 3 or q_rows.dim() != 2 or q_rows.shape != (k_rows.shape[0], k_rows.shape[2]):
        raise ValueError(
            f"QAAP parameters: need k_rows (N, n, d) and q_rows (N, d); got "
            f"{tuple(k_rows.shape)} and {tuple(q_rows.shape)}."
        )
    n_rows, n_keys, head_dim = k_rows.shape
    a, b = qaap_register_sizes(n_keys, head_dim)
    keys = k_rows.detach().to("cpu", torch.float64)
    query = q_rows.detach().to("cpu", torch.float64)
    if keep is not None:
        if tuple(keep.shape) != (n_rows, n_keys):
            raise ValueError(
                f"QAAP parameters: keep must have shape {(n_rows, n_keys)}; got "
                f"{tuple(keep.shape)}."
            )
        keys = keys * keep.detach().to("cpu", torch.float64)[:, :, None]
    padded = torch.zeros(n_rows, 1 << a, 1 << b, dtype=torch.float64)
    padded[:, :n_keys, :head_dim] = keys
    q_pad = torch.zeros(n_rows, 1 << b, dtype=torch.float64)
    q_pad[:, :head_dim] = query
    flat = padded.reshape(n_rows, -1)
    bad = (flat.norm(dim=1) == 0) | (q_pad.norm(dim=1) == 0)
    if not torch.isfinite(flat).all() or not torch.isfinite(q_pad).all():
        raise ValueError("QAAP parameters: keys and queries must be finite (found inf or NaN).")
    if bool(bad.any()):
        rows = bad.nonzero().flatten()[:5].tolist()
        raise ValueError(
            f"QAAP parameters: rows {rows} have a zero-norm query or all-zero (masked) keys "
            "and cannot be amplitude-encoded; handle them as fallback/empty rows first."
        )
    key_angles = amplitude_tree_angles(flat)
    query_angles = amplitude_tree_angles(q_pad)
    return torch.cat([key_angles, -query_angles], dim=1).numpy()


# --------------------------------------------------------------------------- QRCE


@functools.lru_cache(maxsize=64)
def qrce_layer_template(
    structure: QRCEStructure, measure: bool = False
) -> tuple[QuantumCircuit, ParameterVector, ParameterVector]:
    """The QRCE circuit with one re-upload parameter per layer occurrence.

    Returns ``(circuit, alpha, theta)``, both of length L·q in row-major (layer, qubit)
    order: ``alpha[l*q + i]`` is the RY re-upload angle of qubit i in layer l and
    ``theta[l*q + i]`` the trainable R_{axes[l][i]} angle. Binding alpha to the token's
    angles repeated over layers gives ``qgraph.circuits.qrce.qrce_template``'s circuit.
    With ``measure`` every qubit is measured into "meas" (samplers); without, it suits
    estimators. Cached per arguments: treat the result as read-only.
    """
    if not isinstance(structure, QRCEStructure):
        raise TypeError(
            f"QRCE template: structure must be a QRCEStructure; got {type(structure).__name__}."
        )
    q, n_layers = structure.n_qubits, structure.n_layers
    alpha = ParameterVector("alpha", n_layers * q)
    theta = ParameterVector("theta", n_layers * q)
    circuit = QuantumCircuit(q, name=f"qrce_layers_q{q}_l{n_layers}_s{structure.seed}")
    for layer in range(n_layers):
        span = slice(layer * q, (layer + 1) * q)
        append_layer(circuit, structure, layer, alpha[span], theta[span])
    if measure:
        circuit.measure_all()
    return circuit, alpha, theta


def qrce_layer_parameters(layer_angles: torch.Tensor, layer_weights: torch.Tensor) -> np.ndarray:
    """(N, L, q) per-layer angles and weights → (N, 2·L·q) values for (alpha, theta), float64."""
    if layer_angles.dim() != 3 or layer_angles.shape != layer_weights.shape:
        raise ValueError(
            f"QRCE parameters: layer_angles and layer_weights must both be (N, L, q); got "
            f"{tuple(layer_angles.shape)} and {tuple(layer_weights.shape)}."
        )
    n_rows = layer_angles.shape[0]
    values = torch.cat(
        [layer_angles.detach().reshape(n_rows, -1), layer_weights.detach().reshape(n_rows, -1)],
        dim=1,
    )
    return values.to("cpu", torch.float64).numpy()


# --------------------------------------------------------------------------- transpile cache

_TRANSPILED: dict[tuple[Hashable, ...], QuantumCircuit] = {}


def transpiled(
    template_key: Hashable,
    circuit: QuantumCircuit,
    backend_target: Any,
    optimization_level: int = 1,
    seed: int = 0,
) -> QuantumCircuit:
    """``circuit`` transpiled for ``backend_target`` (a BackendV2), once per key and target.

    ``template_key`` names the template and its shape, e.g. ``("qaap", a, b, measure)``;
    the cache key adds the target's name, the optimisation level and the seed. The cached
    circuit is shared: copy it before adding instructions.
    """
    key = (template_key, str(backend_target.name), optimization_level, seed)
    found = _TRANSPILED.get(key)
    if found is None:
        found = transpile(
            circuit,
            backend=backend_target,
            optimization_level=optimization_level,
            seed_transpiler=seed,
        )
        _TRANSPILED[key] = found
    return found


def transpile_cache_size() -> int:
    """Entries in the transpile cache (for tests and reports)."""
    return len(_TRANSPILED)


def clear_transpile_cache() -> None:
    """Forget every transpiled template."""
    _TRANSPILED.clear()
