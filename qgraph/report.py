"""The compile report: one row per candidate site, with its decision and the reason."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from qgraph.review import write_html
from qgraph.site import Site

if TYPE_CHECKING:
    from qgraph.backends import KernelCounters
    from qgraph.scheduler import Timeline

#: the columns of the printed table and the CSV export, in order
COLUMNS: tuple[str, ...] = (
    "index",
    "kind",
    "path",
    "pattern",
    "op",
    "decision",
    "shape",
    "mask_kind",
    "qaap_form",  # the exact backend's QAAP form at the example shapes (quantum attention)
    "reason",
)
#: columns added when the sites were costed: the decision device's predictions
COST_COLUMNS: tuple[str, ...] = ("device", "quantum s", "classical s", "fidelity", "usd")
#: what ``Report.jobs`` counts per quantum site (``KernelCounters`` fields)
JOB_COUNTS: tuple[str, ...] = ("calls", "retries", "timeouts", "fallbacks", "fallback_rows")
#: the results' bytes ``Report.jobs`` also sums per site (``KernelCounters`` fields); with them
#: comes "compression_ratio", raw_bytes / bytes_received (None unless both were recorded)
TRANSFER_COUNTS: tuple[str, ...] = ("raw_bytes", "bytes_received")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _format_bytes(n: int) -> str:
    """Bytes in decimal units, as transfer sizes are quoted: 950 B, 1.2 kB, 210 MB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def _results_line(raw: int, received: int) -> str:
    """What came back for what the shots would have been as one bitstring each."""
    ratio = f" ({raw / received:.3g}x)" if received else ""
    return f"{_format_bytes(received)} received for {_format_bytes(raw)} of raw shots{ratio}"


def _shape_summary(site: Site) -> str:
    if site.kind == "attention" and site.heads is not None:
        gqa = f"/{site.kv_heads}kv" if site.kv_heads != site.heads else ""
        return f"{site.heads}{gqa}h × {site.seq_len}×{site.kv_len} × d{site.head_dim}"
    if site.kind == "embedding" and site.vocab_size is not None:
        return f"{site.table} {site.vocab_size}×{site.embed_dim}"
    return str(site.shapes.get("out", ""))


