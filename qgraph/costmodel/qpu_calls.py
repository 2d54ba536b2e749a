"""One op call on a QPU: jobs, per-job latency, money, transfer and classical pre/post.

    jobs × per-job latency + circuits × shots × per-shot time + transfer + classical pre/post

* jobs, latency and money follow the device's billing: IBM's runtime counts jobs
  (≤ max_executions_per_job and ≤ max_job_qpu_s each) and bills each at least
  job_min_qpu_s of QPU time, so per-job latency is only that minimum's shortfall (queue
  time is never modelled); IonQ bills gate-shots with a minimum per circuit and publishes no
  per-job latency; a device without pricing is neither billed nor delayed.
* transfer: (circuits × parameters × 8 B + results) / network bandwidth. The results are
  what ``qgraph.backends.codec`` sends (as ``ShotsBackend(codec=True)`` does): per job a
  header and per circuit the encoded histogram's bytes, measured by ``result_sizes`` on
  histograms sampled at the call's circuit shape and shots; raw bit-arrays, executions ×
  ⌈qubits/8⌉ B, where that is not measured. The raw figure is logged beside the encoded one.
* classical pre/post on this CPU: rotation-tree angles (QAAP) and shot histograms, at the
  rates ``calibrate()`` measured into ``cpu_local``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from qgraph.costmodel.classical import local_cpu
from qgraph.costmodel.profiles import DeviceProfile
from qgraph.costmodel.result_sizes import MAX_OUTCOMES, result_size
from qgraph.costmodel.results import ExplanationLog, TimeBreakdown, format_seconds
from qgraph.costmodel.transpiled import CircuitCost

__all__ = [
    "BILLING_MODELS",
    "Billing",
    "BillingModel",
    "QPUCall",
    "QPUCallCost",
    "billing_scheme",
    "qpu_call",
]


@dataclass(frozen=True)
class QPUCall:
    """The circuits of one forward or backward op call."""

    kernel: str
    circuits: int
    shots: int  # per circuit
    params: int  # parameters per circuit
    label: str  # "forward" or "backward (method)", for the explanation


@dataclass(frozen=True)
class QPUCallCost:
    """Time, jobs and money of one op call."""

    time: TimeBreakdown
    jobs: int
    money_usd: float | None


@dataclass(frozen=True)
class Billing:
    """What a billing model says about one op call's execution."""

    jobs: int
    latency_s: float
    money_usd: float | None


#: the kernels whose results ``result_sizes`` measures
KERNELS = ("qaap", "qrce")

#: (call, device, circuit, executions, execution seconds, log) → jobs, latency and money
BillingModel = Callable[[QPUCall, DeviceProfile, CircuitCost, int, float, ExplanationLog], Billing]


def ibm_runtime_billing(
    call: QPUCall,
    device: DeviceProfile,
    cost: CircuitCost,
    executions: int,
    execution: float,
    log: ExplanationLog,
) -> Billing:
    """IBM runtime jobs: split by the per-job limits, each billed (and so taking) at least
    the per-job minimum QPU time, at a price per QPU-second."""
    max_exec = log.quantity("max executions per job", device["max_executions_per_job"])
    max_job_s = log.quantity("max QPU time per job", device["max_job_qpu_s"])
    jobs = max(math.ceil(executions / max_exec), math.ceil(execution / max_job_s), 1)
    log.calc(
        "jobs",
        f"max(⌈{executions:,}/{max_exec:,.0f}⌉, ⌈{format_seconds(execution)}/{max_job_s:g} s⌉)",
        jobs,
    )
    per_job = log.quantity(
        "per-job minimum QPU time (a floor on each job's time; queue not modelled)",
        device["job_min_qpu_s"],
    )
    # The minimum already contains the job's execution: only its shortfall adds time.
    shortfall = max(per_job - execution / jobs, 0.0)
    latency = log.calc(
        "latency",
        f"{jobs} × max({per_job:g} s − {format_seconds(execution / jobs)}, 0)",
        jobs * shortfall,
        "s",
    )
    price = log.quantity("price", device["price_per_qpu_s"])
    billed = jobs * max(per_job, execution / jobs)
    log.calc(
        "billed QPU time",
        f"{jobs} × max({per_job:g} s, {format_seconds(execution / jobs)})",
        billed,
        "s",
    )
    money = log.calc("money", f"{billed:.4g} s × ${price:.2f}/s", billed * price, "USD")
    return Billing(jobs, latency, money)


def gate_shot_billing(
    call: QPUCall,
    device: DeviceProfile,
    cost: CircuitCost,
    executions: int,
    execution: float,
    log: ExplanationLog,
) -> Billing:
    """A price per gate-shot with a minimum per circuit; one job, no latency figure."""
    p1 = log.quantity("price per 1-qubit gate-shot", device["price_1q_gate_shot"])
    p2 = log.quantity("price per 2-qubit gate-shot", device["price_2q_gate_shot"])
    minimum = log.quantity("minimum per circuit", device["min_price_per_circuit"])
    n1, n2 = cost.one_qubit_gates, cost.two_qubit_gates
    per_circuit = call.shots * (n1 * p1 + n2 * p2)
    log.calc(
        "price per circuit",
        f"max(${minimum:g}, {call.shots:,}·({n1:,}·{p1:g} + {n2:,}·{p2:g}))",
        max(minimum, per_circuit),
        "USD",
    )
    money = log.calc(
        "money",
        f"{call.circuits:,} × {max(minimum, per_circuit):.4g}",
        call.circuits * max(minimum, per_circuit),
        "USD",
    )
    log.add("  per-job latency: not modelled (no published figure): 0")
    return Billing(1, 0.0, money)


