"""One captured and rewritten graph of a compiled module, and which calls it serves."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx

from qgraph.calls import BoundCall
from qgraph.capture import Captured

__all__ = ["GraphCapture", "shape_guard"]


def shape_guard(gm: fx.GraphModule, range_constraints: dict[Any, Any]) -> Any:
    """A predicate: do these flat inputs fit the shapes the graph was captured for?"""
    specs = []
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            value = node.meta.get("val")
            specs.append(tuple(value.shape) if isinstance(value, torch.Tensor) else None)

    def fits(flat: list[Any]) -> bool:
        bindings: dict[Any, int] = {}
        for spec, x in zip(specs, flat, strict=True):
            if spec is None:
                continue
            if not isinstance(x, torch.Tensor) or x.dim() != len(spec):
                return False
            for dim, size in zip(spec, x.shape, strict=True):
                if isinstance(dim, int):
                    if dim != size:
                        return False
                    continue
                expr = dim.node.expr
                if not expr.is_Symbol:
                    continue  # derived sizes are checked by the graph's own guards
                if bindings.setdefault(expr, size) != size:
                    return False
                bounds = range_constraints.get(expr)
                if bounds is not None and not (bounds.lower <= size <= bounds.upper):
                    return False
        return True

    return fits


@dataclass
class GraphCapture:
    """One captured and rewritten graph, and which calls it serves."""

    graph_module: fx.GraphModule
    captured: Captured
    fits: Callable[[list[Any]], bool]  # the shape guard
    training: bool
    structure: Hashable

    def flatten(self, call: BoundCall) -> list[Any]:
        """The call's leaves in the order of the graph's placeholders."""
        return self.captured.flatten_inputs(call.args, call.kwargs)

    def run(self, call: BoundCall) -> Any:
        """Run the graph on a call it serves."""
        return self.graph_module(*call.args, **call.kwargs)
