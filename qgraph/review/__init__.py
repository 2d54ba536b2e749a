"""A self-contained HTML review page of a compile report: ``cm.report.to_html(path)``.

The page shows the partition graph, every site with its decision, reason and predicted
costs on each costed device, plots of the cost breakdown and of the predicted step time
against the classical baseline, and the last HybridScheduler step's timeline. It needs
matplotlib (``pip install 'qgraph[report]'``) and nothing else beyond qgraph's own packages.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from qgraph.errors import InputError, MissingDependencyError

if TYPE_CHECKING:
    from qgraph.report import Report
    from qgraph.scheduler import Timeline

__all__ = ["render_html", "trace_path", "write_html"]


def _matplotlib_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _require_matplotlib() -> None:
    if not _matplotlib_available():
        raise MissingDependencyError(
            "the HTML report draws its figures with matplotlib, which is not installed: "
            "pip install 'qgraph[report]'."
        )


def trace_path(path: str | Path) -> Path:
    """Where ``write_html(report, path)`` puts the timeline's trace: ``<stem>.trace.json``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.trace.json")


def render_html(
    report: Report,
    *,
    graph_module: Any = None,
    timeline: Timeline | None = None,
    trace_href: str | None = None,
) -> str:
    """The review page of ``report`` as one HTML string; nothing is written.

    ``graph_module`` (the rewritten fx.GraphModule) gives the partition graph, ``timeline``
    (a HybridScheduler step) the timeline section, ``trace_href`` the relative link to that
    timeline's Chrome-trace JSON when it was written somewhere.
    """
    _require_matplotlib()
    from qgraph.review import html  # plots with the optional matplotlib

    return html.render_html(
        report, graph_module=graph_module, timeline=timeline, trace_href=trace_href
    )


def write_html(
    report: Report,
    path: str | Path,
    *,
    graph_module: Any = None,
    timeline: Timeline | None = None,
) -> Path:
    """Write the review page of ``report`` to ``path`` (and its trace JSON next to it).

    The Chrome trace of ``timeline`` goes to ``trace_path(path)``, linked from the page by
    its file name; without a timeline (or with an empty one) no trace is written and the
    page has no timeline section. Raises InputError when ``path`` is a directory or its
    folder does not exist, MissingDependencyError without matplotlib.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(
            f"{path} is a directory; give the HTML file's path, e.g. {path / 'report.html'}."
        )
    if not path.parent.is_dir():
        raise InputError(
            f"cannot write {path}: the folder {path.parent} does not exist; create it first."
        )
    _require_matplotlib()
    from qgraph.review import html  # plots with the optional matplotlib

    trace_href = None
    if timeline is not None and timeline.events:
        trace = timeline.to_chrome_trace(trace_path(path))
        trace_href = quote(trace.name)
    page = html.render_html(
        report, graph_module=graph_module, timeline=timeline, trace_href=trace_href
    )
    path.write_text(page, encoding="utf-8")
    return path
