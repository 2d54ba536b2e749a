"""Quantum resources of one site on one device: qubits, gates, depth, circuits and shots.

Gate counts and depths are **measured** (``qgraph.costmodel.transpiled``): a representative
instance of the kernel's circuit template (``qaap_template(a, b)``,
``qrce_layer_template(structure)``, the circuits the gate-level backends run) is transpiled
with qiskit for the device's basis and coupling (``optimization_level=1``,
``seed_transpiler=0``), cached by (kernel, shape bucket, device).
The templates depend on data only through parameter values, so the shape bucket is exact:
QAAP (a, b) = (⌈log2 kv_len⌉, ⌈log2 head_dim⌉), QRCE (q, L).

QAAP circuits grow as 2^(a+b) (amplitude encoding of the whole key block), and routing on
heavy-hex makes transpiling slow above ~12 qubits (2-9 s at 13-15 qubits on fake_fez).
Above ``QAAP_TRANSPILE_LIMIT`` = 12 qubits every metric m comes from a fit
log2 m = log2 c + β·(a+b), least squares over transpiles on the grid a+b = 6..12 (two
(a, b) splits per size), one fit per device, made on first use (5-25 s) and cached
(``qgraph.costmodel.qaap_fit``).
``validate_qaap_fit`` measures its error in-sample and out-of-sample, extrapolating to
a+b = 13, 14 against real transpiles (``benchmarks/costmodel_accuracy.py --fit-check``).
Measured with qiskit 2.x and qiskit-ibm-runtime 0.51, two-qubit gate count, |relative
error|:

=============  =========================  ====================================
device         in-sample median / max     extrapolated to a+b = 13, 14 (max)
=============  =========================  ====================================
ibm_heron_r2   2.0 % / 10.9 %             29.4 % (at (7, 7); 3-7 % elsewhere)
ibm_heron_r3   2.0 % / 10.9 %             29.4 % (same coupling map as r2)
ibm_eagle_r3   4.5 % / 12.7 %             9.5 %
ionq_aria      1.0 % / 4.6 %              4.5 %
ideal_ft       1.0 % / 4.6 %              4.5 %
=============  =========================  ====================================

The heavy-hex outlier is the router's own variance (SABRE with one seed), which a smooth fit
cannot follow: treat fitted QAAP gate counts on IBM devices as ±30 %.

Circuits and shots (the rules the estimate's explanation repeats):

* circuits per forward: QAAP one per (batch, head, query) row; QRCE one per distinct token
  (≤ vocabulary, ≤ batch × sequence).
* circuits per backward: parameter shift (QRCE) 4·L·q per distinct token; straight-through
  (QAAP) 0; SPSA (QAAP) 2 × forward; autograd (exact backends) 0.
* shots for precision ε: ⌈1/ε²⌉ (standard error of a ±1 observable ≤ 1/√N); QAAP divides
  by the post-selection success probability P (the site's if known, else the prior
  P = 1/2^b: for a random query, E[(q̂·k_j)²] = ‖k_j‖²/d); each parameter-shift circuit
  needs half as many shots for the same ε on (f₊ − f₋)/2.
"""

from __future__ import annotations

import math

from qgraph.costmodel.profiles import DeviceProfile
from qgraph.costmodel.qaap_fit import (
    QAAP_TRANSPILE_LIMIT,
    QAAPFit,
    clear_fit_cache,
    fitted_cost,
    qaap_fit,
    validate_qaap_fit,
)
from qgraph.costmodel.transpiled import (
    CircuitCost,
    Kernel,
    clear_transpile_cache,
    scheduled_duration,
    transpiled_cost,
)
from qgraph.kernels.qaap import qaap_register_sizes

__all__ = [
    "QAAP_TRANSPILE_LIMIT",
    "CircuitCost",
    "Kernel",
    "QAAPFit",
    "check_precision",
    "circuit_cost",
    "circuits_backward",
    "circuits_forward",
    "clear_cache",
    "precision_error",
    "qaap_fit",
    "qaap_shape",
    "scheduled_duration",
    "shots_for_precision",
    "validate_qaap_fit",
]


