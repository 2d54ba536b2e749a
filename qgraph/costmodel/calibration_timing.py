"""Timing for calibration: this machine's description, and timed kernel calls on a backend.

``time_qaap`` / ``time_qrce`` run one op call on a backend instance and return its work
(``qgraph.costmodel.simulators``) with the repeats' wall times; ``calibrate()`` fits rates
to them and ``benchmarks/costmodel_accuracy.py`` checks predictions with them. Timings are
the fastest of repeats (see :func:`measure_call`).
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from qgraph.costmodel.profiles import DeviceProfile
from qgraph.costmodel.resources import circuit_cost
from qgraph.costmodel.simulators import DEFAULT_CACHE_BYTES, Work, qaap_work, qrce_work
from qgraph.kernels.qaap import qaap_register_sizes
from qgraph.kernels.qrce import QRCEStructure

__all__ = [
    "aer_gates",
    "call_times",
    "l2_cache_bytes",
    "machine_description",
    "measure_call",
    "single_threaded_aer",
    "time_qaap",
    "time_qrce",
    "today",
]


def machine_description() -> str:
    """One line naming this machine (for the profiles' sources)."""
    cpu = platform.processor() or platform.machine()
    return (
        f"{platform.node() or 'host'}: {cpu}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), {platform.system()}"
    )


def l2_cache_bytes() -> tuple[int, str]:
    """This machine's L2 cache per core and where that came from (sysfs, else a default)."""
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


def today() -> str:
    """Today's date, ISO format (every calibrated number's ``date``)."""
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


# --------------------------------------------------------------------------- kernel calls


def _qaap_inputs(
    batch: int, heads: int, seq: int, dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    shape = (batch, heads, seq, dim)
    return tuple(torch.randn(shape, generator=gen) for _ in range(3))  # type: ignore[return-value]


def _qrce_inputs(qubits: int, layers: int, tokens: int) -> tuple[Any, ...]:
    gen = torch.Generator().manual_seed(0)
    structure = QRCEStructure.from_seed(qubits, layers, 0)
    ids = torch.arange(tokens)
    table = torch.randn(tokens, qubits, generator=gen)
    weights = torch.randn(layers, qubits, generator=gen)
    return structure, ids, table, weights


def aer_gates(kernel: str, shape: tuple[int, int]) -> int:
    """Gates (measurements excluded) of the kernel's template transpiled for AerSimulator,
    as the aer backend runs it (``qgraph.costmodel.resources``, cached)."""
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
