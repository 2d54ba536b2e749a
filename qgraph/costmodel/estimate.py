"""What offloading one site to one device would cost: time, fidelity, money, and why.

``estimate(site, device)`` answers for a quantum device (QPU or local simulator);
``classical_estimate(site, device)`` for a classical one (roofline). Both return objects
whose ``explain()`` prints the whole arithmetic, line by line, every number with its unit
and its source. Support rules (does the site fit the device at all?) are decided first and
kept apart from the score: an unsupported estimate says why ("needs 37 qubits; device has
27") and carries no time.

Time of one op call (forward, and backward by the gradient method)::

    jobs × per-job latency + circuits × shots × per-shot time + transfer + classical pre/post

* per-shot time — IBM: max(2-qubit layers / CLOPS_h, rep_delay + scheduled duration);
  IonQ: scheduled duration from the gate times (readout not included: a lower bound);
  fault tolerant: logical depth × logical cycle time (Beverland et al. 2022);
  local simulators: the calibrated work × rate model of ``qgraph.costmodel.simulators``.
* fidelity — (1 − e₂)^n₂ · (1 − e₁)^n₁ · (1 − e_ro)^qubits from the device's median errors
  (a product of independent gate survivals: no crosstalk, no T1/T2 idling, no coherent
  error; a crude but standard first estimate). Fault tolerant: 1 − error budget. Simulators
  here are noiseless: 1.
* money — IBM: Σ_jobs max(per-job minimum, job QPU time) × price per QPU-second; IonQ:
  Σ_circuits max(minimum per circuit, shots × (n₁ × price₁ + n₂ × price₂)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from qgraph.backends.base import GRADIENT_METHODS, default_gradient_method, gradient_method_error
from qgraph.costmodel.profiles import DeviceProfile, Quantity, format_quantity, load
from qgraph.costmodel.resources import (
    CircuitCost,
    circuit_cost,
    circuits_backward,
    circuits_forward,
    qaap_shape,
    shots_for_precision,
)
from qgraph.costmodel.simulators import (
    DEFAULT_CACHE_BYTES,
    LATENCY_FEATURES,
    PRE_POST_FEATURES,
    Work,
    qaap_work,
    qrce_work,
)
from qgraph.site import Site

__all__ = [
    "ClassicalEstimate",
    "Estimate",
    "TimeBreakdown",
    "classical_estimate",
    "decide",
    "estimate",
]

#: what estimate(gradient=...) takes: "auto", every method, "none" (inference: no backward)
GRADIENTS = ("auto", *GRADIENT_METHODS, "none")

#: QRCE circuit size when the caller does not say (qgraph.compile's defaults)
DEFAULT_QRCE_QUBITS = 8
DEFAULT_QRCE_LAYERS = 2

#: backward FLOPs (and bytes) per forward FLOP in the classical roofline
BACKWARD_FACTOR = Quantity(
    2.0,
    "x forward",
    "rule of thumb: backward ≈ 2 × forward FLOPs (Kaplan et al. 2020, arXiv:2001.08361: "
    "training ≈ 6N, forward ≈ 2N FLOPs per token)",
    "2020",
)


@dataclass
class TimeBreakdown:
    """Seconds of one op call, by where they go."""

    latency_s: float = 0.0  # jobs × per-job latency (or per-call overhead on a simulator)
    execution_s: float = 0.0  # circuits × shots × per-shot time (or simulator compute)
    transfer_s: float = 0.0  # parameters up, counts down
    classical_s: float = 0.0  # classical pre/post-processing
    queue_s: float = 0.0  # not modelled (no published figures): always 0 here

    @property
    def total_s(self) -> float:
        """All of it."""
        return self.latency_s + self.execution_s + self.transfer_s + self.classical_s + self.queue_s


@dataclass
class Estimate:
    """The predicted cost of running one site's quantum op on one quantum device."""

    site: str
    kernel: Literal["qaap", "qrce"]
    device: str
    device_kind: str
    supported: bool
    reason: str
    qubits: int = 0
    depth: int | None = None
    two_qubit_gates: int | None = None
    one_qubit_gates: int | None = None
    circuits_forward: int = 0
    circuits_backward: int = 0
    shots_forward: int = 0  # per circuit
    shots_backward: int = 0  # per circuit
    jobs_forward: int = 0
    jobs_backward: int = 0
    gradient: str = "none"
    precision: float = 0.0
    success_probability: float | None = None
    forward: TimeBreakdown = field(default_factory=TimeBreakdown)
    backward: TimeBreakdown = field(default_factory=TimeBreakdown)
    fidelity: float | None = None
    money_usd: float | None = None
    physical_qubits: int | None = None
    circuit: CircuitCost | None = None
    notes: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @property
    def time_s(self) -> float | None:
        """Forward + backward seconds; None when the site is not supported."""
        if not self.supported:
            return None
        return self.forward.total_s + self.backward.total_s

    def explain(self) -> str:
        """The full arithmetic, line by line, every number with its unit and source."""
        return "\n".join(self.lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (the circuit's op counts included)."""
        out = asdict(self)
        out["time_s"] = self.time_s
        out.pop("lines")
        return out


@dataclass
class ClassicalEstimate:
    """The roofline time of one site on a classical device."""

    site: str
    device: str
    flops: int
    bytes: int
    ops: int
    compute_s: float
    memory_s: float
    overhead_s: float
    forward_s: float
    backward_s: float
    bound: str  # "compute" or "memory"
    lines: list[str] = field(default_factory=list)

    @property
    def time_s(self) -> float:
        """Forward + backward seconds."""
        return self.forward_s + self.backward_s

    def explain(self) -> str:
        """The roofline arithmetic with sources."""
        return "\n".join(self.lines)


# --------------------------------------------------------------------------- helpers


class _Log:
    """Collects explanation lines: ``add(text)`` and ``num(label, value, unit, source)``."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, text: str) -> None:
        self.lines.append(text)

    def q(self, label: str, quantity: Quantity) -> float:
        self.lines.append(
            f"  {label} = {format_quantity(quantity.value, quantity.unit)}  "
            f"[{quantity.source}; {quantity.date}]"
        )
        return float(quantity.value)

    def calc(self, label: str, formula: str, value: float, unit: str = "") -> float:
        self.lines.append(f"  {label} = {formula} = {format_quantity(value, unit)}")
        return value


def _seconds(value: float) -> str:
    if value >= 3600 * 24:
        return f"{value / 86400:.3g} d"
    if value >= 3600:
        return f"{value / 3600:.3g} h"
    if value >= 1:
        return f"{value:.4g} s"
    if value >= 1e-3:
        return f"{value * 1e3:.4g} ms"
    return f"{value * 1e6:.4g} µs"


def _site_label(site: Site) -> str:
    return site.key or site.path or f"site {site.index}"


def _batch_of(site: Site, batch: int | None) -> int:
    if batch is not None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive int; got {batch!r}.")
        return batch
    shape = site.shapes.get("q" if site.kind == "attention" else "ids", ())
    return int(shape[0]) if len(shape) >= 2 else 1


def _check_precision(precision: float) -> None:
    if (
        isinstance(precision, bool)
        or not isinstance(precision, (int, float))
        or not math.isfinite(precision)
        or not 0 < precision <= 1
    ):
        raise ValueError(
            f"precision is the target standard error ε of each estimated probability or "
            f"expectation value and must lie in (0, 1]; got {precision!r}."
        )


def _resolve_gradient(gradient: str, kernel: str, device: DeviceProfile) -> str:
    if gradient not in GRADIENTS:
        raise ValueError(f"unknown gradient {gradient!r}; use one of {list(GRADIENTS)}.")
    exact = device.kind == "simulator" and device.backend == "exact"
    if gradient in ("auto", "none"):
        return default_gradient_method(kernel, exact) if gradient == "auto" else gradient
    problem = gradient_method_error(gradient, kernel)
    if problem is not None:
        raise ValueError(problem)
    if gradient == "autograd" and not exact:
        raise ValueError(
            f"gradient 'autograd' needs exact amplitudes; device {device.name!r} only "
            "samples. Use 'auto', 'parameter-shift' (QRCE), 'straight-through' or 'spsa' "
            "(QAAP)."
        )
    return gradient


def _cpu() -> DeviceProfile | None:
    try:
        return load("cpu_local")
    except ValueError:
        return None


# --------------------------------------------------------------------------- support rules


def _support(site: Site, kernel: str, device: DeviceProfile, qubits: int) -> tuple[bool, str]:
    """Whether the site's circuit can run on the device at all (independent of the score)."""
    if not site.supported:
        return False, f"the site itself is not supported: {site.support_reason}"
    if device.kind == "classical":
        return False, f"{device.name} is a classical device; use classical_estimate()"
    if kernel == "qaap" and (
        site.kv_len is None or site.head_dim is None or site.heads is None or site.seq_len is None
    ):
        return False, "attention site without 4-D q/k shapes (heads, seq_len, kv_len, head_dim)"
    if kernel == "qrce" and not site.shapes.get("ids"):
        return False, "embedding site without token-id shapes"
    closed_form = device.kind == "simulator" and device.backend in ("exact", "shots")
    if kernel == "qaap" and closed_form:
        return True, "closed-form QAAP: no qubit limit"
    limit = device.get("max_qubits") if device.kind == "simulator" else device.get("num_qubits")
    if limit is not None and qubits > limit:
        return False, f"needs {qubits} qubits; device has {int(limit)}"
    return True, f"needs {qubits} qubits; device has {'no limit' if limit is None else int(limit)}"


# --------------------------------------------------------------------------- per-shot models


def _ibm_shot(cost: CircuitCost, device: DeviceProfile, log: _Log) -> float:
    layers = max(1, cost.two_qubit_depth)
    clops = log.q("CLOPS_h", device["clops_h"])
    rep = log.q("rep_delay", device["rep_delay"])
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
    return log.calc("per-shot time", "max(by CLOPS, by repetition)", max(by_clops, by_delay), "s")


def _ion_shot(cost: CircuitCost, device: DeviceProfile, log: _Log) -> float:
    log.q("1-qubit gate time", device["one_qubit_time"])
    log.q("2-qubit gate time", device["two_qubit_time"])
    duration = cost.duration_s or 0.0
    return log.calc(
        "per-shot time",
        "ASAP schedule of the transpiled circuit with these gate times (readout, reset and "
        "cooling not included: a lower bound)",
        duration,
        "s",
    )


@dataclass
class _FTResult:
    shot_s: float
    physical_qubits: int
    fidelity: float


def _ft_shot(cost: CircuitCost, device: DeviceProfile, log: _Log) -> _FTResult:
    n = cost.qubits
    q_alg = 2 * n + math.ceil(math.sqrt(8 * n)) + 1
    log.calc(
        "logical qubits after layout",
        f"2·{n} + ⌈√(8·{n})⌉ + 1 (Beverland et al. 2022)",
        q_alg,
        "qubits",
    )
    budget = log.q("error budget per shot", device["error_budget"])
    m_r, d_r, m_meas = cost.rotations, cost.rotation_depth, cost.measurements or n
    log.add(
        f"  arbitrary rotations M_R = {m_r:,}, rotation depth D_R = {d_r:,}, "
        f"measurements = {m_meas:,} (counted on the transpiled circuit)"
    )
    slope = log.q("T per rotation slope", device["t_per_rotation_slope"])
    offset = log.q("T per rotation offset", device["t_per_rotation_offset"])
    eps_syn = budget / 3
    n_t = math.ceil(slope * math.log2(max(m_r, 1) / eps_syn) + offset) if m_r else 0
    log.calc("T states per rotation", f"⌈{slope}·log2({m_r}/({budget:g}/3)) + {offset}⌉", n_t)
    depth = m_meas + m_r + n_t * d_r
    log.calc("logical depth C", f"{m_meas} + {m_r} + {n_t}·{d_r}", depth, "cycles")
    p = log.q("physical error rate p", device["physical_error"])
    p_star = log.q("threshold p*", device["threshold"])
    a = log.q("crossing prefactor a", device["crossing_prefactor"])
    p_l = (budget / 3) / (q_alg * max(depth, 1))
    log.calc("required logical error rate", f"({budget:g}/3) / ({q_alg}·{depth})", p_l)
    d = math.ceil(2 * math.log(a / p_l) / math.log(p_star / p) - 1)
    d = max(3, d + (1 - d % 2))  # smallest odd ≥ the bound
    log.calc("code distance d", "smallest odd ≥ 2·ln(a/p_L)/ln(p*/p) − 1", d)
    t_gate = log.q("physical 2-qubit gate time", device["physical_gate_time"])
    t_meas = log.q("physical measurement time", device["physical_measurement_time"])
    cycle = (4 * t_gate + 2 * t_meas) * d
    log.calc("logical cycle time", f"(4·{t_gate:g} + 2·{t_meas:g})·{d}", cycle, "s")
    physical = int(q_alg * 2 * d * d)
    log.calc(
        "physical qubits (algorithm only, T factories not counted)",
        f"{q_alg}·2·{d}²",
        physical,
        "qubits",
    )
    shot = log.calc("per-shot time", f"{depth}·{_seconds(cycle)}", depth * cycle, "s")
    return _FTResult(shot, physical, 1.0 - budget)


# --------------------------------------------------------------------------- QPU call


@dataclass
class _Call:
    kernel: str
    circuits: int
    shots: int
    params: int  # parameters per circuit
    label: str


def _qpu_call(
    call: _Call,
    device: DeviceProfile,
    cost: CircuitCost,
    shot_s: float,
    log: _Log,
) -> tuple[TimeBreakdown, int, float | None]:
    """Time, jobs and money of one QPU op call."""
    out = TimeBreakdown()
    if call.circuits == 0:
        log.add(f"{call.label}: no circuits")
        return out, 0, 0.0
    log.add(f"{call.label}: {call.circuits:,} circuits × {call.shots:,} shots")
    executions = call.circuits * call.shots
    execution = log.calc(
        "execution",
        f"{call.circuits:,} × {call.shots:,} × {_seconds(shot_s)}",
        executions * shot_s,
        "s",
    )
    money: float | None = None
    jobs = 1
    if device.time_model == "ibm":
        max_exec = log.q("max executions per job", device["max_executions_per_job"])
        max_job_s = log.q("max QPU time per job", device["max_job_qpu_s"])
        jobs = max(math.ceil(executions / max_exec), math.ceil(execution / max_job_s), 1)
        log.calc(
            "jobs",
            f"max(⌈{executions:,}/{max_exec:,.0f}⌉, ⌈{_seconds(execution)}/{max_job_s:g} s⌉)",
            jobs,
        )
        per_job = log.q(
            "per-job minimum QPU time (a floor on each job's time; queue not modelled)",
            device["job_min_qpu_s"],
        )
        # The minimum already contains the job's execution: only its shortfall adds time.
        shortfall = max(per_job - execution / jobs, 0.0)
        out.latency_s = log.calc(
            "latency",
            f"{jobs} × max({per_job:g} s − {_seconds(execution / jobs)}, 0)",
            jobs * shortfall,
            "s",
        )
        price = log.q("price", device["price_per_qpu_s"])
        billed = jobs * max(per_job, execution / jobs)
        log.calc(
            "billed QPU time",
            f"{jobs} × max({per_job:g} s, {_seconds(execution / jobs)})",
            billed,
            "s",
        )
        money = log.calc("money", f"{billed:.4g} s × ${price:.2f}/s", billed * price, "USD")
    elif device.pricing == "gate_shots":
        p1 = log.q("price per 1-qubit gate-shot", device["price_1q_gate_shot"])
        p2 = log.q("price per 2-qubit gate-shot", device["price_2q_gate_shot"])
        minimum = log.q("minimum per circuit", device["min_price_per_circuit"])
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
    else:
        log.add("  per-job latency: not modelled (no such machine to measure): 0; no price")
    out.execution_s = execution
    # transfer
    if "network_bandwidth" in device:
        bandwidth = log.q("network bandwidth", device["network_bandwidth"])
        up = call.circuits * call.params * 8
        down = executions * math.ceil(cost.qubits / 8)
        out.transfer_s = log.calc(
            "transfer",
            f"({up:,} B parameters (float64) + {down:,} B shot bit-arrays) / bandwidth",
            (up + down) / bandwidth,
            "s",
        )
    # classical pre/post on this machine
    cpu = _cpu()
    if cpu is not None:
        per_angle = cpu.value("qaap_param_s")
        per_shot = cpu.value("count_s")
        pre = call.circuits * call.params * per_angle if call.kernel == "qaap" else 0.0
        post = executions * per_shot
        if call.kernel == "qaap":
            log.q("CPU time per rotation-tree angle", cpu["qaap_param_s"])
        log.q("CPU time per shot histogrammed", cpu["count_s"])
        out.classical_s = log.calc(
            "classical pre/post",
            (f"{call.circuits:,}·{call.params:,} angles + " if call.kernel == "qaap" else "")
            + f"{executions:,} shots",
            pre + post,
            "s",
        )
    else:
        log.add("  classical pre/post: cpu_local profile missing (run calibrate()): 0")
    log.calc(f"{call.label} time", "latency + execution + transfer + classical", out.total_s, "s")
    return out, jobs, money


def _fidelity(cost: CircuitCost, device: DeviceProfile, log: _Log) -> float:
    e2 = log.q("2-qubit gate error e₂", device["two_qubit_error"])
    e1 = log.q("1-qubit gate error e₁", device["one_qubit_error"])
    ero = log.q("readout error e_ro", device["readout_error"])
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
            f"  note: circuit duration {_seconds(cost.duration_s)} is "
            f"{cost.duration_s / t2:.3g} × T2 ({_seconds(t2)}); decoherence is not in the "
            "fidelity formula"
        )
    return value


# --------------------------------------------------------------------------- simulator call


def _simulator_call(work: Work, device: DeviceProfile, log: _Log, label: str) -> TimeBreakdown:
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
            f"{_seconds(seconds)}  [{rate.source}; {rate.date}]"
        )
        if feature in LATENCY_FEATURES:
            out.latency_s += seconds
        elif feature in PRE_POST_FEATURES:
            out.classical_s += seconds
        else:
            out.execution_s += seconds
    log.calc(f"{label} time", "sum of the terms", out.total_s, "s")
    return out


