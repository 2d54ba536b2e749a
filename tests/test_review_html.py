"""``report.to_html``: a self-contained review page that names every site and makes up nothing.

Small models (2-layer BERT, width 32, batch 4 × 8 tokens, 4 QRCE qubits) keep the module at
a few seconds; the Chromium screenshot test is marked slow.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

import qgraph
import qgraph.review
from qgraph.errors import InputError, MissingDependencyError
from qgraph.models import ModelCase, hf_model
from qgraph.report import Report
from qgraph.review.data import fmt_seconds, fmt_usd, step_times
from qgraph.scheduler import HybridScheduler, Timeline, TimelineEvent, partition_dag
from qgraph.site import Site

#: elements that never have an end tag
VOID = {"meta", "link", "br", "wbr", "img", "input", "hr", "col", "area", "base", "source"}


class Page(HTMLParser):
    """Parses the page, checks that tags balance, and keeps what the tests look at."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.rows: list[list[str]] = []  # table rows: the text of each cell
        self.qnodes: dict[str, list[str]] = {}  # id -> text of each quantum node's group
        self._cell: list[str] | None = None
        self._qnode: tuple[str, int] | None = None
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed: {self.stack}")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = []
            self.rows[-1].append("")
        node_id = attributes.get("id") or ""
        if tag == "g" and node_id.startswith("graph-qnode-"):
            self.qnodes[node_id] = []
            self._qnode = (node_id, len(self.stack))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]} at {self.getpos()}")
            return
        self.stack.pop()
        if tag in ("td", "th"):
            self._cell = None
        if self._qnode is not None and len(self.stack) == self._qnode[1]:
            self._qnode = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self.rows[-1][-1] += data
        if self._qnode is not None:
            self.qnodes[self._qnode[0]].append(data)

    @property
    def all_text(self) -> str:
        return "".join(self.text)

    def row(self, *needles: str) -> list[str]:
        """The one table row whose cells contain every needle."""
        found = [r for r in self.rows if all(any(n == c.strip() for c in r) for n in needles)]
        assert len(found) == 1, (needles, found)
        return [c.strip() for c in found[0]]


def small_bert() -> ModelCase:
    return hf_model("bert", layers=2, hidden=32, heads=2, vocab=100, batch=4, seq_len=8)


@pytest.fixture(scope="module")
def case() -> ModelCase:
    return small_bert()


@pytest.fixture(scope="module")
def auto_cm(case: ModelCase) -> qgraph.CompiledModule:
    return qgraph.compile(
        case.model, case.args, case.kwargs, qrce_qubits=4, report_devices=("ionq_aria", "exact")
    )


@pytest.fixture(scope="module")
def all_cm(case: ModelCase) -> qgraph.CompiledModule:
    return qgraph.compile(
        case.model,
        case.args,
        case.kwargs,
        qrce_qubits=4,
        policy="all",
        device="ibm_heron_r2",
        report_devices=("exact",),
    )


def render(report: Report, path: Path, **options: object) -> tuple[str, Page]:
    written = report.to_html(path, **options)  # type: ignore[arg-type]
    assert written == path and path.is_file()
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    assert not page.errors, page.errors[:5]
    return text, page


def test_page_names_every_site_and_the_header(auto_cm, tmp_path) -> None:
    report = auto_cm.report
    _, page = render(report, tmp_path / "auto.html")
    words = page.all_text
    for site in report.sites:
        assert site.key in words and site.path in words and site.reason in words
    for value in (report.model, report.frontend, report.backend, report.policy, report.device):
        assert value in words
    assert qgraph.__version__ in words and torch.__version__ in words
    for note in report.notes:
        assert note in words
    # no scheduler ran: no timeline section, no trace written
    assert "Timeline" not in words and not (tmp_path / "auto.trace.json").exists()
    assert "Nothing was offloaded" in words  # auto on this tiny model keeps everything classical


