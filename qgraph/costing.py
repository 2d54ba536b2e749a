"""Costing the sites of a compiled model with the cost model, for ``policy="auto"``.

For every supported site this predicts the quantum op's time, fidelity and money on the
chosen device (and any extra report devices) and the classical roofline time of the region
it would replace; ``policy="auto"`` then offloads where the quantum side is predicted faster
and the fidelity clears ``min_fidelity`` (``qgraph.costmodel.decide``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qgraph import costmodel
from qgraph.costmodel.resources import precision_error
from qgraph.errors import InputError
from qgraph.site import Site

#: the device policy "auto" decides for when none is named
DEFAULT_DEVICE = "ibm_heron_r2"
DEFAULT_CLASSICAL_DEVICE = "cpu_local"


@dataclass(frozen=True)
class CostOptions:
    """What to cost against and how strictly."""

    device: str = DEFAULT_DEVICE
    classical_device: str = DEFAULT_CLASSICAL_DEVICE
    precision: float = 0.03
    min_fidelity: float = 0.5
    report_devices: tuple[str, ...] = ()
    qrce_qubits: int = 8
    qrce_layers: int = 2
    #: the training's gradient method per kernel (compile's resolved ``gradient``); a site is
    #: costed with its kernel's method, since SPSA, say, runs more circuits than the default
    gradients: Mapping[str, str] = field(default_factory=dict)

    def hardware_gradient(self, kernel: str) -> str:
        """The method to cost ``kernel``'s backward with on a quantum device.

        Autograd exists only where amplitudes are exact (a simulator); on a device that
        samples, the same training would use the device's default (straight-through for
        QAAP, parameter shift for QRCE), which the cost model's ``"auto"`` picks.
        """
        method = self.gradients.get(kernel, "auto")
        return "auto" if method == "autograd" else method

    def validate(self) -> None:
        """Raise InputError for an unknown device or an out-of-range number."""
        for name in (self.device, self.classical_device, *self.report_devices):
            try:
                costmodel.load(name)
            except ValueError:
                known = ", ".join(costmodel.device_names())
                raise InputError(f"unknown device {name!r}; known devices: {known}.") from None
        if costmodel.load(self.device).kind == "classical":
            raise InputError(f"device {self.device!r} is classical; name a quantum device.")
        if costmodel.load(self.classical_device).kind != "classical":
            raise InputError(f"classical_device {self.classical_device!r} is not classical.")
        problem = precision_error(self.precision)
        if problem is not None:
            raise InputError(problem)
        if not 0.0 <= self.min_fidelity <= 1.0:
            raise InputError(f"min_fidelity must lie in [0, 1]; got {self.min_fidelity!r}.")

    @property
    def devices(self) -> tuple[str, ...]:
        """The decision device first, then the extra report devices."""
        return (self.device, *(d for d in self.report_devices if d != self.device))


@dataclass(frozen=True)
class SiteCosts:
    """The estimates of one site: per quantum device, and the classical baseline."""

    quantum: dict[str, Any] = field(default_factory=dict)  # device -> Estimate
    classical: Any = None  # ClassicalEstimate
    verdict: tuple[bool, str] | None = None  # (offload, reason) on the decision device

    def summaries(self) -> dict[str, dict[str, Any]]:
        """Per quantum device, the estimate's summary (what ``Site.costs`` holds)."""
        return {device: _summary(e) for device, e in self.quantum.items()}

    @property
    def classical_s(self) -> float | None:
        """The predicted classical time of the region (what ``Site.classical_s`` holds)."""
        return None if self.classical is None else self.classical.time_s


def cost_sites(sites: Sequence[Site], options: CostOptions) -> dict[str, SiteCosts]:
    """Estimate every supported site on every device, by site key; the sites stay as they
    are (``SiteCosts.summaries`` gives what the report shows)."""
    costs: dict[str, SiteCosts] = {}
    for site in sites:
        if not site.supported:
            continue
        classical = costmodel.classical_estimate(site, options.classical_device)
        quantum = {
            device: costmodel.estimate(
                site,
                device,
                precision=options.precision,
                gradient=options.hardware_gradient(site.quantum_op_for_kind),
                qrce_qubits=options.qrce_qubits,
                qrce_layers=options.qrce_layers,
            )
            for device in options.devices
        }
        verdict = costmodel.decide(
            quantum[options.device], classical, min_fidelity=options.min_fidelity
        )
        costs[site.key] = SiteCosts(quantum, classical, verdict)
    return costs


#: the parts of an Estimate's TimeBreakdown, in the order the review report stacks them
BREAKDOWN_PARTS: tuple[str, ...] = (
    "latency_s",
    "queue_s",
    "execution_s",
    "transfer_s",
    "classical_s",
)


def _summary(estimate: Any) -> dict[str, Any]:
    breakdown = None
    if estimate.supported:  # an unsupported site has no time, so no parts either
        breakdown = {
            part: getattr(estimate.forward, part) + getattr(estimate.backward, part)
            for part in BREAKDOWN_PARTS
        }
    return {
        "supported": estimate.supported,
        "reason": estimate.reason,
        "qubits": estimate.qubits,
        "depth": estimate.depth,
        "two_qubit_gates": estimate.two_qubit_gates,
        "shots": estimate.shots_forward,
        "gradient": estimate.gradient,  # the backward method the time was costed with
        "time_s": estimate.time_s,
        "fidelity": estimate.fidelity,
        "money_usd": estimate.money_usd,
        "breakdown_s": breakdown,  # forward + backward seconds per part; sums to time_s
    }


def explain_site(site: Site, costs: SiteCosts | None) -> str:
    """The full arithmetic of one site's decision."""
    lines = [f"site {site.index} ({site.kind}, {site.key}): {site.decision}. {site.reason}"]
    if costs is None:
        lines.append("no cost estimate: the site is unsupported or the policy did not cost it.")
        return "\n".join(lines)
    for estimate in costs.quantum.values():
        lines += ["", estimate.explain()]
    lines += ["", costs.classical.explain()]
    return "\n".join(lines)
