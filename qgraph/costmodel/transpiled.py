"""Gates, depth and duration of one circuit on one device, measured by transpiling it.

A representative instance of the kernel's circuit template (``qaap_template(a, b)``,
``qrce_layer_template(structure)``: the circuits the gate-level backends run) is transpiled
with qiskit for the device's basis and coupling (``optimization_level=1``,
``seed_transpiler=0``) and the result is measured: gate counts, depths, arbitrary rotations
(what a fault-tolerant machine must synthesise) and the ASAP-scheduled duration with the
device's gate times. Results are cached by (kernel, shape bucket, device); the templates
depend on data only through parameter values, so the bucket is exact.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from qiskit import transpile

from qgraph.circuits.templates import qaap_template, qrce_layer_template
from qgraph.costmodel.profiles import DeviceProfile
from qgraph.kernels.qrce import QRCEStructure

__all__ = [
    "CircuitCost",
    "Kernel",
    "clear_transpile_cache",
    "device_key",
    "scheduled_duration",
    "transpiled_cost",
]

Kernel = Literal["qaap", "qrce"]

#: gates that are bookkeeping, not operations
_NOT_GATES = frozenset({"barrier", "measure", "delay", "reset"})


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


def _template(kernel: str, shape: tuple[int, int]) -> Any:
    if kernel == "qaap":
        return qaap_template(shape[0], shape[1], measure=True)[0]
    if kernel == "qrce":
        return qrce_layer_template(QRCEStructure.from_seed(shape[0], shape[1], 0), measure=True)[0]
    raise ValueError(f"unknown kernel {kernel!r}; use 'qaap' or 'qrce'.")


def _template_text(kernel: str, shape: tuple[int, int]) -> str:
    if kernel == "qaap":
        return f"qaap_template({shape[0]}, {shape[1]})"
    return f"qrce_layer_template(QRCEStructure.from_seed({shape[0]}, {shape[1]}, 0))"


@functools.lru_cache(maxsize=4)
def _aer_simulator() -> Any:
    from qiskit_aer import AerSimulator  # the optional qiskit-aer

    return AerSimulator()


def _transpile(circuit: Any, device: DeviceProfile) -> Any:
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


def clear_transpile_cache() -> None:
    """Forget every transpiled cost."""
    _CACHE.clear()


def device_key(device: DeviceProfile) -> str:
    """What identifies a device for the caches: name, coupling, basis and gate times."""
    # numbers that change a cost (durations) are part of the key through their values
    timing = tuple(device.get(k) for k in ("one_qubit_time", "two_qubit_time", "readout_time"))
    return f"{device.name}|{device.coupling}|{','.join(device.basis)}|{timing}"


def transpiled_cost(kernel: str, shape: tuple[int, int], device: DeviceProfile) -> CircuitCost:
    """Transpile one circuit of ``kernel`` at ``shape`` for ``device`` and measure it
    (cached by kernel, shape and device)."""
    key = (kernel, shape, device_key(device))
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
