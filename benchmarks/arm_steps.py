"""Training-step time of each `qgraph reproduce` arm, side by side in one process.

The arms of the `cpu` preset (6 layers, width 256, batch 32) take training steps on the same
random batch of token ids (length 32, every position attended), in interleaved rounds so
that drift on a shared machine hits every arm alike; the figure is each arm's median step
and its ratio to the classical arm. This is the step-time comparison of the paper's
experiment without the noise a long training run picks up from whatever else the machine
does (docs/results/README.md).

    python benchmarks/arm_steps.py [--quick] [--json PATH]
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))

import statistics
import time

import torch
from common import parse_args, write_result

from qgraph.reproduce.arms import ARMS
from qgraph.reproduce.presets import get_preset
from qgraph.reproduce.train import EncodedData, build_arm, parameter_groups

#: the arms timed: every arm of the experiment
TIMED_ARMS = ("classical", "qaap", "qrce", "hybrid", "qrce_control", "qaap_shots")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    preset = get_preset("quick" if args.quick else "cpu")
    length, rounds, steps = (16, 2, 3) if args.quick else (32, 3, 8)
    vocab = 30522
    batch = preset.batch_size
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab, (batch, length), generator=generator)
    labels = [i % 2 for i in range(batch)]
    data = EncodedData(ids.tolist(), labels, [], [], vocab, 2)
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones(batch, length, dtype=torch.long),
        "labels": torch.tensor(labels),
    }
    arms = {}
    for name in TIMED_ARMS:
        torch.manual_seed(0)
        module, _ = build_arm(ARMS[name], preset.with_options(max_length=length), data, 0, "cpu")
        module.train()
        optimizer = torch.optim.AdamW(parameter_groups(module, preset), lr=preset.lr)
        arms[name] = (module, optimizer)

    def step(name: str) -> float:
        module, optimizer = arms[name]
        start = time.perf_counter()
        loss = module(**inputs).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    for name in TIMED_ARMS:  # warm-up: the capture, first-call allocations
        step(name)
    times: dict[str, list[float]] = {name: [] for name in TIMED_ARMS}
    for _ in range(rounds):
        for name in TIMED_ARMS:
            times[name] += [step(name) for _ in range(steps)]
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    results = {
        "preset": preset.name,
        "model": f"{preset.layers} layers, width {preset.hidden}, {preset.heads} heads, "
        f"ff {preset.ff}",
        "batch": batch,
        "length": length,
        "rounds": rounds,
        "steps_per_round": steps,
        "step_s": times,
        "median_step_s": medians,
    }
    ratios = {
        f"{name}_over_classical": medians[name] / medians["classical"]
        for name in TIMED_ARMS
        if name != "classical"
    }
    write_result(args.json, "arm_steps", results, ratios)
    print(f"{results['model']}, batch {batch} × length {length}, {rounds}×{steps} steps per arm")
    for name in TIMED_ARMS:
        ratio = medians[name] / medians["classical"]
        print(f"  {name:<13} {1000 * medians[name]:7.1f} ms  {ratio:5.2f}× classical")


if __name__ == "__main__":
    main()
