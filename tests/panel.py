"""The model panel of the foundation issue and helpers on model outputs (importable by tests)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.utils._pytree as pytree

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from qgraph.models import ModelCase, encoder_model, hf_model, minilm

#: name -> factory of a small panel model with example inputs
PANEL: dict[str, Callable[[], ModelCase]] = {
    "encoder": lambda: encoder_model(layers=6, d_model=32, heads=4, vocab=500),
    "bert": lambda: hf_model("bert"),
    "distilbert": lambda: hf_model("distilbert"),
    "roberta": lambda: hf_model("roberta"),
    "gpt2": lambda: hf_model("gpt2"),
    "llama": lambda: hf_model("llama"),
    "minilm": lambda: minilm(),
}


#: AdamW learning rate for the 20-step training test: fine-tuning pretrained weights needs a
#: small one; the randomly initialised panel models learn fast at a large one.
TRAIN_LR: dict[str, float] = {"minilm": 1e-4}
DEFAULT_TRAIN_LR = 3e-3


def float_leaves(output: Any) -> list[torch.Tensor]:
    """Every floating-point tensor in a model output (ModelOutput, tuple, tensor)."""
    leaves = pytree.tree_leaves(output)
    if hasattr(output, "to_tuple"):
        leaves = pytree.tree_leaves(output.to_tuple())
    return [x for x in leaves if isinstance(x, torch.Tensor) and x.is_floating_point()]


def main_output(output: Any) -> torch.Tensor:
    """The hidden states: ``last_hidden_state`` or the tensor itself."""
    return output.last_hidden_state if hasattr(output, "last_hidden_state") else output
