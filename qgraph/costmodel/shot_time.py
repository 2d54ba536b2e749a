"""Per-shot time of one circuit on a QPU, one model per profile ``time_model``.

* ``ibm``: max(two-qubit layers / CLOPS_h, rep_delay + ASAP-scheduled duration);
* ``gate_durations`` (IonQ): the ASAP-scheduled duration from the gate times (readout,
  reset and cooling not included: a lower bound);
* ``surface_code`` (a fault-tolerant machine): logical depth × logical cycle time, after
  Beverland et al. 2022 (arXiv:2211.07629). That model also fixes the physical qubits and,
  by construction of the code distance, the fidelity.

A new kind of QPU is one more function in ``SHOT_TIME_MODELS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from qgraph.costmodel.profiles import DeviceProfile
from qgraph.costmodel.results import ExplanationLog, format_seconds
from qgraph.costmodel.transpiled import CircuitCost

__all__ = [
    "SHOT_TIME_MODELS",
    "ShotTime",
    "ShotTimeModel",
    "ibm_shot_time",
    "shot_time",
    "surface_code_shot_time",
    "trapped_ion_shot_time",
]


@dataclass(frozen=True)
class ShotTime:
    """Seconds per shot, and what a model fixes besides: the physical qubits and the
    fidelity of a fault-tolerant machine, and whether the machine exists to be priced."""

    seconds: float
    physical_qubits: int | None = None
    fidelity: float | None = None  # None: from the device's gate errors
    exists: bool = True  # False: a hypothetical machine, which has no price


ShotTimeModel = Callable[[CircuitCost, DeviceProfile, ExplanationLog], ShotTime]


def ibm_shot_time(cost: CircuitCost, device: DeviceProfile, log: ExplanationLog) -> ShotTime:
    """IBM: the slower of the CLOPS_h rate and rep_delay + the scheduled circuit."""
    layers = max(1, cost.two_qubit_depth)
    clops = log.quantity("CLOPS_h", device["clops_h"])
    rep = log.quantity("rep_delay", device["rep_delay"])
    duration = cost.duration_s or 0.0
    log.calc(
        "scheduled circuit duration",
        "ASAP schedule of the transpiled circuit with the median gate and readout times",
        duration,
        "s",
    )
    by_clops = log.calc(
        "per-shot time by CLOPS", f"{layers} two-qubit layers / CLOPS_h", layers / clops, "s"
    )
    by_delay = log.calc("per-shot time by repetition", "rep_delay + duration", rep + duration, "s")
    return ShotTime(
        log.calc("per-shot time", "max(by CLOPS, by repetition)", max(by_clops, by_delay), "s")
    )


def trapped_ion_shot_time(
    cost: CircuitCost, device: DeviceProfile, log: ExplanationLog
) -> ShotTime:
    """Trapped ions: the scheduled circuit from the gate times (a lower bound)."""
    log.quantity("1-qubit gate time", device["one_qubit_time"])
    log.quantity("2-qubit gate time", device["two_qubit_time"])
    duration = cost.duration_s or 0.0
    return ShotTime(
        log.calc(
            "per-shot time",
            "ASAP schedule of the transpiled circuit with these gate times (readout, reset and "
            "cooling not included: a lower bound)",
            duration,
            "s",
        )
    )


def surface_code_shot_time(
    cost: CircuitCost, device: DeviceProfile, log: ExplanationLog
) -> ShotTime:
    """A surface-code machine (Beverland et al. 2022): logical depth × cycle time at the
    smallest code distance that keeps the shot within the error budget."""
    n = cost.qubits
    q_alg = 2 * n + math.ceil(math.sqrt(8 * n)) + 1
    log.calc(
        "logical qubits after layout",
        f"2·{n} + ⌈√(8·{n})⌉ + 1 (Beverland et al. 2022)",
        q_alg,
        "qubits",
    )
    budget = log.quantity("error budget per shot", device["error_budget"])
    m_r, d_r, m_meas = cost.rotations, cost.rotation_depth, cost.measurements or n
    log.add(
        f"  arbitrary rotations M_R = {m_r:,}, rotation depth D_R = {d_r:,}, "
        f"measurements = {m_meas:,} (counted on the transpiled circuit)"
    )
    slope = log.quantity("T per rotation slope", device["t_per_rotation_slope"])
    offset = log.quantity("T per rotation offset", device["t_per_rotation_offset"])
    eps_syn = budget / 3
    n_t = math.ceil(slope * math.log2(max(m_r, 1) / eps_syn) + offset) if m_r else 0
    log.calc("T states per rotation", f"⌈{slope}·log2({m_r}/({budget:g}/3)) + {offset}⌉", n_t)
    depth = m_meas + m_r + n_t * d_r
    log.calc("logical depth C", f"{m_meas} + {m_r} + {n_t}·{d_r}", depth, "cycles")
    p = log.quantity("physical error rate p", device["physical_error"])
    p_star = log.quantity("threshold p*", device["threshold"])
    a = log.quantity("crossing prefactor a", device["crossing_prefactor"])
    p_l = (budget / 3) / (q_alg * max(depth, 1))
    log.calc("required logical error rate", f"({budget:g}/3) / ({q_alg}·{depth})", p_l)
    d = math.ceil(2 * math.log(a / p_l) / math.log(p_star / p) - 1)
    d = max(3, d + (1 - d % 2))  # smallest odd ≥ the bound
    log.calc("code distance d", "smallest odd ≥ 2·ln(a/p_L)/ln(p*/p) − 1", d)
    t_gate = log.quantity("physical 2-qubit gate time", device["physical_gate_time"])
    t_meas = log.quantity("physical measurement time", device["physical_measurement_time"])
    cycle = (4 * t_gate + 2 * t_meas) * d
    log.calc("logical cycle time", f"(4·{t_gate:g} + 2·{t_meas:g})·{d}", cycle, "s")
    physical = int(q_alg * 2 * d * d)
    log.calc(
        "physical qubits (algorithm only, T factories not counted)",
        f"{q_alg}·2·{d}²",
        physical,
        "qubits",
    )
    shot = log.calc("per-shot time", f"{depth}·{format_seconds(cycle)}", depth * cycle, "s")
    return ShotTime(shot, physical_qubits=physical, fidelity=1.0 - budget, exists=False)


#: profile time_model → its per-shot time model
SHOT_TIME_MODELS: dict[str, ShotTimeModel] = {
    "ibm": ibm_shot_time,
    "gate_durations": trapped_ion_shot_time,
    "surface_code": surface_code_shot_time,
}


def shot_time(cost: CircuitCost, device: DeviceProfile, log: ExplanationLog) -> ShotTime:
    """The per-shot time of ``cost``'s circuit on QPU ``device``, by its time model."""
    model = SHOT_TIME_MODELS.get(device.time_model)
    if model is None:
        raise ValueError(f"device {device.name!r}: unknown time model {device.time_model!r}.")
    log.add("per-shot time:")
    return model(cost, device, log)
