"""What sampling and hardware noise do to QAAP: a shot sweep and noisy Aer steps.

* ``shot_sweep``: the QAAP arm's trained weights (each seed's final checkpoint) evaluated on
  the dev set with their attention sampled on the shots backend at 64, 256, 1,024 and 4,096
  shots, with the read-out error of ibm_heron_r2's calibration snapshot (the cost model's
  profile). Training with shots is the ``qaap_shots`` arm; this sweep asks how many shots
  the weights an exact run learned need to keep their accuracy.
* ``noisy_aer_lengths``: QAAP attention on qiskit-aer with a fake IBM device's noise model,
  against the exact kernel, at growing sequence lengths: the relative error of the
  attention output per length. It is set against the paper's "gains
  shrink past sequence length 1024": longer sequences need more index qubits and deeper
  state preparation, so noise grows with length.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import qgraph
from qgraph.backends.exact import ExactBackend
from qgraph.backends.shots import ShotsBackend
from qgraph.costmodel.profiles import load
from qgraph.kernels.qaap import qaap_register_sizes
from qgraph.reproduce.arms import ARMS
from qgraph.reproduce.presets import Preset
from qgraph.reproduce.train import (
    CHECKPOINT,
    EncodedData,
    build_arm,
    evaluate,
    load_trainable_state,
)

#: shot counts of the sweep (the issue's, spanning what IBM's primitives default to)
SWEEP_SHOTS = (64, 256, 1024, 4096)
#: whose calibrated read-out error the sweep applies (qgraph.costmodel profile)
READOUT_DEVICE = "ibm_heron_r2"
#: fake IBM device whose noise model the Aer steps use (Heron r2, like READOUT_DEVICE)
AER_NOISE_DEVICE = "fake_fez"
#: sequence lengths of the noisy Aer steps (a one-layer model with head dimension 4)
AER_LENGTHS = (4, 8, 16, 32)


def readout_error(device: str = READOUT_DEVICE) -> tuple[float, str]:
    """The device profile's median read-out error and where it comes from."""

    quantity = load(device)["readout_error"]
    return float(quantity.value), str(quantity.source)


def shot_sweep(
    preset: Preset,
    data: EncodedData,
    folder: Path,
    seeds: Sequence[int],
    shots: Sequence[int] = SWEEP_SHOTS,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Dev accuracy of each seed's trained QAAP weights, exact and sampled (module doc).

    Seeds without a finished ``qaap`` run in ``folder`` are skipped and listed.
    """

    error, source = readout_error()
    rows: list[dict[str, Any]] = []
    missing = []
    for seed in seeds:
        checkpoint = folder / "qaap" / f"seed{seed}" / CHECKPOINT
        if not checkpoint.is_file():
            missing.append(seed)
            continue
        module, _ = build_arm(ARMS["qaap"], preset, data, seed, device)
        load_trainable_state(module, torch.load(checkpoint, weights_only=False)["state"])
        assert isinstance(module, qgraph.CompiledModule)
        exact = evaluate(module, data, preset, device)
        for count in tqdm(shots, desc=f"shot sweep seed {seed}", disable=not progress):
            module.use_backend(ShotsBackend(shots=count, seed=seed, readout_error=error))
            rows.append(
                {
                    "seed": seed,
                    "shots": count,
                    "readout_error": error,
                    "accuracy": evaluate(module, data, preset, device),
                    "exact_accuracy": exact,
                }
            )
    return {
        "readout_error": error,
        "readout_error_source": f"{READOUT_DEVICE}: {source}",
        "rows": rows,
        "seeds_without_qaap_run": missing,
    }


def noisy_aer_lengths(
    lengths: Sequence[int] = AER_LENGTHS,
    head_dim: int = 4,
    shots: int = 1024,
    noise: str = AER_NOISE_DEVICE,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Relative error of QAAP attention on noisy Aer against the exact kernel (module doc).

    One head, random queries, keys and values (seeded, unit normal) of each length; the
    circuits have ⌈log2 n⌉ index and ⌈log2 d⌉ feature qubits. The relative error is
    ‖noisy − exact‖ / ‖exact‖ over the whole (n, d) output; the same circuits sampled without
    noise at the same shots give the shot-noise floor.
    """
    from qgraph.backends.aer import AerBackend  # needs the optional qiskit-aer

    exact_backend = ExactBackend()
    sampled = AerBackend(shots=shots, seed=seed)
    noisy = AerBackend(shots=shots, noise=noise, seed=seed)
    rows = []
    for length in tqdm(lengths, desc="noisy Aer QAAP", disable=not progress):
        generator = torch.Generator().manual_seed(seed + length)
        q, k, v = torch.randn(3, 1, 1, length, head_dim, generator=generator).unbind(0)

        site = f"aer-noise-n{length}"
        exact = exact_backend.qaap(q, k, v, None, False, None, 0.0, site=site)
        errors = {}
        for label, backend in (("shots_only_error", sampled), ("noisy_error", noisy)):
            out = backend.qaap(q, k, v, None, False, None, 0.0, site=site)
            errors[label] = float((out - exact).norm() / exact.norm())
        rows.append(
            {
                "length": length,
                "qubits": sum(qaap_register_sizes(length, head_dim)),
                **errors,
            }
        )
    return {"noise": noise, "shots": shots, "head_dim": head_dim, "rows": rows}


def _markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A blank line, then a Markdown table."""
    lines = ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def noise_markdown(noise: dict[str, Any]) -> list[str]:
    """results.md's lines for the shot sweep and the noisy Aer steps (none if not run)."""
    lines: list[str] = []
    shots = noise.get("shots") or {}
    if shots.get("rows"):
        lines += [
            "",
            "## Shot noise: the trained QAAP weights with sampled attention",
            "",
            f"Read-out error {shots['readout_error']:.4f} per bit "
            f"({shots['readout_error_source']}).",
        ]
        lines += _markdown_table(
            ["seed", "shots", "dev accuracy", "exact backend"],
            [
                [
                    r["seed"],
                    f"{r['shots']:,}",
                    f"{100 * r['accuracy']:.1f} %",
                    f"{100 * r['exact_accuracy']:.1f} %",
                ]
                for r in shots["rows"]
            ],
        )
    if shots.get("seeds_without_qaap_run"):
        lines += ["", f"No finished qaap run for seed(s) {shots['seeds_without_qaap_run']}."]
    aer = noise.get("aer") or {}
    if aer.get("rows"):
        lines += [
            "",
            f"## Hardware noise against length: QAAP on qiskit-aer with {aer['noise']}'s noise",
            "",
            f"One head of dimension {aer['head_dim']}, random q, k, v, {aer['shots']:,} shots; "
            "relative error ‖out − exact‖ / ‖exact‖.",
        ]
        lines += _markdown_table(
            ["length", "qubits", "noiseless, sampled", "noisy, sampled"],
            [
                [
                    r["length"],
                    r["qubits"],
                    f"{r['shots_only_error']:.3f}",
                    f"{r['noisy_error']:.3f}",
                ]
                for r in aer["rows"]
            ],
        )
    if noise.get("aer_skipped"):
        lines += ["", f"Noisy Aer steps not run: {noise['aer_skipped']}."]
    return lines
