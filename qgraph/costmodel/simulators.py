"""Time models of the local backends (exact, shots, aer): work counts × calibrated rates.

A local backend's wall time for one op call is modelled as a sum of work counts times
seconds per unit, one linear model per (backend, kernel, mode)::

    t = Σ_f rate[model.f] · work_f

The work counts follow what each backend does (``backends/exact.py``, ``shots.py``,
``aer.py``):

=============  ==============================================================================
feature        work it counts
=============  ==============================================================================
call           one op call (fixed Python/dispatch cost)
job            one primitive job (aer: one per ≤ max_circuits_per_job circuits)
pyops          torch statevector: Python-level block operations per call, L·q
rows           QAAP query rows B·H·Sq
scores         QAAP q̂·k products: rows × keys
scores_mid     the same, when the (rows × keys) float32 tensor exceeds the L2 cache
scores_big     the same, when that tensor exceeds BIG_TENSOR_BYTES
madds          QAAP closed-form multiply-adds: rows × keys × (head_dim + value_dim)
circuits       circuits run (QRCE: distinct tokens; gradient: shifted circuits)
amp_gates      statevector work: circuits × gates × 2^qubits (torch: layers after the
               first, whose rotations are applied by batched matmuls; the first layer
               builds a product state directly)
outcomes       amplitude passes: circuits × 2^qubits (× layers for the torch statevector:
               product-state build, CNOT-ring gathers, probabilities)
outcomes_mid   the same, when one batched state tensor exceeds the L2 cache
outcomes_big   the same, when it exceeds BIG_TENSOR_BYTES
amp_gates_mid  torch amp_gates, when the batched state exceeds the L2 cache
gate_binds     aer parameter binding: circuits × transpiled gates
observables    aer exact QRCE: expectation values computed, circuits × 2q
params         rotation-tree angles computed on the CPU: circuits × parameters
draws          sampled shots: circuits × shots
draw_bits      shot bits unpacked on the CPU: circuits × shots × qubits
=============  ==============================================================================

``qgraph.costmodel.calibrate`` measures the rates on this machine (non-negative least
squares on relative error over a calibration grid) and writes them into the simulator
profiles; ``benchmarks/costmodel_accuracy.py`` checks the predictions on a different grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qgraph.kernels.qaap import qaap_register_sizes

__all__ = ["FEATURES", "LATENCY_FEATURES", "PRE_POST_FEATURES", "Work", "qaap_work", "qrce_work"]

#: Tensors above this size are freshly mmap-ed (and page-faulted) on every call: glibc
#: malloc's largest dynamic mmap threshold, DEFAULT_MMAP_THRESHOLD_MAX = 4 MiB·sizeof(long)
#: = 32 MiB on 64-bit Linux. The calibration finds a separate rate above it.
BIG_TENSOR_BYTES = 32 << 20

#: L2 cache size assumed when a profile does not record its machine's (``cache_bytes``)
DEFAULT_CACHE_BYTES = 1 << 20

#: bytes per amplitude of the torch statevector at float32 inputs (complex64)
_AMPLITUDE_BYTES = 8

#: amplitudes per slice when the shots backend evaluates shifted circuits (backends/shots.py)
_SHIFT_SLICE_AMPLITUDES = 1 << 22

#: feature -> (unit of one count, what it counts)
FEATURES: dict[str, tuple[str, str]] = {
    "call": ("call", "one op call"),
    "job": ("job", "primitive jobs"),
    "pyops": ("block-op", "torch statevector block operations, L·q"),
    "rows": ("row", "QAAP query rows B·H·Sq"),
    "scores": ("score", "QAAP rows × keys"),
    "scores_mid": ("score", "QAAP rows × keys, tensor above the L2 cache"),
    "scores_big": ("score", "QAAP rows × keys, tensor above 32 MiB"),
    "madds": ("multiply-add", "QAAP rows × keys × (head_dim + value_dim)"),
    "circuits": ("circuit", "circuits run"),
    "amp_gates": ("amplitude-gate", "circuits × gates × 2^qubits"),
    "outcomes": ("amplitude", "circuits × 2^qubits (× layers, torch)"),
    "outcomes_mid": ("amplitude", "the same, state tensor above the L2 cache"),
    "outcomes_big": ("amplitude", "the same, state tensor above 32 MiB"),
    "amp_gates_mid": ("amplitude-gate", "torch amp_gates, state tensor above the L2 cache"),
    "gate_binds": ("gate", "circuits × transpiled gates"),
    "params": ("angle", "circuits × circuit parameters"),
    "observables": ("expectation", "aer: circuits × 2q observables"),
    "draws": ("shot", "circuits × shots"),
    "draw_bits": ("bit", "circuits × shots × qubits"),
}

#: features that are fixed per call or job (the "latency" line of a breakdown)
LATENCY_FEATURES = frozenset({"call", "job"})

#: features that are classical pre/post-processing on the CPU
PRE_POST_FEATURES = frozenset({"params"})

#: the exact backend's closed-form QAAP and statevector QRCE; the shots backend runs the same
#: computation and then samples (+ "draws")
_EXACT_QAAP = ("call", "rows", "scores", "scores_mid", "scores_big", "madds")
_EXACT_QRCE = (
    "call",
    "pyops",
    "circuits",
    "amp_gates",
    "amp_gates_mid",
    "outcomes",
    "outcomes_mid",
    "outcomes_big",
)
_AER_BASE = ("call", "job", "circuits", "gate_binds", "amp_gates")

#: the features each model uses
MODEL_FEATURES: dict[str, tuple[str, ...]] = {
    "exact.qaap": _EXACT_QAAP,
    "exact.qrce": _EXACT_QRCE,
    "shots.qaap": (*_EXACT_QAAP, "draws"),
    "shots.qrce": (*_EXACT_QRCE, "draws"),
    "shots.qrce_grad": (*_EXACT_QRCE[:-1], "draws"),
    "aer.qaap_exact": (*_AER_BASE, "params"),
    "aer.qaap_sampled": (*_AER_BASE, "params", "draws", "draw_bits"),
    "aer.qrce_exact": (*_AER_BASE, "observables", "outcomes"),
    "aer.qrce_sampled": (*_AER_BASE, "draws", "draw_bits"),
}


@dataclass(frozen=True)
class Work:
    """The work counts of one op call on one local backend, for model ``model``."""

    backend: str
    model: str  # e.g. "qaap", "qaap_sampled", "qrce_grad" (key prefix in the profile)
    features: dict[str, float]
    description: str


def _check_backend(backend: str) -> None:
    if backend not in ("exact", "shots", "aer"):
        raise ValueError(f"local backend must be exact, shots or aer; got {backend!r}.")


def qaap_work(
    backend: str,
    *,
    rows: int,
    kv_len: int,
    head_dim: int,
    value_dim: int | None = None,
    shots: int = 0,
    gates: int = 0,
    max_circuits_per_job: int = 4096,
    cache_bytes: float = DEFAULT_CACHE_BYTES,
) -> Work:
    """Work of one QAAP call of ``rows`` query rows over ``kv_len`` keys.

    ``gates`` (aer only) is the transpiled template's gate count (measurements excluded).
    """
    _check_backend(backend)
    value_dim = head_dim if value_dim is None else value_dim
    a, b = qaap_register_sizes(kv_len, head_dim)
    n_params = (1 << (a + b)) - 1 + (1 << b) - 1
    scores = rows * kv_len
    if backend in ("exact", "shots"):
        nbytes = scores * 4
        features = {
            "call": 1.0,
            "rows": float(rows),
            "scores": float(scores),
            "scores_mid": float(scores) if nbytes > cache_bytes else 0.0,
            "scores_big": float(scores) if nbytes > BIG_TENSOR_BYTES else 0.0,
            "madds": float(scores * (head_dim + value_dim)),
        }
        if backend == "shots":
            features["draws"] = float(rows * shots)
        model = "qaap"
        text = "closed-form QAAP" + (f", {shots} shots per row sampled" if shots else "")
    else:
        features = {
            "call": 1.0,
            "job": float(math.ceil(rows / max_circuits_per_job)) if rows else 0.0,
            "circuits": float(rows),
            "gate_binds": float(rows * gates),
            "amp_gates": float(rows * gates * (1 << (a + b))),
            "params": float(rows * n_params),
        }
        if shots:
            features["draws"] = float(rows * shots)
            features["draw_bits"] = float(rows * shots * (a + b))
        model = "qaap_sampled" if shots else "qaap_exact"
        text = f"gate-level QAAP on Aer, {a + b} qubits, {gates} gates" + (
            f", {shots} shots" if shots else ", exact probabilities"
        )
    return Work(backend, model, features, text)


def qrce_work(
    backend: str,
    *,
    circuits: int,
    qubits: int,
    layers: int,
    shots: int = 0,
    gradient: bool = False,
    gates: int = 0,
    max_circuits_per_job: int = 4096,
    cache_bytes: float = DEFAULT_CACHE_BYTES,
) -> Work:
    """Work of one QRCE call running ``circuits`` circuits of q qubits and L layers.

    ``gradient``: the parameter-shift batch (``circuits`` = 4·L·q per distinct token).
    ``gates`` (aer only) is the transpiled template's gate count (measurements excluded).
    """
    _check_backend(backend)
    dim = 1 << int(qubits)
    if backend in ("exact", "shots"):
        batch = circuits
        if gradient:  # shifted circuits are simulated in slices of ≤ 2^22 amplitudes
            batch = min(circuits, max(1, _SHIFT_SLICE_AMPLITUDES >> int(qubits)))
        nbytes = batch * dim * _AMPLITUDE_BYTES
        passes = float(circuits * layers * dim)
        later = float(circuits * (layers - 1) * qubits * dim)
        mid = nbytes > cache_bytes
        features = {
            "call": 1.0,
            "pyops": float(layers * qubits),
            "circuits": float(circuits),
            "amp_gates": later,
            "amp_gates_mid": later if mid else 0.0,
            "outcomes": passes,
            "outcomes_mid": passes if mid else 0.0,
        }
        if not gradient:
            features["outcomes_big"] = passes if nbytes > BIG_TENSOR_BYTES else 0.0
        if backend == "shots":
            features["draws"] = float(circuits * shots)
        model = "qrce_grad" if gradient else "qrce"
        text = f"torch statevector QRCE, {qubits} qubits × {layers} layers" + (
            f", {shots} shots sampled" if backend == "shots" else ""
        )
    else:
        features = {
            "call": 1.0,
            "job": float(math.ceil(circuits / max_circuits_per_job)) if circuits else 0.0,
            "circuits": float(circuits),
            "gate_binds": float(circuits * gates),
            "amp_gates": float(circuits * gates * dim),
        }
        if shots:
            features["draws"] = float(circuits * shots)
            features["draw_bits"] = float(circuits * shots * qubits)
        else:
            features["observables"] = float(circuits * 2 * qubits)
            features["outcomes"] = float(circuits * dim * 2 * qubits)
        model = "qrce_sampled" if shots else "qrce_exact"
        text = f"gate-level QRCE on Aer, {qubits} qubits, {gates} gates" + (
            f", {shots} shots" if shots else ", exact expectation values"
        )
    return Work(backend, model, features, text)
