"""The claims table: each claim of the source paper, qgraph's figure, conditions, verdict.

Every figure comes from the run's results (the arms table, the step-time sweep and the
noise runs); a claim the run has no figure for says so ("not measured in this run") instead
of a number.
"""

from __future__ import annotations

import math
from typing import Any

#: the paper's claims (DESIGN.md, "The source paper's experiment"), one line each
PAPER_CLAIMS = {
    "accuracy": "SST-2 dev accuracy 92.3 % classical vs 91.8 % hybrid (≤ 0.5 point loss)",
    "training_time": "total training time −21 % (18–25 % across runs) on NISQ hardware",
    "step_512": "a training step at sequence length 512 falls from 1.24 s to 0.98 s",
    "complexity": "attention cost falls from O(n²) to O(n log n)",
    "long_sequences": "gains shrink past sequence length 1024",
    "ablation": "removing either quantum module loses most of the gain",
    "compression": "measurement data compressed to ~1/10 for transfer",
}


#: the paper's step at length 512, QAAP over classical: 0.98 s / 1.24 s
PAPER_STEP_512_RATIO = 0.98 / 1.24
#: step-time ratios closer than this are read as equal: two sweeps of the same code on this
#: 2-core machine gave 1.24× and 0.97× at length 512 when the arms were timed one after the
#: other (they now alternate), so a few percent is below what a short sweep resolves
SAME_STEP_TOLERANCE = 0.05