def unpriced(
    call: QPUCall,
    device: DeviceProfile,
    cost: CircuitCost,
    executions: int,
    execution: float,
    log: ExplanationLog,
) -> Billing:
    """A machine nobody sells time on: one job, no latency, no price."""
    log.add("  per-job latency: not modelled (no such machine to measure): 0; no price")
    return Billing(1, 0.0, None)


#: billing scheme (see billing_scheme) → its jobs, latency and money model
BILLING_MODELS: dict[str, BillingModel] = {
    "ibm_runtime": ibm_runtime_billing,
    "gate_shots": gate_shot_billing,
    "": unpriced,
}


def billing_scheme(device: DeviceProfile) -> str:
    """The key of ``device``'s billing model. IBM's job rules belong to its runtime, so
    they come with the ``ibm`` time model; other devices bill by their ``pricing``."""
    if device.time_model == "ibm":
        return "ibm_runtime"
    return device.pricing if device.pricing in BILLING_MODELS else ""


def qpu_call(
    call: QPUCall,
    device: DeviceProfile,
    cost: CircuitCost,
    shot_s: float,
    log: ExplanationLog,
) -> QPUCallCost:
    """Time, jobs and money of one QPU op call of ``call.circuits`` circuits of ``cost``."""
    out = TimeBreakdown()
    if call.circuits == 0:
        log.add(f"{call.label}: no circuits")
        return QPUCallCost(out, 0, 0.0)
    log.add(f"{call.label}: {call.circuits:,} circuits × {call.shots:,} shots")
    executions = call.circuits * call.shots
    execution = log.calc(
        "execution",
        f"{call.circuits:,} × {call.shots:,} × {format_seconds(shot_s)}",
        executions * shot_s,
        "s",
    )
    billing = BILLING_MODELS[billing_scheme(device)](call, device, cost, executions, execution, log)
    out.latency_s = billing.latency_s
    out.execution_s = execution
    out.transfer_s = _transfer(call, device, cost, executions, billing.jobs, log)
    out.classical_s = _classical_pre_post(call, executions, log)
    log.calc(f"{call.label} time", "latency + execution + transfer + classical", out.total_s, "s")
    return QPUCallCost(out, billing.jobs, billing.money_usd)


def _transfer(
    call: QPUCall,
    device: DeviceProfile,
    cost: CircuitCost,
    executions: int,
    jobs: int,
    log: ExplanationLog,
) -> float:
    """Seconds to send the parameters up and the results down (0 without a link): down is
    the measured size of the results as qgraph's codec encodes them (``result_sizes``), one
    payload per job, or raw shot bit-arrays where that size is not measured."""
    if "network_bandwidth" not in device:
        return 0.0
    bandwidth = log.quantity("network bandwidth", device["network_bandwidth"])
    up = call.circuits * call.params * 8
    raw = executions * math.ceil(cost.qubits / 8)
    size = result_size(call.kernel, cost.shape, call.shots) if call.kernel in KERNELS else None
    if size is None:
        # too many outcomes to sample and encode here: the results count as sent raw
        log.add(
            f"  results: raw shot bit-arrays (encoded size not measured: histograms of over "
            f"{MAX_OUTCOMES:,} outcomes, or an unknown kernel)"
        )
        down, results = raw, f"{raw:,} B raw shot bit-arrays"
    else:
        per_circuit = log.quantity(
            f"results per circuit, encoded ({size.outcomes:,}-outcome histogram of "
            f"{call.shots:,} shots; as raw bit-arrays {size.raw:,} B: raw/encoded "
            f"{_ratio(size.ratio)})",
            size.encoded,
        )
        down = size.call_bytes(call.circuits, jobs)
        results = (
            f"{down:,} B results encoded by qgraph's codec ({jobs:,} × {size.header_bytes} B "
            f"header + {call.circuits:,} × {per_circuit:.4g} B; as raw shot bit-arrays "
            f"{raw:,} B: raw/encoded {_ratio(raw / down)})"
        )
    return log.calc(
        "transfer",
        f"({up:,} B parameters (float64) + {results}) / bandwidth",
        (up + down) / bandwidth,
        "s",
    )


def _ratio(ratio: float) -> str:
    """A size ratio as 0.83, 9.9, 26.6, 175 or 1,731."""
    return f"{ratio:,.0f}" if ratio >= 100 else f"{ratio:.3g}"


def _classical_pre_post(call: QPUCall, executions: int, log: ExplanationLog) -> float:
    """Seconds this CPU spends on rotation-tree angles (QAAP) and shot histograms."""
    cpu = local_cpu()
    if cpu is None:
        log.add("  classical pre/post: cpu_local profile missing (run calibrate()): 0")
        return 0.0
    per_angle = cpu.value("qaap_param_s")
    per_shot = cpu.value("count_s")
    pre = call.circuits * call.params * per_angle if call.kernel == "qaap" else 0.0
    post = executions * per_shot
    if call.kernel == "qaap":
        log.quantity("CPU time per rotation-tree angle", cpu["qaap_param_s"])
    log.quantity("CPU time per shot histogrammed", cpu["count_s"])
    return log.calc(
        "classical pre/post",
        (f"{call.circuits:,}·{call.params:,} angles + " if call.kernel == "qaap" else "")
        + f"{executions:,} shots",
        pre + post,
        "s",
    )
