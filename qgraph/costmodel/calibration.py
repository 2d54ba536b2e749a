"""Measure this machine and write the local profiles: exact, shots, aer and cpu_local.

``calibrate(out_dir)`` times the real backends (``qgraph.backends``) on a calibration grid
and fits the per-unit rates of ``qgraph.costmodel.simulators`` by non-negative least squares
on relative error, then measures the CPU (float32 matmul FLOP/s, copy bandwidth, per-op
overhead, and the CPU work a QPU job needs before and after: rotation-tree angles and shot
histograms). Each number is written with its source (what was timed, the fit residual) and
the date, into ``out_dir/<name>.toml`` (default: ``user_profile_dir()``, which ``load``
reads before the shipped profiles).

What is timed per backend is one entry of ``SIMULATOR_CALIBRATIONS`` (the backend at each
shot setting, the calls to time on which grid, the numbers besides the rates); one loop
(``_calibrate_simulator``) runs them all. The CPU is ``calibration_cpu``; the timing
helpers are ``calibration_timing``.

The shipped profiles were made with this function on the development machine (the
``machine`` note in each file says which); run ``qgraph calibrate`` (or this function) to
make profiles for yours. ``quick=True`` uses a smaller grid (about half a minute).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from qgraph.backends.exact import ExactBackend
from qgraph.backends.shots import ShotsBackend
from qgraph.costmodel.calibration_cpu import cpu_profile
from qgraph.costmodel.calibration_fit import Samples, fit_rates, simulator_profile
from qgraph.costmodel.calibration_timing import (
    call_times,
    l2_cache_bytes,
    machine_description,
    measure_call,
    single_threaded_aer,
    time_qaap,
    time_qrce,
    today,
)
from qgraph.costmodel.profiles import DeviceProfile, Quantity, user_profile_dir, write_profile
from qgraph.costmodel.simulators import Work

__all__ = [
    "LOCAL",
    "SIMULATOR_CALIBRATIONS",
    "calibrate",
    "call_times",
    "fit_rates",
    "l2_cache_bytes",
    "machine_description",
    "measure_call",
    "single_threaded_aer",
    "time_qaap",
    "time_qrce",
]

#: the arguments of one timed call after the backend: QAAP (batch, heads, seq, dim),
#: QRCE (qubits, layers, tokens)
GridPoint = tuple[int, ...]


# --------------------------------------------------------------------------- grids


def _qaap_grid(quick: bool, aer: bool) -> Sequence[GridPoint]:
    """QAAP calls (batch, heads, seq, dim) to time; aer's are smaller (gate-level)."""
    if aer:
        grid = [
            (1, 1, 4, 4),
            (1, 2, 8, 4),
            (2, 2, 8, 8),
            (1, 2, 16, 8),
            (1, 1, 16, 16),
            (4, 2, 8, 4),
            (1, 1, 32, 16),
            (2, 4, 4, 2),
            (1, 1, 64, 8),
            (8, 4, 2, 2),
            (1, 2, 32, 4),
            (1, 1, 8, 64),
        ]
        return grid[::2] if quick else grid
    grid = [(b, h, s, d) for b in (1, 4) for h in (2, 8) for s in (16, 64, 256) for d in (16, 64)]
    big = [(4, 8, 512, 64), (8, 8, 512, 32)]  # score tensors above 32 MiB
    return grid[::3] + big[:1] if quick else grid + big


def _qrce_grid(quick: bool, aer: bool) -> Sequence[GridPoint]:
    """QRCE calls (qubits, layers, tokens) to time; aer's are smaller (gate-level)."""
    if aer:
        grid = [
            (4, 1, 8),
            (4, 2, 64),
            (8, 1, 16),
            (8, 2, 128),
            (10, 2, 32),
            (12, 1, 16),
            (6, 3, 256),
            (3, 1, 512),
            (14, 1, 8),
            (6, 4, 32),
            (2, 2, 16),
            (10, 1, 128),
        ]
        return grid[::2] if quick else grid
    grid = [
        (q, layer, u)
        for q in (4, 6, 8, 10, 12)
        for layer in (1, 2, 3)
        for u in (16, 256, 2048)
        if u * layer * q * 2**q <= 3e8
    ] + [(14, 1, 64), (16, 1, 16), (14, 2, 16), (13, 1, 1024)]
    return [*grid[::3], (12, 1, 2048)] if quick else grid


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class CalibrationRun:
    """What every profile of one ``calibrate()`` run shares."""

    machine: str
    date: str
    threads: Quantity  # torch intra-op threads while measuring
    cache: Quantity  # L2 cache per core
    statevector_qubits: Quantity  # the largest torch statevector that fits in memory


