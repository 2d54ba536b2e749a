"""One op call on a local simulator (exact, shots, aer): work counts × calibrated rates.

The work of a call (``qgraph.costmodel.simulators``: calls, rows, amplitude passes, shots,
...) is multiplied by the seconds per unit that ``calibrate()`` fitted into the simulator's
profile. There is no per-shot term; a QAAP straight-through backward runs on this CPU
(``classical.straight_through_backward``), an autograd backward costs
``BACKWARD_FACTOR`` × the forward execution. Simulations are noiseless and free.
"""

from __future__ import annotations

from qgraph.costmodel.classical import BACKWARD_FACTOR, straight_through_backward
from qgraph.costmodel.counts import OpCallCounts
from qgraph.costmodel.profiles import DeviceProfile, format_quantity
from qgraph.costmodel.results import ExplanationLog, OpCallCosts, TimeBreakdown, format_seconds
from qgraph.costmodel.simulators import (
    DEFAULT_CACHE_BYTES,
    LATENCY_FEATURES,
    PRE_POST_FEATURES,
    Work,
    qaap_work,
    qrce_work,
)
from qgraph.costmodel.transpiled import CircuitCost
from qgraph.site import Site

__all__ = ["simulator_call", "simulator_costs"]


def simulator_costs(
    site: Site,
    device: DeviceProfile,
    counts: OpCallCounts,
    circuit: CircuitCost | None,
    log: ExplanationLog,
) -> OpCallCosts:
    """Forward and backward time of one op call on a local simulator; fidelity 1, $0."""
    backend = device.backend or device.name
    # aer binds parameters gate by gate, so its work depends on the transpiled circuit
    gates = 0
    if backend == "aer":
        assert circuit is not None
        gates = circuit.two_qubit_gates + circuit.one_qubit_gates
    if "torch_threads" in device:
        log.quantity("calibrated at torch threads", device["torch_threads"])
    forward_work = _work(site, device, counts, gates, forward=True)
    forward = simulator_call(forward_work, device, log, "forward")
    backward = TimeBreakdown()
    jobs_backward = 0
    method = counts.gradient
    if method == "autograd":
        factor = log.quantity("autograd backward", BACKWARD_FACTOR)
        backward = TimeBreakdown(execution_s=factor * forward.execution_s)
        log.calc("backward (autograd)", f"{factor:g} × forward execution", backward.total_s, "s")
    elif method == "straight-through":
        backward = straight_through_backward(site, log)
    elif counts.circuits_backward:
        backward_work = _work(site, device, counts, gates, forward=False)
        backward = simulator_call(backward_work, device, log, f"backward ({method})")
        jobs_backward = 1
    log.add("fidelity: 1 (noiseless simulation)")
    log.add("money: $0 (this machine)")
    return OpCallCosts(
        forward=forward,
        backward=backward,
        jobs_forward=1,
        jobs_backward=jobs_backward,
        fidelity=1.0,
        money_usd=0.0,
    )


def _work(
    site: Site, device: DeviceProfile, counts: OpCallCounts, gates: int, *, forward: bool
) -> Work:
    """The simulator work of the forward or the backward circuits of one op call."""
    backend = device.backend or device.name
    per_job = int(device.get("max_circuits_per_job", 4096) or 4096)
    cache = device.get("cache_bytes", DEFAULT_CACHE_BYTES) or DEFAULT_CACHE_BYTES
    circuits = counts.circuits_forward if forward else counts.circuits_backward
    shots = counts.shots_forward if forward else counts.shots_backward
    if counts.kernel == "qaap":
        assert site.kv_len is not None and site.head_dim is not None
        value_dim = site.shapes.get("v", (site.head_dim,))[-1]
        return qaap_work(
            backend,
            rows=circuits,
            kv_len=site.kv_len,
            head_dim=site.head_dim,
            value_dim=value_dim,
            shots=shots,
            gates=gates,
            max_circuits_per_job=per_job,
            cache_bytes=cache,
        )
    return qrce_work(
        backend,
        circuits=circuits,
        qubits=counts.shape[0],
        layers=counts.shape[1],
        shots=shots,
        # only the shots backend has a separate parameter-shift gradient model
        gradient=not forward and backend == "shots",
        gates=gates,
        max_circuits_per_job=per_job,
        cache_bytes=cache,
    )


def simulator_call(
    work: Work, device: DeviceProfile, log: ExplanationLog, label: str
) -> TimeBreakdown:
    """Σ work × rate over the work's features, each term logged with its rate's source."""
    out = TimeBreakdown()
    log.add(f"{label}: {work.description}")
    for feature, count in work.features.items():
        if count == 0:
            continue
        key = f"{work.model}.{feature}"
        if key not in device:
            raise ValueError(
                f"simulator profile {device.name!r} has no rate {key!r}: recalibrate with "
                "qgraph.costmodel.calibrate()."
            )
        rate = device[key]
        seconds = count * float(rate.value)
        log.add(
            f"  {feature}: {format_quantity(count)} × {format_quantity(rate.value, rate.unit)} = "
            f"{format_seconds(seconds)}  [{rate.source}; {rate.date}]"
        )
        if feature in LATENCY_FEATURES:
            out.latency_s += seconds
        elif feature in PRE_POST_FEATURES:
            out.classical_s += seconds
        else:
            out.execution_s += seconds
    log.calc(f"{label} time", "sum of the terms", out.total_s, "s")
    return out
