"""Small helpers the analysis and rewrite passes share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.fx as fx

#: ops that read only a tensor's shape, not its data: provenance does not flow through them
_SHAPE_ONLY_TARGETS: set[Any] = {
    torch.ops.aten.sym_size.int,
    torch.ops.aten.sym_numel.default,
    torch.ops.aten.sym_stride.int,
}


def module_path(node: fx.Node) -> tuple[str, str]:
    """(module path, module class name) of the innermost module the node was traced in."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "", ""
    path, module_type = list(stack.values())[-1]
    type_name = module_type if isinstance(module_type, str) else module_type.__qualname__
    return str(path), type_name.rsplit(".", 1)[-1]


def arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    """A call's argument by position or keyword, as torch.fx records either."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def is_shape_only(node: fx.Node) -> bool:
    """Whether the node reads only the shape of its input (``x.size(1)``, ``x.shape``)."""
    if node.target in _SHAPE_ONLY_TARGETS:
        return True
    if node.op == "call_method" and node.target in ("size", "dim"):
        return True
    return node.op == "call_function" and node.target is getattr and node.args[1] == "shape"


def data_ancestors(node: fx.Node) -> Iterator[fx.Node]:
    """Every node whose *values* flow into ``node`` (edges through shape reads excluded)."""
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        for parent in current.all_input_nodes:
            if parent in seen or is_shape_only(parent):
                continue
            seen.add(parent)
            yield parent
            stack.append(parent)


def depends_on_user_input(node: fx.Node) -> bool:
    """Whether the node's values depend on the data of a graph input (a placeholder)."""
    return any(a.op == "placeholder" for a in data_ancestors(node))
