"""Train one arm of the reproduction data-parallel, in processes started by ``torchrun``:

    torchrun --standalone --nproc-per-node 2 -m qgraph.reproduce.data_parallel \\
        --preset quick --arm hybrid --seed 0 --out runs/hybrid-ddp

Each rank joins the process group (gloo on CPU, NCCL on CUDA), loads the same data and
trains its share of every global batch (``qgraph.reproduce.train``); rank 0 writes
``metrics.jsonl``, the checkpoint and ``result.json`` in ``--out`` and prints the result.
The global batch, learning rate and schedule are the preset's, so the run trains the same
model as a single process would, up to the order in which gradients are summed (and, on a
sampled backend, the shots each rank draws from its own seed).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

from qgraph.cli import _preset_changes
from qgraph.reproduce import load_data
from qgraph.reproduce.arms import ARMS, check_arms
from qgraph.reproduce.presets import PRESETS, get_preset
from qgraph.reproduce.train import train_arm


def build_parser() -> argparse.ArgumentParser:
    """The command line (the preset changes are ``qgraph reproduce``'s ``--set``)."""
    parser = argparse.ArgumentParser(
        prog="python -m qgraph.reproduce.data_parallel",
        description="Train one reproduction arm data-parallel (start it with torchrun).",
    )
    parser.add_argument("--preset", default="quick", choices=list(PRESETS))
    parser.add_argument("--arm", default="hybrid", choices=list(ARMS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, metavar="DIR", help="GLUE SST-2 folder")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR")
    parser.add_argument("--resume", action="store_true", help="continue a killed run")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per rank)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="change a preset field"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Join the process group, train, and leave it; returns the exit status."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    arguments = build_parser().parse_args(argv)
    if "RANK" not in os.environ:
        raise SystemExit(
            "python -m qgraph.reproduce.data_parallel runs under torchrun, which starts the "
            "ranks: torchrun --standalone --nproc-per-node 2 -m qgraph.reproduce.data_parallel "
            "--out DIR. For one process, use qgraph reproduce --arms ARM."
        )
    (arm,) = check_arms([arguments.arm])
    preset = get_preset(arguments.preset).with_options(**_preset_changes(arguments.set))
    device = arguments.device
    if device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    try:
        data = load_data(preset, arguments.data)
        folder = arguments.out / arm.name / f"seed{arguments.seed}"
        run = train_arm(
            arm, preset, data, arguments.seed, folder, resume=arguments.resume, device=device
        )
        if dist.get_rank() == 0:
            print(json.dumps(run.summary(), indent=2))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
