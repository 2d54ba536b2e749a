"""The arms of the reproduction: what each trains, as data, and how each is built.

Every arm starts from the same classifier (same seed, same weights) and changes one thing,
named in its description.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from qgraph.errors import InputError
from qgraph.site import Site


def embeddings_only(site: Site) -> bool:
    """Policy of the QRCE-only arm: offload the word table, keep attention classical."""
    return site.kind == "embedding"


@dataclass(frozen=True)
class Arm:
    """One arm: its compile options (None: the model trains as it is) and what it tests."""

    name: str
    description: str
    compile_options: dict[str, Any] | None
    low_rank_control: bool = False  # replace the word table by a QRCE-sized low-rank table
    shots: bool = False  # QAAP on the shots backend (the preset's shot count)


#: every arm; each line says what it isolates
ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm("classical", "the model as it is: softmax attention, a full embedding table", None),
        Arm(
            "qaap",
            "QAAP for every attention core, exact backend (its control is classical)",
            {"policy": "all", "embedding_tables": ()},
        ),
        Arm(
            "qrce",
            "QRCE for the word table, exact backend",
            {"policy": embeddings_only, "embedding_tables": ("word",)},
        ),
        Arm(
            "hybrid",
            "QAAP + QRCE: the paper's hybrid",
            {"policy": "all", "embedding_tables": ("word",)},
        ),
        Arm(
            "qrce_control",
            "classical low-rank word table with QRCE's parameter count (QRCE's control)",
            None,
            low_rank_control=True,
        ),
        Arm(
            "qaap_shots",
            "QAAP sampled with the preset's shots (straight-through gradients): what a QPU gives",
            {"policy": "all", "embedding_tables": ()},
            shots=True,
        ),
    )
}


def check_arms(names: list[str]) -> list[Arm]:
    """The arms by name; an unknown one lists the known ones."""
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        raise InputError(f"unknown arm(s) {unknown}; choose from {', '.join(ARMS)}.")
    if not names:
        raise InputError(f"no arms given; choose from {', '.join(ARMS)}.")
    return [ARMS[n] for n in names]


class LowRankEmbedding(nn.Module):
    """A (vocab, rank) table and a Linear(rank, dim): a classical table of QRCE's size."""

    def __init__(self, vocab_size: int, rank: int, embed_dim: int) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab_size, rank)
        self.proj = nn.Linear(rank, embed_dim)
        nn.init.normal_(self.table.weight, std=1.0 / math.sqrt(rank))

    @property
    def weight(self) -> torch.Tensor:
        """The full (vocab, dim) table it stands for (HF code reads ``.weight`` for sizes)."""
        return self.proj(self.table.weight)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.table(ids))


def qrce_parameter_count(vocab: int, dim: int, qubits: int, layers: int) -> int:
    """Angles (V×q) + circuit weights (L×q) + read-out projection (2q×d + d)."""
    return vocab * qubits + layers * qubits + 2 * qubits * dim + dim


def matched_rank(vocab: int, dim: int, qubits: int, layers: int) -> int:
    """The largest rank r whose table (V×r + r×d + d) has no more parameters than QRCE."""
    budget = qrce_parameter_count(vocab, dim, qubits, layers)
    return max(1, (budget - dim) // (vocab + dim))


def use_low_rank_table(model: nn.Module, qubits: int, layers: int) -> int:
    """Swap the model's word table for a QRCE-sized LowRankEmbedding; returns the rank."""
    table = model.get_input_embeddings()  # type: ignore[operator]
    vocab, dim = table.weight.shape
    rank = matched_rank(vocab, dim, qubits, layers)
    model.set_input_embeddings(LowRankEmbedding(vocab, rank, dim))  # type: ignore[operator]
    return rank
