"""Calibrate ``cpu_local``: this machine's roofline and a QPU job's CPU work before and after.

Float32 matmul FLOP/s, copy bandwidth and per-op overhead make the classical roofline;
the time per rotation-tree angle (``qaap_param_s``) and per shot histogrammed (``count_s``)
are the classical pre/post-processing of every QPU call (``qgraph.costmodel.qpu_calls``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from qgraph.circuits.templates import qaap_parameters
from qgraph.costmodel.calibration_timing import measure_call, today
from qgraph.costmodel.profiles import DeviceProfile, Quantity

__all__ = ["cpu_profile"]


def cpu_profile(machine: str, quick: bool) -> DeviceProfile:
    """Measure this CPU (smaller operands when ``quick``) into a ``cpu_local`` profile."""
    date = today()
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
    rows = 64
    k_rows, q_rows = torch.randn(rows, 16, 16, dtype=torch.float64), torch.randn(rows, 16)
    params = measure_call(lambda: qaap_parameters(k_rows, q_rows), 5, 0.1)
    # 16 keys × 16 dims: registers a = b = 4, rotation trees over a + b = 8 and b = 4 qubits
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
