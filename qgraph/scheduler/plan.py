"""What the scheduler precomputes once per graph: node order, edges and priorities."""

from __future__ import annotations

from dataclasses import dataclass

import torch.fx as fx

from qgraph.scheduler.quantum import is_quantum

__all__ = ["Plan", "make_plan"]


@dataclass
class Plan:
    """A graph's nodes in order, their inputs and users, and their scheduling priority."""

    order: dict[fx.Node, int]
    placeholders: list[fx.Node]
    inputs: dict[fx.Node, list[fx.Node]]
    users: dict[fx.Node, list[fx.Node]]
    priority: dict[fx.Node, tuple[int, int]]  # (quantum nodes ahead, nodes ahead), larger first
    output: fx.Node


def make_plan(gm: fx.GraphModule) -> Plan:
    """The plan of ``gm``.

    A node's priority is the most quantum nodes, then the most nodes, on a path from it to
    the output: running first what leads to the next quantum calls submits jobs early, so
    they run while the main thread does the rest.
    """
    nodes = list(gm.graph.nodes)
    order = {n: i for i, n in enumerate(nodes)}
    inputs = {n: list(n.all_input_nodes) for n in nodes}
    users = {n: list(n.users) for n in nodes}
    priority: dict[fx.Node, tuple[int, int]] = {}
    for node in reversed(nodes):
        ahead = max((priority[u] for u in users[node]), default=(0, 0))
        priority[node] = (ahead[0] + (1 if is_quantum(node) else 0), ahead[1] + 1)
    (output,) = [n for n in nodes if n.op == "output"]
    return Plan(order, [n for n in nodes if n.op == "placeholder"], inputs, users, priority, output)
