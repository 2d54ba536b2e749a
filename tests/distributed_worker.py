"""A tiny hybrid classifier trained data-parallel; run by ``torchrun`` from
``tests/test_data_parallel.py`` and, for the single-process reference, imported by it.

    torchrun --standalone --nproc-per-node 2 tests/distributed_worker.py \
        --backends exact,shots --out params.pt

Each rank trains on its contiguous slice of the same global batch, once per backend; rank 0
saves each backend's final parameters, every rank's backend seed, losses and QRCE dedup
counts.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import transformers
from torch import nn

import qgraph
from qgraph.backends.exact import ExactBackend
from qgraph.backends.shots import ShotsBackend

GLOBAL_BATCH = 4
LENGTH = 8
VOCAB = 64


def build(backend: str, seed: int = 0, qrce_qubits: int = 3) -> nn.Module:
    """The compiled tiny BERT (dropout off, float64), QAAP and QRCE offloaded."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=2,
    )
    # float64: a single process and two ranks sum the batch's gradients in another order,
    # which float32 shows at 1e-6 after a few steps; float64 leaves only real differences
    model = transformers.BertForSequenceClassification(config).to(torch.float64)
    ids, _ = batch()
    quantum = ExactBackend() if backend == "exact" else ShotsBackend(shots=256, seed=seed)
    return qgraph.compile(
        model,
        (),
        {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
        backend=quantum,
        policy="all",
        qrce_qubits=qrce_qubits,
        qrce_layers=1,
        seed=seed,
    )


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch: token ids with repeats (so QRCE dedups) and labels."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB // 4, (GLOBAL_BATCH, LENGTH), generator=generator)
    return ids, torch.tensor([0, 1, 1, 0])


def train(module: nn.Module, rows: slice, steps: int) -> list[float]:
    """``steps`` SGD steps on ``rows`` of the global batch; the losses."""
    ids, labels = batch()
    ids, labels = ids[rows], labels[rows]
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
    losses = []
    for _ in range(steps):
        out = module(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    return losses


def full_parameters(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter as a plain tensor (FSDP's DTensor shards gathered)."""
    state = {}
    for name, parameter in module.named_parameters():
        value: Any = parameter.detach()
        if hasattr(value, "full_tensor"):
            value = value.full_tensor()
        state[name] = value.clone()
    return state


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="exact", help="comma-separated: exact, shots")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mismatch", action="store_true", help="rank 1 builds a wider QRCE")
    arguments = parser.parse_args()

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    per_rank = GLOBAL_BATCH // world
    saved: dict[str, Any] = {}
    for backend in arguments.backends.split(","):
        wider = arguments.mismatch and rank == 1
        compiled = build(backend, qrce_qubits=4 if wider else 3)
        wrapped = qgraph.data_parallel(compiled)
        losses = train(wrapped, slice(rank * per_rank, (rank + 1) * per_rank), arguments.steps)
        counters = compiled.backend.stats.per_site
        mine = {
            "seed": getattr(compiled.backend, "seed", None),
            "losses": losses,
            "qrce_instances": sum(c.instances for k, c in counters.items() if "embed" in k),
        }
        everyone: list[Any] = [None] * world
        dist.all_gather_object(everyone, mine)
        saved[backend] = {"parameters": full_parameters(compiled), "ranks": everyone}
    if rank == 0:
        torch.save(saved, arguments.out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
