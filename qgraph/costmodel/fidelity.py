"""Expected fidelity of one circuit on a QPU.

(1 − e₂)^n₂ · (1 − e₁)^n₁ · (1 − e_ro)^qubits from the device's median errors and the
transpiled gate counts: a product of independent gate survivals, with no idling/T1/T2
decoherence, crosstalk, coherent error or QAAP post-selection (a crude but standard first
estimate; the explanation prints circuit duration / T2 as a note instead). A fault-tolerant
machine has 1 − error budget by construction of its code distance (``shot_time``).
Local simulators are noiseless: 1.
"""

from __future__ import annotations

from qgraph.costmodel.profiles import DeviceProfile
from qgraph.costmodel.results import ExplanationLog, format_seconds
from qgraph.costmodel.shot_time import ShotTime
from qgraph.costmodel.transpiled import CircuitCost

__all__ = ["gate_error_fidelity", "qpu_fidelity"]


def qpu_fidelity(
    cost: CircuitCost, device: DeviceProfile, shot: ShotTime, log: ExplanationLog
) -> float:
    """The fidelity the time model fixed (fault tolerant), else the gate-error product."""
    if shot.fidelity is not None:
        return log.calc("fidelity", "1 − error budget (by construction of d)", shot.fidelity)
    return gate_error_fidelity(cost, device, log)


def gate_error_fidelity(cost: CircuitCost, device: DeviceProfile, log: ExplanationLog) -> float:
    """(1−e₂)^n₂ · (1−e₁)^n₁ · (1−e_ro)^qubits, with a note on duration vs T2."""
    e2 = log.quantity("2-qubit gate error e₂", device["two_qubit_error"])
    e1 = log.quantity("1-qubit gate error e₁", device["one_qubit_error"])
    ero = log.quantity("readout error e_ro", device["readout_error"])
    n2, n1, nq = cost.two_qubit_gates, cost.one_qubit_gates, cost.qubits
    value = (1 - e2) ** n2 * (1 - e1) ** n1 * (1 - ero) ** nq
    log.calc(
        "fidelity",
        f"(1−e₂)^{n2:,} · (1−e₁)^{n1:,} · (1−e_ro)^{nq} (independent gate and readout errors; "
        "no idling/T1/T2, crosstalk or coherent error)",
        value,
    )
    if cost.duration_s and "t2" in device:
        t2 = device.value("t2")
        log.add(
            f"  note: circuit duration {format_seconds(cost.duration_s)} is "
            f"{cost.duration_s / t2:.3g} × T2 ({format_seconds(t2)}); decoherence is not in the "
            "fidelity formula"
        )
    return value