def _row(arm: str, table: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((r for r in table if r["arm"] == arm), None)


def _sweep(sweep: list[dict[str, Any]], arm: str) -> dict[int, float]:
    return {r["length"]: r["median_step_s"] for r in sweep if r["arm"] == arm}


def claims_table(results: dict[str, Any]) -> list[dict[str, str]]:
    """One row per claim: claim, figure, conditions, verdict (all text, all computed)."""
    table = results["table"]
    preset = results["preset"]
    where = (
        f"preset {preset['name']} ({preset['layers']} layers, width {preset['hidden']}, "
        f"{preset['epochs']} epoch(s)), exact simulator on {results['machine']['device']}"
    )
    rows = []

    classical, hybrid = _row("classical", table), _row("hybrid", table)
    if classical and hybrid:
        delta = 100 * (hybrid["accuracy_mean"] - classical["accuracy_mean"])
        spread = [s for s in (hybrid["accuracy_std"], classical["accuracy_std"]) if s is not None]
        tolerance = 0.5 + 100 * sum(spread)
        figure = (
            f"{100 * classical['accuracy_mean']:.1f} % classical vs "
            f"{100 * hybrid['accuracy_mean']:.1f} % hybrid ({delta:+.1f} pt)"
        )
        verdict = "reproduced" if delta >= -tolerance else "not reproduced"
        if preset["name"] != "paper":
            verdict += " at this preset (the paper's scale is the `paper` preset)"
        rows.append(_claim("accuracy", figure, where, verdict))
    else:
        rows.append(_missing("accuracy", "needs the classical and hybrid arms"))

    if classical and hybrid and classical["median_step_s"]:
        ratio = hybrid["median_step_s"] / classical["median_step_s"]
        figure = f"simulated: hybrid step {ratio:.2f}× classical"
        projected = [p for p in results.get("projection") or [] if p["step_vs_classical"]]
        if projected:
            figure += "; costed: " + ", ".join(
                f"{p['device']} {p['step_vs_classical']:.3g}×" for p in projected
            )
        faster = [p["device"] for p in projected if p["step_vs_classical"] < 1]
        if faster:
            verdict = f"faster than classical as costed on {', '.join(faster)}"
        elif projected:
            verdict = "not reproduced: slower on every costed device"
        else:
            verdict = "not testable: no device was costed"
        rows.append(
            _claim(
                "training_time",
                figure,
                where + "; hardware step = measured classical step − offloaded regions' "
                "roofline time + their quantum time (cost model, sequential)",
                verdict,
            )
        )
    else:
        rows.append(_missing("training_time", "needs the classical and hybrid arms"))

    sweep = results.get("sweep") or []
    classical_len, qaap_len = _sweep(sweep, "classical"), _sweep(sweep, "qaap")
    if 512 in classical_len and 512 in qaap_len:
        figure = (
            f"{classical_len[512]:.3f} s classical vs {qaap_len[512]:.3f} s QAAP "
            f"({qaap_len[512] / classical_len[512]:.2f}×)"
        )
        ratio = qaap_len[512] / classical_len[512]
        if ratio <= PAPER_STEP_512_RATIO + SAME_STEP_TOLERANCE:
            verdict = "reproduced"
        elif ratio < 1 - SAME_STEP_TOLERANCE:
            verdict = (
                f"partly: QAAP's step is {100 * (1 - ratio):.0f} % shorter, the paper's "
                f"{100 * (1 - PAPER_STEP_512_RATIO):.0f} %"
            )
        elif ratio <= 1 + SAME_STEP_TOLERANCE:
            verdict = (
                f"not reproduced: the two steps are within {100 * SAME_STEP_TOLERANCE:.0f} % "
                "of each other, which this machine's timing does not resolve"
            )
        else:
            verdict = "not reproduced: QAAP's step is longer"
        rows.append(_claim("step_512", figure, _sweep_where(sweep, preset), verdict))
    else:
        rows.append(_missing("step_512", "the sweep did not include length 512"))

    common = sorted(set(classical_len) & set(qaap_len))
    if len(common) >= 2:
        first, last = common[0], common[-1]
        slopes = {
            arm: math.log(times[last] / times[first]) / math.log(last / first)
            for arm, times in (("classical", classical_len), ("QAAP", qaap_len))
        }
        figure = (
            ", ".join(f"{arm} step time ∝ n^{slope:.2f}" for arm, slope in slopes.items())
            + f" from n = {first} to {last}"
        )
        rows.append(
            _claim(
                "complexity",
                figure,
                _sweep_where(sweep, preset) + "; whole training steps, not attention alone",
                "not reproduced: QAAP's closed form is quadratic in n like softmax, and its "
                "circuit needs O(n·d) gates of state preparation per query (docs/kernels.md)",
            )
        )
        long = [n for n in common if n > 1024]
        if long:
            ratios = ", ".join(f"n={n}: {qaap_len[n] / classical_len[n]:.2f}×" for n in common)
            gains = [n for n in common if qaap_len[n] < classical_len[n]]
            verdict = (
                "not testable: QAAP is slower than softmax at every length here, so there is "
                "no gain to shrink"
                if not gains
                else f"QAAP faster at n = {', '.join(map(str, gains))}"
            )
            rows.append(
                _claim(
                    "long_sequences",
                    f"QAAP/classical step time {ratios}",
                    _sweep_where(sweep, preset),
                    verdict,
                )
            )
        else:
            rows.append(_long_sequences_from_noise(results, "the sweep stopped at or below 1024"))
    else:
        rows.append(_missing("complexity", "the sweep needs two lengths"))
        rows.append(_long_sequences_from_noise(results, "the sweep needs lengths past 1024"))

    qaap, qrce = _row("qaap", table), _row("qrce", table)
    if classical and qaap and qrce and hybrid:
        figure = (
            ", ".join(
                f"{r['arm']} {r['step_time_vs_classical']:.2f}×" for r in (qaap, qrce, hybrid)
            )
            + " step time vs classical"
        )
        verdict = (
            "not testable: the hybrid is not faster than classical here, so there is no gain "
            "to lose"
            if hybrid["step_time_vs_classical"] >= 1
            else "measured: compare each single module's ratio with the hybrid's"
        )
        rows.append(_claim("ablation", figure, where, verdict))
    else:
        rows.append(_missing("ablation", "needs the classical, qaap, qrce and hybrid arms"))

    rows.append(_missing("compression", "result transfer bytes are not recorded by this run"))
    return rows


def _long_sequences_from_noise(results: dict[str, Any], why: str) -> dict[str, str]:
    """The long-sequence claim from the noisy Aer runs when the sweep cannot speak to it."""
    aer = (results.get("noise") or {}).get("aer") or {}
    rows = aer.get("rows") or []
    if len(rows) < 2:
        return _missing("long_sequences", why)
    first, last = rows[0], rows[-1]
    figure = (
        f"QAAP output error on noisy Aer ({aer['noise']}, {aer['shots']:,} shots): "
        + ", ".join(f"n={r['length']}: {r['noisy_error']:.2f}" for r in rows)
        + " (noiseless sampling: "
        + ", ".join(f"{r['shots_only_error']:.2f}" for r in rows)
        + ")"
    )
    grows = last["noisy_error"] > first["noisy_error"]
    verdict = (
        "not testable at 1024 here (no speed-up to shrink, and noisy simulation stops at "
        f"n = {last['length']}); "
        + (
            "the noise-induced error grows with length, the direction the claim needs"
            if grows
            else "the noise-induced error does not grow with length in this range"
        )
    )
    return _claim(
        "long_sequences",
        figure,
        f"one attention head of dimension {aer['head_dim']}, random q, k, v; {why}",
        verdict,
    )


def _sweep_where(sweep: list[dict[str, Any]], preset: dict[str, Any]) -> str:
    batch = sweep[0]["batch"] if sweep else "?"
    return (
        f"training step, batch {batch}, {preset['layers']} layers, width {preset['hidden']}, "
        "exact simulator"
    )


def _claim(key: str, figure: str, conditions: str, verdict: str) -> dict[str, str]:
    return {
        "claim": PAPER_CLAIMS[key],
        "figure": figure,
        "conditions": conditions,
        "verdict": verdict,
    }


def _missing(key: str, why: str) -> dict[str, str]:
    return _claim(key, "not measured in this run", why, "not testable in this run")


def claims_markdown(rows: list[dict[str, str]]) -> str:
    """The claims table as Markdown."""
    lines = ["| paper's claim | qgraph's figure | conditions | verdict |", "|---|---|---|---|"]
    lines += [
        f"| {r['claim']} | {r['figure']} | {r['conditions']} | {r['verdict']} |" for r in rows
    ]
    return "\n".join(lines) + "\n"
