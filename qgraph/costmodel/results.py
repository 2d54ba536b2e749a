"""What the cost model returns, and the explanation log every number passes through.

Each estimate carries the lines of its own arithmetic: the functions that compute a number
also write it, with its unit and source, into an :class:`ExplanationLog`, so ``explain()``
can never disagree with the value it explains.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from qgraph.costmodel.profiles import Quantity, format_quantity
from qgraph.costmodel.transpiled import CircuitCost

__all__ = [
    "ClassicalEstimate",
    "Estimate",
    "ExplanationLog",
    "OpCallCosts",
    "TimeBreakdown",
    "format_seconds",
]


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


@dataclass
class OpCallCosts:
    """What one device's time model says about one op call, forward and backward: the
    part of an :class:`Estimate` that depends on the device rather than on the site."""

    forward: TimeBreakdown
    backward: TimeBreakdown
    jobs_forward: int
    jobs_backward: int
    fidelity: float
    money_usd: float | None
    physical_qubits: int | None = None


class ExplanationLog:
    """Collects explanation lines; each method that logs a number also returns it, so the
    arithmetic and its explanation are one expression."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, text: str) -> None:
        """Append one line as it is."""
        self.lines.append(text)

    def quantity(self, label: str, quantity: Quantity) -> float:
        """Log a profile number with its unit, source and date; return its value."""
        self.lines.append(
            f"  {label} = {format_quantity(quantity.value, quantity.unit)}  "
            f"[{quantity.source}; {quantity.date}]"
        )
        return float(quantity.value)

    def calc(self, label: str, formula: str, value: float, unit: str = "") -> float:
        """Log a derived number with the formula that gave it; return the number."""
        self.lines.append(f"  {label} = {formula} = {format_quantity(value, unit)}")
        return value


def format_seconds(value: float) -> str:
    """A duration in the largest unit that keeps it readable: d, h, s, ms or µs."""
    if value >= 3600 * 24:
        return f"{value / 86400:.3g} d"
    if value >= 3600:
        return f"{value / 3600:.3g} h"
    if value >= 1:
        return f"{value:.4g} s"
    if value >= 1e-3:
        return f"{value * 1e3:.4g} ms"
    return f"{value * 1e6:.4g} µs"