@dataclass
class Report:
    """What ``qgraph.compile`` found and decided; ``sites`` has one entry per candidate."""

    model: str
    frontend: str
    backend: str
    policy: str
    sites: list[Site] = field(default_factory=list)
    device: str | None = None  # the quantum device the sites were costed for
    notes: list[str] = field(default_factory=list)
    # the rewritten graph (CompiledModule's first capture) and the latest HybridScheduler
    # step, for to_html; not report data, so left out of repr and equality
    graph_module: Any = field(default=None, repr=False, compare=False)
    timeline: Timeline | None = field(default=None, repr=False, compare=False)
    # the backend's live counters of each quantum site (site key -> counters), set by the
    # compiled module: what its jobs have done since compile
    job_counters: Callable[[], dict[str, KernelCounters]] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def quantum_sites(self) -> list[Site]:
        """The sites that were rewritten into quantum ops."""
        return [s for s in self.sites if s.decision == "quantum"]

    @property
    def columns(self) -> tuple[str, ...]:
        """The table's columns: the cost columns too when the sites were costed."""
        return COLUMNS + COST_COLUMNS if self.device else COLUMNS

    @property
    def devices(self) -> list[str]:
        """Every quantum device the sites were costed for, the decision device first."""
        found: list[str] = [self.device] if self.device else []
        for site in self.sites:
            found += [d for d in site.costs if d not in found]
        return found

    def device_rows(self) -> list[dict[str, Any]]:
        """One dict per site with time, fidelity and money on every costed device."""
        rows = []
        for site in self.sites:
            row: dict[str, Any] = {"index": site.index, "path": site.path, "kind": site.kind}
            row["classical s"] = site.classical_s
            for device in self.devices:
                cost = site.costs.get(device, {})
                row[f"{device} s"] = cost.get("time_s")
                row[f"{device} fidelity"] = cost.get("fidelity")
                row[f"{device} usd"] = cost.get("money_usd")
            rows.append(row)
        return rows

    def rows(self) -> list[dict[str, Any]]:
        """One plain dict per site with the report's columns."""
        rows = []
        for site in self.sites:
            row = {c: getattr(site, c, None) for c in COLUMNS if c != "shape"}
            row["shape"] = _shape_summary(site)
            if self.device:
                cost = site.costs.get(self.device, {})
                row.update(
                    {
                        "device": self.device if cost else None,
                        "quantum s": cost.get("time_s"),
                        "classical s": site.classical_s,
                        "fidelity": cost.get("fidelity"),
                        "usd": cost.get("money_usd"),
                    }
                )
            rows.append({c: row[c] for c in self.columns})
        return rows

    def jobs(self) -> dict[str, dict[str, int | float | None]]:
        """Per quantum site that has run, its jobs so far (``JOB_COUNTS``): op calls, retried
        attempts, timed-out attempts, calls the job policy's fallback computed, and QAAP rows
        that fell back to uniform weights; and the results' bytes (``TRANSFER_COUNTS``): what
        came back (``bytes_received``), what the shots are as one bitstring each
        (``raw_bytes``, 0 where the backend does not compute it: only the shots backend
        does) and ``compression_ratio``, raw / received (None unless both were recorded).
        Empty before the module has run."""
        counters = self.job_counters() if self.job_counters is not None else {}
        jobs: dict[str, dict[str, int | float | None]] = {}
        for key, c in counters.items():
            if not (c.calls or c.retries or c.timeouts or c.fallbacks):
                continue
            site: dict[str, int | float | None] = {
                name: getattr(c, name) for name in JOB_COUNTS + TRANSFER_COUNTS
            }
            both = c.raw_bytes and c.bytes_received
            site["compression_ratio"] = c.raw_bytes / c.bytes_received if both else None
            jobs[key] = site
        return jobs

    def to_dicts(self) -> list[dict[str, Any]]:
        """Every field of every site, for analysis (JSON-friendly)."""
        return [s.to_dict() for s in self.sites]

    def to_csv(self, per_device: bool = False) -> str:
        """The table as CSV text; ``per_device`` gives one column group per costed device."""
        rows = self.device_rows() if per_device else self.rows()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else list(self.columns))
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def to_html(
        self,
        path: str | Path,
        *,
        graph_module: Any = None,
        timeline: Timeline | None = None,
    ) -> Path:
        """Write a self-contained HTML review page of this report to ``path``; returns it.

        The page holds the header, the partition graph, the per-site and per-device tables,
        cost plots and, when a HybridScheduler ran, its timeline (the Chrome-trace JSON is
        written next to the page as ``<stem>.trace.json`` and linked). ``graph_module`` and
        ``timeline`` default to the ones the compiled module and the scheduler recorded here.
        Needs matplotlib: ``pip install 'qgraph[report]'``.
        """
        return write_html(
            self,
            path,
            graph_module=self.graph_module if graph_module is None else graph_module,
            timeline=self.timeline if timeline is None else timeline,
        )

    def __str__(self) -> str:
        table = Table(
            title=f"qgraph report: {self.model} (frontend={self.frontend}, "
            f"backend={self.backend}, policy={self.policy})",
            show_lines=False,
        )
        for column in self.columns:
            table.add_column(column, overflow="fold")
        for row in self.rows():
            table.add_row(*(_cell(row[c]) for c in self.columns))
        width = 212 if self.device else 172  # the qaap_form column took 12
        console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
        console.print(table)
        counts = (
            f"{len(self.sites)} sites, {len(self.quantum_sites)} quantum "
            f"({sum(s.op == 'qaap' for s in self.sites)} qaap, "
            f"{sum(s.op == 'qrce' for s in self.sites)} qrce)"
        )
        for line in [counts, *self.notes, *self._job_lines()]:
            console.print(line)
        return console.export_text()

    def _job_lines(self) -> list[str]:
        jobs = self.jobs()
        if not jobs:
            return []
        total = {name: sum(int(site[name] or 0) for site in jobs.values()) for name in JOB_COUNTS}
        lines = [
            f"jobs so far: {total['calls']} calls, {total['retries']} retries, "
            f"{total['timeouts']} timeouts, {total['fallbacks']} fallbacks (job policy)"
        ]
        for key, site in jobs.items():
            if site["retries"] or site["timeouts"] or site["fallbacks"]:
                lines.append(
                    f"  {key}: {site['calls']} calls, {site['retries']} retries, "
                    f"{site['timeouts']} timeouts, {site['fallbacks']} fallbacks"
                )
        # results' sizes only where the backend recorded the raw size to set them against
        sized = {
            key: (int(site["raw_bytes"] or 0), int(site["bytes_received"] or 0))
            for key, site in jobs.items()
            if site["raw_bytes"]
        }
        if sized:
            raw = sum(r for r, _ in sized.values())
            received = sum(b for _, b in sized.values())
            lines.append(f"results: {_results_line(raw, received)}")
            if len(sized) > 1:
                lines += [f"  {key}: {_results_line(r, b)}" for key, (r, b) in sized.items()]
        return lines

    def __repr__(self) -> str:
        return (
            f"Report(model={self.model!r}, sites={len(self.sites)}, "
            f"quantum={len(self.quantum_sites)})"
        )