def test_per_device_numbers_are_the_reports(auto_cm, tmp_path) -> None:
    report = auto_cm.report
    _, page = render(report, tmp_path / "auto.html")
    labels = {d: f"{d} (decision)" if d == report.device else d for d in report.devices}
    rows = []  # the device table's rows from the device cell on (earlier cells are spanned)
    for row in page.rows:
        cells = [c.strip() for c in row]
        at = next((i for i, c in enumerate(cells) if c in labels.values()), None)
        if at is not None and cells[at + 1].startswith(("yes: ", "NO: ")):
            rows.append(cells[at:])
    expected = [(s, d) for s in report.sites for d in report.devices if d in s.costs]
    assert len(rows) == len(expected) == len(report.sites) * 3
    for cells, (site, device) in zip(rows, expected, strict=True):
        cost = site.costs[device]
        _, _, qubits, depth, gates, shots, time_s, fidelity, usd = cells[:9]
        assert cells[0] == labels[device] and qubits == f"{cost['qubits']:,}"
        assert depth == ("" if cost["depth"] is None else f"{cost['depth']:,}")
        assert gates == ("" if cost["two_qubit_gates"] is None else f"{cost['two_qubit_gates']:,}")
        assert shots == f"{cost['shots']:,}" and fidelity == f"{cost['fidelity']:.3g}"
        assert time_s == fmt_seconds(cost["time_s"]) and usd == fmt_usd(cost["money_usd"])
    # the exact device's closed-form QAAP has no circuit, so no depth: an empty cell
    assert any(s.kind == "attention" and s.costs["exact"]["depth"] is None for s in report.sites)


def test_breakdown_parts_sum_to_the_estimate(auto_cm) -> None:
    for site in auto_cm.report.sites:
        for cost in site.costs.values():
            if cost["supported"]:
                assert math.isclose(sum(cost["breakdown_s"].values()), cost["time_s"], rel_tol=1e-9)
            else:
                assert cost["breakdown_s"] is None


def test_step_times_sum_the_reports_estimates(all_cm, tmp_path) -> None:
    report = all_cm.report
    times = step_times(report)
    assert times is not None
    costed = [s for s in report.sites if s.classical_s is not None]
    assert math.isclose(times.classical_s, sum(s.classical_s for s in costed))
    exact = next(d for d in times.devices if d.device == "exact")
    expected = sum(
        s.costs["exact"]["time_s"] if s.decision == "quantum" else s.classical_s for s in costed
    )
    assert exact.as_decided_s is not None and math.isclose(exact.as_decided_s, expected)
    _, page = render(report, tmp_path / "all.html")
    row = page.row("exact", fmt_seconds(exact.as_decided_s))
    assert fmt_seconds(times.classical_s) in row
    assert "the classical roofline time of each site it kept classical" in page.all_text


def test_partition_graph_labels_every_quantum_node(all_cm, tmp_path) -> None:
    report = all_cm.report
    _text, page = render(report, tmp_path / "all.html")
    graphs = [
        a for tag, a in page.tags if tag == "svg" and a.get("aria-label") == "partition graph"
    ]
    assert len(graphs) == 1
    dag = partition_dag(report.graph_module)
    assert len(page.qnodes) == len(dag.partitions("quantum")) == len(report.quantum_sites) == 3
    labels = ["".join(parts) for parts in page.qnodes.values()]
    for site in report.quantum_sites:
        (label,) = [x for x in labels if site.key in x]
        assert site.op is not None and site.op.upper() in label and f"site {site.index}" in label
    # several figures on one page: their ids must not collide
    ids = [a["id"] for _, a in page.tags if a.get("id")]
    assert len(ids) == len(set(ids))


def test_page_is_self_contained(all_cm, tmp_path) -> None:
    text, page = render(all_cm.report, tmp_path / "all.html")
    assert "http://" not in text and "https://" not in text
    for tag, attributes in page.tags:
        assert tag not in ("script", "iframe", "object", "embed")
        for name in ("src", "href", "xlink:href"):
            value = attributes.get(name)
            if value is not None:
                assert value.startswith(("#", "data:")), (tag, name, value)
    assert sum(tag == "svg" for tag, _ in page.tags) == 3  # graph, breakdown, step time


def test_timeline_section_and_trace_after_a_scheduler_step(
    all_cm, case, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(all_cm.report, "timeline", None)  # restored afterwards
    with HybridScheduler(all_cm, microbatches=2) as scheduler, torch.no_grad():
        scheduler.run(*case.args, **case.kwargs)
    assert all_cm.report.timeline is scheduler.timeline
    _text, page = render(all_cm.report, tmp_path / "step one.html")
    trace = tmp_path / "step one.trace.json"
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e.get("cat") == "quantum" for e in events)
    links = [a["href"] for tag, a in page.tags if tag == "a" and "href" in a]
    assert links == ["step%20one.trace.json"]
    assert "Timeline" in page.all_text and "written next to this page" in page.all_text
    assert "Times are the last scheduler step's measurements" in page.all_text


