"""Step time against sequence length: the paper's step-time and long-sequence claims.

For each length, one model per arm of the preset's size takes ``steps`` training steps on
random token ids (batch ``batch``, every position attended) after one warm-up step (the
capture); the median step time is the figure. The arms take their steps in turn (classical,
QAAP, classical, ...), so a change in the machine's speed during the sweep hits both alike:
their ratio is what the claims read, and it moved by a fifth between two runs timed one arm
after the other.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from qgraph.reproduce.arms import ARMS, Arm
from qgraph.reproduce.presets import PRESETS, Preset
from qgraph.reproduce.train import EncodedData, build_arm

#: the arms the sweep times (the QRCE arms change no per-length cost: one lookup per token)
SWEEP_ARMS = ("classical", "qaap", "qaap_linear")
#: sweep-only arms: QAAP forced into one exact form (``qaap`` runs the form "auto" picks)
FORM_ARMS = {
    "qaap_linear": dataclasses.replace(
        ARMS["qaap"],
        name="qaap_linear",
        description="QAAP in its linear form (qaap_form='linear'): the same weights",
        compile_options={**(ARMS["qaap"].compile_options or {}), "qaap_form": "linear"},
    ),
}


def sweep_arm(name: str) -> Arm:
    """A sweep arm by name: one of the reproduction's arms or of ``FORM_ARMS``."""
    return FORM_ARMS[name] if name in FORM_ARMS else ARMS[name]


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
            module, _ = build_arm(sweep_arm(name), sized, data, 0, device)
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


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m qgraph.reproduce.sweep``: the sweep alone, its rows printed and saved."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--lengths", default=None, help="comma-separated (default: preset's)")
    parser.add_argument("--arms", default=",".join(SWEEP_ARMS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    lengths = [int(n) for n in args.lengths.split(",")] if args.lengths else preset.sweep_lengths
    rows = step_time_sweep(preset, lengths, arms=args.arms.split(","), steps=args.steps)
    classical = {r["length"]: r["median_step_s"] for r in rows if r["arm"] == "classical"}
    for row in rows:
        ratio = row["median_step_s"] / classical[row["length"]] if classical else float("nan")
        print(f"{row['length']:>6} {row['arm']:<12} {row['median_step_s']:8.3f} s  {ratio:5.2f}×")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"preset": preset.name, "rows": rows}, file, indent=1)


if __name__ == "__main__":
    main()
