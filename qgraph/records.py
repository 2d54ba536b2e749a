"""What a compiled module is rebuilt from: the record ``qgraph.save`` writes and pickling keeps.

A record holds the compile options (names where the module was given instances), the
decisions when the policy was a callable (a callable cannot be stored: it is replayed), the
example call, the training mode and the quantum layers' state. Rebuilding means compiling
the model again with those options (``qgraph.compiled.compile_module``) and loading the
layers' state: outputs are bit-equal and training continues identically.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qgraph.errors import InputError
from qgraph.version import __version__

if TYPE_CHECKING:
    from qgraph.compiled import CompiledModule
    from qgraph.site import Site

__all__ = ["FORMAT", "ReplayDecisions", "load_layer_states", "module_record", "rebuild_options"]

#: the format of a qgraph.save file; load refuses others
FORMAT = "qgraph.save/1"


class ReplayDecisions:
    """A policy that repeats saved decisions (a callable policy cannot be stored)."""

    __name__ = "saved_decisions"

    def __init__(self, decisions: dict[str, bool]) -> None:
        self.decisions = decisions

    def __call__(self, site: Site) -> bool:
        return self.decisions.get(site.key, False)


def _stored_options(cm: CompiledModule) -> dict[str, Any]:
    """The compile options to store: names where the module was given instances."""
    options = dict(cm.compile_options)
    if not isinstance(options.get("policy"), str):
        options["policy"] = {s.key: s.decision == "quantum" for s in cm.report.sites}
    if not isinstance(options.get("backend"), str):
        options["backend"] = None  # a configured instance: load takes one again
    return options


def module_record(cm: CompiledModule) -> dict[str, Any]:
    """The record of ``cm``: everything but the model itself."""
    return {
        "format": FORMAT,
        "qgraph_version": __version__,
        "model_class": f"{type(cm.model).__module__}.{type(cm.model).__qualname__}",
        "options": _stored_options(cm),
        "example": {"args": cm.example.args, "kwargs": cm.example.kwargs},
        "training": cm.training,
        "quantum_layers": {key: layer.state_dict() for key, layer in cm.quantum_layers.items()},
    }


def rebuild_options(record: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The compile options to rebuild with: the record's, ``overrides`` replacing some."""
    # options added after the file was written take their defaults
    options = {"job_policy": None, **record["options"], **overrides}
    if options.get("backend") is None:
        raise InputError(
            "this module was compiled with a configured backend instance, which is not "
            "stored; pass one again: qgraph.load(path, model, backend=ShotsBackend(...))."
        )
    if isinstance(options.get("policy"), dict):
        options["policy"] = ReplayDecisions(options["policy"])
    return options


def load_layer_states(cm: CompiledModule, record: dict[str, Any]) -> None:
    """Load the recorded quantum layers' state and training mode into the rebuilt ``cm``."""
    for key, state in record["quantum_layers"].items():
        cm.quantum_layers[key].load_state_dict(state)
    cm.train(record["training"])