def test_a_timeline_of_another_graph_does_not_weigh_this_one(all_cm, tmp_path) -> None:
    timeline = Timeline()
    timeline.add(TimelineEvent("x", "classical", 0.0, 1e-3, timeline.main_thread, node="nowhere"))
    _, page = render(all_cm.report, tmp_path / "other.html", timeline=timeline)
    assert "ran another graph" in page.all_text
    assert "Times are" not in page.all_text and "Timeline" in page.all_text
    assert (tmp_path / "other.trace.json").is_file()
    assert any(a.get("aria-label") == "scheduler timeline" for tag, a in page.tags if tag == "svg")


def test_bad_paths_give_clear_errors(auto_cm, tmp_path) -> None:
    with pytest.raises(InputError, match="does not exist; create it first"):
        auto_cm.report.to_html(tmp_path / "missing" / "report.html")
    with pytest.raises(InputError, match="is a directory"):
        auto_cm.report.to_html(tmp_path)


def test_report_without_graph_or_costs_still_renders(tmp_path) -> None:
    site = Site(
        0,
        "attention",
        "layers.0.<attn>",
        "sdpa",
        "sdpa_1",
        key="layers.0.<attn> & $x$",
        decision="quantum",
        op="qaap",
        reason="policy 'all' <b>offloads</b>",
    )
    report = Report("<script>alert(1)</script>", "export", "exact", "all", sites=[site])
    report.notes.append('a "note" <img src=x>')
    text, page = render(report, tmp_path / "bare.html")
    words = page.all_text
    assert "The partition graph is unavailable" in words
    assert "were not costed" in words and "No cost breakdown" in words
    assert "<script" not in text and "<img" not in text and "<b>offloads" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert site.key in words and report.model in words and report.notes[0] in words
    assert not any(tag == "svg" for tag, _ in page.tags)


def test_costed_sites_with_odd_names_draw(tmp_path) -> None:
    cost = {
        "supported": True,
        "reason": "fits",
        "qubits": 3,
        "depth": None,
        "two_qubit_gates": None,
        "shots": 100,
        "time_s": 2.0,
        "fidelity": 0.9,
        "money_usd": 0.004,
        "breakdown_s": {
            "latency_s": 1.5,
            "queue_s": 0.0,
            "execution_s": 0.5,
            "transfer_s": 0.0,
            "classical_s": 0.0,
        },
    }
    site = Site(0, "embedding", "emb", "embedding", "e", key="emb $a$ <&>", costs={"dev$": cost})
    site.classical_s = 1e-6
    report = Report("m", "export", "exact", "auto", sites=[site], device="dev$")
    _text, page = render(report, tmp_path / "odd.html")
    assert sum(tag == "svg" for tag, _ in page.tags) == 2  # breakdown and step time
    assert "$0.004" in page.all_text and "emb $a$ <&>" in page.all_text


def test_missing_matplotlib_names_the_extra(auto_cm, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(qgraph.review, "_matplotlib_available", lambda: False)
    with pytest.raises(MissingDependencyError, match=r"pip install 'qgraph\[report\]'"):
        auto_cm.report.to_html(tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_report_fields_stay_out_of_repr_and_equality(auto_cm) -> None:
    report = auto_cm.report
    assert report.graph_module is auto_cm.graph_module
    assert "graph_module" not in repr(report)
    assert dataclasses.replace(report, graph_module=None) == report


@pytest.mark.slow
def test_page_renders_in_headless_chromium(all_cm, case, tmp_path, monkeypatch) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    import matplotlib.image

    monkeypatch.setattr(all_cm.report, "timeline", None)
    with HybridScheduler(all_cm, microbatches=2) as scheduler, torch.no_grad():
        scheduler.run(*case.args, **case.kwargs)
    page = all_cm.report.to_html(tmp_path / "report.html")
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1280,2000",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels.std() > 0.05
    colours = {tuple(p) for p in (pixels[::7, ::7].reshape(-1, 3) * 255).round().astype(int)}
    assert len(colours) > 50  # text, tables and the graph's coloured boxes
