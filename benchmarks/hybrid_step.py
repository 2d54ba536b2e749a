"""A compiled training step against the classical one, side by side in one process.

A 6-layer BERT (width 256, 4 heads, feed-forward 1024, vocabulary 30,522, random weights)
takes AdamW training steps on one random batch (16 × 128 tokens, every position attended)
three ways: classical (the model itself), QAAP (every attention site offloaded to the exact
backend) and hybrid (QAAP + QRCE on the word embeddings). Steps are interleaved round by
round so that drift on a shared machine hits every arm alike; the figures are median step
times and their ratios to the classical step. ``--profile`` adds the ten operators with the
largest self CPU time of one hybrid step (torch.profiler), to see where the extra time goes.

    python benchmarks/hybrid_step.py [--quick] [--json PATH] [--profile]
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))

import statistics
import time
from typing import Any

import torch
import transformers
from common import parse_args, write_result

import qgraph

ARMS = ("classical", "qaap", "hybrid")


def build(
    arm: str, layers: int, hidden: int, batch: int, length: int
) -> tuple[Any, dict[str, Any]]:
    """The arm's module (classical: the model itself) and the step's inputs."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=4 * hidden,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = transformers.BertForSequenceClassification(config)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30522, (batch, length), generator=generator)
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones(batch, length, dtype=torch.long),
        "labels": torch.arange(batch) % 2,
    }
    if arm == "classical":
        return model.train(), inputs
    tables = ("word",) if arm == "hybrid" else ()
    cm = qgraph.compile(
        model.train(), (), inputs, policy="all", embedding_tables=tables, backend="exact"
    )
    return cm, inputs


def main() -> None:
    profile = "--profile" in sys.argv
    if profile:
        sys.argv.remove("--profile")
    args = parse_args(__doc__.splitlines()[0])
    layers, hidden, batch, length = (2, 128, 8, 48) if args.quick else (6, 256, 16, 128)
    rounds, steps = (2, 3) if args.quick else (3, 6)
    arms = {}
    for arm in ARMS:
        module, inputs = build(arm, layers, hidden, batch, length)
        arms[arm] = (module, inputs, torch.optim.AdamW(module.parameters(), lr=1e-4))

    def step(arm: str) -> float:
        module, inputs, optimizer = arms[arm]
        start = time.perf_counter()
        loss = module(**inputs).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    for arm in ARMS:  # warm-up: captures and first-call allocations
        step(arm)
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for _ in range(rounds):
        for arm in ARMS:
            times[arm] += [step(arm) for _ in range(steps)]
    medians = {arm: statistics.median(ts) for arm, ts in times.items()}
    results: dict[str, Any] = {
        "model": f"BERT, {layers} layers, width {hidden}, 4 heads, vocab 30522 (random)",
        "batch": batch,
        "length": length,
        "backend": "exact",
        "rounds": rounds,
        "steps_per_round": steps,
        "step_s": times,
        "median_step_s": medians,
    }
    if profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            step("hybrid")
        averages = prof.key_averages()
        top = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
        results["hybrid_profile_top_self_cpu_ms"] = {
            e.key: round(e.self_cpu_time_total / 1000, 3) for e in top
        }
    ratios = {
        "qaap_step_over_classical": medians["qaap"] / medians["classical"],
        "hybrid_step_over_classical": medians["hybrid"] / medians["classical"],
    }
    write_result(args.json, "hybrid_step", results, ratios)
    print(f"{results['model']}, batch {batch} × length {length}, {rounds}×{steps} steps per arm")
    for arm in ARMS:
        ratio = medians[arm] / medians["classical"]
        print(f"  {arm:<10} {1000 * medians[arm]:8.1f} ms  {ratio:5.2f}× classical")
    for name, ms in results.get("hybrid_profile_top_self_cpu_ms", {}).items():
        print(f"  {ms:9.1f} ms  {name}")


if __name__ == "__main__":
    main()
