"""A data-parallel training step on 2 ranks against 1 rank, on the same global batch.

A compiled hybrid BERT (QAAP on every attention site and QRCE on the word embeddings, exact
backend, dropout off) and the classical model itself take SGD steps on one random global
batch: once in 1 process with every core's threads, once as 2 gloo ranks started by torchrun
with the cores split between them, each rank on half of the batch and gradients all-reduced
by DistributedDataParallel (``qgraph.data_parallel`` for the hybrid). The figure is the
median step time (rank 0's, between barriers) and the ratio 2 ranks / 1 rank: below 1 the
data-parallel step is faster. On one machine both configurations share the same cores, so
the ratio measures what data parallelism costs or saves in threads, all-reduce and per-rank
overheads; on a cluster each rank brings its own cores (docs/scale.md).

    python benchmarks/ddp_step.py [--quick] [--json PATH]
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ARMS = ("classical", "hybrid")
HERE = Path(__file__)


def sizes(quick: bool) -> dict[str, int]:
    """Model and batch of the comparison (``--quick``: smaller, same comparison)."""
    if quick:
        return {"layers": 2, "hidden": 128, "batch": 16, "length": 48, "steps": 5}
    return {"layers": 6, "hidden": 256, "batch": 16, "length": 128, "steps": 8}


def worker(arguments: argparse.Namespace) -> None:
    """One rank: time ``steps`` steps of each arm on its share of the global batch."""
    import torch.distributed as dist
    from hybrid_step import build

    import qgraph

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    size = sizes(arguments.quick)
    share = slice(rank * size["batch"] // world, (rank + 1) * size["batch"] // world)
    medians: dict[str, float] = {}
    for arm in ARMS:
        module, inputs = build(arm, size["layers"], size["hidden"], size["batch"], size["length"])
        mine = {name: value[share] for name, value in inputs.items()}
        if arm == "classical":
            stepped = torch.nn.parallel.DistributedDataParallel(module)
        else:
            stepped = qgraph.data_parallel(module)
        optimizer = torch.optim.SGD(module.parameters(), lr=1e-4)
        times = []
        for step in range(size["steps"] + 1):  # the first is warm-up (capture, allocation)
            dist.barrier()
            start = time.perf_counter()
            loss = stepped(**mine).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            dist.barrier()
            if step:
                times.append(time.perf_counter() - start)
        medians[arm] = statistics.median(times)
    if rank == 0:
        Path(arguments.out).write_text(json.dumps(medians))
    dist.destroy_process_group()


def run_ranks(nproc: int, quick: bool) -> dict[str, float]:
    """Median step time of each arm with ``nproc`` ranks sharing this machine's cores."""
    threads = max(1, (os.cpu_count() or 1) // nproc)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "medians.json"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            str(HERE),
            "--worker",
            "--out",
            str(out),
        ] + (["--quick"] if quick else [])
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        return {arm: float(seconds) for arm, seconds in json.loads(out.read_text()).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under a minute")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        worker(arguments)
        return
    from common import write_result

    size = sizes(arguments.quick)
    one, two = run_ranks(1, arguments.quick), run_ranks(2, arguments.quick)
    results: dict[str, Any] = {
        "model": f"BERT, {size['layers']} layers, width {size['hidden']}, 4 heads (random)",
        "global_batch": size["batch"],
        "length": size["length"],
        "timed_steps": size["steps"],
        "backend": "exact",
        "threads": f"1 rank × {os.cpu_count()} threads; 2 ranks × {(os.cpu_count() or 2) // 2}",
        "median_step_s_1_rank": one,
        "median_step_s_2_ranks": two,
    }
    ratios = {f"ddp_2_ranks_over_1_{arm}": two[arm] / one[arm] for arm in ARMS}
    write_result(arguments.json, "ddp_step", results, ratios)
    print(f"{results['model']}, global batch {size['batch']} × length {size['length']}")
    for arm in ARMS:
        print(
            f"  {arm:<10} 1 rank {1000 * one[arm]:8.1f} ms   2 ranks {1000 * two[arm]:8.1f} ms"
            f"   ratio {two[arm] / one[arm]:.2f}"
        )


if __name__ == "__main__":
    main()