def _simulator_gates(kernel: str, shape: tuple[int, int], device: DeviceProfile) -> int:
    cost = circuit_cost(kernel, shape, device)  # type: ignore[arg-type]
    return cost.two_qubit_gates + cost.one_qubit_gates


# --------------------------------------------------------------------------- estimate


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
    _check_precision(precision)
    profile = load(device)
    kernel: Literal["qaap", "qrce"] = site.quantum_op_for_kind
    log = _Log()
    label = _site_label(site)
    log.add(
        f"Estimate: {kernel.upper()} for {site.kind} site {label!r} on {profile.name} "
        f"({profile.description})"
    )
    method = _resolve_gradient(gradient, kernel, profile)
    n_batch = _batch_of(site, batch)

    # qubits and shape
    if kernel == "qaap":
        if site.kv_len is None or site.head_dim is None:
            qubits, shape = 0, (0, 0)
        else:
            shape = qaap_shape(site.kv_len, site.head_dim)
            qubits = shape[0] + shape[1]
            log.calc(
                "qubits",
                f"⌈log2 {site.kv_len}⌉ + ⌈log2 {site.head_dim}⌉ (index + feature registers)",
                qubits,
                "qubits",
            )
    else:
        if qrce_qubits < 2 or qrce_layers < 1:
            raise ValueError("QRCE needs qrce_qubits ≥ 2 and qrce_layers ≥ 1.")
        shape = (int(qrce_qubits), int(qrce_layers))
        qubits = shape[0]
        log.calc(
            "qubits", f"q = {qubits} (QRCE circuit width, {shape[1]} layers)", qubits, "qubits"
        )
    supported, reason = _support(site, kernel, profile, qubits)
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

    # circuits per call
    if kernel == "qaap":
        assert site.heads is not None and site.seq_len is not None
        n_fwd = circuits_forward("qaap", batch=n_batch, heads=site.heads, queries=site.seq_len)
        log.calc(
            "circuits per forward",
            f"batch {n_batch} × heads {site.heads} × queries {site.seq_len}",
            n_fwd,
            "circuits",
        )
        n_params = (1 << qubits) - 1 + (1 << shape[1]) - 1
    else:
        ids = site.shapes.get("ids", (1,))
        positions = n_batch * (int(ids[-1]) if len(ids) >= 2 else int(math.prod(ids)))
        if unique_tokens is not None:
            n_fwd = min(int(unique_tokens), positions)
            log.calc(
                "circuits per forward",
                f"distinct tokens (given) ≤ {positions:,} positions",
                n_fwd,
                "circuits",
            )
        else:
            n_fwd = circuits_forward("qrce", tokens=positions, vocab_size=site.vocab_size)
            log.calc(
                "circuits per forward",
                f"distinct tokens ≤ min({positions:,} positions, vocab {site.vocab_size})",
                n_fwd,
                "circuits",
            )
        n_params = 2 * shape[0] * shape[1]
    n_bwd = circuits_backward(kernel, method, n_fwd, qubits=shape[0], layers=shape[1])
    rule = {
        "parameter-shift": f"4·L·q = {4 * shape[1] * shape[0]} per token",
        "spsa": "2 × forward",
        "straight-through": "0 (closed-form backward)",
        "autograd": "0 (autograd through the exact simulation)",
        "none": "0 (no backward)",
    }
    log.calc("circuits per backward", f"{method}: {rule[method]}", n_bwd, "circuits")
    result.circuits_forward, result.circuits_backward = n_fwd, n_bwd

    # shots
    exact_mode = profile.kind == "simulator" and (
        profile.backend == "exact" or (profile.backend == "aer" and shots == 0)
    )
    if exact_mode:
        s_fwd = s_bwd = 0
        log.add("shots: 0 (exact probabilities / expectation values)")
    elif shots is not None:
        if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
            raise ValueError(f"shots must be a positive int (or 0 on aer: exact); got {shots!r}.")
        s_fwd = s_bwd = shots
        log.add(f"shots: {shots:,} per circuit (given)")
    else:
        base = shots_for_precision(precision)
        if kernel == "qaap":
            prob = success_probability
            if prob is None:
                prob = getattr(site, "success_probability", None)
            if prob is None:
                prob = 1.0 / (1 << shape[1])
                log.add(
                    f"  success probability P = 1/2^{shape[1]} = {prob:.4g} (prior: "
                    "E[(q̂·k_j)²] = ‖k_j‖²/d for a random query)"
                )
            else:
                log.add(f"  success probability P = {prob:.4g} (given)")
            result.success_probability = prob
            s_fwd = int(
                log.calc(
                    "shots per forward circuit",
                    f"⌈1/{precision:g}² / {prob:.4g}⌉",
                    shots_for_precision(precision, prob),
                )
            )
            s_bwd = s_fwd if method == "spsa" else 0
        else:
            s_fwd = int(
                log.calc(
                    "shots per forward circuit",
                    f"⌈1/{precision:g}²⌉ (standard error of a ±1 observable ≤ 1/√N)",
                    base,
                )
            )
            s_bwd = math.ceil(base / 2) if method == "parameter-shift" else 0
            if s_bwd:
                log.calc(
                    "shots per shifted circuit",
                    f"⌈{base}/2⌉ ((f₊ − f₋)/2 halves the variance)",
                    s_bwd,
                )
    s_fwd, s_bwd = int(s_fwd), int(s_bwd)
    result.shots_forward, result.shots_backward = s_fwd, s_bwd

    # circuit resources
    closed_form = profile.kind == "simulator" and profile.backend in ("exact", "shots")
    if not (closed_form and kernel == "qaap"):
        cost = circuit_cost(kernel, shape, profile)
        result.circuit = cost
        result.depth, result.two_qubit_gates = cost.depth, cost.two_qubit_gates
        result.one_qubit_gates = cost.one_qubit_gates
        log.add(
            f"circuit: depth {cost.depth:,}, {cost.two_qubit_gates:,} two-qubit gates, "
            f"{cost.one_qubit_gates:,} one-qubit gates ({cost.method}: {cost.note})"
        )
    else:
        log.add(
            "circuit: none run (the shots/exact backends compute QAAP's distribution in "
            "closed form)"
        )

    if profile.kind == "simulator":
        _simulate(result, site, profile, log, kernel, shape, n_params, method)
    else:
        _qpu(result, site, profile, log, kernel, n_params)
    if result.supported:
        fidelity = "n/a" if result.fidelity is None else f"{result.fidelity:.4g}"
        money = "n/a" if result.money_usd is None else f"${result.money_usd:,.2f}"
        log.add(
            f"TOTAL: forward {_seconds(result.forward.total_s)} + backward "
            f"{_seconds(result.backward.total_s)} = {_seconds(result.time_s or 0.0)}; "
            f"fidelity {fidelity}; money {money}"
        )
    return result


