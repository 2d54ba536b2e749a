"""Saving and loading compiled modules.

``qgraph.save(cm, path)`` writes what a compiled module adds to its model (the trainable
state of the model and of the quantum layers, the compile options, the decisions and the
example call: ``qgraph.records``), and ``qgraph.load(path, model)`` compiles ``model`` again
with them and loads the state: outputs are bit-equal and training continues identically.
Pickling a compiled module (``torch.save(cm)``, ``copy.deepcopy``) stores the model object
itself with the same record and compiles again on load (``CompiledModule.__reduce_ex__``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qgraph.compiled import CompiledModule, compile_module
from qgraph.errors import InputError
from qgraph.records import FORMAT, load_layer_states, module_record, rebuild_options

__all__ = ["load", "save"]


def save(cm: CompiledModule, path: str | os.PathLike[str]) -> None:
    """Write ``cm``'s trainable state and how it was compiled to ``path`` (one file).

    The model's own state is stored too (``model.state_dict()``), so ``qgraph.load(path,
    model)`` restores training progress into a freshly built model of the same class.
    """
    if not isinstance(cm, CompiledModule):
        raise InputError(
            f"qgraph.save takes the CompiledModule that qgraph.compile returned; got "
            f"{type(cm).__name__}. Save a plain model with torch.save(model.state_dict())."
        )
    record = module_record(cm)
    record["model_state"] = cm.model.state_dict()
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{target} is a folder; give qgraph.save a file path, e.g. cm.pt.")
    torch.save(record, target)


def load(path: str | os.PathLike[str], model: nn.Module, **overrides: Any) -> CompiledModule:
    """Rebuild the module ``qgraph.save`` wrote, around ``model`` (a model of the same class,
    e.g. freshly built from its config): its state is loaded, then it is compiled with the
    saved options (``overrides`` replace some, e.g. ``backend=``) and the quantum layers'
    state is loaded. Outputs equal the saved module's bit for bit."""
    source = Path(path)
    if not source.is_file():
        raise InputError(f"no file {source}; pass the path qgraph.save wrote.")
    try:
        record = torch.load(source, weights_only=False)
    except Exception as exc:  # a truncated or foreign file: pickle raises many types
        raise InputError(
            f"{source} is not a file qgraph.save wrote (torch.load failed: "
            f"{type(exc).__name__}: {exc}); pass the path qgraph.save wrote."
        ) from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise InputError(
            f"{source} was not written by qgraph.save (format {FORMAT}); load plain "
            "checkpoints with torch.load."
        )
    model_class = f"{type(model).__module__}.{type(model).__qualname__}"
    if model_class != record["model_class"]:
        raise InputError(
            f"{source} holds a compiled {record['model_class']}; got a {model_class}. Pass a "
            "model of the saved class."
        )
    model.load_state_dict(record["model_state"])
    example = record["example"]
    options = rebuild_options(record, overrides)
    cm = compile_module(model, tuple(example["args"]), dict(example["kwargs"]), options)
    load_layer_states(cm, record)
    return cm
