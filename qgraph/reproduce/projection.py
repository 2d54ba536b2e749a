"""The cost model's projection of the hybrid's training step and run on quantum devices.

The hybrid arm's model is compiled at the preset's batch size and the training data's median
length, with every site costed on each device (``qgraph.costing``). A projected step is the
measured classical step with the offloaded regions' classical (roofline) time taken out and
the quantum time of every offloaded site, forward and backward, put in, run one after the
other (no overlap); its fidelity is the product of the sites' circuit fidelities, its money
the sum of their prices. The run is the step times the run's steps.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import torch

import qgraph
from qgraph.costmodel.results import Estimate
from qgraph.reproduce.arms import ARMS
from qgraph.reproduce.presets import Preset
from qgraph.reproduce.train import EncodedData, build_model

#: the devices the projection costs (qgraph.devices() lists them with sources)
PROJECTION_DEVICES = ("ibm_heron_r2", "ibm_heron_r3", "ionq_aria", "ideal_ft")


@dataclass(frozen=True)
class HybridCosting:
    """The hybrid arm's model compiled at the preset's batch and the training data's median
    length, and what the cost model says about its offloaded sites."""

    batch: int
    length: int
    #: device → one estimate per offloaded site, in the report's order
    estimates: dict[str, list[Estimate]]
    #: the offloaded regions' classical (roofline) time, forward and backward
    classical_regions_s: float
    #: bytes of the trainable parameters' gradients (what data-parallel training reduces)
    gradient_bytes: int

    @property
    def devices(self) -> tuple[str, ...]:
        """The devices costed, in order."""
        return tuple(self.estimates)


def cost_hybrid(
    preset: Preset, data: EncodedData, devices: tuple[str, ...] = PROJECTION_DEVICES
) -> HybridCosting:
    """Compile the hybrid arm's model (batch ≥ 2, the median training length ≥ 2, random ids
    seeded 0) with every offloaded site costed on ``devices``."""
    length = max(2, int(statistics.median(len(ids) for ids in data.train_ids)))
    batch = max(2, preset.batch_size)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, data.vocab_size, (batch, length), generator=generator)
    model = build_model(preset, data, 0)
    options = dict(ARMS["hybrid"].compile_options or {})
    compiled = qgraph.compile(
        model,
        (),
        {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
        device=devices[0],
        report_devices=devices[1:],
        qrce_qubits=preset.qrce_qubits,
        qrce_layers=preset.qrce_layers,
        **options,
    )
    offloaded = compiled.report.quantum_sites
    return HybridCosting(
        batch=batch,
        length=length,
        estimates={
            device: [compiled.site_costs[site.key].quantum[device] for site in offloaded]
            for device in devices
        },
        classical_regions_s=sum(site.classical_s or 0.0 for site in offloaded),
        gradient_bytes=sum(
            p.numel() * p.element_size() for p in compiled.parameters() if p.requires_grad
        ),
    )


def project(
    preset: Preset,
    data: EncodedData,
    classical_step_s: float,
    run_steps: int,
    devices: tuple[str, ...] = PROJECTION_DEVICES,
    costing: HybridCosting | None = None,
) -> list[dict[str, Any]]:
    """One row per device: projected step and run time, fidelity and money of the hybrid.
    ``costing``: a :func:`cost_hybrid` already computed (then ``devices`` is its devices)."""
    if costing is None:
        costing = cost_hybrid(preset, data, devices)
    rows = []
    for device, estimates in costing.estimates.items():
        supported = all(e.supported for e in estimates)
        quantum_s = sum(e.time_s or 0.0 for e in estimates) if supported else None
        fidelities = [e.fidelity for e in estimates if e.fidelity is not None]
        step_s = (
            None
            if quantum_s is None
            else classical_step_s - costing.classical_regions_s + quantum_s
        )
        money = [e.money_usd for e in estimates if e.money_usd is not None]
        rows.append(
            {
                "device": device,
                "supported": supported,
                "reason": "; ".join(sorted({e.reason for e in estimates if not e.supported})),
                "batch": costing.batch,
                "length": costing.length,
                "quantum_sites": len(estimates),
                "quantum_s_per_step": quantum_s,
                "step_s": step_s,
                "step_vs_classical": None if step_s is None else step_s / classical_step_s,
                "run_s": None if step_s is None else step_s * run_steps,
                "fidelity_per_step": math.prod(fidelities) if fidelities else None,
                "usd_per_step": sum(money) if money else None,
                "usd_per_run": sum(money) * run_steps if money else None,
            }
        )
    return rows


def projection_markdown(rows: list[dict[str, Any]], classical_step_s: float) -> str:
    """The projection as a Markdown table."""

    def number(value: float | None, unit: str = "") -> str:
        return "" if value is None else f"{value:.3g}{unit}"

    lines = [
        f"Measured classical step on this machine: {1000 * classical_step_s:.0f} ms. "
        f"Hybrid step at batch {rows[0]['batch']}, length {rows[0]['length']}, "
        f"{rows[0]['quantum_sites']} quantum sites, costed per device:",
        "",
        "| device | quantum time per step | step | step vs classical | run | fidelity per step "
        "| USD per step | USD per run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if not r["supported"]:
            lines.append(f"| {r['device']} | not supported: {r['reason']} | | | | | | |")
            continue
        lines.append(
            f"| {r['device']} | {number(r['quantum_s_per_step'], ' s')} | "
            f"{number(r['step_s'], ' s')} | {number(r['step_vs_classical'], '×')} | "
            f"{number(r['run_s'], ' s')} | {number(r['fidelity_per_step'])} | "
            f"{number(r['usd_per_step'])} | {number(r['usd_per_run'])} |"
        )
    return "\n".join(lines) + "\n"
