"""BindBackend: point every quantum op of the graph at the chosen backend."""

from __future__ import annotations

import torch
import torch.fx as fx

import qgraph.ops  # noqa: F401  (registers torch.ops.qgraph.*)
from qgraph.backends import get_backend
from qgraph.passes.base import PropertySet, RewritePass

#: the quantum ops and the position of their ``backend`` argument
BACKEND_ARGUMENT = {
    torch.ops.qgraph.qaap.default: 7,  # qaap(q, k, v, mask, keep, is_causal, p, backend, site)
    torch.ops.qgraph.qrce.default: 4,  # qrce(ids, angles, weights, seed, backend, site)
}


class BindBackend(RewritePass):
    """Writes ``props["backend"]`` (a registered backend name) into each quantum op node."""

    requires = ("backend",)

    def run(self, gm: fx.GraphModule, props: PropertySet) -> None:
        name = props["backend"]
        get_backend(name)  # fails early, listing the known backends
        for node in gm.graph.nodes:
            position = BACKEND_ARGUMENT.get(node.target)
            if position is not None:
                args = list(node.args)
                args[position] = name
                node.args = tuple(args)
        gm.recompile()
