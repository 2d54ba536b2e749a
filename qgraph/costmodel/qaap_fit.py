"""QAAP circuits above ``QAAP_TRANSPILE_LIMIT`` qubits: gate counts from a per-device fit.

QAAP circuits grow as 2^(a+b) (amplitude encoding of the whole key block), and routing on
heavy-hex makes transpiling slow above ~12 qubits (2-9 s at 13-15 qubits on fake_fez).
Above ``QAAP_TRANSPILE_LIMIT`` = 12 qubits every metric m comes from a fit
log2 m = log2 c + β·(a+b), least squares over transpiles on the grid a+b = 6..12 (two
(a, b) splits per size), one fit per device, made on first use (5-25 s) and cached.
``validate_qaap_fit`` measures its error in-sample and out-of-sample (the table in
``qgraph.costmodel.resources``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qgraph.costmodel.profiles import DeviceProfile
from qgraph.costmodel.transpiled import CircuitCost, device_key, transpiled_cost

__all__ = [
    "FIT_METRICS",
    "FIT_SIZES",
    "QAAP_TRANSPILE_LIMIT",
    "QAAPFit",
    "clear_fit_cache",
    "fitted_cost",
    "qaap_fit",
    "validate_qaap_fit",
]

#: QAAP circuits above this many qubits (a + b) are costed from the fit, not transpiled
QAAP_TRANSPILE_LIMIT = 12

#: the (a + b) sizes the QAAP fit is made on
FIT_SIZES = tuple(range(6, QAAP_TRANSPILE_LIMIT + 1))

#: the metrics of CircuitCost that the QAAP fit extrapolates
FIT_METRICS = (
    "depth",
    "two_qubit_gates",
    "one_qubit_gates",
    "two_qubit_depth",
    "rotations",
    "rotation_depth",
    "duration_s",
)


@dataclass(frozen=True)
class QAAPFit:
    """log2 m = log2 c + β·(a + b) per metric, least squares over transpiles on ``grid``."""

    device: str
    grid: tuple[tuple[int, int], ...]
    coefficients: dict[str, tuple[float, float]]  # metric -> (c, β)
    in_sample_error: dict[str, tuple[float, float]]  # metric -> (median, max) |rel. error|

    def predict(self, metric: str, n_qubits: int) -> float:
        """The fitted value of ``metric`` at a + b = ``n_qubits``."""
        c, beta = self.coefficients[metric]
        return c * 2.0 ** (beta * n_qubits)

    def text(self, metric: str) -> str:
        """The fit of ``metric`` in words, with its in-sample error (for explanations)."""
        c, beta = self.coefficients[metric]
        med, worst = self.in_sample_error[metric]
        sizes = sorted({a + b for a, b in self.grid})
        return (
            f"{metric} ≈ {c:.4g}·2^({beta:.4f}·(a+b)), fitted to transpiles at a+b = "
            f"{sizes[0]}..{sizes[-1]} on {self.device} (|rel. error| median {med:.1%}, "
            f"max {worst:.1%} on that grid)"
        )


def _splits(n: int) -> list[tuple[int, int]]:
    """Two (a, b) splits of n qubits (a, b ≥ 1): the balanced one and one more index qubit."""
    b = max(1, n // 2)
    return sorted({(n - b, b), (n - max(1, b - 1), max(1, b - 1))})


def _fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    sizes = np.array([p[0] for p in points], dtype=float)
    values = np.log2(np.array([max(p[1], 1e-300) for p in points], dtype=float))
    beta, log_c = np.polyfit(sizes, values, 1)
    return float(2.0**log_c), float(beta)


_FITS: dict[str, QAAPFit] = {}


def clear_fit_cache() -> None:
    """Forget every QAAP fit."""
    _FITS.clear()


def qaap_fit(device: DeviceProfile, sizes: tuple[int, ...] = FIT_SIZES) -> QAAPFit:
    """The QAAP cost fit for ``device`` (transpiles its grid once, then cached)."""
    key = f"{device_key(device)}|{sizes}"
    found = _FITS.get(key)
    if found is not None:
        return found
    grid = tuple(split for n in sizes for split in _splits(n))
    costs = [transpiled_cost("qaap", split, device) for split in grid]
    coefficients: dict[str, tuple[float, float]] = {}
    errors: dict[str, tuple[float, float]] = {}
    for metric in FIT_METRICS:
        values = [getattr(c, metric) for c in costs]
        if any(v is None for v in values):
            continue
        points = [(a + b, float(v)) for (a, b), v in zip(grid, values, strict=True)]
        c, beta = _fit(points)
        coefficients[metric] = (c, beta)
        rel = [abs(c * 2.0 ** (beta * n) - v) / v for n, v in points if v > 0]
        errors[metric] = (float(np.median(rel)), float(max(rel)))
    fit = QAAPFit(device.name, grid, coefficients, errors)
    _FITS[key] = fit
    return fit


def validate_qaap_fit(
    device: DeviceProfile, extrapolate_to: tuple[int, ...] = (13, 14)
) -> dict[str, Any]:
    """Fit error on ``device``: in-sample on the fit grid and out-of-sample at the sizes in
    ``extrapolate_to`` (transpiled for the check: slow above 12 qubits on heavy-hex)."""
    fit = qaap_fit(device)
    out: dict[str, Any] = {
        "device": device.name,
        "fit": {m: {"c": c, "beta": b} for m, (c, b) in fit.coefficients.items()},
        "in_sample": {
            m: {"median_abs_rel_error": e[0], "max_abs_rel_error": e[1]}
            for m, e in fit.in_sample_error.items()
        },
        "extrapolated": [],
    }
    for n in extrapolate_to:
        for split in _splits(n):
            actual = transpiled_cost("qaap", split, device)
            row: dict[str, Any] = {"a": split[0], "b": split[1], "transpile_s": actual.seconds}
            for metric in fit.coefficients:
                value = getattr(actual, metric)
                predicted = fit.predict(metric, n)
                row[metric] = {
                    "actual": value,
                    "predicted": predicted,
                    "rel_error": (predicted - value) / value if value else None,
                }
            out["extrapolated"].append(row)
    return out


def fitted_cost(shape: tuple[int, int], device: DeviceProfile) -> CircuitCost:
    """A QAAP circuit of registers ``shape`` = (a, b) on ``device``, every metric from
    :func:`qaap_fit` (the stand-in for a transpile above ``QAAP_TRANSPILE_LIMIT``)."""
    fit = qaap_fit(device)
    n = shape[0] + shape[1]
    values: dict[str, Any] = {}
    for metric in FIT_METRICS:
        values[metric] = (
            None
            if metric not in fit.coefficients
            else (
                fit.predict(metric, n) if metric == "duration_s" else round(fit.predict(metric, n))
            )
        )
    return CircuitCost(
        kernel="qaap",
        shape=shape,
        device=device.name,
        qubits=n,
        measurements=n,
        method="fit",
        note=(
            f"a+b = {n} > {QAAP_TRANSPILE_LIMIT}: not transpiled; " + fit.text("two_qubit_gates")
        ),
        depth=values["depth"],
        two_qubit_gates=values["two_qubit_gates"],
        one_qubit_gates=values["one_qubit_gates"],
        two_qubit_depth=values["two_qubit_depth"],
        rotations=values["rotations"],
        rotation_depth=values["rotation_depth"],
        duration_s=values["duration_s"],
    )
