"""Graph edits the rewrite passes share."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.fx as fx


def erase_dead(graph: fx.Graph, nodes: Iterable[fx.Node]) -> None:
    """Erase the given nodes, and then their inputs, while they have no users left."""
    pending = list(nodes)
    erased: set[fx.Node] = set()
    while pending:
        node = pending.pop()
        if node in erased or node.users or node.op in ("placeholder", "output"):
            continue
        inputs = node.all_input_nodes
        graph.erase_node(node)
        erased.add(node)
        pending.extend(inputs)


def drop_unused_attributes(gm: fx.GraphModule, targets: Iterable[str]) -> None:
    """Remove parameters and submodules no node refers to any more.

    Only attributes held by plain containers that capture created are removed; a module of
    the user's own model is never mutated.
    """
    used = {n.target for n in gm.graph.nodes if n.op in ("get_attr", "call_module")}
    for target in targets:
        if target in used:
            continue
        owner_path, _, name = target.rpartition(".")
        owner = gm.get_submodule(owner_path) if owner_path else gm
        if (type(owner) is torch.nn.Module or owner is gm) and hasattr(owner, name):
            delattr(owner, name)
