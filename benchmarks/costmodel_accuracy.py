"""Cost-model accuracy: predicted against measured wall time on the local backends.

For a grid of kernels (QAAP, QRCE forward, QRCE parameter-shift gradient), sizes, batch and
shots — points that are NOT in the calibration grid of ``qgraph.costmodel.calibrate`` — the
cost model predicts the wall time of one backend call from the calibrated simulator
profiles (exact, shots, aer), and the call is then timed: 3 rounds interleaved over the
grid (2 with --quick), 3 repeats each after a warm-up call (which also fills the transpile
cache). The measured time is the fastest repeat, the statistic the calibration fits
(other processes on a shared machine only add time); the error against the median repeat
is reported too.
Target (issue 4): median |relative error| ≤ 0.2; the worst case is printed and stored.

Timing runs at the profiles' calibrated thread count (torch intra-op threads and Aer
``max_parallel_threads``; 1 in the shipped profiles), as the calibration did.

    python benchmarks/costmodel_accuracy.py [--quick] [--json PATH] [--fit-check]

``--fit-check`` also validates the QAAP transpile fit on every QPU profile (in-sample and
extrapolated to a+b = 13, 14 by real transpiles; slow: minutes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

import torch
from common import write_result

from qgraph.costmodel import estimate, load
from qgraph.costmodel.calibration import single_threaded_aer, time_qaap, time_qrce
from qgraph.site import Site

#: (backend, B, H, S, D, shots): QAAP calls
QAAP_GRID: list[tuple[str, int, int, int, int, int]] = [
    ("exact", 2, 4, 32, 32, 0),
    ("exact", 1, 12, 128, 64, 0),
    ("exact", 8, 8, 96, 48, 0),
    ("exact", 3, 6, 384, 32, 0),
    ("shots", 2, 4, 32, 32, 100),
    ("shots", 1, 12, 128, 64, 1000),
    ("shots", 8, 8, 96, 48, 300),
    ("shots", 3, 6, 200, 32, 2000),
    ("aer", 1, 2, 12, 8, 0),
    ("aer", 2, 2, 24, 12, 0),
    ("aer", 1, 3, 12, 8, 500),
    ("aer", 2, 2, 24, 12, 1000),
    ("aer", 3, 4, 6, 6, 3000),
]

#: (backend, q, L, distinct tokens, shots, gradient): QRCE calls
QRCE_GRID: list[tuple[str, int, int, int, int, bool]] = [
    ("exact", 5, 2, 100, 0, False),
    ("exact", 7, 1, 500, 0, False),
    ("exact", 9, 3, 64, 0, False),
    ("exact", 11, 2, 300, 0, False),
    ("exact", 13, 1, 200, 0, False),
    ("shots", 5, 2, 100, 300, False),
    ("shots", 7, 1, 500, 1000, False),
    ("shots", 9, 3, 64, 3000, False),
    ("shots", 11, 2, 300, 100, False),
    ("shots", 5, 2, 12, 200, True),
    ("shots", 7, 1, 20, 1000, True),
    ("aer", 5, 2, 100, 0, False),
    ("aer", 9, 1, 40, 0, False),
    ("aer", 5, 2, 100, 500, False),
    ("aer", 7, 3, 60, 1500, False),
    ("aer", 11, 1, 24, 300, False),
]

QUICK_QAAP = [0, 1, 4, 5, 8, 10]
QUICK_QRCE = [0, 2, 5, 6, 9, 11, 13]


def attention_site(batch: int, heads: int, seq: int, dim: int) -> Site:
    return Site.attention_of_shape(batch, heads, seq, dim, path="bench.attn")


def embedding_site(tokens: int) -> Site:
    return Site.embedding_of_shape(1, tokens, tokens, 64, path="bench.emb")


def make_backend(name: str, shots: int) -> Any:
    if name == "exact":
        from qgraph.backends.exact import ExactBackend

        return ExactBackend()
    if name == "shots":
        from qgraph.backends.shots import ShotsBackend

        return ShotsBackend(shots=shots)
    from qgraph.backends.aer import AerBackend

    threads = load("aer").value("torch_threads")
    return single_threaded_aer(AerBackend(shots=shots or None), threads)


def run_grid(quick: bool, repeats: int, rounds: int) -> list[dict[str, Any]]:
    """Predict, then time every point ``rounds`` times (rounds interleaved over the grid, so
    a burst of load from other processes does not hit one point only)."""
    qaap = [QAAP_GRID[i] for i in QUICK_QAAP] if quick else QAAP_GRID
    qrce = [QRCE_GRID[i] for i in QUICK_QRCE] if quick else QRCE_GRID
    points: list[tuple[str, str, str, int, float, Any]] = []
    for name, b, h, s, d, shots in qaap:
        site = attention_site(b, h, s, d)
        est = estimate(site, name, gradient="none", shots=shots if name != "exact" else None)
        backend = make_backend(name, shots)

        def call(backend: Any = backend, b: int = b, h: int = h, s: int = s, d: int = d) -> Any:
            return time_qaap(backend, b, h, s, d, repeats)[1]

        points.append(("qaap", name, f"B{b} H{h} S{s} D{d}", shots, est.forward.total_s, call))
    for name, q, layers, tokens, shots, gradient in qrce:
        site = embedding_site(tokens)
        est = estimate(
            site,
            name,
            gradient="parameter-shift" if gradient else "none",
            shots=shots if name != "exact" else None,
            qrce_qubits=q,
            qrce_layers=layers,
        )
        predicted = est.backward.total_s if gradient else est.forward.total_s
        backend = make_backend(name, shots)

        def call(  # type: ignore[misc]
            backend: Any = backend,
            q: int = q,
            layers: int = layers,
            tokens: int = tokens,
            gradient: bool = gradient,
        ) -> Any:
            return time_qrce(backend, q, layers, tokens, repeats, gradient)[1]

        kernel = "qrce-gradient" if gradient else "qrce"
        points.append((kernel, name, f"q{q} L{layers} U{tokens}", shots, predicted, call))
    times: list[list[float]] = [[] for _ in points]
    for _ in range(rounds):
        for i, point in enumerate(points):
            times[i].extend(point[5]())
    return [
        _row(kernel, name, size, shots, predicted, t)
        for (kernel, name, size, shots, predicted, _), t in zip(points, times, strict=True)
    ]


def _row(
    kernel: str, backend: str, size: str, shots: int, predicted: float, times: list[float]
) -> dict[str, Any]:
    fastest, median = min(times), statistics.median(times)
    rel = (predicted - fastest) / fastest
    rel_median = (predicted - median) / median
    print(
        f"{backend:5s} {kernel:13s} {size:18s} shots {shots:5d}  predicted "
        f"{predicted * 1e3:9.3f} ms  measured {fastest * 1e3:9.3f} ms (median "
        f"{median * 1e3:9.3f})  error {rel:+.1%}",
        flush=True,
    )
    return {
        "backend": backend,
        "kernel": kernel,
        "size": size,
        "shots": shots,
        "predicted_s": predicted,
        "measured_s": fastest,
        "measured_median_s": median,
        "repeats": len(times),
        "rel_error": rel,
        "rel_error_vs_median": rel_median,
    }


def fit_check() -> list[dict[str, Any]]:
    from qgraph.costmodel.resources import validate_qaap_fit

    out = []
    for name in ("ibm_heron_r2", "ibm_heron_r3", "ibm_eagle_r3", "ionq_aria", "ideal_ft"):
        start = time.perf_counter()
        report = validate_qaap_fit(load(name))
        report["seconds"] = time.perf_counter() - start
        two = report["in_sample"]["two_qubit_gates"]
        extrap = [abs(r["two_qubit_gates"]["rel_error"]) for r in report["extrapolated"]]
        print(
            f"fit {name:13s} 2q gates: in-sample median {two['median_abs_rel_error']:.1%} "
            f"max {two['max_abs_rel_error']:.1%}; extrapolated to a+b=13,14 max "
            f"{max(extrap):.1%} ({report['seconds']:.0f} s)",
            flush=True,
        )
        out.append(report)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller grid, under a minute")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--fit-check", action="store_true", help="also validate the QAAP fit")
    args = parser.parse_args()
    threads = int(load("exact").value("torch_threads"))
    torch.set_num_threads(threads)
    start = time.perf_counter()
    rows = run_grid(args.quick, repeats=3, rounds=2 if args.quick else 3)
    errors = [abs(r["rel_error"]) for r in rows]
    errors_median = [abs(r["rel_error_vs_median"]) for r in rows]
    worst = max(rows, key=lambda r: abs(r["rel_error"]))
    by_backend = {
        name: statistics.median(abs(r["rel_error"]) for r in rows if r["backend"] == name)
        for name in sorted({r["backend"] for r in rows})
    }
    results: dict[str, Any] = {
        "points": rows,
        "torch_threads": threads,
        "worst_case": worst,
        "median_abs_rel_error_by_backend": by_backend,
        "profiles": {n: str(load(n).path) for n in ("exact", "shots", "aer")},
        "seconds": time.perf_counter() - start,
    }
    if args.fit_check:
        results["qaap_fit_check"] = fit_check()
    ratios = {
        "median_abs_rel_error": statistics.median(errors),
        "max_abs_rel_error": max(errors),
        "within_20pct_fraction": sum(e <= 0.2 for e in errors) / len(errors),
        "median_abs_rel_error_vs_median_time": statistics.median(errors_median),
    }
    write_result(args.json, "costmodel_accuracy", results, ratios)
    print(
        f"median |relative error| = {ratios['median_abs_rel_error']:.1%} over {len(rows)} "
        f"points (target ≤ 20%); by backend: "
        + ", ".join(f"{k} {v:.1%}" for k, v in by_backend.items())
    )
    print(
        f"worst case: {worst['backend']} {worst['kernel']} {worst['size']} shots "
        f"{worst['shots']}: predicted {worst['predicted_s'] * 1e3:.3f} ms, measured "
        f"{worst['measured_s'] * 1e3:.3f} ms ({worst['rel_error']:+.1%})"
    )


if __name__ == "__main__":
    main()
