"""Work counts of one op call of one site: qubits, circuits, shots, gates and FLOPs.

The cost model is work counts × per-device rates; this module is the counts. They depend on
the site, the gradient method and the precision, and on the device only where the device
changes the work itself (an exact simulator runs no shots; the closed-form backends run no
QAAP circuit). Each count is written into the explanation with the rule that gave it; the
rules themselves are in ``qgraph.costmodel.resources``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from qgraph.backends.base import GRADIENT_METHODS, default_gradient_method, gradient_method_error
from qgraph.costmodel.profiles import DeviceProfile
from qgraph.costmodel.resources import (
    check_precision,
    circuit_cost,
    circuits_backward,
    circuits_forward,
    qaap_shape,
    shots_for_precision,
)
from qgraph.costmodel.results import ExplanationLog
from qgraph.costmodel.transpiled import CircuitCost, Kernel
from qgraph.flops import attention_flops
from qgraph.site import Site

__all__ = [
    "DEFAULT_QRCE_LAYERS",
    "DEFAULT_QRCE_QUBITS",
    "GRADIENTS",
    "OpCallCounts",
    "RegionWork",
    "batch_of",
    "check_precision",
    "circuit_width",
    "classical_work",
    "computes_qaap_in_closed_form",
    "count_op_call",
    "measured_circuit",
    "resolve_gradient",
    "site_label",
]

#: what estimate(gradient=...) takes: "auto", every method, "none" (inference: no backward)
GRADIENTS = ("auto", *GRADIENT_METHODS, "none")

#: QRCE circuit size when the caller does not say (qgraph.compile's defaults)
DEFAULT_QRCE_QUBITS = 8
DEFAULT_QRCE_LAYERS = 2


@dataclass(frozen=True)
class OpCallCounts:
    """The circuits, shots and parameters of one op call, forward and backward."""

    kernel: Kernel
    shape: tuple[int, int]  # QAAP (a, b) registers, QRCE (qubits, layers)
    gradient: str  # the resolved gradient method
    circuits_forward: int
    circuits_backward: int
    shots_forward: int  # per circuit
    shots_backward: int  # per circuit
    params_per_circuit: int
    success_probability: float | None  # QAAP post-selection P the shots were sized for


class RegionWork(NamedTuple):
    """FLOPs, bytes and op count of the classical region a site replaces, and their origin."""

    flops: int
    bytes: int
    ops: int
    how: str


# --------------------------------------------------------------------------- arguments


def site_label(site: Site) -> str:
    """The name estimates give a site: its key, else its module path, else its index."""
    return site.key or site.path or f"site {site.index}"


def batch_of(site: Site, batch: int | None) -> int:
    """The batch size to cost: ``batch`` if given, else the site's example batch."""
    if batch is not None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive int; got {batch!r}.")
        return batch
    shape = site.shapes.get("q" if site.kind == "attention" else "ids", ())
    return int(shape[0]) if len(shape) >= 2 else 1


def resolve_gradient(gradient: str, kernel: str, device: DeviceProfile) -> str:
    """The gradient method an op call on ``device`` uses for ``gradient`` ("auto": the
    device's default; autograd only where amplitudes are exact)."""
    if gradient not in GRADIENTS:
        raise ValueError(f"unknown gradient {gradient!r}; use one of {list(GRADIENTS)}.")
    exact = device.kind == "simulator" and device.backend == "exact"
    if gradient in ("auto", "none"):
        return default_gradient_method(kernel, exact) if gradient == "auto" else gradient
    problem = gradient_method_error(gradient, kernel)
    if problem is not None:
        raise ValueError(problem)
    if gradient == "autograd" and not exact:
        raise ValueError(
            f"gradient 'autograd' needs exact amplitudes; device {device.name!r} only "
            "samples. Use 'auto', 'parameter-shift' (QRCE), 'straight-through' or 'spsa' "
            "(QAAP)."
        )
    return gradient


def computes_qaap_in_closed_form(device: DeviceProfile) -> bool:
    """Whether the device is a backend that computes QAAP's distribution in closed form
    (exact, shots): no circuit is built, so no qubit limit or gate count applies."""
    return device.kind == "simulator" and device.backend in ("exact", "shots")


# --------------------------------------------------------------------------- qubits and gates


