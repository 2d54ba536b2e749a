"""Measure this machine and write the local profiles: exact, shots, aer and cpu_local.

``calibrate(out_dir)`` times the real backends (``qgraph.backends``) on a calibration grid
and fits the per-unit rates of ``qgraph.costmodel.simulators`` by non-negative least squares
on relative error, then measures the CPU (float32 matmul FLOP/s, copy bandwidth, per-op
overhead, and the CPU work a QPU job needs before and after: rotation-tree angles and shot
histograms). Each number is written with its source (what was timed, the fit residual) and
the date, into ``out_dir/<name>.toml`` (default: ``user_profile_dir()``, which ``load``
reads before the shipped profiles).

The shipped profiles were made with this function on the development machine (the
``machine`` note in each file says which); run ``qgraph calibrate`` (or this function) to
make profiles for yours. ``quick=True`` uses a smaller grid (about half a minute).
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qgraph.costmodel.profiles import DeviceProfile, Quantity, user_profile_dir, write_profile
from qgraph.costmodel.simulators import FEATURES, MODEL_FEATURES, Work, qaap_work, qrce_work
from qgraph.kernels.qaap import qaap_register_sizes

__all__ = ["calibrate", "fit_rates", "machine_description", "measure_call"]

LOCAL = ("exact", "shots", "aer", "cpu_local")


def machine_description() -> str:
    """One line naming this machine (for the profiles' sources)."""
    cpu = platform.processor() or platform.machine()
    return (
        f"{platform.node() or 'host'}: {cpu}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), {platform.system()}"
    )


def l2_cache_bytes() -> tuple[int, str]:
    """This machine's L2 cache per core and where that came from (sysfs, else a default)."""
    from qgraph.costmodel.simulators import DEFAULT_CACHE_BYTES

    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for index in sorted(base.glob("index*")) if base.is_dir() else []:
        try:
            level = (index / "level").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if level == "2" and size[:-1].isdigit():
            scale = {"K": 1 << 10, "M": 1 << 20}.get(size[-1], 1)
            return int(size[:-1]) * scale, f"{index}/size = {size}"
    return DEFAULT_CACHE_BYTES, "default 1 MiB (no sysfs cache information)"


def _today() -> str:
    return datetime.date.today().isoformat()


def measure_call(fn: Callable[[], Any], repeats: int = 3, min_seconds: float = 0.0) -> float:
    """The fastest of ``repeats`` timed calls of ``fn`` (see :func:`call_times`).

    The minimum, not the median: other processes on a shared machine only ever add time, so
    the fastest repeat is the best measurement of what the work itself costs (the advice of
    Python's ``timeit``). Calibration and the accuracy benchmark use the same statistic.
    """
    return min(call_times(fn, repeats, min_seconds))


def call_times(fn: Callable[[], Any], repeats: int = 3, min_seconds: float = 0.0) -> list[float]:
    """Wall times of ``repeats`` calls of ``fn`` after one warm-up call (which also fills
    transpile caches); repeats more while their total is below ``min_seconds`` (≤ 200)."""
    fn()
    times: list[float] = []
    total = 0.0
    while len(times) < repeats or total < min_seconds:
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        total += elapsed
        if len(times) >= 200:
            break
    return times


# --------------------------------------------------------------------------- the fit


def fit_rates(
    model: str, samples: list[tuple[dict[str, float], float]]
) -> tuple[dict[str, float], float, float]:
    """Non-negative rates minimising Σ ((Σ_f rate_f·x_f − t)/t)²; returns (rates, median
    and max |relative error| of the fit on its own samples)."""
    from scipy.optimize import nnls

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


# --------------------------------------------------------------------------- grids


def _qaap_inputs(
    batch: int, heads: int, seq: int, dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    shape = (batch, heads, seq, dim)
    return tuple(torch.randn(shape, generator=gen) for _ in range(3))  # type: ignore[return-value]


def _qrce_inputs(qubits: int, layers: int, tokens: int) -> tuple[Any, ...]:
    from qgraph.kernels.qrce import QRCEStructure

    gen = torch.Generator().manual_seed(0)
    structure = QRCEStructure.from_seed(qubits, layers, 0)
    ids = torch.arange(tokens)
    table = torch.randn(tokens, qubits, generator=gen)
    weights = torch.randn(layers, qubits, generator=gen)
    return structure, ids, table, weights


def aer_gates(kernel: str, shape: tuple[int, int]) -> int:
    """Gates (measurements excluded) of the kernel's template transpiled for AerSimulator,
    as the aer backend runs it (``qgraph.costmodel.resources``, cached)."""
    from qgraph.costmodel.resources import circuit_cost

    target = DeviceProfile(name="aer", kind="simulator", description="", coupling="aer")
    cost = circuit_cost(kernel, shape, target)  # type: ignore[arg-type]
    return cost.two_qubit_gates + cost.one_qubit_gates


def single_threaded_aer(backend: Any, threads: float) -> Any:
    """Limit an AerBackend's simulator to ``threads`` OpenMP threads (Aer's own default
    uses every core, which on a shared machine makes timings erratic: 3x swings measured
    here). Reaches into ``backend._simulator``; a no-op when that is absent."""
    simulator = getattr(backend, "_simulator", None)
    if simulator is not None:
        simulator.set_options(max_parallel_threads=int(threads))
    return backend


def time_qaap(
    backend: Any,
    batch: int,
    heads: int,
    seq: int,
    dim: int,
    repeats: int,
    cache_bytes: float | None = None,
) -> tuple[Work, list[float]]:
    """Time one QAAP call on ``backend`` (an instance): its work and the repeats' times."""
    q, k, v = _qaap_inputs(batch, heads, seq, dim)
    name = backend.name
    shots = int(getattr(backend, "shots", 0) or 0)
    gates = 0
    if name == "aer":
        a, b = qaap_register_sizes(seq, dim)
        gates = aer_gates("qaap", (a, b))
    work = qaap_work(
        name,
        rows=batch * heads * seq,
        kv_len=seq,
        head_dim=dim,
        shots=shots,
        gates=gates,
        cache_bytes=l2_cache_bytes()[0] if cache_bytes is None else cache_bytes,
    )
    times = call_times(
        lambda: backend.qaap(q, k, v, None, False, None, 0.0, "calibrate"), repeats, 0.05
    )
    return work, times


def time_qrce(
    backend: Any,
    qubits: int,
    layers: int,
    tokens: int,
    repeats: int,
    gradient: bool = False,
    cache_bytes: float | None = None,
) -> tuple[Work, list[float]]:
    """Time one QRCE forward (or parameter-shift gradient) call on ``backend``: its work
    and the repeats' times."""
    structure, ids, table, weights = _qrce_inputs(qubits, layers, tokens)
    name = backend.name
    shots = int(getattr(backend, "shots", 0) or 0)
    gates = aer_gates("qrce", (qubits, layers)) if name == "aer" else 0
    circuits = tokens * (4 * layers * qubits if gradient else 1)
    work = qrce_work(
        name,
        circuits=circuits,
        qubits=qubits,
        layers=layers,
        shots=shots,
        gradient=gradient,
        gates=gates,
        cache_bytes=l2_cache_bytes()[0] if cache_bytes is None else cache_bytes,
    )
    if gradient:
        grad_out = torch.ones(tokens, 2 * qubits)

        def call() -> Any:
            return backend.qrce_gradient(
                grad_out, ids, table, weights, structure, "parameter-shift", "calibrate"
            )

    else:

        def call() -> Any:
            return backend.qrce(ids, table, weights, structure, "calibrate")

    return work, call_times(call, repeats, 0.05)


def _qaap_grid(quick: bool, aer: bool) -> list[tuple[int, int, int, int]]:
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


def _qrce_grid(quick: bool, aer: bool) -> list[tuple[int, int, int]]:
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


def _simulator_profile(
    name: str,
    description: str,
    samples: dict[str, list[tuple[dict[str, float], float]]],
    machine: str,
    extra: dict[str, Quantity],
) -> DeviceProfile:
    numbers: dict[str, Quantity] = dict(extra)
    date = _today()
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


# --------------------------------------------------------------------------- CPU


def _cpu_profile(machine: str, quick: bool) -> DeviceProfile:
    date = _today()
    n = 512 if quick else 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    matmul = measure_call(lambda: a @ b, 5, 0.2)
    flops = 2.0 * n**3 / matmul
    big = torch.empty(16 << 20 if quick else 64 << 20)  # float32
    out = torch.empty_like(big)
    copy = measure_call(lambda: out.copy_(big), 5, 0.2)
    bandwidth = 2.0 * big.numel() * 4 / copy
    tiny = torch.ones(1)
    per_op = measure_call(lambda: tiny.add(tiny), 2000, 0.05)

    from qgraph.circuits.templates import qaap_parameters

    rows = 64
    k_rows, q_rows = torch.randn(rows, 16, 16, dtype=torch.float64), torch.randn(rows, 16)
    params = measure_call(lambda: qaap_parameters(k_rows, q_rows), 5, 0.1)
    angles = rows * ((1 << 8) - 1 + (1 << 4) - 1)
    outcomes = np.random.default_rng(0).integers(0, 256, size=(256, 1024))

    def histogram() -> Any:
        flat = np.arange(outcomes.shape[0])[:, None] * 256 + outcomes
        return np.bincount(flat.reshape(-1), minlength=outcomes.shape[0] * 256)

    hist = measure_call(histogram, 5, 0.1)
    src = f"calibrate() on {machine}"
    numbers = {
        "peak_flops": Quantity(
            flops,
            "FLOP/s",
            f"{src}: float32 {n}x{n} @ {n}x{n} torch matmul, fastest of repeats",
            date,
        ),
        "memory_bandwidth": Quantity(
            bandwidth,
            "B/s",
            f"{src}: copy_ of {big.numel() * 4 >> 20} MiB float32 (read+write)",
            date,
        ),
        "per_op_overhead": Quantity(per_op, "s", f"{src}: torch.add on 1-element tensors", date),
        "qaap_param_s": Quantity(
            params / angles,
            "s/angle",
            f"{src}: qaap_parameters on {rows} rows of 16 keys x 16 dims, per rotation angle",
            date,
        ),
        "count_s": Quantity(
            hist / outcomes.size,
            "s/shot",
            f"{src}: histogram (np.bincount) of 256 x 1024 outcomes, per shot",
            date,
        ),
    }
    return DeviceProfile(
        name="cpu_local",
        kind="classical",
        description=f"this machine's CPU (calibrated): {machine}",
        numbers=numbers,
        coupling="none",
        time_model="roofline",
        notes=(f"calibrated on {machine} on {date}",),
    )


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
    machine = machine_description()
    say = progress or (lambda _msg: None)
    written: dict[str, DeviceProfile] = {}
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    date = _today()
    threads_used = Quantity(
        torch.get_num_threads(),
        "threads",
        f"calibrate(): torch.get_num_threads(); {machine}",
        date,
    )
    l2_bytes, l2_source = l2_cache_bytes()
    cache = Quantity(l2_bytes, "B", f"calibrate(): L2 cache per core, {l2_source}; {machine}", date)
    torch_qubits = Quantity(
        int(math.log2(mem / 4 / 8)),
        "qubits",
        f"calibrate(): ⌊log2(RAM/4 / 8 B)⌋, one complex64 statevector in a quarter of "
        f"{mem / 2**30:.1f} GiB RAM; {machine}",
        date,
    )

    if "exact" in devices or "shots" in devices:
        from qgraph.backends.exact import ExactBackend
        from qgraph.backends.shots import ShotsBackend

    if "exact" in devices:
        say("calibrating exact ...")
        backend: Any = ExactBackend()
        samples = {
            "qaap": [time_qaap(backend, *g, repeats) for g in _qaap_grid(quick, False)],
            "qrce": [time_qrce(backend, *g, repeats) for g in _qrce_grid(quick, False)],
        }
        written["exact"] = _simulator_profile(
            "exact",
            "qgraph's exact backend: closed-form QAAP, batched torch statevector QRCE "
            "(calibrated on this machine)",
            {m: [(w.features, min(t)) for w, t in pts] for m, pts in samples.items()},
            machine,
            {"max_qubits": torch_qubits, "torch_threads": threads_used, "cache_bytes": cache},
        )
    if "shots" in devices:
        say("calibrating shots ...")
        fwd: dict[str, list[tuple[dict[str, float], float]]] = {
            "qaap": [],
            "qrce": [],
            "qrce_grad": [],
        }
        for n_shots in (64, 1024) if quick else (64, 512, 4096):
            backend = ShotsBackend(shots=n_shots)
            for g in _qaap_grid(quick, False):
                w, t = time_qaap(backend, *g, repeats)
                fwd["qaap"].append((w.features, min(t)))
            for point in _qrce_grid(quick, False):
                w, t = time_qrce(backend, *point, repeats)
                fwd["qrce"].append((w.features, min(t)))
            for q, layers, u in ((4, 1, 8), (6, 2, 16), (8, 1, 32), (8, 2, 8)):
                w, t = time_qrce(backend, q, layers, u, repeats, gradient=True)
                fwd["qrce_grad"].append((w.features, min(t)))
        written["shots"] = _simulator_profile(
            "shots",
            "qgraph's shots backend: exact distributions, multinomial sampling "
            "(calibrated on this machine)",
            fwd,
            machine,
            {"max_qubits": torch_qubits, "torch_threads": threads_used, "cache_bytes": cache},
        )
    if "aer" in devices:
        say("calibrating aer ...")
        from qiskit_aer import AerSimulator

        from qgraph.backends.aer import AerBackend

        aer: dict[str, list[tuple[dict[str, float], float]]] = {
            "qaap_exact": [],
            "qaap_sampled": [],
            "qrce_exact": [],
            "qrce_sampled": [],
        }
        aer_shots: tuple[int | None, ...] = (None, 128, 2048)
        for shots in aer_shots:
            backend = single_threaded_aer(AerBackend(shots=shots), threads_used.value)
            mode = "exact" if shots is None else "sampled"
            for g in _qaap_grid(quick, True):
                w, t = time_qaap(backend, *g, repeats)
                aer[f"qaap_{mode}"].append((w.features, min(t)))
            for point in _qrce_grid(quick, True):
                w, t = time_qrce(backend, *point, repeats)
                aer[f"qrce_{mode}"].append((w.features, min(t)))
        aer_qubits = Quantity(
            int(AerSimulator().num_qubits),
            "qubits",
            f"qiskit-aer AerSimulator().num_qubits (memory-limited statevector); {machine}",
            date,
        )
        written["aer"] = _simulator_profile(
            "aer",
            "qgraph's aer backend: gate-level circuits on qiskit-aer, noiseless statevector "
            "(calibrated on this machine)",
            aer,
            machine,
            {
                "max_qubits": aer_qubits,
                "torch_threads": threads_used,
                "max_circuits_per_job": Quantity(
                    4096,
                    "circuits",
                    "AerBackend default max_circuits_per_job (backends/aer.py)",
                    date,
                ),
            },
        )
    if "cpu_local" in devices:
        say("calibrating cpu_local ...")
        written["cpu_local"] = _cpu_profile(machine, quick)
    for name, profile in written.items():
        path = write_profile(
            profile,
            out_file or out_dir / f"{name}.toml",
            header=f"Written by qgraph.costmodel.calibrate() on {date}.\nMachine: {machine}",
        )
        profile.path = path
        say(f"wrote {path}")
    return written