@dataclass(frozen=True)
class TimedCall:
    """One kind of timed op call: the rate model its samples fit, and its grid."""

    model: str
    time: Callable[[Any, GridPoint, int], tuple[Work, list[float]]]  # backend, point, repeats
    grid: Callable[[bool], Sequence[GridPoint]]  # quick → points


@dataclass(frozen=True)
class SimulatorCalibration:
    """How to calibrate one local simulator: the backend at each shot setting, the calls
    to time on it, and the profile's numbers besides the fitted rates."""

    description: str
    shot_settings: Callable[[bool], tuple[int | None, ...]]  # quick → settings
    factory: Callable[[int | None, CalibrationRun], Any]  # shots, run → backend
    calls: Callable[[int | None], tuple[TimedCall, ...]]  # shots → what to time
    models: tuple[str, ...]  # every model ``calls`` names, in the profile's order
    numbers: Callable[[CalibrationRun], dict[str, Quantity]]  # asked after the timing


def _time_qaap_at(backend: Any, point: GridPoint, repeats: int) -> tuple[Work, list[float]]:
    batch, heads, seq, dim = point
    return time_qaap(backend, batch, heads, seq, dim, repeats)


def _time_qrce_at(backend: Any, point: GridPoint, repeats: int) -> tuple[Work, list[float]]:
    qubits, layers, tokens = point
    return time_qrce(backend, qubits, layers, tokens, repeats)


def _time_qrce_gradient_at(
    backend: Any, point: GridPoint, repeats: int
) -> tuple[Work, list[float]]:
    qubits, layers, tokens = point
    return time_qrce(backend, qubits, layers, tokens, repeats, gradient=True)


#: QRCE parameter-shift gradient calls timed on the shots backend (qubits, layers, tokens)
QRCE_GRADIENT_GRID: Sequence[GridPoint] = ((4, 1, 8), (6, 2, 16), (8, 1, 32), (8, 2, 8))

_TORCH_CALLS = (
    TimedCall("qaap", _time_qaap_at, lambda quick: _qaap_grid(quick, False)),
    TimedCall("qrce", _time_qrce_at, lambda quick: _qrce_grid(quick, False)),
)


def _torch_numbers(run: CalibrationRun) -> dict[str, Quantity]:
    return {
        "max_qubits": run.statevector_qubits,
        "torch_threads": run.threads,
        "cache_bytes": run.cache,
    }


def _shots_backend(shots: int | None, run: CalibrationRun) -> Any:
    assert shots is not None  # the shots backend always samples
    return ShotsBackend(shots=shots)


def _aer_backend(shots: int | None, run: CalibrationRun) -> Any:
    from qgraph.backends.aer import AerBackend  # needs the optional qiskit-aer

    # Aer's own default uses every core, which makes timings erratic on a shared machine
    return single_threaded_aer(AerBackend(shots=shots), run.threads.value)


def _aer_calls(shots: int | None) -> tuple[TimedCall, ...]:
    # aer runs an exact mode (shots=None: statevector expectations) and a sampled one
    mode = "exact" if shots is None else "sampled"
    return (
        TimedCall(f"qaap_{mode}", _time_qaap_at, lambda quick: _qaap_grid(quick, True)),
        TimedCall(f"qrce_{mode}", _time_qrce_at, lambda quick: _qrce_grid(quick, True)),
    )


def _aer_numbers(run: CalibrationRun) -> dict[str, Quantity]:
    from qiskit_aer import AerSimulator  # the optional qiskit-aer

    return {
        "max_qubits": Quantity(
            int(AerSimulator().num_qubits),
            "qubits",
            f"qiskit-aer AerSimulator().num_qubits (memory-limited statevector); {run.machine}",
            run.date,
        ),
        "torch_threads": run.threads,
        "max_circuits_per_job": Quantity(
            4096,
            "circuits",
            "AerBackend default max_circuits_per_job (backends/aer.py)",
            run.date,
        ),
    }


#: local simulator → how to calibrate it, in the order ``calibrate()`` runs them
SIMULATOR_CALIBRATIONS: dict[str, SimulatorCalibration] = {
    "exact": SimulatorCalibration(
        description="qgraph's exact backend: closed-form QAAP, batched torch statevector QRCE "
        "(calibrated on this machine)",
        shot_settings=lambda quick: (None,),
        factory=lambda shots, run: ExactBackend(),
        calls=lambda shots: _TORCH_CALLS,
        models=("qaap", "qrce"),
        numbers=_torch_numbers,
    ),
    "shots": SimulatorCalibration(
        description="qgraph's shots backend: exact distributions, multinomial sampling "
        "(calibrated on this machine)",
        shot_settings=lambda quick: (64, 1024) if quick else (64, 512, 4096),
        factory=_shots_backend,
        calls=lambda shots: (
            *_TORCH_CALLS,
            TimedCall("qrce_grad", _time_qrce_gradient_at, lambda quick: QRCE_GRADIENT_GRID),
        ),
        models=("qaap", "qrce", "qrce_grad"),
        numbers=_torch_numbers,
    ),
    "aer": SimulatorCalibration(
        description="qgraph's aer backend: gate-level circuits on qiskit-aer, noiseless "
        "statevector (calibrated on this machine)",
        shot_settings=lambda quick: (None, 128, 2048),
        factory=_aer_backend,
        calls=_aer_calls,
        models=("qaap_exact", "qaap_sampled", "qrce_exact", "qrce_sampled"),
        numbers=_aer_numbers,
    ),
}

