"""The scale-out projection (``scale.py``) as text: the table results.md and results.html
show, the notes on its model and one sentence per device."""

from __future__ import annotations

from typing import Any

from qgraph.costmodel.results import format_seconds
from qgraph.reproduce.scale import COMPONENTS

__all__ = ["scale_markdown", "scale_notes", "scale_summary", "scale_table_rows"]


def _seconds(value: float | None) -> str:
    """A duration as format_seconds writes it, in years (365 d) from a year up."""
    if value is None:
        return ""
    year = 365 * 86400
    return _three_figures(value / year) + " y" if value >= year else format_seconds(value)


def _usd(value: float | None) -> str:
    if value is None:
        return "no price"
    return f"${value:,.0f}" if value >= 100 else f"${value:.3g}"


def _three_figures(value: float) -> str:
    """Three significant figures, with thousands separators: 2,090,000, 16.2, 0.5."""
    rounded = float(f"{value:.3g}")
    return f"{rounded:,.0f}" if rounded >= 1000 else f"{rounded:.3g}"


def _ratio(value: float) -> str:
    """A ratio to three significant figures: 2,090,000×."""
    return _three_figures(value) + "×"


def scale_table_rows(scale: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The scale-out table (header, rows of text) that results.md and results.html show;
    an unsupported device gets one row saying why."""
    first_n, first_m = scale["qpus"][0], scale["workers"][0]
    header = [
        "device",
        "QPUs",
        "workers",
        "step",
        "step, overlapped",
        "run",
        "USD per step",
        "USD per run",
        "critical path (share of step)",
        f"speed-up vs {first_n} QPU, {first_m} worker",
    ]
    rows: list[list[str]] = []
    told: set[str] = set()
    for r in scale["rows"]:
        if not r["supported"]:
            if r["device"] not in told:
                rows.append([r["device"], "", "", f"not supported: {r['reason']}"] + [""] * 6)
                told.add(r["device"])
            continue
        share = r["critical_share"]
        rows.append(
            [
                r["device"],
                str(r["qpus"]),
                str(r["workers"]),
                _seconds(r["step_s"]),
                _seconds(r["overlapped_step_s"]),
                _seconds(r["run_s"]),
                _usd(r["usd_per_step"]),
                _usd(r["usd_per_run"]),
                COMPONENTS[r["critical_path"]]
                + ("" if share is None else f" ({100 * share:.0f} %)"),
                "" if r["speedup"] is None else _ratio(r["speedup"]),
            ]
        )
    return header, rows


def scale_notes(scale: dict[str, Any]) -> list[str]:
    """The setting and the model's assumptions, one sentence each, for under the table."""
    return [
        f"The hybrid at batch {scale['batch']}, length {scale['length']}, "
        f"{scale['quantum_sites']} quantum sites, {scale['run_steps']:,} steps; measured "
        f"classical step {1000 * scale['classical_step_s']:.0f} ms on one worker, "
        f"{1000 * scale['classical_regions_s']:.2g} ms of it in the offloaded regions.",
        "Classical work (the step outside the offloaded regions) divides by the workers "
        "(ASSUMPTION: a perfect data-parallel split).",
        f"All-reduce of {scale['gradient_bytes']:,} B of gradients per step as a ring, "
        "2(M−1)/M × bytes / bandwidth + 2(M−1) × latency, at "
        f"{scale['allreduce_bandwidth_B_s'] / 1e9:.3g} GB/s and "
        f"{1e6 * scale['allreduce_latency_s']:.3g} µs ({scale['allreduce_source']}).",
        "Each quantum op call's circuits are spread evenly over the QPUs; each QPU's jobs, "
        "latency and money follow the device's billing model on its share, so per-job "
        "latency does not shrink with more QPUs and shots time does; transfer and the "
        "calls' CPU pre/post stay whole (ASSUMPTION: one scheduler's client link and CPU "
        "carry every QPU's data).",
        f"Queue wait: {scale['queue_source']}.",
        "A step runs classical, all-reduce and quantum one after the other; 'overlapped' is "
        "the best case max(classical + all-reduce, quantum). Money is the QPUs' only.",
    ]


def scale_summary(scale: dict[str, Any]) -> list[str]:
    """One sentence per device: its step at the grid's smallest and largest corner, the
    speed-up, the money per step at both, and the critical paths its rows name."""
    out = []
    for device in scale["devices"]:
        rows = [r for r in scale["rows"] if r["device"] == device]
        if not rows[0]["supported"]:
            out.append(f"{device}: not supported ({rows[0]['reason']}).")
            continue
        first, last = rows[0], rows[-1]
        paths = sorted({COMPONENTS[r["critical_path"]] for r in rows})
        out.append(
            f"{device}: {_seconds(first['step_s'])} a step on {first['qpus']} QPU(s) and "
            f"{first['workers']} worker(s), {_seconds(last['step_s'])} on {last['qpus']} and "
            f"{last['workers']} ({_ratio(last['speedup'])}; "
            f"{_ratio(last['step_s'] / scale['classical_step_s'])} the measured classical "
            "step); "
            + (
                "no price"
                if first["usd_per_step"] is None
                else f"{_usd(first['usd_per_step'])} a step against {_usd(last['usd_per_step'])}"
            )
            + f"; critical path: {', '.join(paths)}."
        )
    return out


def scale_markdown(scale: dict[str, Any]) -> str:
    """The scale-out projection as Markdown: notes on the model, a sentence per device,
    then the table."""
    header, rows = scale_table_rows(scale)
    lines = [" ".join(scale_notes(scale)), ""]
    lines += [f"- {sentence}" for sentence in scale_summary(scale)] + [""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
