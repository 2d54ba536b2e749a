"""Step time against sequence length: the paper's step-time and long-sequence claims.

For each length, one model per arm of the preset's size takes ``steps`` training steps on
random token ids (batch ``batch``, every position attended) after one warm-up step (the
capture); the median step time is the figure. The arms take their steps in turn (classical,
QAAP, classical, ...), so a change in the machine's speed during the sweep hits both alike:
their ratio is what the claims read, and it moved by a fifth between two runs timed one arm
after the other.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from qgraph.reproduce.arms import ARMS
from qgraph.reproduce.presets import Preset
from qgraph.reproduce.train import EncodedData, build_arm

#: the arms the sweep times (the QRCE arms change no per-length cost: one lookup per token)
SWEEP_ARMS = ("classical", "qaap")


def step_time_sweep(
    preset: Preset,
    lengths: Sequence[int],
    *,
    arms: Sequence[str] = SWEEP_ARMS,
    batch: int = 4,
    steps: int = 5,
    vocab_size: int = 30522,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Median training-step time per (length, arm); rows for results.json."""
    rows = []
    for length in lengths:
        sized = preset.with_options(max_length=length, pretrained=False)
        generator = torch.Generator().manual_seed(length)
        ids = torch.randint(1000, vocab_size, (batch, length), generator=generator).tolist()
        data = EncodedData(ids, [0, 1] * (batch // 2) + [0] * (batch % 2), [], [], vocab_size, 2)
        inputs = {
            "input_ids": torch.tensor(ids, device=device),
            "attention_mask": torch.ones(batch, length, dtype=torch.long, device=device),
            "labels": torch.tensor(data.train_labels, device=device),
        }
        trained = {}
        for name in arms:
            module, _ = build_arm(ARMS[name], sized, data, 0, device)
            module.train()
            trained[name] = (module, torch.optim.AdamW(module.parameters(), lr=1e-4))
        times: dict[str, list[float]] = {name: [] for name in arms}
        for _ in range(steps + 1):
            for name, (module, optimizer) in trained.items():
                start = time.perf_counter()
                loss = module(**inputs).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                times[name].append(time.perf_counter() - start)
        del trained
        rows += [
            {
                "length": length,
                "arm": name,
                "batch": batch,
                "median_step_s": statistics.median(times[name][1:]),
                "steps": steps,
                "step_s": times[name][1:],
            }
            for name in arms
        ]
    return rows