#: every profile calibrate() can write
LOCAL = (*SIMULATOR_CALIBRATIONS, "cpu_local")


def _calibrate_simulator(
    name: str, run: CalibrationRun, quick: bool, repeats: int
) -> DeviceProfile:
    """Time one simulator's calls at each of its shot settings and fit its rates."""
    entry = SIMULATOR_CALIBRATIONS[name]
    samples: dict[str, Samples] = {model: [] for model in entry.models}
    for shots in entry.shot_settings(quick):
        backend = entry.factory(shots, run)
        for call in entry.calls(shots):
            for point in call.grid(quick):
                work, times = call.time(backend, point, repeats)
                samples[call.model].append((work.features, min(times)))
    return simulator_profile(name, entry.description, samples, run.machine, entry.numbers(run))


# --------------------------------------------------------------------------- entry point


def calibrate(
    out_path: str | Path | None = None,
    devices: tuple[str, ...] = LOCAL,
    quick: bool = False,
    repeats: int = 3,
    progress: Callable[[str], None] | None = print,
    threads: int | None = 1,
) -> dict[str, DeviceProfile]:
    """Measure this machine and write one profile per name in ``devices`` into ``out_path``
    (a directory, default ``user_profile_dir()``; or a ``.toml`` file when ``devices``
    names one device). Returns the profiles written.

    ``threads``: torch intra-op threads while measuring (None: leave as is). The default,
    1, gives stable timings on a shared machine; the profile records the value
    (``torch_threads``) and the accuracy benchmark runs with the same setting.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _calibrate(out_path, devices, quick, repeats, progress)
    finally:
        torch.set_num_threads(previous)


def _calibrate(
    out_path: str | Path | None,
    devices: tuple[str, ...],
    quick: bool,
    repeats: int,
    progress: Callable[[str], None] | None,
) -> dict[str, DeviceProfile]:
    unknown = [d for d in devices if d not in LOCAL]
    if unknown:
        raise ValueError(f"calibrate measures {list(LOCAL)}; got {unknown}.")
    out_dir = Path(out_path) if out_path is not None else user_profile_dir()
    out_file: Path | None = None
    if out_dir.suffix == ".toml":
        if len(devices) != 1:
            raise ValueError(
                f"calibrate: a single file {out_dir} takes one device; got {list(devices)}. "
                "Pass a directory for several."
            )
        out_file, out_dir = out_dir, out_dir.parent
    say = progress or (lambda _msg: None)
    run = _calibration_run()
    written: dict[str, DeviceProfile] = {}
    for name in SIMULATOR_CALIBRATIONS:
        if name in devices:
            say(f"calibrating {name} ...")
            written[name] = _calibrate_simulator(name, run, quick, repeats)
    if "cpu_local" in devices:
        say("calibrating cpu_local ...")
        written["cpu_local"] = cpu_profile(run.machine, quick)
    header = f"Written by qgraph.costmodel.calibrate() on {run.date}.\nMachine: {run.machine}"
    for name, profile in written.items():
        path = write_profile(profile, out_file or out_dir / f"{name}.toml", header=header)
        profile.path = path
        say(f"wrote {path}")
    return written


def _calibration_run() -> CalibrationRun:
    """This machine's description, thread setting, L2 cache and statevector limit."""
    machine = machine_description()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    date = today()
    l2_bytes, l2_source = l2_cache_bytes()
    return CalibrationRun(
        machine=machine,
        date=date,
        threads=Quantity(
            torch.get_num_threads(),
            "threads",
            f"calibrate(): torch.get_num_threads(); {machine}",
            date,
        ),
        cache=Quantity(
            l2_bytes, "B", f"calibrate(): L2 cache per core, {l2_source}; {machine}", date
        ),
        statevector_qubits=Quantity(
            int(math.log2(mem / 4 / 8)),
            "qubits",
            f"calibrate(): ⌊log2(RAM/4 / 8 B)⌋, one complex64 statevector in a quarter of "
            f"{mem / 2**30:.1f} GiB RAM; {machine}",
            date,
        ),
    )
