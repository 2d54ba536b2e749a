"""Saving and loading compiled modules.

``qgraph.save(cm, path)`` writes what a compiled module adds to its model (the trainable
state of the model and of the quantum layers, the compile options, the decisions and the
example call), and ``qgraph.load(path, model)`` compiles ``model`` again with them and loads
the state: outputs are bit-equal and training continues identically. Pickling a compiled
module (``torch.save(cm)``, ``copy.deepcopy``) stores the model object itself with the same
record and compiles again on load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from qgraph.errors import InputError

if TYPE_CHECKING:
    from qgraph.compiled import CompiledModule
    from qgraph.site import Site

#: the format of a qgraph.save file; load refuses others
FORMAT = "qgraph.save/1"


class _Replay:
    """A policy that repeats saved decisions (a callable policy cannot be stored)."""

    __name__ = "saved_decisions"

    def __init__(self, decisions: dict[str, bool]) -> None:
        self.decisions = decisions

    def __call__(self, site: Site) -> bool:
        return self.decisions.get(site.key, False)


def _options(cm: CompiledModule) -> dict[str, Any]:
    """The compile options to store: names where the module was given instances."""
    options = dict(cm.compile_options)
    if not isinstance(options.get("policy"), str):
        options["policy"] = {s.key: s.decision == "quantum" for s in cm.report.sites}
    if not isinstance(options.get("backend"), str):
        options["backend"] = None  # a configured instance: load takes one again
    return options


def _record(cm: CompiledModule) -> dict[str, Any]:
    import qgraph

    return {
        "format": FORMAT,
        "qgraph_version": qgraph.__version__,
        "model_class": f"{type(cm.model).__module__}.{type(cm.model).__qualname__}",
        "options": _options(cm),
        "example": {"args": cm.example.args, "kwargs": cm.example.kwargs},
        "training": cm.training,
        "quantum_layers": {key: layer.state_dict() for key, layer in cm.quantum_layers.items()},
    }


def save(cm: CompiledModule, path: str | os.PathLike[str]) -> None:
    """Write ``cm``'s trainable state and how it was compiled to ``path`` (one file).

    The model's own state is stored too (``model.state_dict()``), so ``qgraph.load(path,
    model)`` restores training progress into a freshly built model of the same class.
    """
    from qgraph.compiled import CompiledModule

    if not isinstance(cm, CompiledModule):
        raise InputError(
            f"qgraph.save takes the CompiledModule that qgraph.compile returned; got "
            f"{type(cm).__name__}. Save a plain model with torch.save(model.state_dict())."
        )
    record = _record(cm)
    record["model_state"] = cm.model.state_dict()
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{target} is a folder; give qgraph.save a file path, e.g. cm.pt.")
    torch.save(record, target)


def _compile_from(record: dict[str, Any], model: nn.Module, overrides: dict[str, Any]) -> Any:
    import qgraph

    options = {**record["options"], **overrides}
    if options.get("backend") is None:
        raise InputError(
            "this module was compiled with a configured backend instance, which is not "
            "stored; pass one again: qgraph.load(path, model, backend=ShotsBackend(...))."
        )
    if isinstance(options.get("policy"), dict):
        options["policy"] = _Replay(options["policy"])
    example = record["example"]
    cm = qgraph.compile(model, tuple(example["args"]), dict(example["kwargs"]), **options)
    for key, state in record["quantum_layers"].items():
        cm.quantum_layers[key].load_state_dict(state)
    cm.train(record["training"])
    return cm


def load(path: str | os.PathLike[str], model: nn.Module, **overrides: Any) -> CompiledModule:
    """Rebuild the module ``qgraph.save`` wrote, around ``model`` (a model of the same class,
    e.g. freshly built from its config): its state is loaded, then it is compiled with the
    saved options (``overrides`` replace some, e.g. ``backend=``) and the quantum layers'
    state is loaded. Outputs equal the saved module's bit for bit."""
    source = Path(path)
    if not source.is_file():
        raise InputError(f"no file {source}; pass the path qgraph.save wrote.")
    record = torch.load(source, weights_only=False)
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
    return _compile_from(record, model, overrides)


def pickle_state(cm: CompiledModule) -> dict[str, Any]:
    """What pickling a compiled module stores: its model object and the save record."""
    record = _record(cm)
    record["model"] = cm.model
    if record["options"]["backend"] is None:
        record["options"]["backend"] = cm.backend
    return record


def restore_pickled(record: dict[str, Any]) -> Any:
    """Compile the pickled model again with the pickled record (``pickle_state``)."""
    return _compile_from(record, record["model"], {})


__all__ = ["load", "save"]
