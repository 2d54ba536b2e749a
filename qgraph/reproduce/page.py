"""results.html: the reproduction's figures and tables on one self-contained page.

Everything on the page is read from ``results.json`` and the runs' ``metrics.jsonl``; the
figures are inline SVG drawn with matplotlib's object API (``qgraph.review.plots.to_svg``).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from qgraph.reproduce.scale_tables import scale_notes, scale_summary, scale_table_rows
from qgraph.reproduce.tables import results_table_rows, spread_note
from qgraph.reproduce.train import METRICS
from qgraph.review.plots import to_svg

#: one colour per arm, the same in every figure
ARM_COLORS = {
    "classical": "#41618c",
    "qaap": "#9c2f7d",
    "qrce": "#b4610d",
    "hybrid": "#2c8c5a",
    "qrce_control": "#7f7f7f",
    "qaap_shots": "#d1495b",
}
#: logged training losses averaged per point of the loss curves (they are noisy per batch)
SMOOTHING = 5

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.5em 0; } figcaption { font-size: 13px; color: #555; }
"""


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _figure(width: float = 7.0, height: float = 3.2) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.subplots()
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _finish(ax: Axes, x_label: str, y_label: str, log2_x: bool = False) -> None:
    """Axis labels and the legend; a base-2 log x axis for lengths and shot counts."""
    if log2_x:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.legend(fontsize=8, frameon=False)


def read_metrics(folder: Path, runs: Sequence[dict[str, Any]]) -> dict[tuple[str, int], list]:
    """(arm, seed) → the run's metric records (missing files give no entry)."""
    found = {}
    for run in runs:
        path = folder / run["arm"] / f"seed{run['seed']}" / METRICS
        if path.is_file():
            found[(run["arm"], run["seed"])] = [
                json.loads(line) for line in path.read_text().splitlines() if line
            ]
    return found


def _smoothed(values: list[float]) -> list[float]:
    return [statistics.fmean(values[max(0, i - SMOOTHING + 1) : i + 1]) for i in range(len(values))]


def _loss_figure(metrics: dict[tuple[str, int], list], x_key: str, x_label: str) -> str:
    fig, ax = _figure()
    labelled: set[str] = set()
    for (arm, _seed), records in sorted(metrics.items()):
        train = [r for r in records if r["kind"] == "train"]
        if not train:
            continue
        ax.plot(
            [r[x_key] for r in train],
            _smoothed([r["loss"] for r in train]),
            color=ARM_COLORS.get(arm, "black"),
            linewidth=1,
            alpha=0.8,
            label=None if arm in labelled else arm,
        )
        labelled.add(arm)
    _finish(ax, x_label, f"training loss (mean of {SMOOTHING} logged)")
    return to_svg(fig, f"loss-{x_key}", f"training loss against {x_label}")


def _accuracy_figure(metrics: dict[tuple[str, int], list]) -> str:
    fig, ax = _figure()
    labelled: set[str] = set()
    for (arm, _seed), records in sorted(metrics.items()):
        evals = [r for r in records if r["kind"] == "eval"]
        if not evals:
            continue
        ax.plot(
            [r["step"] for r in evals],
            [100 * r["accuracy"] for r in evals],
            marker="o",
            color=ARM_COLORS.get(arm, "black"),
            linewidth=1,
            label=None if arm in labelled else arm,
        )
        labelled.add(arm)
    _finish(ax, "training step", "dev accuracy (%)")
    return to_svg(fig, "accuracy", "dev accuracy after each epoch, every seed")


def _bars_figure(table: list[dict[str, Any]], key: str, label: str, scale: float) -> str:
    fig, ax = _figure(height=2.8)
    arms = [row["arm"] for row in table]
    values = [scale * row[key] for row in table]
    errors = None
    if key == "accuracy_mean":
        errors = [scale * (row["accuracy_std"] or 0.0) for row in table]
    ax.bar(
        arms,
        values,
        yerr=errors,
        capsize=4,
        color=[ARM_COLORS.get(a, "black") for a in arms],
    )
    ax.set_ylabel(label)
    ax.tick_params(axis="x", labelsize=8)
    if key == "accuracy_mean":
        ax.set_ylim(max(0.0, min(values) - 10), min(100.0, max(values) + 5))
    return to_svg(fig, f"bars-{key}", label)


