"""The run's tables: per-arm summaries over seeds, their spread, and the results in Markdown."""

from __future__ import annotations

import statistics
from typing import Any

from qgraph.reproduce.claims import claims_markdown
from qgraph.reproduce.noise import noise_markdown
from qgraph.reproduce.projection import projection_markdown
from qgraph.reproduce.scale_tables import scale_markdown

__all__ = ["results_markdown", "results_table_rows", "spread_note", "summarise"]


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else None


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per arm: accuracy mean and std over seeds, step time and its ratio to
    classical, and whether the accuracy difference to classical exceeds the seed spread."""
    rows = []
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_arm.setdefault(run["arm"], []).append(run)
    reference = by_arm.get("classical")
    ref_step = statistics.median(r["median_step_s"] for r in reference) if reference else None
    ref_acc = _mean_std([r["final_accuracy"] for r in reference]) if reference else None
    for arm, arm_runs in by_arm.items():
        accuracy, spread = _mean_std([r["final_accuracy"] for r in arm_runs])
        step_s = statistics.median(r["median_step_s"] for r in arm_runs)
        row: dict[str, Any] = {
            "arm": arm,
            "seeds": [r["seed"] for r in arm_runs],
            "accuracy_mean": accuracy,
            "accuracy_std": spread,
            "median_step_s": step_s,
            "step_time_vs_classical": step_s / ref_step if ref_step else None,
            "parameters": arm_runs[0]["parameters"],
            "quantum_calls": sum(r["quantum_calls"] for r in arm_runs),
        }
        if ref_acc is not None and arm != "classical":
            difference = accuracy - ref_acc[0]
            spreads = [s for s in (spread, ref_acc[1]) if s is not None]
            row["accuracy_vs_classical"] = difference
            row["beyond_seed_spread"] = None if len(spreads) < 2 else abs(difference) > sum(spreads)
        rows.append(row)
    return rows


def spread_note(table: list[dict[str, Any]]) -> str:
    """One sentence per arm: does its accuracy difference to classical exceed the seed spread?"""
    notes = []
    for row in table:
        if "accuracy_vs_classical" not in row:
            continue
        delta = 100 * row["accuracy_vs_classical"]
        beyond = row.get("beyond_seed_spread")
        if beyond is None:
            verdict = "one seed, so the spread is unknown"
        elif beyond:
            verdict = "larger than the two arms' seed spreads (std) added together"
        else:
            verdict = "within the two arms' seed spreads (std) added together"
        notes.append(f"{row['arm']}: {delta:+.1f} points against classical, {verdict}.")
    return " ".join(notes)


def results_table_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The per-arm table (header, rows of text) that results.md and results.html show."""
    header = [
        "arm",
        "seeds",
        "dev accuracy",
        "Δ vs classical",
        "beyond seed spread",
        "median step",
        "step vs classical",
        "parameters",
        "quantum op calls",
    ]
    rows = []
    for row in results["table"]:
        std = row["accuracy_std"]
        accuracy = f"{100 * row['accuracy_mean']:.1f} %" + (
            f" ± {100 * std:.1f}" if std is not None else ""
        )
        delta = row.get("accuracy_vs_classical")
        beyond = row.get("beyond_seed_spread")
        if "beyond_seed_spread" not in row:
            beyond_text = ""
        else:
            beyond_text = "one seed" if beyond is None else ("yes" if beyond else "no")
        ratio = row["step_time_vs_classical"]
        rows.append(
            [
                row["arm"],
                ", ".join(map(str, row["seeds"])),
                accuracy,
                "" if delta is None else f"{100 * delta:+.1f} pt",
                beyond_text,
                f"{1000 * row['median_step_s']:.0f} ms",
                "" if ratio is None else f"{ratio:.2f}×",
                f"{row['parameters']:,}",
                f"{row['quantum_calls']:,}",
            ]
        )
    return header, rows


def results_markdown(results: dict[str, Any]) -> str:
    """results.md: the setting and the table, from results.json's figures."""
    preset = results["preset"]
    lines = [
        f"# qgraph reproduce: preset `{preset['name']}`",
        "",
        f"{preset['description']}.",
        "",
        f"Data: {results['data']}. Machine: {results['machine']['platform']}, torch "
        f"{results['machine']['torch']}, {results['machine']['threads']} threads, "
        f"{results['machine']['device']}.",
        "",
    ]
    header, rows = results_table_rows(results)
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", spread_note(results["table"])]
    lines += ["", "Arms:", ""]
    lines += [f"- `{name}`: {text}." for name, text in results["arms"].items()]
    if results.get("sweep"):
        lines += ["", "## Step time against sequence length", ""]
        lines += ["| length | arm | batch | median step |", "|---|---|---|---|"]
        lines += [
            f"| {r['length']} | {r['arm']} | {r['batch']} | {1000 * r['median_step_s']:.0f} ms |"
            for r in results["sweep"]
        ]
    lines += noise_markdown(results.get("noise") or {})
    if results.get("projection"):
        lines += ["", "## The hybrid on quantum hardware (cost model)", ""]
        lines += [projection_markdown(results["projection"], results["classical_step_s"])]
    if results.get("scale"):
        lines += ["", "## Scale-out projection (cost model)", ""]
        lines += [scale_markdown(results["scale"])]
    lines += ["", "## The paper's claims", "", claims_markdown(results["claims"])]
    return "\n".join(lines) + "\n"
