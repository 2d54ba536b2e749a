"""Offload or not: support, then fidelity, then time (or a caller's score).

``qgraph.compile(policy="auto")`` offloads a site iff it is supported on the device, its
expected fidelity is at least ``min_fidelity``, and its predicted quantum time (forward +
backward) is below the classical roofline time.
"""

from __future__ import annotations

from collections.abc import Callable

from qgraph.costmodel.results import ClassicalEstimate, Estimate, format_seconds

__all__ = ["decide"]


def decide(
    quantum: Estimate,
    classical: ClassicalEstimate,
    min_fidelity: float = 0.5,
    score: Callable[[Estimate, ClassicalEstimate], float] | None = None,
) -> tuple[bool, str]:
    """Offload or not, with the reason: supported, fidelity ≥ ``min_fidelity``, and
    predicted quantum time < classical time (or ``score(q, c) > 0`` if given)."""
    if not quantum.supported:
        return False, f"not supported on {quantum.device}: {quantum.reason}"
    if quantum.fidelity is not None and quantum.fidelity < min_fidelity:
        return False, (
            f"too noisy on {quantum.device}: expected fidelity {quantum.fidelity:.3g} < "
            f"{min_fidelity:g} ({quantum.two_qubit_gates:,} two-qubit gates)"
        )
    q_time = quantum.time_s or 0.0
    if score is not None:
        value = score(quantum, classical)
        verdict = value > 0
        return verdict, f"score {value:.4g} {'>' if verdict else '≤'} 0"
    quantum_time, classical_time = format_seconds(q_time), format_seconds(classical.time_s)
    if q_time >= classical.time_s:
        return False, (
            f"slower on {quantum.device}: {quantum_time} vs {classical_time} on {classical.device}"
        )
    return True, (
        f"faster on {quantum.device}: {quantum_time} vs {classical_time} on "
        f"{classical.device}, fidelity {quantum.fidelity:.3g}"
    )
