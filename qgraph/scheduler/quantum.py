"""Which fx nodes are quantum op calls, and what their arguments are."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx

import qgraph.ops  # noqa: F401  (registers torch.ops.qgraph.*)
from qgraph.kernels.qaap import qaap_register_sizes

__all__ = ["QUANTUM_OPS", "bound_args", "is_quantum", "qaap_qubits"]

#: the fx targets that run on a quantum backend
QUANTUM_OPS = frozenset({torch.ops.qgraph.qaap.default, torch.ops.qgraph.qrce.default})


def is_quantum(node: fx.Node) -> bool:
    """Whether ``node`` is a quantum op call."""
    return node.op == "call_function" and node.target in QUANTUM_OPS


def bound_args(target: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a call of the op ``target``, by its schema's names."""
    names = [a.name for a in target._schema.arguments]
    bound = dict(zip(names, args, strict=False))
    bound.update(kwargs)
    return bound


def qaap_qubits(q: torch.Tensor, k: torch.Tensor) -> int:
    """Qubits of one QAAP circuit: index register ⌈log2 Sk⌉ + feature register ⌈log2 D⌉."""
    return sum(qaap_register_sizes(k.shape[-2], q.shape[-1]))
