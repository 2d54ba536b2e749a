"""The review page's figures, drawn with matplotlib's object API and returned as inline SVG.

Figures are built with ``matplotlib.figure.Figure`` and saved with the SVG backend, never
through pyplot, so nothing global (current figure, GUI backend) is touched and drawing works
headless. Text stays text in the SVG (``svg.fonttype = "none"``), so the page can be searched
and the quantum nodes' labels are readable by tests and screen readers.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from html import escape
from typing import TYPE_CHECKING, Any, Literal

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from qgraph.costing import BREAKDOWN_PARTS
from qgraph.review.data import GraphNode, StepTimes, fmt_seconds

if TYPE_CHECKING:
    from qgraph.report import Report
    from qgraph.scheduler import PartitionDAG, Timeline

#: fill and edge colours, one pair per kind of box
COLORS: dict[str, tuple[str, str]] = {
    "classical": ("#dbe5f1", "#41618c"),
    "qaap": ("#f4d6ea", "#9c2f7d"),
    "qrce": ("#fde4c4", "#b4610d"),
}
#: the cost model's time parts (costing.BREAKDOWN_PARTS) as the legend names them
PART_LABELS: dict[str, str] = {
    "latency_s": "job latency",
    "queue_s": "queue",
    "execution_s": "execution (shots)",
    "transfer_s": "transfer",
    "classical_s": "classical pre/post",
}
PART_COLORS: dict[str, str] = {
    "latency_s": "#8da0cb",
    "queue_s": "#b3b3b3",
    "execution_s": "#e78ac3",
    "transfer_s": "#a6d854",
    "classical_s": "#fc8d62",
}
#: timeline colours per event kind
EVENT_COLORS: dict[str, str] = {
    "classical": "#5b7fb4",
    "quantum": "#9c2f7d",
    "cache": "#4daf4a",
    "backward": "#e6a23c",
}
FONT_SIZE = 9


@contextmanager
def _svg_options() -> Iterator[None]:
    # rc_context is the one documented way to set the SVG writer's options; it restores
    # them. Only the save runs under it: everything drawn sets its style explicitly.
    with matplotlib.rc_context(
        {
            "svg.fonttype": "none",  # text as <text>, not glyph paths
            "svg.hashsalt": "qgraph-review",  # stable ids: the same report, the same page
        }
    ):
        yield


def _mpl(text: str) -> str:
    """Text for tick labels: a "$" would start mathtext (ax.text takes parse_math=False)."""
    return text.replace("$", r"\$")


def _short(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def to_svg(fig: Figure, prefix: str, title: str) -> str:
    """The figure as an ``<svg>`` element for inline use: no XML prolog, no namespace URLs.

    ``prefix`` is put before every id (and every reference to one), so several figures on
    one page cannot clash (matplotlib numbers them per figure: "figure_1", "axes_1", ...);
    ``title`` becomes the element's accessible name.
    """
    buffer = io.StringIO()
    with _svg_options():
        fig.savefig(
            buffer,
            format="svg",
            bbox_inches="tight",
            metadata={"Creator": None, "Date": None, "Format": None, "Type": None},
        )
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    # HTML parses inline SVG (and xlink:href) without namespace declarations
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    svg = re.sub(r'\bid="', f'id="{prefix}-', svg)
    svg = svg.replace("url(#", f"url(#{prefix}-").replace('href="#', f'href="#{prefix}-')
    label = escape(title, quote=True)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{label}" ', 1)


def _figure(width: float, height: float, rows: int = 1, **grid: Any) -> tuple[Figure, list[Axes]]:
    """A figure with ``rows`` stacked axes, spines only left and bottom."""
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = list(fig.subplots(rows, 1, squeeze=False, **grid)[:, 0])
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=FONT_SIZE - 1)
    return fig, axes


def _legend(
    fig: Figure, handles: list[Any], loc: Literal["outside upper left", "outside lower center"]
) -> None:
    if handles:
        fig.legend(
            handles=handles,
            loc=loc,
            ncols=len(handles),
            frameon=False,
            fontsize=FONT_SIZE - 1,
        )


# -- the partition graph ------------------------------------------------------------------


def _node_text(node: GraphNode) -> str:
    measured = f" · {fmt_seconds(node.weight_s)}" if node.weight_s > 0 else ""
    if node.kind == "classical":
        return f"{node.name}: classical · {node.ops} ops{measured}"
    if node.site is not None:
        where = f"site {node.site.index} · {node.site.key}"
    else:  # the op's label matched no site of the report (another compile's graph?)
        where = node.label or node.name
    return f"{(node.op or 'quantum').upper()} · {where}{measured}"


def partition_graph(dag: PartitionDAG, nodes: Sequence[GraphNode]) -> str:
    """The partition DAG as SVG, top to bottom: one row per (level, classical | quantum).

    Classical partitions sit in the left column and quantum nodes to their right, so an
    edge between two classical partitions runs down the left column and never crosses a
    quantum node. Each quantum node's group has the id ``graph-qnode-<i>``.
    """
    rows = sorted({(n.level, n.kind == "quantum") for n in nodes})
    row_of = {key: i for i, key in enumerate(rows)}
    place: dict[str, tuple[float, float]] = {}
    columns: dict[int, int] = {}
    for node in nodes:
        row = row_of[(node.level, node.kind == "quantum")]
        column = 0
        if node.kind == "quantum":
            column = columns[row] = columns.get(row, 0) + 1
        place[node.name] = (float(column), -float(row))
    width = max(columns.values(), default=0) + 1
    fig, (ax,) = _figure(3.4 * width + 0.4, 0.42 * max(len(rows), 1) + 0.5)
    ax.set_axis_off()
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(-max(len(rows), 1) + 0.5, 0.5)
    texts = {}
    quantum_index = 0
    for node in nodes:
        fill, edge = COLORS["classical" if node.kind == "classical" else node.op or "qaap"]
        x, y = place[node.name]
        text = ax.text(
            x,
            y,
            _node_text(node),
            ha="center",
            va="center",
            fontsize=FONT_SIZE - 1,
            parse_math=False,
            zorder=3,
            bbox={"boxstyle": "round,pad=0.4", "fc": fill, "ec": edge, "lw": 1.2},
        )
        if node.kind == "quantum":
            text.set_gid(f"qnode-{quantum_index}")
            quantum_index += 1
        else:
            text.set_gid(f"cnode-{node.name}")
        texts[node.name] = text
    for source, target in dag.graph.edges:
        (x0, y0), (x1, y1) = place[source], place[target]
        crossed = any(
            x == x0 and y1 < y < y0 for n, (x, y) in place.items() if n not in (source, target)
        )
        long = y0 - y1 > 2  # skips a level (a mask or residual used far down): drawn faint
        ax.annotate(
            "",
            xy=(x1, y1),
            xytext=(x0, y0),
            zorder=1 if long else 2,
            arrowprops={
                "arrowstyle": "-|>",
                "color": "#aab2c0" if long else "#4a4a4a",
                "lw": 0.7 if long else 1.0,
                "shrinkA": 1,
                "shrinkB": 1,
                "patchA": texts[source].get_bbox_patch(),
                "patchB": texts[target].get_bbox_patch(),
                # bend around the boxes of the same column that a straight line would cross
                "connectionstyle": f"arc3,rad={0.35 if x0 == x1 and crossed else 0}",
            },
        )
    handles = [Patch(fc=COLORS["classical"][0], ec=COLORS["classical"][1], label="classical")]
    for op in ("qaap", "qrce"):
        if any(n.op == op for n in nodes):
            handles.append(Patch(fc=COLORS[op][0], ec=COLORS[op][1], label=f"quantum: {op}"))
    _legend(fig, handles, "outside upper left")
    return to_svg(fig, "graph", "partition graph")


# -- cost plots -----------------------------------------------------------------------------


def cost_breakdown(report: Report) -> str | None:
    """Per device, each costed site's predicted quantum time split into the model's parts.

    Bars are shares of the site's time (the parts span orders of magnitude, which a log axis
    cannot stack honestly); the total is written at the end of each bar, next to the
    classical time it competes with. None when no site carries a breakdown.
    """
    panels = []
    for device in report.devices:
        bars = [
            (site, site.costs[device])
            for site in report.sites
            if site.costs.get(device, {}).get("breakdown_s") and site.costs[device]["time_s"]
        ]
        if bars:
            panels.append((device, bars))
    if not panels:
        return None
    heights = [0.26 * len(bars) + 0.55 for _, bars in panels]
    fig, axes = _figure(9.0, sum(heights) + 0.5, len(panels), height_ratios=heights)
    used: set[str] = set()
    for ax, (device, bars) in zip(axes, panels, strict=True):
        y = list(range(len(bars)))
        left = [0.0] * len(bars)
        for part in BREAKDOWN_PARTS:
            shares = [cost["breakdown_s"][part] / cost["time_s"] for _, cost in bars]
            if not any(shares):
                continue
            used.add(part)
            ax.barh(y, shares, left=left, color=PART_COLORS[part], height=0.65)
            left = [a + b for a, b in zip(left, shares, strict=True)]
        for row, (site, cost) in enumerate(bars):
            classical = fmt_seconds(site.classical_s)
            note = fmt_seconds(cost["time_s"]) + (f"  (classical {classical})" if classical else "")
            ax.text(1.01, row, note, va="center", fontsize=FONT_SIZE - 1, parse_math=False)
        ax.set_yticks(y, [_mpl(_short(f"{site.index} · {site.key}", 40)) for site, _ in bars])
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0", "25%", "50%", "75%", "100%"])
        decision = " (decision device)" if device == report.device else ""
        ax.set_title(_mpl(f"{device}{decision}"), loc="left", fontsize=FONT_SIZE)
    shown = [p for p in BREAKDOWN_PARTS if p in used]
    _legend(
        fig,
        [Patch(color=PART_COLORS[p], label=PART_LABELS[p]) for p in shown],
        "outside lower center",
    )
    return to_svg(fig, "breakdown", "cost breakdown per site and device")


def step_time(times: StepTimes) -> str:
    """Per device: the costed sites' predicted time as decided and with every site offloaded,
    against the all-classical time of the same sites (log scale: they differ by decades)."""
    devices = list(times.devices)
    fig, (ax,) = _figure(9.0, 0.5 * len(devices) + 1.1)
    y = list(range(len(devices)))
    series = (
        ("as decided", "#41618c", [d.as_decided_s for d in devices], -0.18),
        ("every supported site offloaded", "#9c2f7d", [d.all_offloaded_s for d in devices], 0.18),
    )
    for label, color, values, shift in series:
        bars = [(r + shift, v) for r, v in zip(y, values, strict=True) if v is not None]
        if not bars:
            continue
        ax.barh([r for r, _ in bars], [v for _, v in bars], height=0.34, color=color, label=label)
        for r, v in bars:
            ax.text(v, r, " " + fmt_seconds(v), va="center", fontsize=FONT_SIZE - 2)
    ax.axvline(times.classical_s, color="#222222", ls="--", lw=1.1, label="all classical")
    ax.set_xscale("log")
    ax.set_yticks(y, [_mpl(d.device) for d in devices])
    ax.invert_yaxis()
    ax.set_xlabel(
        "predicted seconds per training step (forward + backward), candidate sites only",
        fontsize=FONT_SIZE - 1,
    )
    ax.margins(x=0.3)
    _legend(fig, ax.get_legend_handles_labels()[0], "outside upper left")
    return to_svg(fig, "steptime", "predicted step time per device")


# -- the timeline ---------------------------------------------------------------------------


def timeline(timeline: Timeline) -> str:
    """The scheduler's step as a Gantt chart: one row per thread, the main thread on top.

    A job's hatched start is its queue time, where the backend reported one.
    """
    threads = [timeline.main_thread]
    for event in timeline.events:
        if event.thread not in threads:
            threads.append(event.thread)
    fig, (ax,) = _figure(9.0, 0.32 * len(threads) + 1.1)
    handles = []
    for kind, color in EVENT_COLORS.items():
        for row, thread in enumerate(threads):
            spans = [
                (e.start_s * 1e3, max(e.duration_s, 0.0) * 1e3)
                for e in timeline.events
                if e.thread == thread and e.kind == kind
            ]
            if spans:
                ax.broken_barh(spans, (row - 0.35, 0.7), facecolors=color, edgecolors=color)
        if any(e.kind == kind for e in timeline.events):
            handles.append(Patch(color=color, label=kind))
    queued = [
        (threads.index(e.thread), e.start_s * 1e3, min(e.queue_s, e.duration_s) * 1e3)
        for e in timeline.events
        if e.kind == "quantum" and e.queue_s
    ]
    for row, start, length in queued:
        ax.broken_barh(
            [(start, length)], (row - 0.35, 0.7), facecolors="white", edgecolors="#9c2f7d",
            hatch="////",
        )  # fmt: skip
    if queued:
        handles.append(Patch(fc="white", ec="#9c2f7d", hatch="////", label="queue"))
    ax.set_yticks(range(len(threads)), [_mpl(_short(t, 24)) for t in threads])
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds from the start of the step", fontsize=FONT_SIZE - 1)
    ax.set_xlim(left=0)
    _legend(fig, handles, "outside upper left")
    return to_svg(fig, "timeline", "scheduler timeline")
