"""Fit a simulator's per-unit rates to timed calls and make its profile.

Rates are non-negative least squares on relative error: Σ ((Σ_f rate_f·x_f − t)/t)² over
the samples, so a 10 ms call weighs as much as a 10 s one. Each rate's source records the
fit's in-sample residual, which is not a prediction accuracy
(``benchmarks/costmodel_accuracy.py`` measures that off the grid).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

from qgraph.costmodel.calibration_timing import today
from qgraph.costmodel.profiles import DeviceProfile, Quantity
from qgraph.costmodel.simulators import FEATURES, MODEL_FEATURES

__all__ = ["Samples", "fit_rates", "simulator_profile"]

#: (features, seconds) of each timed call, the samples one rate model is fitted to
Samples = list[tuple[dict[str, float], float]]


def fit_rates(model: str, samples: Samples) -> tuple[dict[str, float], float, float]:
    """Non-negative rates minimising Σ ((Σ_f rate_f·x_f − t)/t)²; returns (rates, median
    and max |relative error| of the fit on its own samples)."""
    names = MODEL_FEATURES[model]
    design = np.array([[s[0].get(f, 0.0) for f in names] for s in samples], dtype=float)
    target = np.array([s[1] for s in samples], dtype=float)
    scale = np.maximum(design.max(axis=0), 1e-30)  # column scaling for conditioning
    weighted = design / scale / target[:, None]
    solution, _ = nnls(weighted, np.ones_like(target), maxiter=10_000)
    rates = solution / scale
    predicted = design @ rates
    rel = np.abs(predicted - target) / target
    return (
        {f: float(r) for f, r in zip(names, rates, strict=True)},
        float(np.median(rel)),
        float(rel.max()),
    )


def simulator_profile(
    name: str,
    description: str,
    samples: dict[str, Samples],
    machine: str,
    extra: dict[str, Quantity],
) -> DeviceProfile:
    """A simulator profile: ``extra`` and the rates fitted to each model's samples."""
    numbers: dict[str, Quantity] = dict(extra)
    date = today()
    for model, points in samples.items():
        rates, med, worst = fit_rates(f"{name}.{model}", points)
        source = (
            f"calibrate(): NNLS fit on {len(points)} timed {name} {model} calls (fastest of "
            f"repeats), "
            f"|rel. error| median {med:.1%} max {worst:.1%}; {machine}"
        )
        for feature, rate in rates.items():
            unit = f"s/{FEATURES[feature][0]}"
            numbers[f"{model}.{feature}"] = Quantity(rate, unit, source, date)
        numbers[f"{model}.fit_median_abs_rel_error"] = Quantity(
            med, "", f"calibrate(): in-sample fit residual; {machine}", date
        )
    return DeviceProfile(
        name=name,
        kind="simulator",
        description=description,
        numbers=numbers,
        basis=("cx", "u") if name != "aer" else (),
        coupling="aer" if name == "aer" else "all-to-all",
        time_model="simulator",
        backend=name,
        notes=(f"calibrated on {machine} on {date}",),
    )
