"""What offloading one site to one device would cost: time, fidelity, money, and why.

``estimate(site, device)`` answers for a quantum device (QPU or local simulator);
``classical_estimate(site, device)`` for a classical one (roofline). Both return objects
whose ``explain()`` prints the whole arithmetic, line by line, every number with its unit
and its source. Support rules (does the site fit the device at all?) are decided first and
kept apart from the score: an unsupported estimate says why ("needs 37 qubits; device has
27") and carries no time.

An estimate is work counts × per-device rates, composed here from:

* ``counts`` — qubits, circuits, shots and gates of one op call (the rules in
  ``resources``; gates measured by ``transpiled`` or fitted by ``qaap_fit``);
* ``support`` — whether the circuit fits the device at all;
* ``shot_time`` — per-shot time by the QPU's time model (IBM, trapped ion, surface code);
  ``simulator_time`` — the local simulators' calibrated work × rate model;
* ``qpu_calls`` — jobs, per-job latency, money, transfer and classical pre/post;
* ``fidelity`` — (1 − e₂)^n₂ · (1 − e₁)^n₁ · (1 − e_ro)^qubits, or 1 − error budget;
* ``classical`` — the classical roofline; ``decision`` — offload or not;
* ``results`` — the result types and the explanation log.

Time of one op call (forward, and backward by the gradient method)::

    jobs × per-job latency + circuits × shots × per-shot time + transfer + classical pre/post
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from qgraph.costmodel.classical import classical_estimate, straight_through_backward
from qgraph.costmodel.counts import (
    DEFAULT_QRCE_LAYERS,
    DEFAULT_QRCE_QUBITS,
    OpCallCounts,
    batch_of,
    check_precision,
    circuit_width,
    count_op_call,
    measured_circuit,
    resolve_gradient,
    site_label,
)
from qgraph.costmodel.decision import decide
from qgraph.costmodel.fidelity import qpu_fidelity
from qgraph.costmodel.profiles import DeviceProfile, load
from qgraph.costmodel.qpu_calls import QPUCall, QPUCallCost, qpu_call
from qgraph.costmodel.results import (
    ClassicalEstimate,
    Estimate,
    ExplanationLog,
    OpCallCosts,
    TimeBreakdown,
    format_seconds,
)
from qgraph.costmodel.shot_time import shot_time
from qgraph.costmodel.simulator_time import simulator_costs
from qgraph.costmodel.support import check_support
from qgraph.costmodel.transpiled import CircuitCost
from qgraph.site import Site

__all__ = [
    "ClassicalEstimate",
    "Estimate",
    "TimeBreakdown",
    "classical_estimate",
    "decide",
    "estimate",
]


def estimate(
    site: Site,
    device: str | DeviceProfile,
    precision: float = 0.03,
    gradient: str = "auto",
    batch: int | None = None,
    *,
    shots: int | None = None,
    success_probability: float | None = None,
    unique_tokens: int | None = None,
    qrce_qubits: int = DEFAULT_QRCE_QUBITS,
    qrce_layers: int = DEFAULT_QRCE_LAYERS,
) -> Estimate:
    """Predict the cost of offloading ``site`` to quantum ``device``.

    Args:
        site: an attention site (→ QAAP) or an embedding site (→ QRCE).
        device: a profile name (``qgraph.costmodel.device_names()``) or a DeviceProfile.
        precision: target standard error ε of each estimated probability/expectation;
            sets the shots (⌈1/ε²⌉, QAAP ÷ success probability). Must lie in (0, 1].
        gradient: "auto" (exact simulator: autograd; else QAAP straight-through, QRCE
            parameter-shift), a method name, or "none" (inference: no backward).
        batch: batch size (default: the example's, from the site's shapes).
        shots: shots per circuit, overriding ``precision`` (0 on aer: its exact mode).
        success_probability: QAAP post-selection probability P if known (default prior
            1/2^b, b = ⌈log2 head_dim⌉: for a random query E[(q̂·k_j)²] = ‖k_j‖²/d).
        unique_tokens: distinct tokens per batch (default min(batch × sequence, vocab):
            an upper bound).
        qrce_qubits, qrce_layers: the QRCE circuit size.
    """
    check_precision(precision)
    profile = load(device)
    kernel: Literal["qaap", "qrce"] = site.quantum_op_for_kind
    log = ExplanationLog()
    label = site_label(site)
    log.add(
        f"Estimate: {kernel.upper()} for {site.kind} site {label!r} on {profile.name} "
        f"({profile.description})"
    )
    method = resolve_gradient(gradient, kernel, profile)
    n_batch = batch_of(site, batch)
    qubits, shape = circuit_width(site, kernel, qrce_qubits, qrce_layers, log)
    supported, reason = check_support(site, kernel, profile, qubits)
    result = Estimate(
        site=label,
        kernel=kernel,
        device=profile.name,
        device_kind=profile.kind,
        supported=supported,
        reason=reason,
        qubits=qubits,
        gradient=method,
        precision=float(precision),
        lines=log.lines,
    )
    log.add(f"support: {'yes' if supported else 'NO'}: {reason}")
    if not supported:
        return result

    counts = count_op_call(
        site,
        kernel,
        profile,
        method,
        shape,
        n_batch,
        precision=precision,
        shots=shots,
        success_probability=success_probability,
        unique_tokens=unique_tokens,
        log=log,
    )
    result.circuits_forward, result.circuits_backward = (
        counts.circuits_forward,
        counts.circuits_backward,
    )
    result.shots_forward, result.shots_backward = counts.shots_forward, counts.shots_backward
    result.success_probability = counts.success_probability
    circuit = measured_circuit(kernel, shape, profile, log)
    if circuit is not None:
        result.circuit = circuit
        result.depth, result.two_qubit_gates = circuit.depth, circuit.two_qubit_gates
        result.one_qubit_gates = circuit.one_qubit_gates

    costs = DEVICE_COSTS[profile.kind](site, profile, counts, circuit, log)
    result.forward, result.backward = costs.forward, costs.backward
    result.jobs_forward, result.jobs_backward = costs.jobs_forward, costs.jobs_backward
    result.fidelity, result.money_usd = costs.fidelity, costs.money_usd
    result.physical_qubits = costs.physical_qubits
    fidelity = "n/a" if result.fidelity is None else f"{result.fidelity:.4g}"
    money = "n/a" if result.money_usd is None else f"${result.money_usd:,.2f}"
    log.add(
        f"TOTAL: forward {format_seconds(result.forward.total_s)} + backward "
        f"{format_seconds(result.backward.total_s)} = {format_seconds(result.time_s or 0.0)}; "
        f"fidelity {fidelity}; money {money}"
    )
    return result


def qpu_costs(
    site: Site,
    device: DeviceProfile,
    counts: OpCallCounts,
    circuit: CircuitCost | None,
    log: ExplanationLog,
) -> OpCallCosts:
    """Time, fidelity and money of one op call on a QPU: circuits × shots × per-shot time
    of the device's time model, plus jobs, transfer and classical pre/post."""
    assert circuit is not None  # a QPU always runs a transpiled (or fitted) circuit
    shot = shot_time(circuit, device, log)
    forward = qpu_call(
        QPUCall(
            counts.kernel,
            counts.circuits_forward,
            counts.shots_forward,
            counts.params_per_circuit,
            "forward",
        ),
        device,
        circuit,
        shot.seconds,
        log,
    )
    if counts.gradient == "straight-through":
        backward = QPUCallCost(straight_through_backward(site, log), 0, 0.0)
    else:
        backward = qpu_call(
            QPUCall(
                counts.kernel,
                counts.circuits_backward,
                counts.shots_backward,
                counts.params_per_circuit,
                f"backward ({counts.gradient})",
            ),
            device,
            circuit,
            shot.seconds,
            log,
        )
    fidelity = qpu_fidelity(circuit, device, shot, log)
    money: float | None = None
    if not shot.exists:
        log.add("money: no price (no such machine exists)")
    elif forward.money_usd is not None:
        money = forward.money_usd + (backward.money_usd or 0.0)
    return OpCallCosts(
        forward=forward.time,
        backward=backward.time,
        jobs_forward=forward.jobs,
        jobs_backward=backward.jobs,
        fidelity=fidelity,
        money_usd=money,
        physical_qubits=shot.physical_qubits,
    )


DeviceCosts = Callable[
    [Site, DeviceProfile, OpCallCounts, CircuitCost | None, ExplanationLog], OpCallCosts
]

#: profile kind → how one op call on it is timed, priced and scored for fidelity
DEVICE_COSTS: dict[str, DeviceCosts] = {"qpu": qpu_costs, "simulator": simulator_costs}
