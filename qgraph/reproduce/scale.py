"""The hybrid's training run scaled out on paper: N QPUs and M classical workers.

The cost model's projection (``projection.py``) puts the hybrid's quantum sites on one QPU.
This module spreads the same step over a grid of N QPUs and M data-parallel classical
workers and says, for each device and (N, M): time per step, time per run, money per step
and per run, and which component of the step is largest (its critical path). Nothing here
is measured at those sizes; every number is the cost model's arithmetic on the measured
classical step. The model, each assumption labelled as such:

* **Classical work** per step is the measured classical step less the offloaded regions'
  roofline time (as the projection takes it), split data-parallel over M workers:
  ``classical / M``. ASSUMPTION: a perfect split; a smaller per-worker batch runs less
  efficiently on real hardware, so this is optimistic.
* **All-reduce** of the trainable parameters' gradients (their bytes, as the hybrid's model
  holds them) each step, as a ring: ``2(M−1)/M × bytes / bandwidth + 2(M−1) × latency``
  (0 for M = 1). The bandwidth and per-message latency are ASSUMPTIONS
  (:data:`ALLREDUCE_BANDWIDTH_B_S`, :data:`ALLREDUCE_LATENCY_S`): ../shared/research has no
  interconnect figure.
* **Quantum work** per step: every offloaded site's forward and backward op call, one after
  the other (a layer needs the one before it), each call's circuits spread evenly over the N
  QPUs (⌈circuits/N⌉ on the busiest). ASSUMPTION: one scheduler merges the M workers'
  circuits of a call into one call and gives each QPU its share (issue 14's
  one-queue-per-device scheduler), so M does not change the quantum work. Per QPU, jobs,
  per-job latency and money come from the device's billing model
  (``qgraph.costmodel.qpu_calls.BILLING_MODELS``) applied to that QPU's share: a job's
  latency is paid on every QPU, concurrently, so it does not shrink with N; the execution
  (shots) time divides by N. Transfer and the calls' classical pre/post (angles, histograms)
  stay whole: ASSUMPTION: the scheduler's one client link (the profile's
  ``network_bandwidth``, itself an ASSUMPTION) carries every QPU's parameters and results,
  and its CPU histograms them, so neither N nor M shortens them. Queue wait: 0, as the cost
  model has it: IBM publishes no queue-time figures
  (../shared/research/hardware-and-costs.md) and none is sourced for IonQ.
* **A step** is classical + all-reduce + quantum, one after the other (no overlap); the
  best case, the two sides fully overlapped, is ``max(classical + all-reduce, quantum)``.
* **Money** per step is the QPUs' money summed over the N QPUs' shares, each priced by the
  billing model: per QPU-second with a per-job minimum (IBM: the same QPU-seconds spread
  over N QPUs cost the same until a share drops under the 4.1 s job minimum, then more),
  per gate-shot and circuit (IonQ: independent of N), none (ideal_ft). Classical workers'
  money is not modelled (no sourced price).
* **Critical path**: the largest of the step's components (queue, latency, execution,
  transfer, pre/post, classical, all-reduce), named per row.

``scale_tables.py`` renders it (Markdown, the page's table), ``page.py`` draws its figure, and
``python -m qgraph.reproduce.rescale docs/results/cpu`` computes it for a finished run from
its results.json without training again (``rescale.py``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qgraph.costmodel.profiles import DeviceProfile, load
from qgraph.costmodel.qpu_calls import BILLING_MODELS, QPUCall, billing_scheme
from qgraph.costmodel.results import Estimate, ExplanationLog, TimeBreakdown
from qgraph.errors import InputError
from qgraph.reproduce.presets import Preset
from qgraph.reproduce.projection import PROJECTION_DEVICES, HybridCosting, cost_hybrid
from qgraph.reproduce.train import EncodedData

__all__ = [
    "ALLREDUCE_BANDWIDTH_B_S",
    "ALLREDUCE_LATENCY_S",
    "COMPONENTS",
    "DEFAULT_QPUS",
    "DEFAULT_WORKERS",
    "CallShare",
    "allreduce_s",
    "project_scale",
    "scale_grid",
    "split_call",
]

#: QPU counts of the default grid
DEFAULT_QPUS = (1, 2, 4, 8, 16)
#: classical worker counts of the default grid
DEFAULT_WORKERS = (1, 2, 4, 8)

# ASSUMPTION (qgraph): 10 Gbit/s Ethernet between the classical workers (1.25e9 B/s);
# ../shared/research has no interconnect figure, and 10 GbE is a common cloud-instance link.
ALLREDUCE_BANDWIDTH_B_S = 1.25e9
# ASSUMPTION (qgraph): 50 µs per message of the ring (TCP round trips inside one data
# centre); not a measurement, no sourced figure in ../shared/research.
ALLREDUCE_LATENCY_S = 50e-6
#: where the two all-reduce numbers come from (stored with every projection)
ALLREDUCE_SOURCE = (
    "ASSUMPTION (qgraph): 10 Gbit/s Ethernet, 50 µs per ring message; no interconnect "
    "figure in ../shared/research"
)
#: why the queue wait is 0
QUEUE_SOURCE = (
    "0: IBM publishes no queue-time figures (../shared/research/hardware-and-costs.md); "
    "none is sourced for IonQ"
)

#: the components of a step, in the order they are reported (key → label)
COMPONENTS = {
    "queue": "queue",
    "latency": "job latency",
    "execution": "shots (execution)",
    "transfer": "transfer",
    "pre_post": "quantum pre/post (CPU)",
    "classical": "classical",
    "allreduce": "all-reduce",
}


@dataclass(frozen=True)
class CallShare:
    """One op call (forward or backward) of one site spread over N QPUs.

    ``time`` is the busiest QPU's latency and execution with the whole call's transfer,
    pre/post and queue; ``jobs`` and ``money_usd`` are summed over the QPUs that got
    circuits (``qpus_used``); money None where the device has no price.
    """

    time: TimeBreakdown
    jobs: int
    money_usd: float | None
    qpus_used: int


def check_grid(qpus: Sequence[int], workers: Sequence[int]) -> tuple[list[int], list[int]]:
    """The grid's QPU and worker counts, sorted and without repeats; an empty list or a
    count below 1 is an InputError naming it."""
    out = []
    for name, values, what in (
        ("qpus", qpus, "QPUs the circuits are spread over"),
        ("workers", workers, "data-parallel classical workers"),
    ):
        values = list(values)
        if not values:
            raise InputError(f"{name} is empty; give at least one count of {what} (e.g. 1).")
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < 1]
        if bad:
            raise InputError(
                f"{name} must be whole numbers ≥ 1 (counts of {what}); got {bad} in {values}."
            )
        out.append(sorted(set(values)))
    return out[0], out[1]


def allreduce_s(
    gradient_bytes: int,
    workers: int,
    bandwidth_b_s: float = ALLREDUCE_BANDWIDTH_B_S,
    latency_s: float = ALLREDUCE_LATENCY_S,
) -> float:
    """Seconds of one ring all-reduce of ``gradient_bytes`` over ``workers`` workers:
    2(M−1)/M × bytes / bandwidth + 2(M−1) × per-message latency; 0 for one worker."""
    if workers < 1:
        raise InputError(f"workers must be ≥ 1; got {workers}.")
    steps = 2 * (workers - 1)
    return steps / workers * gradient_bytes / bandwidth_b_s + steps * latency_s


def _call(estimate: Estimate, direction: str) -> tuple[TimeBreakdown, int, int]:
    if direction == "forward":
        return estimate.forward, estimate.circuits_forward, estimate.shots_forward
    return estimate.backward, estimate.circuits_backward, estimate.shots_backward


def split_call(estimate: Estimate, direction: str, profile: DeviceProfile, qpus: int) -> CallShare:
    """``estimate``'s forward or backward call with its circuits spread evenly over ``qpus``
    QPUs: each QPU's jobs, latency and money by the device's billing model on its share
    (the per-shot time is the estimate's own: execution ÷ (circuits × shots)); the busiest
    QPU sets the time. A call without circuits (a straight-through backward) is its
    classical time as it is."""
    if direction not in ("forward", "backward"):
        raise InputError(f"direction must be 'forward' or 'backward'; got {direction!r}.")
    if qpus < 1:
        raise InputError(f"qpus must be ≥ 1; got {qpus}.")
    breakdown, circuits, shots = _call(estimate, direction)
    if circuits == 0 or shots == 0:
        return CallShare(dataclasses.replace(breakdown), 0, 0.0, 0)
    if estimate.circuit is None:
        raise InputError(
            f"the estimate of {estimate.site!r} on {estimate.device} has circuits but no circuit "
            "cost; a QPU estimate from qgraph.costmodel.estimate always has one."
        )
    shot_s = breakdown.execution_s / (circuits * shots)
    model = BILLING_MODELS[billing_scheme(profile)]
    per_qpu, extra = divmod(circuits, qpus)
    jobs, money = 0, 0.0
    busiest = None
    # `extra` QPUs run one circuit more than the others
    for share, count in ((per_qpu + 1, extra), (per_qpu, qpus - extra)):
        if share == 0 or count == 0:
            continue
        call = QPUCall(estimate.kernel, share, shots, 0, direction)
        execution = share * shots * shot_s
        billing = model(call, profile, estimate.circuit, share * shots, execution, ExplanationLog())
        jobs += count * billing.jobs
        money += count * (billing.money_usd or 0.0)
        if busiest is None or billing.latency_s + execution > sum(busiest):
            busiest = (billing.latency_s, execution)
    assert busiest is not None  # circuits ≥ 1, so one share is non-empty
    time = TimeBreakdown(
        latency_s=busiest[0],
        execution_s=busiest[1],
        transfer_s=breakdown.transfer_s,
        classical_s=breakdown.classical_s,
        queue_s=breakdown.queue_s,
    )
    priced = estimate.money_usd is not None
    return CallShare(time, jobs, money if priced else None, min(qpus, circuits))


def _quantum_on(
    estimates: Sequence[Estimate], profile: DeviceProfile, qpus: int
) -> tuple[dict[str, float], float | None, int, int]:
    """Summed components, money, jobs and the most QPUs busy, of every call of the sites."""
    parts = dict.fromkeys(("queue", "latency", "execution", "transfer", "pre_post"), 0.0)
    money: float | None = 0.0
    jobs = busy = 0
    for estimate in estimates:
        for direction in ("forward", "backward"):
            share = split_call(estimate, direction, profile, qpus)
            parts["queue"] += share.time.queue_s
            parts["latency"] += share.time.latency_s
            parts["execution"] += share.time.execution_s
            parts["transfer"] += share.time.transfer_s
            parts["pre_post"] += share.time.classical_s
            jobs += share.jobs
            busy = max(busy, share.qpus_used)
            if share.money_usd is None or money is None:
                money = None
            else:
                money += share.money_usd
    return parts, money, jobs, busy


def scale_grid(
    estimates: Mapping[str, Sequence[Estimate]],
    classical_s: float,
    gradient_bytes: int,
    run_steps: int,
    qpus: Sequence[int] = DEFAULT_QPUS,
    workers: Sequence[int] = DEFAULT_WORKERS,
    *,
    profiles: Mapping[str, DeviceProfile] | None = None,
    bandwidth_b_s: float = ALLREDUCE_BANDWIDTH_B_S,
    latency_s: float = ALLREDUCE_LATENCY_S,
) -> list[dict[str, Any]]:
    """One row per device × N QPUs × M workers (the module's model).

    Args:
        estimates: device → the cost model's estimate of every offloaded site on it.
        classical_s: the classical step's seconds outside the offloaded regions, on one
            worker at the whole batch.
        gradient_bytes: bytes of the gradients all-reduced each step.
        run_steps: steps of the run.
        qpus, workers: the grid.
        profiles: device → profile (default: ``qgraph.costmodel.load(device)``).
        bandwidth_b_s, latency_s: the all-reduce's link (default: the ASSUMPTIONS above).
    """
    qpu_grid, worker_grid = check_grid(qpus, workers)
    if not estimates:
        raise InputError("no devices to project; pass at least one device's estimates.")
    if classical_s < 0 or not math.isfinite(classical_s):
        raise InputError(f"classical_s must be a finite number of seconds ≥ 0; got {classical_s}.")
    if run_steps < 1 or gradient_bytes < 0:
        raise InputError(
            f"run_steps must be ≥ 1 and gradient_bytes ≥ 0; got {run_steps} and {gradient_bytes}."
        )
    rows: list[dict[str, Any]] = []
    for device, site_estimates in estimates.items():
        unsupported = sorted({e.reason for e in site_estimates if not e.supported})
        kinds = sorted({e.device_kind for e in site_estimates if e.supported} - {"qpu"})
        if kinds:
            raise InputError(
                f"{device} is a {kinds[0]}, not a QPU: the scale-out projection spreads circuits "
                "over QPUs (a local simulator's fan-out is the Dask backend's, issue 14 item 2); "
                "project a QPU profile."
            )
        profile = (profiles or {}).get(device) or load(device)
        base: float | None = None
        for n in qpu_grid:
            quantum = None if unsupported else _quantum_on(site_estimates, profile, n)
            for m in worker_grid:
                row: dict[str, Any] = {
                    "device": device,
                    "qpus": n,
                    "workers": m,
                    "supported": not unsupported,
                    "reason": "; ".join(unsupported),
                }
                if quantum is None:
                    rows.append(row)
                    continue
                parts, money, jobs, busy = quantum
                components = {
                    **parts,
                    "classical": classical_s / m,
                    "allreduce": allreduce_s(gradient_bytes, m, bandwidth_b_s, latency_s),
                }
                quantum_s = sum(parts.values())
                classical_side = components["classical"] + components["allreduce"]
                step = quantum_s + classical_side
                overlapped = max(quantum_s, classical_side)
                base = step if base is None else base
                critical = max(COMPONENTS, key=lambda k: components[k])
                row.update({f"{k}_s": components[k] for k in COMPONENTS})
                row.update(
                    {
                        "quantum_s": quantum_s,
                        "classical_side_s": classical_side,
                        "step_s": step,
                        "overlapped_step_s": overlapped,
                        "run_s": step * run_steps,
                        "overlapped_run_s": overlapped * run_steps,
                        "usd_per_step": money,
                        "usd_per_run": None if money is None else money * run_steps,
                        "jobs_per_step": jobs,
                        "qpus_busy": busy,
                        "critical_path": critical,
                        "critical_share": components[critical] / step if step else None,
                        "speedup": base / step if step else None,
                    }
                )
                rows.append(row)
    return rows


def project_scale(
    preset: Preset,
    data: EncodedData,
    classical_step_s: float,
    run_steps: int,
    devices: tuple[str, ...] = PROJECTION_DEVICES,
    qpus: Sequence[int] = DEFAULT_QPUS,
    workers: Sequence[int] = DEFAULT_WORKERS,
    *,
    costing: HybridCosting | None = None,
    bandwidth_b_s: float = ALLREDUCE_BANDWIDTH_B_S,
    latency_s: float = ALLREDUCE_LATENCY_S,
) -> dict[str, Any]:
    """The scale-out projection of the preset's hybrid run (the module's model): the setting,
    the model's assumptions and one row per device × N QPUs × M workers (``scale_grid``).

    The sites are costed as the projection costs them (``cost_hybrid``: the hybrid compiled
    at the preset's batch and the data's median length); pass ``costing`` to reuse one.
    ``classical_step_s`` is the measured classical step, ``run_steps`` the run's steps.
    """
    qpu_grid, worker_grid = check_grid(qpus, workers)
    if classical_step_s <= 0:
        raise InputError(
            f"classical_step_s must be > 0 s (the measured step); got {classical_step_s}."
        )
    if costing is None:
        costing = cost_hybrid(preset, data, devices)
    classical_s = classical_step_s - costing.classical_regions_s
    rows = scale_grid(
        costing.estimates,
        classical_s,
        costing.gradient_bytes,
        run_steps,
        qpu_grid,
        worker_grid,
        bandwidth_b_s=bandwidth_b_s,
        latency_s=latency_s,
    )
    return {
        "preset": preset.name,
        "batch": costing.batch,
        "length": costing.length,
        "quantum_sites": len(next(iter(costing.estimates.values()))),
        "classical_step_s": classical_step_s,
        "classical_regions_s": costing.classical_regions_s,
        "gradient_bytes": costing.gradient_bytes,
        "run_steps": run_steps,
        "devices": list(costing.devices),
        "qpus": qpu_grid,
        "workers": worker_grid,
        "allreduce_bandwidth_B_s": bandwidth_b_s,
        "allreduce_latency_s": latency_s,
        "allreduce_source": ALLREDUCE_SOURCE,
        "queue_source": QUEUE_SOURCE,
        "rows": rows,
    }
