"""Quantum resources of one site on one device: qubits, gates, depth, circuits and shots.

Gate counts and depths are **measured**: a representative instance of the kernel's circuit
template (``qaap_template(a, b)``, ``qrce_layer_template(structure)``, the circuits the
gate-level backends run) is transpiled with qiskit for the device's basis and coupling
(``optimization_level=1``, ``seed_transpiler=0``), cached by (kernel, shape bucket, device).
The templates depend on data only through parameter values, so the shape bucket is exact:
QAAP (a, b) = (⌈log2 kv_len⌉, ⌈log2 head_dim⌉), QRCE (q, L).

QAAP circuits grow as 2^(a+b) (amplitude encoding of the whole key block), and routing on
heavy-hex makes transpiling slow above ~12 qubits (2-9 s at 13-15 qubits on fake_fez).
Above ``QAAP_TRANSPILE_LIMIT`` = 12 qubits every metric m comes from a fit
log2 m = log2 c + β·(a+b), least squares over transpiles on the grid a+b = 6..12 (two
(a, b) splits per size), one fit per device, made on first use (5-25 s) and cached.
``validate_qaap_fit`` measures its error in-sample and out-of-sample, extrapolating to
a+b = 13, 14 against real transpiles (``benchmarks/costmodel_accuracy.py --fit-check``).
Measured with qiskit 2.x and qiskit-ibm-runtime 0.51, two-qubit gate count, |relative
error|:

=============  =========================  ====================================
device         in-sample median / max     extrapolated to a+b = 13, 14 (max)
=============  =========================  ====================================
ibm_heron_r2   2.0 % / 10.9 %             29.4 % (at (7, 7); 3-7 % elsewhere)
ibm_heron_r3   2.0 % / 10.9 %             29.4 % (same coupling map as r2)
ibm_eagle_r3   4.5 % / 12.7 %             9.5 %
ionq_aria      1.0 % / 4.6 %              4.5 %
ideal_ft       1.0 % / 4.6 %              4.5 %
=============  =========================  ====================================

The heavy-hex outlier is the router's own variance (SABRE with one seed), which a smooth fit
cannot follow: treat fitted QAAP gate counts on IBM devices as ±30 %.

Circuits and shots (the rules the estimate's explanation repeats):

* circuits per forward: QAAP one per (batch, head, query) row; QRCE one per distinct token
  (≤ vocabulary, ≤ batch × sequence).
* circuits per backward: parameter shift (QRCE) 4·L·q per distinct token; straight-through
  (QAAP) 0; SPSA (QAAP) 2 × forward; autograd (exact backends) 0.
* shots for precision ε: ⌈1/ε²⌉ (standard error of a ±1 observable ≤ 1/√N); QAAP divides
  by the post-selection success probability P (the site's if known, else the prior
  P = 1/2^b: for a random query, E[(q̂·k_j)²] = ‖k_j‖²/d); each parameter-shift circuit
  needs half as many shots for the same ε on (f₊ − f₋)/2.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from qgraph.costmodel.profiles import DeviceProfile
from qgraph.kernels.qaap import qaap_register_sizes

__all__ = [
    "QAAP_TRANSPILE_LIMIT",
    "CircuitCost",
    "QAAPFit",
    "circuit_cost",
    "circuits_backward",
    "circuits_forward",
    "clear_cache",
    "qaap_fit",
    "qaap_shape",
    "scheduled_duration",
    "shots_for_precision",
    "validate_qaap_fit",
]

Kernel = Literal["qaap", "qrce"]

#: QAAP circuits above this many qubits (a + b) are costed from the fit, not transpiled
QAAP_TRANSPILE_LIMIT = 12

#: the (a + b) sizes the QAAP fit is made on
FIT_SIZES = tuple(range(6, QAAP_TRANSPILE_LIMIT + 1))

#: gates that are bookkeeping, not operations
_NOT_GATES = frozenset({"barrier", "measure", "delay", "reset"})

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
class CircuitCost:
    """One transpiled circuit (or its fitted stand-in) on one device.

    ``ops`` counts every operation by name. ``one_qubit_gates`` excludes gates that are
    virtual on the device (IBM's rz: zero duration and error in the Target).
    ``rotations`` / ``rotation_depth`` count arbitrary-angle single-qubit rotations and the
    layers that hold at least one (what a fault-tolerant machine must synthesise).
    ``duration_s`` is the ASAP-scheduled duration with the device's gate times (None when
    the profile has none). ``method`` is "transpiled" or "fit"; ``note`` says exactly what
    was done.
    """

    kernel: str
    shape: tuple[int, int]
    device: str
    qubits: int
    depth: int
    two_qubit_gates: int
    one_qubit_gates: int
    two_qubit_depth: int
    rotations: int
    rotation_depth: int
    measurements: int
    duration_s: float | None
    method: str
    note: str
    ops: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0  # wall time it took to transpile (0 for a fit)


# --------------------------------------------------------------------------- templates


def qaap_shape(kv_len: int, head_dim: int) -> tuple[int, int]:
    """QAAP registers (a, b) = (max(1, ⌈log2 kv_len⌉), max(1, ⌈log2 head_dim⌉))."""
    return qaap_register_sizes(kv_len, head_dim)


def _template(kernel: str, shape: tuple[int, int]) -> Any:
    if kernel == "qaap":
        from qgraph.circuits.templates import qaap_template

        return qaap_template(shape[0], shape[1], measure=True)[0]
    if kernel == "qrce":
        from qgraph.circuits.templates import qrce_layer_template
        from qgraph.kernels.qrce import QRCEStructure

        return qrce_layer_template(QRCEStructure.from_seed(shape[0], shape[1], 0), measure=True)[0]
    raise ValueError(f"unknown kernel {kernel!r}; use 'qaap' or 'qrce'.")


def _template_text(kernel: str, shape: tuple[int, int]) -> str:
    if kernel == "qaap":
        return f"qaap_template({shape[0]}, {shape[1]})"
    return f"qrce_layer_template(QRCEStructure.from_seed({shape[0]}, {shape[1]}, 0))"


@functools.lru_cache(maxsize=4)
def _aer_simulator() -> Any:
    from qiskit_aer import AerSimulator

    return AerSimulator()


def _transpile(circuit: Any, device: DeviceProfile) -> Any:
    from qiskit import transpile

    options: dict[str, Any] = {"optimization_level": 1, "seed_transpiler": 0}
    if device.coupling == "fake":
        return transpile(circuit, backend=device.fake_backend(), **options)
    if device.coupling == "aer":
        return transpile(circuit, backend=_aer_simulator(), **options)
    basis = list(device.basis) or ["cx", "u"]
    return transpile(circuit, basis_gates=basis, **options)


def _transpile_text(device: DeviceProfile) -> str:
    if device.coupling == "fake":
        return f"qiskit transpile to {device.from_fake} (its basis and coupling map)"
    if device.coupling == "aer":
        return "qiskit transpile to AerSimulator() (as the aer backend does)"
    basis = ", ".join(device.basis or ("cx", "u"))
    return f"qiskit transpile to basis {{{basis}}}, all-to-all coupling"


# --------------------------------------------------------------------------- counting


def _gate_durations(device: DeviceProfile) -> dict[str, float] | None:
    """Seconds per gate name for the ASAP schedule, or None when the device has none."""
    if device.time_model == "ibm":
        one, two = device.value("one_qubit_time"), device.value("two_qubit_time")
        return {
            "rz": 0.0,
            "sx": one,
            "x": one,
            "id": one,
            "cz": two,
            "ecr": two,
            "cx": two,
            "measure": device.value("readout_time"),
        }
    if device.time_model == "gate_durations":
        one, two = device.value("one_qubit_time"), device.value("two_qubit_time")
        table = {name: one for name in ("rx", "ry", "rz", "u", "sx", "x")}
        table.update({name: two for name in ("rxx", "cx", "cz", "ms")})
        table["measure"] = device.get("readout_time", 0.0) or 0.0
        return table
    return None


def scheduled_duration(circuit: Any, durations: dict[str, float]) -> float:
    """ASAP duration: each operation starts when all its qubits are free (gates unknown to
    ``durations`` take the 1-qubit or 2-qubit time of the table by arity, else 0)."""
    free: dict[Any, float] = {}
    one = max((v for k, v in durations.items() if k in ("sx", "rx", "u")), default=0.0)
    two = max((v for k, v in durations.items() if k in ("cz", "ecr", "cx", "rxx")), default=0.0)
    for inst in circuit.data:
        name = inst.operation.name
        if name in ("barrier",):
            continue
        qubits = inst.qubits
        default = two if len(qubits) == 2 else one
        length = durations.get(name, default)
        start = max((free.get(q, 0.0) for q in qubits), default=0.0)
        for q in qubits:
            free[q] = start + length
    return max(free.values(), default=0.0)


def _is_rotation(inst: Any) -> bool:
    """An arbitrary-angle 1-qubit rotation (parametric, or an angle not a multiple of π/4)."""
    op = inst.operation
    if op.name not in ("rz", "rx", "ry", "u", "p", "u1", "u2", "u3", "r"):
        return False
    for param in op.params:
        try:
            angle = float(param)
        except (TypeError, ValueError):
            return True  # an unbound parameter: data-dependent angle
        if abs(angle / (math.pi / 4) - round(angle / (math.pi / 4))) > 1e-9:
            return True
    return False


def _measure(compiled: Any, device: DeviceProfile) -> dict[str, Any]:
    ops = {str(k): int(v) for k, v in compiled.count_ops().items()}
    virtual = {"rz"} if device.time_model == "ibm" else set()
    two = sum(1 for inst in compiled.data if inst.operation.num_qubits == 2)
    one = sum(
        1
        for inst in compiled.data
        if inst.operation.num_qubits == 1
        and inst.operation.name not in _NOT_GATES
        and inst.operation.name not in virtual
    )
    durations = _gate_durations(device)
    return {
        "depth": int(compiled.depth()),
        "two_qubit_gates": int(two),
        "one_qubit_gates": int(one),
        "two_qubit_depth": int(compiled.depth(lambda inst: inst.operation.num_qubits == 2)),
        "rotations": sum(1 for inst in compiled.data if _is_rotation(inst)),
        "rotation_depth": int(compiled.depth(_is_rotation)),
        "measurements": ops.get("measure", 0),
        "duration_s": None if durations is None else scheduled_duration(compiled, durations),
        "ops": ops,
    }


# --------------------------------------------------------------------------- transpile cache

_CACHE: dict[tuple[str, tuple[int, int], str], CircuitCost] = {}


def clear_cache() -> None:
    """Forget every transpiled cost and fit."""
    _CACHE.clear()
    _FITS.clear()


def _device_key(device: DeviceProfile) -> str:
    # numbers that change a cost (durations) are part of the key through their values
    timing = tuple(device.get(k) for k in ("one_qubit_time", "two_qubit_time", "readout_time"))
    return f"{device.name}|{device.coupling}|{','.join(device.basis)}|{timing}"


def _transpiled_cost(kernel: str, shape: tuple[int, int], device: DeviceProfile) -> CircuitCost:
    key = (kernel, shape, _device_key(device))
    found = _CACHE.get(key)
    if found is not None:
        return found
    circuit = _template(kernel, shape)
    start = time.perf_counter()
    compiled = _transpile(circuit, device)
    seconds = time.perf_counter() - start
    metrics = _measure(compiled, device)
    cost = CircuitCost(
        kernel=kernel,
        shape=shape,
        device=device.name,
        qubits=int(circuit.num_qubits),
        method="transpiled",
        note=(
            f"{_template_text(kernel, shape)} transpiled by {_transpile_text(device)}, "
            f"optimization_level=1, seed_transpiler=0 ({seconds:.2f} s)"
        ),
        seconds=seconds,
        **metrics,
    )
    _CACHE[key] = cost
    return cost


# --------------------------------------------------------------------------- QAAP fit


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


def qaap_fit(device: DeviceProfile, sizes: tuple[int, ...] = FIT_SIZES) -> QAAPFit:
    """The QAAP cost fit for ``device`` (transpiles its grid once, then cached)."""
    key = f"{_device_key(device)}|{sizes}"
    found = _FITS.get(key)
    if found is not None:
        return found
    grid = tuple(split for n in sizes for split in _splits(n))
    costs = [_transpiled_cost("qaap", split, device) for split in grid]
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
            actual = _transpiled_cost("qaap", split, device)
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


def _fitted_cost(shape: tuple[int, int], device: DeviceProfile) -> CircuitCost:
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


def circuit_cost(
    kernel: Kernel,
    shape: tuple[int, int],
    device: DeviceProfile,
    transpile_limit: int = QAAP_TRANSPILE_LIMIT,
) -> CircuitCost:
    """Gates, depth and duration of one circuit of ``kernel`` at ``shape`` on ``device``.

    ``shape`` is (a, b) for QAAP and (q, L) for QRCE. QAAP circuits above
    ``transpile_limit`` qubits come from :func:`qaap_fit`; everything else is transpiled
    (cached by kernel, shape and device).
    """
    shape = (int(shape[0]), int(shape[1]))
    if kernel == "qaap" and shape[0] + shape[1] > transpile_limit:
        return _fitted_cost(shape, device)
    if kernel not in ("qaap", "qrce"):
        raise ValueError(f"unknown kernel {kernel!r}; use 'qaap' or 'qrce'.")
    return _transpiled_cost(kernel, shape, device)


# --------------------------------------------------------------------------- circuits, shots


def circuits_forward(
    kernel: Kernel,
    *,
    batch: int = 1,
    heads: int = 1,
    queries: int = 1,
    tokens: int = 0,
    vocab_size: int | None = None,
) -> int:
    """Circuits of one forward call: QAAP batch·heads·queries; QRCE distinct tokens
    (``tokens`` positions, at most ``vocab_size`` distinct)."""
    if kernel == "qaap":
        return int(batch) * int(heads) * int(queries)
    distinct = int(tokens)
    if vocab_size is not None:
        distinct = min(distinct, int(vocab_size))
    return distinct


def circuits_backward(
    kernel: Kernel, method: str, forward: int, *, qubits: int = 0, layers: int = 0
) -> int:
    """Circuits of one backward call by gradient ``method`` (see the module docstring)."""
    if method in ("autograd", "straight-through", "none"):
        return 0
    if method == "spsa":
        if kernel != "qaap":
            raise ValueError("SPSA is a QAAP gradient method; QRCE uses parameter-shift.")
        return 2 * forward
    if method == "parameter-shift":
        if kernel != "qrce":
            raise ValueError(
                "parameter-shift is a QRCE gradient method; QAAP uses straight-through or spsa."
            )
        return 4 * int(layers) * int(qubits) * forward
    raise ValueError(
        f"unknown gradient method {method!r}; use autograd, straight-through, spsa, "
        "parameter-shift or none."
    )


def shots_for_precision(precision: float, success_probability: float = 1.0) -> int:
    """Shots per circuit for standard error ``precision``: ⌈1/ε²/P⌉."""
    if isinstance(precision, bool) or not isinstance(precision, (int, float)):
        raise ValueError(f"precision must be a number in (0, 1]; got {precision!r}.")
    if not 0 < precision <= 1 or not math.isfinite(precision):
        raise ValueError(
            f"precision is the target standard error ε of each estimated probability or "
            f"expectation and must lie in (0, 1]; got {precision!r}."
        )
    if not 0 < success_probability <= 1:
        raise ValueError(f"success probability must lie in (0, 1]; got {success_probability!r}.")
    return math.ceil(1.0 / precision**2 / success_probability - 1e-9)