def circuit_width(
    site: Site, kernel: Kernel, qrce_qubits: int, qrce_layers: int, log: ExplanationLog
) -> tuple[int, tuple[int, int]]:
    """(qubits, shape) of the site's circuit: QAAP shape (a, b) from kv_len and head_dim
    (0 qubits when the site lacks them), QRCE (qrce_qubits, qrce_layers)."""
    if kernel == "qaap":
        if site.kv_len is None or site.head_dim is None:
            return 0, (0, 0)
        shape = qaap_shape(site.kv_len, site.head_dim)
        qubits = shape[0] + shape[1]
        log.calc(
            "qubits",
            f"⌈log2 {site.kv_len}⌉ + ⌈log2 {site.head_dim}⌉ (index + feature registers)",
            qubits,
            "qubits",
        )
        return qubits, shape
    if qrce_qubits < 2 or qrce_layers < 1:
        raise ValueError("QRCE needs qrce_qubits ≥ 2 and qrce_layers ≥ 1.")
    shape = (int(qrce_qubits), int(qrce_layers))
    qubits = shape[0]
    log.calc("qubits", f"q = {qubits} (QRCE circuit width, {shape[1]} layers)", qubits, "qubits")
    return qubits, shape


def measured_circuit(
    kernel: Kernel, shape: tuple[int, int], device: DeviceProfile, log: ExplanationLog
) -> CircuitCost | None:
    """Gates and depth of one circuit on ``device`` (None where no circuit is run)."""
    if kernel == "qaap" and computes_qaap_in_closed_form(device):
        log.add(
            "circuit: none run (the shots/exact backends compute QAAP's distribution in "
            "closed form)"
        )
        return None
    cost = circuit_cost(kernel, shape, device)
    log.add(
        f"circuit: depth {cost.depth:,}, {cost.two_qubit_gates:,} two-qubit gates, "
        f"{cost.one_qubit_gates:,} one-qubit gates ({cost.method}: {cost.note})"
    )
    return cost


# --------------------------------------------------------------------------- circuits, shots


def count_op_call(
    site: Site,
    kernel: Kernel,
    device: DeviceProfile,
    method: str,
    shape: tuple[int, int],
    batch: int,
    *,
    precision: float,
    shots: int | None,
    success_probability: float | None,
    unique_tokens: int | None,
    log: ExplanationLog,
) -> OpCallCounts:
    """Circuits and shots of one op call of ``site`` (see :func:`qgraph.costmodel.estimate`
    for the arguments)."""
    n_fwd, n_bwd, n_params = _count_circuits(site, kernel, method, shape, batch, unique_tokens, log)
    s_fwd, s_bwd, prob = _count_shots(
        site, kernel, device, method, shape, precision, shots, success_probability, log
    )
    return OpCallCounts(
        kernel=kernel,
        shape=shape,
        gradient=method,
        circuits_forward=n_fwd,
        circuits_backward=n_bwd,
        shots_forward=s_fwd,
        shots_backward=s_bwd,
        params_per_circuit=n_params,
        success_probability=prob,
    )


def _count_circuits(
    site: Site,
    kernel: Kernel,
    method: str,
    shape: tuple[int, int],
    batch: int,
    unique_tokens: int | None,
    log: ExplanationLog,
) -> tuple[int, int, int]:
    """(forward circuits, backward circuits, parameters per circuit)."""
    if kernel == "qaap":
        assert site.heads is not None and site.seq_len is not None
        n_fwd = circuits_forward("qaap", batch=batch, heads=site.heads, queries=site.seq_len)
        log.calc(
            "circuits per forward",
            f"batch {batch} × heads {site.heads} × queries {site.seq_len}",
            n_fwd,
            "circuits",
        )
        # rotation-tree angles of the key block (a + b qubits) and of the query (b qubits)
        n_params = (1 << (shape[0] + shape[1])) - 1 + (1 << shape[1]) - 1
    else:
        ids = site.shapes.get("ids", (1,))
        positions = batch * (int(ids[-1]) if len(ids) >= 2 else int(math.prod(ids)))
        if unique_tokens is not None:
            n_fwd = min(int(unique_tokens), positions)
            log.calc(
                "circuits per forward",
                f"distinct tokens (given) ≤ {positions:,} positions",
                n_fwd,
                "circuits",
            )
        else:
            n_fwd = circuits_forward("qrce", tokens=positions, vocab_size=site.vocab_size)
            log.calc(
                "circuits per forward",
                f"distinct tokens ≤ min({positions:,} positions, vocab {site.vocab_size})",
                n_fwd,
                "circuits",
            )
        n_params = 2 * shape[0] * shape[1]
    n_bwd = circuits_backward(kernel, method, n_fwd, qubits=shape[0], layers=shape[1])
    rule = {
        "parameter-shift": f"4·L·q = {4 * shape[1] * shape[0]} per token",
        "spsa": "2 × forward",
        "straight-through": "0 (closed-form backward)",
        "autograd": "0 (autograd through the exact simulation)",
        "none": "0 (no backward)",
    }
    log.calc("circuits per backward", f"{method}: {rule[method]}", n_bwd, "circuits")
    return n_fwd, n_bwd, n_params


