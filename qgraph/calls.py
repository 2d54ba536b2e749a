"""Binding calls by the original forward's signature, and the structure that guards a capture.

A compiled module is called the way its model is: positionally or by keyword, with optional
arguments left out. Every call is bound with ``inspect.signature(model.forward)`` into one
canonical form: positional-only parameters and ``*args`` positional, every other argument by
name, arguments equal to their defaults left out (Hugging Face's forward decorators read
arguments by name and fill their own defaults), so a call's form never decides which graph
runs.
What does decide it is the call's *structure*: which arguments are tensors (with their dtype,
rank and device), which are None, and the values of the plain Python arguments. A graph is
captured per structure, as torch.compile guards on the same facts and recompiles.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import nn

from qgraph.errors import InputError

#: forward parameters a capture pins to a value unless the caller sets them: a KV cache in
#: the outputs cannot be captured, and a compiled graph has no use for one
PINNED_DEFAULTS: dict[str, Any] = {"use_cache": False}


@dataclass(frozen=True)
class BoundCall:
    """One call in canonical form, and the structure that selects its graph."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    structure: Hashable


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, torch.Tensor))


def _is_default(value: Any, default: Any) -> bool:
    if value is default:
        return True
    plain = (bool, int, float, str)
    return isinstance(value, plain) and type(value) is type(default) and value == default


def _leaf_kind(leaf: Any) -> Hashable:
    """What about one leaf a captured graph depends on (not its sizes: those are guarded)."""
    if isinstance(leaf, torch.Tensor):
        return ("tensor", leaf.dtype, leaf.dim(), leaf.device.type)
    if leaf is None or isinstance(leaf, (bool, int, float, str)):
        return ("value", type(leaf).__name__, leaf)
    return ("object", type(leaf).__qualname__)


def _describe(kind: Hashable) -> str:
    assert isinstance(kind, tuple)
    if kind[0] == "tensor":
        return f"Tensor[{str(kind[1]).removeprefix('torch.')}, {kind[2]}-d, {kind[3]}]"
    if kind[0] == "value":
        return repr(kind[2])
    return f"a {kind[1]}"


class CallBinder:
    """Binds calls of a module by its forward's signature (see the module doc)."""

    def __init__(self, model: nn.Module) -> None:
        self.owner = type(model).__name__
        self.signature = inspect.signature(model.forward)
        params = self.signature.parameters
        self.pinned = {k: v for k, v in PINNED_DEFAULTS.items() if k in params}

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> BoundCall:
        """The canonical form of ``forward(*args, **kwargs)``; InputError when it does not fit."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InputError(
                f"the call does not fit {self.owner}.forward{self.signature}: {exc}. Call the "
                "compiled module as you would call the model."
            ) from None
        for name, value in self.pinned.items():
            bound.arguments.setdefault(name, value)
        positional: list[Any] = []
        named: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            parameter = self.signature.parameters[name]
            if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
                positional.append(value)
            elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                positional.extend(value)
            elif parameter.kind is inspect.Parameter.VAR_KEYWORD:
                named.update(value)
            elif not _is_default(value, parameter.default):
                named[name] = value
        args = tuple(positional)
        return BoundCall(args, named, self._structure(args, named))

    @staticmethod
    def _structure(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
        leaves, spec = pytree.tree_flatten((args, sorted(kwargs.items())))
        return (str(spec), tuple(_leaf_kind(leaf) for leaf in leaves))

    def difference(self, call: BoundCall, reference: BoundCall) -> str:
        """In words, how ``call``'s structure differs from ``reference``'s (for the report)."""
        changes = []
        for name in sorted(set(call.kwargs) | set(reference.kwargs)):
            if name not in reference.kwargs:
                value = call.kwargs[name]
                shown = _describe(_leaf_kind(value)) if _is_plain(value) else type(value).__name__
                changes.append(f"{name}={shown} given")
                continue
            if name not in call.kwargs:
                changes.append(f"{name} left out")
                continue
            new_kinds = [_leaf_kind(x) for x in pytree.tree_leaves(call.kwargs[name])]
            old_kinds = [_leaf_kind(x) for x in pytree.tree_leaves(reference.kwargs[name])]
            if new_kinds != old_kinds:
                changes.append(
                    f"{name}: {', '.join(map(_describe, new_kinds)) or 'nothing'} instead of "
                    f"{', '.join(map(_describe, old_kinds)) or 'nothing'}"
                )
        return "; ".join(changes) or "same structure"


def _tensor_leaves(call: BoundCall) -> dict[str, torch.Tensor]:
    """The call's tensors by a readable name (``attention_mask``, ``args[0]``, ``x['a']``)."""
    named: dict[str, torch.Tensor] = {}
    tree = {**{f"args[{i}]": a for i, a in enumerate(call.args)}, **call.kwargs}
    for path, leaf in pytree.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, torch.Tensor):
            name = pytree.keystr(path)
            named[name[2:-2] if name.count("[") == 1 else name] = leaf
    return named


def shape_conflict(example: BoundCall, call: BoundCall) -> str | None:
    """Why ``call`` cannot run where ``example`` did, if two of its inputs disagree in size.

    Tensors of the same rank whose sizes matched along a dimension in the example (input
    ids and their attention mask) are expected to match in the call; returns a message with
    the concrete shapes and the fix for the first pair that does not, or None. Used to
    explain a failed capture or run, not to refuse calls: a match in the example can be a
    coincidence.
    """
    before, now = _tensor_leaves(example), _tensor_leaves(call)
    names = [n for n in before if n in now and now[n].dim() == before[n].dim()]
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            if before[first].dim() != before[second].dim():
                continue
            for dim in range(before[first].dim()):
                was = (before[first].shape[dim], before[second].shape[dim])
                got = (now[first].shape[dim], now[second].shape[dim])
                if was[0] == was[1] and got[0] != got[1]:
                    return (
                        f"{first} has shape {tuple(now[first].shape)} but {second} has "
                        f"{tuple(now[second].shape)}: they differ in dimension {dim} "
                        f"({got[0]} vs {got[1]}), where the example inputs had them equal "
                        f"({tuple(before[first].shape)} and {tuple(before[second].shape)}). "
                        f"Pass {first} and {second} with the same size in dimension {dim} "
                        "(e.g. the attention mask of exactly these input ids)."
                    )
    return None


@contextlib.contextmanager
def blaming_mismatched_inputs(example: BoundCall, call: BoundCall) -> Iterator[None]:
    """Within the block, a failure on a call whose inputs disagree in size where the
    example's agreed (ids and their mask) is raised as that InputError, with the shapes."""
    try:
        yield
    except Exception as exc:
        conflict = shape_conflict(example, call) if call is not example else None
        if conflict is None:
            raise
        raise InputError(conflict) from exc


def why_new_capture(
    same_mode: Sequence[Hashable], call: BoundCall, binder: CallBinder, example: BoundCall
) -> str:
    """Why no capture of this mode (their structures: ``same_mode``) serves ``call``."""
    if not same_mode:
        return "first call in this mode"
    if call.structure in same_mode:
        sizes = ", ".join(
            f"{name} {tuple(value.shape)}"
            for name, value in call.kwargs.items()
            if isinstance(value, torch.Tensor)
        )
        return f"sizes outside the captured ranges ({sizes})"
    return "call structure differs: " + binder.difference(call, example)