def _qpu(
    result: Estimate,
    site: Site,
    profile: DeviceProfile,
    log: _Log,
    kernel: str,
    n_params: int,
) -> None:
    cost = result.circuit
    assert cost is not None
    log.add("per-shot time:")
    if profile.time_model == "ibm":
        shot_s = _ibm_shot(cost, profile, log)
    elif profile.time_model == "gate_durations":
        shot_s = _ion_shot(cost, profile, log)
    elif profile.time_model == "surface_code":
        ft = _ft_shot(cost, profile, log)
        shot_s = ft.shot_s
        result.physical_qubits = ft.physical_qubits
    else:
        raise ValueError(f"device {profile.name!r}: unknown time model {profile.time_model!r}.")
    fwd = _Call(kernel, result.circuits_forward, result.shots_forward, n_params, "forward")
    result.forward, result.jobs_forward, money_f = _qpu_call(fwd, profile, cost, shot_s, log)
    if result.gradient == "straight-through":
        result.backward = _straight_through(site, log)
        money_b: float | None = 0.0
    else:
        bwd = _Call(
            kernel,
            result.circuits_backward,
            result.shots_backward,
            n_params,
            f"backward ({result.gradient})",
        )
        result.backward, result.jobs_backward, money_b = _qpu_call(bwd, profile, cost, shot_s, log)
    if profile.time_model == "surface_code":
        result.fidelity = log.calc(
            "fidelity", "1 − error budget (by construction of d)", ft.fidelity
        )
        result.money_usd = None
        log.add("money: no price (no such machine exists)")
    else:
        result.fidelity = _fidelity(cost, profile, log)
        result.money_usd = None if money_f is None else money_f + (money_b or 0.0)


