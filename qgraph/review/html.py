"""The review page: one self-contained HTML file built from a Report.

Nothing on the page is fetched: the style sheet is inline, the figures are inline SVG, and
the one link (the timeline's Chrome-trace JSON) is relative, to a file written next to the
page. Every string that comes from the report goes through ``html.escape``; only report
fields are shown, so a backend's credentials cannot reach the page.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

import torch

from qgraph.review import plots
from qgraph.review.data import (
    GraphNode,
    StepTimes,
    fmt_number,
    fmt_seconds,
    fmt_usd,
    graph_nodes,
    has_timeline,
    step_times,
    timeline_fits,
)
from qgraph.scheduler import partition_dag
from qgraph.version import __version__

if TYPE_CHECKING:
    from qgraph.report import Report
    from qgraph.scheduler import Timeline

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1d2330; margin: 0 auto; padding: 1.5rem 2rem 3rem; max-width: 1400px; }
h1 { font-size: 1.5rem; margin: 0 0 .6rem; }
h2 { font-size: 1.15rem; margin: 2.2rem 0 .6rem; border-bottom: 1px solid #d5dae3;
     padding-bottom: .25rem; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: 0; }
dl.meta dt { color: #5a6478; } dl.meta dd { margin: 0; }
.note, figcaption { color: #4a5365; font-size: .9rem; max-width: 75rem; }
.empty { color: #8a4b08; background: #fff6e5; border-left: 3px solid #e0a040;
         padding: .5rem .8rem; }
figure { margin: .5rem 0 1rem; }
figure svg { max-width: 100%; height: auto; display: block; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .85rem; }
th, td { border-bottom: 1px solid #e3e7ee; padding: .3rem .55rem; text-align: left;
         vertical-align: top; }
th { background: #f3f5f9; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.reason { min-width: 13rem; max-width: 30rem; }
td.support { min-width: 11rem; }
table.wide { width: 100%; }
tr.quantum td.mark { border-left: 4px solid #9c2f7d; }
tr.classical td.mark { border-left: 4px solid #41618c; }
th.group { text-align: center; background: #e8ecf3; border-left: 2px solid #fff; }
.key { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.path { color: #5a6478; font-size: .8rem; }
.tag { display: inline-block; border-radius: .7rem; padding: 0 .5rem; font-size: .8rem; }
.tag.quantum { background: #f4d6ea; color: #6d1f57; }
.tag.classical { background: #dbe5f1; color: #2c4466; }
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _num(text: str, exact: Any = None, rowspan: int = 1) -> str:
    """A right-aligned number cell; the exact value in the tooltip."""
    title = f' title="{_e(repr(exact))}"' if exact is not None and text else ""
    span = f' rowspan="{rowspan}"' if rowspan > 1 else ""
    return f'<td class="num"{title}{span}>{_e(text)}</td>'


def _table(
    head: Sequence[str],
    rows: Iterable[str],
    groups: Sequence[tuple[str, int]] = (),
    wide: bool = False,
) -> str:
    """A table; ``groups`` adds a header row above ``head`` of (label, columns spanned)."""
    top = "".join(f'<th colspan="{n}" class="group">{_e(label)}</th>' for label, n in groups)
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return (
        f'<div class="scroll"><table{" class=wide" if wide else ""}><thead>'
        + (f"<tr>{top}</tr>" if groups else "")
        + f"<tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{caption}</figcaption></figure>"


def _versions() -> tuple[str, str]:
    return __version__, str(torch.__version__)


# -- sections -------------------------------------------------------------------------------


def _header(report: Report, generated: datetime.datetime) -> str:
    qgraph_version, torch_version = _versions()
    devices = report.devices
    fields = [
        ("model", report.model),
        ("frontend", report.frontend),
        ("backend", report.backend),
        ("policy", report.policy),
        ("decision device", report.device or "none (the sites were not costed)"),
        ("devices costed", ", ".join(devices) if devices else "none"),
        ("qgraph", qgraph_version),
        ("torch", torch_version),
        ("generated", generated.isoformat(timespec="seconds")),
    ]
    meta = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in fields)
    quantum = report.quantum_sites
    counts = (
        f"{len(report.sites)} candidate sites, {len(quantum)} offloaded "
        f"({sum(s.op == 'qaap' for s in quantum)} QAAP, {sum(s.op == 'qrce' for s in quantum)} "
        "QRCE)."
    )
    notes = "".join(f"<li>{_e(n)}</li>" for n in report.notes)
    return (
        f"<header><h1>qgraph report: {_e(report.model)}</h1><dl class=meta>{meta}</dl>"
        f"<p>{_e(counts)}</p>" + (f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "") + "</header>"
    )


def _graph_section(report: Report, gm: Any, timeline: Timeline | None) -> str:
    title = '<h2 id="graph">Partition graph</h2>'
    if gm is None:
        return title + (
            '<p class="empty">The partition graph is unavailable: this report carries no graph '
            "module. Reports made by <code>qgraph.compile</code> carry the rewritten graph; "
            "otherwise pass <code>graph_module=</code> to <code>to_html</code>.</p>"
        )

    fits = timeline is not None and timeline_fits(gm, timeline)
    dag = partition_dag(gm, timeline if fits else None)
    nodes = graph_nodes(dag, gm, report)
    quantum = [n for n in nodes if n.kind == "quantum"]
    classical = len(nodes) - len(quantum)
    if fits:
        timing = (
            " Times are the last scheduler step's measurements: a classical partition's summed "
            "over micro-batches, a quantum node's the mean of its jobs."
        )
    elif timeline is not None and any(e.node is not None for e in timeline.events):
        timing = " The last scheduler step ran another graph (mode or shape), so no times."
    else:
        timing = ""
    caption = (
        f"{_count(classical, 'classical partition')} (blue) and "
        f"{_count(len(quantum), 'quantum node')} (QAAP pink, QRCE orange) of the rewritten "
        "graph, from <code>qgraph.scheduler.partition_dag</code>. A row is a level: the number "
        "of quantum calls on the longest path from the inputs; the classical work of one level "
        "is one partition. Quantum nodes name their site (index · key)."
        + timing
        + ("" if quantum else " Nothing was offloaded, so the graph is classical throughout.")
    )
    return (
        title
        + _figure(plots.partition_graph(dag, nodes), caption)
        + "<details><summary>Partitions as a table</summary>"
        + _table(
            ("partition", "kind", "level", "fx ops", "site", "measured"), map(_graph_row, nodes)
        )
        + "</details>"
    )


def _graph_row(node: GraphNode) -> str:
    site = node.site.key if node.site is not None else (node.label or "")
    kind = node.kind if node.op is None else f"quantum ({node.op})"
    return (
        f"<tr><td class=key>{_e(node.name)}</td><td>{_e(kind)}</td>"
        f"{_num(str(node.level))}{_num(fmt_number(node.ops))}<td class=key>{_e(site)}</td>"
        f"{_num(fmt_seconds(node.weight_s) if node.weight_s else '', node.weight_s)}</tr>"
    )


def _dotted(name: str) -> str:
    """A module path, escaped, that may wrap after its dots."""
    return _e(name).replace(".", ".<wbr>")


def _site_cell(site: Any) -> str:
    path = f'<div class="path">{_dotted(site.path)}</div>' if site.path != site.key else ""
    return f"<td><span class=key>{_dotted(site.key)}</span>{path}</td>"


def _sites_section(report: Report) -> str:
    device = report.device
    head: tuple[str, ...] = ("#", "kind", "site (key / module path)", "op", "decision", "reason")
    groups: list[tuple[str, int]] = [("site", len(head))]
    if device:
        head += ("qubits", "depth", "shots", "time", "fidelity", "USD")
        groups.append((f"quantum on {device} (decision device)", 6))
    head += ("time",)
    groups.append(("classical", 1))
    rows = []
    for site in report.sites:
        decision = f'<span class="tag {_e(site.decision)}">{_e(site.decision)}</span>'
        row = (
            f'<tr class="{_e(site.decision)}"><td class="num mark">{site.index}</td>'
            f"<td>{_e(site.kind)}</td>{_site_cell(site)}<td>{_e(site.op)}</td>"
            f'<td>{decision}</td><td class="reason">{_e(site.reason)}</td>'
        )
        if device:
            cost = site.costs.get(device, {})
            row += (
                f"{_num(fmt_number(cost.get('qubits')))}{_num(fmt_number(cost.get('depth')))}"
                f"{_num(fmt_number(cost.get('shots')))}"
                f"{_num(fmt_seconds(cost.get('time_s')), cost.get('time_s'))}"
                f"{_num(fmt_number(cost.get('fidelity')), cost.get('fidelity'))}"
                f"{_num(fmt_usd(cost.get('money_usd')), cost.get('money_usd'))}"
            )
        rows.append(row + f"{_num(fmt_seconds(site.classical_s), site.classical_s)}</tr>")
    note = (
        f"Quantum columns are the cost model's predictions on the decision device, {_e(device)}, "
        "per training step (forward + backward) at the example shapes; the classical time is "
        "the roofline prediction for the same region. Empty cells: no estimate."
        if device
        else "The sites were not costed (compile with <code>policy='auto'</code>, "
        "<code>device=</code> or <code>report_devices=</code> for predictions)."
    )
    return (
        '<h2 id="sites">Sites</h2>'
        + f'<p class="note">{note}</p>'
        + _table(head, rows, groups, wide=True)
    )


def _devices_section(report: Report) -> str:
    if not report.devices:
        return ""
    head = (
        "#", "site", "device", "support", "qubits", "depth", "2-qubit gates", "shots",
        "quantum time", "fidelity", "USD", "classical time",
    )  # fmt: skip
    rows = []
    for site in report.sites:
        costed = [d for d in report.devices if d in site.costs]
        for i, device in enumerate(costed):
            cost = site.costs[device]
            first = ""
            if i == 0:
                span = f' rowspan="{len(costed)}"'
                first = (
                    f'<td class="num mark"{span}>{site.index}</td>'
                    f"<td{span}><span class=key>{_dotted(site.key)}</span></td>"
                )
            marker = " (decision)" if device == report.device else ""
            support = ("yes: " if cost.get("supported") else "NO: ") + str(cost.get("reason", ""))
            last = _num(fmt_seconds(site.classical_s), site.classical_s, len(costed))
            last = last if i == 0 else ""
            rows.append(
                f'<tr class="{_e(site.decision)}">{first}<td>{_e(device + marker)}</td>'
                f'<td class="support">{_e(support)}</td>'
                f"{_num(fmt_number(cost.get('qubits')))}{_num(fmt_number(cost.get('depth')))}"
                f"{_num(fmt_number(cost.get('two_qubit_gates')))}"
                f"{_num(fmt_number(cost.get('shots')))}"
                f"{_num(fmt_seconds(cost.get('time_s')), cost.get('time_s'))}"
                f"{_num(fmt_number(cost.get('fidelity')), cost.get('fidelity'))}"
                f"{_num(fmt_usd(cost.get('money_usd')), cost.get('money_usd'))}{last}</tr>"
            )
    return (
        '<h2 id="devices">Costs on every device</h2><p class="note">One row per site and '
        "costed device: time, expected fidelity and money per training step. Sites that "
        "were not costed (unsupported) have no rows.</p>" + _table(head, rows, wide=True)
    )


def _plots_section(report: Report) -> str:
    out = ['<h2 id="plots">Cost plots</h2>']
    breakdown = plots.cost_breakdown(report)
    if breakdown is None:
        out.append('<p class="empty">No cost breakdown: no site was costed.</p>')
    else:
        out.append(
            _figure(
                breakdown,
                "Where each site's predicted quantum time goes, per device, as shares of the "
                "site's time (forward + backward): per-job latency, queue (not modelled: no "
                "published figures, so 0), shot execution, transfer and classical pre/post-"
                "processing. At the end of each bar: the total, and the classical roofline "
                "time of the same region.",
            )
        )
    times = step_times(report)
    if times is not None:
        out.append(_figure(plots.step_time(times), _step_caption(times)))
        out.append(_step_table(times))
    return "".join(out)


def _step_caption(times: StepTimes) -> str:
    left_out = (
        f" {len(times.uncosted)} sites without an estimate are left out of every sum: "
        + ", ".join(f"<span class=key>{_e(k)}</span>" for k in times.uncosted)
        + "."
        if times.uncosted
        else ""
    )
    missing = [d for d in times.devices if d.missing]
    no_bar = (
        " No “as decided” bar for "
        + ", ".join(_e(d.device) for d in missing)
        + ": an offloaded site has no time on it."
        if missing
        else ""
    )
    return (
        "Predicted time of one training step (forward + backward) over the "
        f"{len(times.sites)} costed candidate sites, per device. <b>As decided</b>: the sum "
        "over those sites of the device's predicted quantum time for each site the report "
        "offloaded plus the classical roofline time of each site it kept classical. <b>Every "
        "supported site offloaded</b>: each site's quantum time where the device supports it, "
        "its classical time where not. <b>All classical</b> (dashed): the sum of the sites' "
        "classical times. The rest of the model runs classically in every case and is not "
        "estimated, so it is not included." + left_out + no_bar
    )


def _step_table(times: StepTimes) -> str:
    rows = [
        f"<tr><td>{_e(d.device)}</td>{_num(fmt_seconds(d.as_decided_s), d.as_decided_s)}"
        f"{_num(fmt_seconds(d.all_offloaded_s), d.all_offloaded_s)}"
        f"{_num(fmt_seconds(times.classical_s), times.classical_s)}</tr>"
        for d in times.devices
    ]
    head = ("device", "as decided", "every supported site offloaded", "all classical")
    return "<details><summary>The numbers</summary>" + _table(head, rows) + "</details>"


def _timeline_section(timeline: Timeline, trace_href: str | None) -> str:
    summary = timeline.summary().as_dict()
    rows = []
    for key, value in summary.items():
        text = fmt_seconds(value) if key.endswith("_s") else fmt_number(value)
        rows.append(f"<tr><td>{_e(key)}</td>{_num(text, value)}</tr>")
    link = (
        "<p>The step's Chrome-trace JSON is written next to this page: "
        f'<a href="{_e(trace_href)}">{_e(trace_href)}</a>'
        " (open it in Perfetto or <code>chrome://tracing</code>). It is "
        "the only file this page links to; everything else is inside the page.</p>"
        if trace_href
        else ""
    )
    caption = (
        "The last HybridScheduler step: one row per thread (classical work on the main "
        "thread, quantum jobs on the worker threads), from the scheduler's measured events."
    )
    return (
        '<h2 id="timeline">Timeline</h2>'
        + link
        + _figure(plots.timeline(timeline), caption)
        + "<details><summary>Step summary</summary>"
        + _table(("total", "value"), rows)
        + "</details>"
    )


def render_html(
    report: Report,
    *,
    graph_module: Any = None,
    timeline: Timeline | None = None,
    trace_href: str | None = None,
    generated: datetime.datetime | None = None,
) -> str:
    """The review page of ``report`` as one HTML string (see ``qgraph.review``).

    ``trace_href`` is the relative link to the timeline's Chrome-trace JSON, when written.
    """
    generated = generated or datetime.datetime.now(datetime.timezone.utc)
    sections = [
        _header(report, generated),
        _graph_section(report, graph_module, timeline if has_timeline(timeline) else None),
        _sites_section(report),
        _devices_section(report),
        _plots_section(report),
    ]
    if timeline is not None and has_timeline(timeline):
        sections.append(_timeline_section(timeline, trace_href))
    sections.append(
        '<footer><p class="note">Every number on this page is computed by qgraph\'s cost model '
        "or measured by its scheduler; an empty cell means there is no estimate. Hover a "
        "number for its exact value.</p></footer>"
    )
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        '<link rel=icon href="data:,">'  # no favicon request
        f"<title>qgraph report: {_e(report.model)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(sections)}</body></html>\n"
    )
