"""What the review page shows, computed from the report alone (no matplotlib, no HTML).

Every number here is read from the report (the cost model's estimates, the scheduler's
measurements) or summed from them; a missing estimate stays missing (None), never zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qgraph.scheduler import is_quantum
from qgraph.site import Site

if TYPE_CHECKING:
    from qgraph.report import Report
    from qgraph.scheduler import PartitionDAG, Timeline


@dataclass(frozen=True)
class GraphNode:
    """One node of the partition DAG, with what the page writes on it."""

    name: str  # the DAG's node name: "c0", "q:qaap_1"
    kind: str  # "classical" or "quantum"
    level: int
    ops: int  # fx nodes in it
    weight_s: float  # measured time (0 without a timeline)
    op: str | None = None  # quantum: "qaap" / "qrce"
    label: str | None = None  # quantum: the op's site label, "<compile id>:<site key>"
    site: Site | None = None  # quantum: the report's site with that key, when found


def graph_nodes(dag: PartitionDAG, gm: Any, report: Report) -> list[GraphNode]:
    """The DAG's nodes in topological order, quantum ones mapped to the report's sites."""
    import networkx as nx

    fx_nodes = {node.name: node for node in gm.graph.nodes}
    by_key = {site.key: site for site in report.sites}
    found = []
    for name in nx.topological_sort(dag.graph):
        data = dag.graph.nodes[name]
        op = label = site = None
        if data["kind"] == "quantum":
            node = fx_nodes[data["nodes"][0]]
            op = node.target._schema.name.split("::")[-1]
            label = _site_argument(node)
            if label is not None:
                # the compile id is an integer, so the first colon ends it
                site = by_key.get(label.split(":", 1)[-1])
        found.append(
            GraphNode(
                name,
                data["kind"],
                data["level"],
                len(data["nodes"]),
                data["weight_s"],
                op,
                label,
                site,
            )
        )
    return found


def timeline_fits(gm: Any, timeline: Timeline) -> bool:
    """Whether ``timeline``'s forward events name nodes of ``gm`` (as the kind they ran as).

    A step that ran another graph (train mode, another input shape) must not weigh this
    one's partitions by node names that merely coincide.
    """
    nodes = {node.name: node for node in gm.graph.nodes}
    named = [e for e in timeline.events if e.node is not None and e.phase == "forward"]
    return bool(named) and all(
        e.node in nodes and is_quantum(nodes[e.node]) == (e.kind in ("quantum", "cache"))
        for e in named
    )


def _site_argument(node: Any) -> str | None:
    """The ``site`` argument of a qgraph::qaap / qgraph::qrce call."""
    if "site" in node.kwargs:
        return str(node.kwargs["site"])
    names = [argument.name for argument in node.target._schema.arguments]
    position = names.index("site")
    return str(node.args[position]) if position < len(node.args) else None


@dataclass(frozen=True)
class DeviceStep:
    """Predicted time of the costed sites on one device (one training step: fwd + bwd)."""

    device: str
    as_decided_s: float | None  # the report's quantum sites on this device, the rest classical
    all_offloaded_s: float  # every site offloaded where this device supports it
    missing: tuple[str, ...]  # keys of quantum sites with no time on this device


@dataclass(frozen=True)
class StepTimes:
    """The per-device predictions and the all-classical baseline they are set against."""

    classical_s: float  # every costed site classical
    sites: tuple[str, ...]  # keys of the costed sites (the only ones summed)
    uncosted: tuple[str, ...]  # keys of sites without an estimate (left out of every sum)
    devices: tuple[DeviceStep, ...]


def step_times(report: Report) -> StepTimes | None:
    """Sum the report's estimates per device; None when no site was costed.

    Only the candidate sites are summed: the rest of the model runs classically under every
    option, so it adds the same time to each bar and the report does not estimate it.
    """
    costed = [s for s in report.sites if s.classical_s is not None]
    if not costed:
        return None
    devices = []
    for device in report.devices:
        as_decided = 0.0
        every = 0.0
        missing = []
        for site in costed:
            assert site.classical_s is not None
            quantum_s = site.costs.get(device, {}).get("time_s")
            if site.decision == "quantum":
                if quantum_s is None:
                    missing.append(site.key)
                else:
                    as_decided += quantum_s
            else:
                as_decided += site.classical_s
            every += site.classical_s if quantum_s is None else quantum_s
        devices.append(DeviceStep(device, None if missing else as_decided, every, tuple(missing)))
    return StepTimes(
        sum(s.classical_s for s in costed if s.classical_s is not None),
        tuple(s.key for s in costed),
        tuple(s.key for s in report.sites if s.classical_s is None),
        tuple(devices),
    )


# -- formatting ------------------------------------------------------------------------------


def fmt_seconds(value: float | None) -> str:
    """Seconds with a readable unit and three significant digits; "" when unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    magnitude = abs(value)
    if magnitude == 0:
        return "0 s"
    if magnitude >= 1000:
        return f"{value:,.0f} s"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if magnitude >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} s"


def fmt_usd(value: float | None) -> str:
    """Dollars: cents above a cent, two significant digits below; "" when unknown."""
    if value is None:
        return ""
    if value == 0 or abs(value) >= 0.01:
        return f"${value:,.2f}"
    return f"${value:.2g}"


def fmt_number(value: Any) -> str:
    """Integers with thousands separators, floats with three significant digits."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def has_timeline(timeline: Timeline | None) -> bool:
    """Whether there is a timeline with anything in it to show."""
    return timeline is not None and bool(timeline.events)