def _straight_through(site: Site, log: _Log) -> TimeBreakdown:
    cpu = _cpu()
    if cpu is None:
        log.add("backward (straight-through): closed form on the CPU; cpu_local missing: 0")
        return TimeBreakdown()
    classical = classical_estimate(site, cpu)
    log.add(
        f"backward (straight-through): closed-form backward on this CPU = the classical "
        f"roofline backward of the site on cpu_local: {_seconds(classical.backward_s)}"
    )
    return TimeBreakdown(classical_s=classical.backward_s)


def _simulate(
    result: Estimate,
    site: Site,
    profile: DeviceProfile,
    log: _Log,
    kernel: str,
    shape: tuple[int, int],
    n_params: int,
    method: str,
) -> None:
    backend = profile.backend or profile.name
    per_job = int(profile.get("max_circuits_per_job", 4096) or 4096)
    cache = profile.get("cache_bytes", DEFAULT_CACHE_BYTES) or DEFAULT_CACHE_BYTES
    gates = _simulator_gates(kernel, shape, profile) if backend == "aer" else 0

    def work(circuits: int, shots: int, gradient: bool) -> Work:
        if kernel == "qaap":
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
            qubits=shape[0],
            layers=shape[1],
            shots=shots,
            gradient=gradient and backend == "shots",
            gates=gates,
            max_circuits_per_job=per_job,
            cache_bytes=cache,
        )

    if "torch_threads" in profile:
        log.q("calibrated at torch threads", profile["torch_threads"])
    result.forward = _simulator_call(
        work(result.circuits_forward, result.shots_forward, False), profile, log, "forward"
    )
    result.jobs_forward = 1
    if method == "autograd":
        factor = log.q("autograd backward", BACKWARD_FACTOR)
        result.backward = TimeBreakdown(execution_s=factor * result.forward.execution_s)
        log.calc(
            "backward (autograd)", f"{factor:g} × forward execution", result.backward.total_s, "s"
        )
    elif method == "straight-through":
        result.backward = _straight_through(site, log)
    elif result.circuits_backward:
        result.backward = _simulator_call(
            work(result.circuits_backward, result.shots_backward, True),
            profile,
            log,
            f"backward ({method})",
        )
        result.jobs_backward = 1
    result.fidelity = 1.0
    log.add("fidelity: 1 (noiseless simulation)")
    result.money_usd = 0.0
    log.add("money: $0 (this machine)")