# --------------------------------------------------------------------------- gates and depth


def circuit_cost(
    kernel: Kernel,
    shape: tuple[int, int],
    device: DeviceProfile,
    transpile_limit: int = QAAP_TRANSPILE_LIMIT,
) -> CircuitCost:
    """Gates, depth and duration of one circuit of ``kernel`` at ``shape`` on ``device``.

    ``shape`` is (a, b) for QAAP and (q, L) for QRCE. QAAP circuits above
    ``transpile_limit`` qubits come from :func:`qaap_fit`; everything else is transpiled
    (cached by kernel, shape and device).
    """
    shape = (int(shape[0]), int(shape[1]))
    if kernel == "qaap" and shape[0] + shape[1] > transpile_limit:
        return fitted_cost(shape, device)
    if kernel not in ("qaap", "qrce"):
        raise ValueError(f"unknown kernel {kernel!r}; use 'qaap' or 'qrce'.")
    return transpiled_cost(kernel, shape, device)


def clear_cache() -> None:
    """Forget every transpiled cost and fit."""
    clear_transpile_cache()
    clear_fit_cache()


# --------------------------------------------------------------------------- qubits


def qaap_shape(kv_len: int, head_dim: int) -> tuple[int, int]:
    """QAAP registers (a, b) = (max(1, ⌈log2 kv_len⌉), max(1, ⌈log2 head_dim⌉))."""
    return qaap_register_sizes(kv_len, head_dim)


# --------------------------------------------------------------------------- circuits, shots


def circuits_forward(
    kernel: Kernel,
    *,
    batch: int = 1,
    heads: int = 1,
    queries: int = 1,
    tokens: int = 0,
    vocab_size: int | None = None,
) -> int:
    """Circuits of one forward call: QAAP batch·heads·queries; QRCE distinct tokens
    (``tokens`` positions, at most ``vocab_size`` distinct)."""
    if kernel == "qaap":
        return int(batch) * int(heads) * int(queries)
    distinct = int(tokens)
    if vocab_size is not None:
        distinct = min(distinct, int(vocab_size))
    return distinct


def circuits_backward(
    kernel: Kernel, method: str, forward: int, *, qubits: int = 0, layers: int = 0
) -> int:
    """Circuits of one backward call by gradient ``method`` (see the module docstring)."""
    if method in ("autograd", "straight-through", "none"):
        return 0
    if method == "spsa":
        if kernel != "qaap":
            raise ValueError("SPSA is a QAAP gradient method; QRCE uses parameter-shift.")
        return 2 * forward
    if method == "parameter-shift":
        if kernel != "qrce":
            raise ValueError(
                "parameter-shift is a QRCE gradient method; QAAP uses straight-through or spsa."
            )
        return 4 * int(layers) * int(qubits) * forward
    raise ValueError(
        f"unknown gradient method {method!r}; use autograd, straight-through, spsa, "
        "parameter-shift or none."
    )


def precision_error(precision: object) -> str | None:
    """Why ``precision`` is not a target standard error in (0, 1], or None when it is (the
    one check that compile, the estimates and the shot counts share)."""
    if (
        isinstance(precision, bool)
        or not isinstance(precision, (int, float))
        or not math.isfinite(precision)
        or not 0 < precision <= 1
    ):
        return (
            f"precision is the target standard error ε of each estimated probability or "
            f"expectation value and must be a number in (0, 1]; got {precision!r}."
        )
    return None


def check_precision(precision: float) -> None:
    """Reject a target standard error outside (0, 1]."""
    problem = precision_error(precision)
    if problem is not None:
        raise ValueError(problem)


def shots_for_precision(precision: float, success_probability: float = 1.0) -> int:
    """Shots per circuit for standard error ``precision``: ⌈1/ε²/P⌉."""
    check_precision(precision)
    if not 0 < success_probability <= 1:
        raise ValueError(f"success probability must lie in (0, 1]; got {success_probability!r}.")
    return math.ceil(1.0 / precision**2 / success_probability - 1e-9)
