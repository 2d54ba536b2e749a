"""The classical roofline: what the region a site replaces costs on a CPU or GPU.

    forward = max(FLOPs / peak, bytes / bandwidth) + ops × per-op overhead
    backward (training) = 2 × max(...) + overhead   (rule of thumb after Kaplan et al. 2020)

FLOPs and bytes come from the analysis passes (``site.flops``, ``site.bytes``) or, failing
that, from the shapes (``qgraph.costmodel.counts.classical_work``). The straight-through
QAAP backward is closed form on this CPU, so its time is this roofline's backward too.
"""

from __future__ import annotations

from qgraph.costmodel.counts import classical_work, site_label
from qgraph.costmodel.profiles import DeviceProfile, Quantity, load
from qgraph.costmodel.results import (
    ClassicalEstimate,
    ExplanationLog,
    TimeBreakdown,
    format_seconds,
)
from qgraph.site import Site

__all__ = ["BACKWARD_FACTOR", "classical_estimate", "local_cpu", "straight_through_backward"]

#: backward FLOPs (and bytes) per forward FLOP in the classical roofline
BACKWARD_FACTOR = Quantity(
    2.0,
    "x forward",
    "rule of thumb: backward ≈ 2 × forward FLOPs (Kaplan et al. 2020, arXiv:2001.08361: "
    "training ≈ 6N, forward ≈ 2N FLOPs per token)",
    "2020",
)


def local_cpu() -> DeviceProfile | None:
    """This machine's CPU profile (``cpu_local``), None when there is none to load."""
    try:
        return load("cpu_local")
    except ValueError:
        return None


def classical_estimate(
    site: Site, device: str | DeviceProfile = "cpu_local", training: bool = True
) -> ClassicalEstimate:
    """Roofline time of the site on a classical device: max(FLOPs/peak, bytes/bandwidth)
    + ops × per-op overhead, forward; backward = 2 × forward (``training``)."""
    profile = load(device)
    if profile.kind != "classical":
        raise ValueError(
            f"{profile.name} is a {profile.kind} device; classical_estimate "
            "needs a classical profile (cpu_local, gpu_h100)."
        )
    log = ExplanationLog()
    label = site_label(site)
    log.add(
        f"Classical roofline for {site.kind} site {label!r} on {profile.name} "
        f"({profile.description})"
    )
    flops, nbytes, ops, how = classical_work(site)
    log.add(f"  work: {flops:,} FLOPs, {nbytes:,} bytes, {ops} op(s) ({how})")
    peak_key = "peak_flops"
    if site.dtype == "float32" and "peak_flops_fp32" in profile:
        peak_key = "peak_flops_fp32"
    peak = log.quantity("peak FLOP/s", profile[peak_key])
    bandwidth = log.quantity("memory bandwidth", profile["memory_bandwidth"])
    overhead = log.quantity("per-op overhead", profile["per_op_overhead"])
    compute = log.calc("compute time", f"{flops:,} / {peak:.4g}", flops / peak, "s")
    memory = log.calc("memory time", f"{nbytes:,} / {bandwidth:.4g}", nbytes / bandwidth, "s")
    fixed = log.calc("overhead", f"{ops} × {overhead:.3g} s", ops * overhead, "s")
    forward = log.calc(
        "forward", "max(compute, memory) + overhead", max(compute, memory) + fixed, "s"
    )
    backward = 0.0
    if training:
        factor = log.quantity("backward factor", BACKWARD_FACTOR)
        backward = log.calc(
            "backward",
            f"{factor:g} × max(compute, memory) + overhead",
            factor * max(compute, memory) + fixed,
            "s",
        )
    log.add(f"TOTAL: {format_seconds(forward + backward)}")
    return ClassicalEstimate(
        site=label,
        device=profile.name,
        flops=flops,
        bytes=nbytes,
        ops=ops,
        compute_s=compute,
        memory_s=memory,
        overhead_s=fixed,
        forward_s=forward,
        backward_s=backward,
        bound="compute" if compute >= memory else "memory",
        lines=log.lines,
    )


def straight_through_backward(site: Site, log: ExplanationLog) -> TimeBreakdown:
    """The straight-through QAAP backward: closed form on this CPU, timed as the roofline
    backward of the site on ``cpu_local`` (0 when that profile is missing)."""
    cpu = local_cpu()
    if cpu is None:
        log.add("backward (straight-through): closed form on the CPU; cpu_local missing: 0")
        return TimeBreakdown()
    classical = classical_estimate(site, cpu)
    log.add(
        f"backward (straight-through): closed-form backward on this CPU = the classical "
        f"roofline backward of the site on cpu_local: {format_seconds(classical.backward_s)}"
    )
    return TimeBreakdown(classical_s=classical.backward_s)