# --------------------------------------------------------------------------- classical


def _site_work(site: Site) -> tuple[int, int, int, str]:
    """(FLOPs, bytes, ops, how) of the site's forward at its example shapes."""
    if site.flops or site.bytes:
        ops = 1 if site.kind == "embedding" or "sdpa" in site.pattern else 5
        return site.flops, site.bytes, ops, "from the analysis passes (site.flops, site.bytes)"
    if site.kind == "attention" and site.heads and site.seq_len and site.kv_len and site.head_dim:
        batch = _batch_of(site, None)
        value_dim = site.shapes.get("v", (site.head_dim,))[-1]
        rows = batch * site.heads * site.seq_len
        flops = rows * site.kv_len * (2 * site.head_dim + 5 + 2 * value_dim)
        elements = sum(math.prod(site.shapes.get(k, ())) for k in ("q", "k", "v", "out"))
        return flops, 4 * elements, 1, "computed from the shapes (SDPA rule, float32)"
    if site.kind == "embedding":
        out = math.prod(site.shapes.get("out", ()))
        ids = math.prod(site.shapes.get("ids", ()))
        return 0, 4 * out * 2 + 8 * ids, 1, "computed from the shapes (gather, float32)"
    return 0, 0, 1, "no shapes: zero work"


def classical_estimate(
    site: Site, device: str | DeviceProfile = "cpu_local", training: bool = True
) -> ClassicalEstimate:
    """Roofline time of the site on a classical device: max(FLOPs/peak, bytes/bandwidth)
    + ops × per-op overhead, forward; backward = 2 × forward (``training``)."""
    profile = load(device)
    if profile.kind != "classical":
        raise ValueError(
            f"{profile.name} is a {profile.kind} device; classical_estimate "
            "needs a classical profile (cpu_local, gpu_h100)."
        )
    log = _Log()
    label = _site_label(site)
    log.add(
        f"Classical roofline for {site.kind} site {label!r} on {profile.name} "
        f"({profile.description})"
    )
    flops, nbytes, ops, how = _site_work(site)
    log.add(f"  work: {flops:,} FLOPs, {nbytes:,} bytes, {ops} op(s) ({how})")
    peak_key = "peak_flops"
    if site.dtype == "float32" and "peak_flops_fp32" in profile:
        peak_key = "peak_flops_fp32"
    peak = log.q("peak FLOP/s", profile[peak_key])
    bandwidth = log.q("memory bandwidth", profile["memory_bandwidth"])
    overhead = log.q("per-op overhead", profile["per_op_overhead"])
    compute = log.calc("compute time", f"{flops:,} / {peak:.4g}", flops / peak, "s")
    memory = log.calc("memory time", f"{nbytes:,} / {bandwidth:.4g}", nbytes / bandwidth, "s")
    fixed = log.calc("overhead", f"{ops} × {overhead:.3g} s", ops * overhead, "s")
    forward = log.calc(
        "forward", "max(compute, memory) + overhead", max(compute, memory) + fixed, "s"
    )
    backward = 0.0
    if training:
        factor = log.q("backward factor", BACKWARD_FACTOR)
        backward = log.calc(
            "backward",
            f"{factor:g} × max(compute, memory) + overhead",
            factor * max(compute, memory) + fixed,
            "s",
        )
    log.add(f"TOTAL: {_seconds(forward + backward)}")
    return ClassicalEstimate(
        site=label,
        device=profile.name,
        flops=flops,
        bytes=nbytes,
        ops=ops,
        compute_s=compute,
        memory_s=memory,
        overhead_s=fixed,
        forward_s=forward,
        backward_s=backward,
        bound="compute" if compute >= memory else "memory",
        lines=log.lines,
    )


# --------------------------------------------------------------------------- decision


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
    if q_time >= classical.time_s:
        return False, (
            f"slower on {quantum.device}: {_seconds(q_time)} vs {_seconds(classical.time_s)} "
            f"on {classical.device}"
        )
    return True, (
        f"faster on {quantum.device}: {_seconds(q_time)} vs {_seconds(classical.time_s)} on "
        f"{classical.device}, fidelity {quantum.fidelity:.3g}"
    )