def _sweep_figure(sweep: list[dict[str, Any]]) -> str:
    fig, ax = _figure()
    for arm in sorted({r["arm"] for r in sweep}):
        rows = [r for r in sweep if r["arm"] == arm]
        ax.plot(
            [r["length"] for r in rows],
            [r["median_step_s"] for r in rows],
            marker="o",
            color=ARM_COLORS.get(arm, "black"),
            label=arm,
        )
    ax.set_yscale("log")
    _finish(ax, "sequence length", "median training step (s)", log2_x=True)
    return to_svg(fig, "sweep", "training step time against sequence length")


def _shots_figure(shots: dict[str, Any]) -> str:
    fig, ax = _figure()
    for seed in sorted({r["seed"] for r in shots["rows"]}):
        rows = [r for r in shots["rows"] if r["seed"] == seed]
        line = ax.plot(
            [r["shots"] for r in rows],
            [100 * r["accuracy"] for r in rows],
            marker="o",
            label=f"seed {seed}, sampled",
        )
        ax.axhline(
            100 * rows[0]["exact_accuracy"],
            color=line[0].get_color(),
            linestyle=":",
            label=f"seed {seed}, exact",
        )
    _finish(ax, "shots per circuit", "dev accuracy (%)", log2_x=True)
    return to_svg(fig, "shots", "QAAP dev accuracy against shots")


def _aer_figure(aer: dict[str, Any]) -> str:
    fig, ax = _figure()
    lengths = [r["length"] for r in aer["rows"]]
    ax.plot(lengths, [r["noisy_error"] for r in aer["rows"]], marker="o", label=aer["noise"])
    ax.plot(lengths, [r["shots_only_error"] for r in aer["rows"]], marker="o", label="no noise")
    _finish(ax, "sequence length", "relative error of the output", log2_x=True)
    return to_svg(fig, "aer", "QAAP attention error on noisy Aer against length")


#: line colours of the scale figure, one per projection device
DEVICE_COLORS = {
    "ibm_heron_r2": "#41618c",
    "ibm_heron_r3": "#2c8c5a",
    "ionq_aria": "#b4610d",
    "ideal_ft": "#9c2f7d",
}