def _count_shots(
    site: Site,
    kernel: Kernel,
    device: DeviceProfile,
    method: str,
    shape: tuple[int, int],
    precision: float,
    shots: int | None,
    success_probability: float | None,
    log: ExplanationLog,
) -> tuple[int, int, float | None]:
    """(shots per forward circuit, per backward circuit, the QAAP success probability
    they were sized for, None when not sized by it)."""
    exact_mode = device.kind == "simulator" and (
        device.backend == "exact" or (device.backend == "aer" and shots == 0)
    )
    if exact_mode:
        log.add("shots: 0 (exact probabilities / expectation values)")
        return 0, 0, None
    if shots is not None:
        if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
            raise ValueError(f"shots must be a positive int (or 0 on aer: exact); got {shots!r}.")
        log.add(f"shots: {shots:,} per circuit (given)")
        return int(shots), int(shots), None
    base = shots_for_precision(precision)
    if kernel == "qaap":
        prob = success_probability
        if prob is None:
            prob = getattr(site, "success_probability", None)
        if prob is None:
            prob = 1.0 / (1 << shape[1])
            log.add(
                f"  success probability P = 1/2^{shape[1]} = {prob:.4g} (prior: "
                "E[(q̂·k_j)²] = ‖k_j‖²/d for a random query)"
            )
        else:
            log.add(f"  success probability P = {prob:.4g} (given)")
        s_fwd = int(
            log.calc(
                "shots per forward circuit",
                f"⌈1/{precision:g}² / {prob:.4g}⌉",
                shots_for_precision(precision, prob),
            )
        )
        return s_fwd, s_fwd if method == "spsa" else 0, prob
    s_fwd = int(
        log.calc(
            "shots per forward circuit",
            f"⌈1/{precision:g}²⌉ (standard error of a ±1 observable ≤ 1/√N)",
            base,
        )
    )
    s_bwd = math.ceil(base / 2) if method == "parameter-shift" else 0
    if s_bwd:
        log.calc(
            "shots per shifted circuit", f"⌈{base}/2⌉ ((f₊ − f₋)/2 halves the variance)", s_bwd
        )
    return s_fwd, int(s_bwd), None


# --------------------------------------------------------------------------- classical FLOPs


def classical_work(site: Site) -> RegionWork:
    """FLOPs, bytes and ops of the site's classical forward at its example shapes."""
    if site.flops or site.bytes:
        ops = 1 if site.kind == "embedding" or "sdpa" in site.pattern else 5
        return RegionWork(
            site.flops, site.bytes, ops, "from the analysis passes (site.flops, site.bytes)"
        )
    if site.kind == "attention" and site.heads and site.seq_len and site.kv_len and site.head_dim:
        batch = batch_of(site, None)
        value_dim = site.shapes.get("v", (site.head_dim,))[-1]
        rows = batch * site.heads * site.seq_len
        flops = attention_flops(rows, site.kv_len, site.head_dim, value_dim)
        elements = sum(math.prod(site.shapes.get(k, ())) for k in ("q", "k", "v", "out"))
        return RegionWork(flops, 4 * elements, 1, "computed from the shapes (SDPA rule, float32)")
    if site.kind == "embedding":
        out = math.prod(site.shapes.get("out", ()))
        ids = math.prod(site.shapes.get("ids", ()))
        return RegionWork(0, 4 * out * 2 + 8 * ids, 1, "computed from the shapes (gather, float32)")
    return RegionWork(0, 0, 1, "no shapes: zero work")