def scale_figure(scale: dict[str, Any]) -> str:
    """Step time against N QPUs, one line per device, at the fewest workers (solid) and
    the most (dashed); log axes. An inline ``<svg>`` string (needs matplotlib)."""
    fig = Figure(figsize=(7.0, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.spines[["top", "right"]].set_visible(False)
    fewest, most = scale["workers"][0], scale["workers"][-1]
    for device in scale["devices"]:
        styles = [(fewest, "-", "o")] + ([(most, "--", "x")] if most != fewest else [])
        for m, style, marker in styles:
            rows = [
                r
                for r in scale["rows"]
                if r["device"] == device and r["workers"] == m and r["supported"]
            ]
            if not rows:
                continue
            ax.plot(
                [r["qpus"] for r in rows],
                [r["step_s"] for r in rows],
                style,
                marker=marker,
                color=DEVICE_COLORS.get(device),
                label=f"{device}, {m} worker{'s' if m > 1 else ''}",
            )
    ax.set_xscale("log", base=2)
    ax.set_xticks(scale["qpus"], [str(n) for n in scale["qpus"]])
    ax.set_yscale("log")
    ax.set_xlabel("QPUs")
    ax.set_ylabel("projected training step (s)")
    # beside the axes: the lines fill the plot from corner to corner
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return to_svg(fig, "scale", "projected training step against the number of QPUs")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(title: str, *parts: str) -> str:
    return f"<h2>{_e(title)}</h2>" + "".join(parts)


def _figure_html(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>"


def render_page(results: dict[str, Any], folder: Path) -> str:
    """The page's HTML."""
    preset = results["preset"]
    metrics = read_metrics(folder, results["runs"])
    parts = [
        f"<h1>qgraph reproduce: preset <code>{_e(preset['name'])}</code></h1>",
        f"<p>{_e(preset['description'])}. Data: {_e(results['data'])}. Machine: "
        f"{_e(results['machine']['platform'])}, torch {_e(results['machine']['torch'])}, "
        f"{_e(results['machine']['threads'])} threads, {_e(results['machine']['device'])}.</p>",
        _section(
            "Accuracy and step time",
            _table(*results_table_rows(results)),
            f"<p>{_e(spread_note(results['table']))}</p>",
            _figure_html(
                _bars_figure(results["table"], "accuracy_mean", "dev accuracy (%)", 100),
                "Final dev accuracy per arm: mean over seeds, bars ± one standard deviation.",
            ),
            _figure_html(
                _bars_figure(results["table"], "median_step_s", "median step (s)", 1),
                "Median training step per arm (the median over seeds of each run's median).",
            ),
        ),
        _section(
            "Training curves",
            _figure_html(
                _loss_figure(metrics, "step", "training step"),
                "Training loss against step, one line per run.",
            ),
            _figure_html(
                _loss_figure(metrics, "wall_s", "training wall time (s)"),
                "Training loss against the run's own training time (steps only).",
            ),
            _figure_html(_accuracy_figure(metrics), "Dev accuracy after each epoch."),
        ),
    ]
    if results.get("sweep"):
        parts.append(
            _section(
                "Step time against sequence length",
                _figure_html(
                    _sweep_figure(results["sweep"]),
                    "Median training step of a model of the preset's size on random ids.",
                ),
            )
        )
    noise = results.get("noise") or {}
    if noise.get("shots", {}).get("rows"):
        shots = noise["shots"]
        parts.append(
            _section(
                "Shot noise",
                _figure_html(
                    _shots_figure(shots),
                    "The trained QAAP weights evaluated with sampled attention, read-out "
                    f"error {shots['readout_error']:.4f} ({shots['readout_error_source']}).",
                ),
            )
        )
    if noise.get("aer", {}).get("rows"):
        aer = noise["aer"]
        parts.append(
            _section(
                "Hardware noise against length",
                _figure_html(
                    _aer_figure(aer),
                    f"QAAP attention output on qiskit-aer with {aer['noise']}'s noise model "
                    f"and {aer['shots']} shots, against the exact kernel; head dimension "
                    f"{aer['head_dim']}.",
                ),
            )
        )
    scale = results.get("scale")
    if scale:
        parts.append(
            _section(
                "Scale-out projection",
                f"<p>{_e(' '.join(scale_notes(scale)))}</p>",
                "<ul>" + "".join(f"<li>{_e(s)}</li>" for s in scale_summary(scale)) + "</ul>",
                _figure_html(
                    scale_figure(scale),
                    "The cost model's training step of the hybrid against the QPUs its "
                    f"circuits are spread over, at {scale['workers'][0]} classical worker(s)"
                    + (
                        f" and at {scale['workers'][-1]} (dashed)"
                        if len(scale["workers"]) > 1
                        else ""
                    )
                    + "; log axes.",
                ),
                _table(*scale_table_rows(scale)),
            )
        )
    claims = results.get("claims") or []
    if claims:
        parts.append(
            _section(
                "The paper's claims",
                _table(
                    ["paper's claim", "qgraph's figure", "conditions", "verdict"],
                    [[c["claim"], c["figure"], c["conditions"], c["verdict"]] for c in claims],
                ),
            )
        )
    body = "".join(parts)
    title = f"qgraph reproduce: {preset['name']}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}'
        f"</title><style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


def write_page(results: dict[str, Any], folder: Path) -> Path:
    """Write ``folder/results.html``; returns its path."""
    path = folder / "results.html"
    path.write_text(render_page(results, folder))
    return path
