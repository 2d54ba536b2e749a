"""BindBackend: point every quantum op of the graph at its backend and gradient method."""

from __future__ import annotations

import torch
import torch.fx as fx

import qgraph.ops  # noqa: F401  (registers torch.ops.qgraph.*)
from qgraph.backends import get_backend
from qgraph.passes.base import PropertySet, RewritePass

#: quantum op -> (kernel name, position of its ``backend`` argument; ``gradient`` follows)
BACKEND_ARGUMENT = {
    # qaap(q, k, v, mask, keep, is_causal, p, backend, gradient, site)
    torch.ops.qgraph.qaap.default: ("qaap", 7),
    # qrce(ids, angles, weights, seed, backend, gradient, site)
    torch.ops.qgraph.qrce.default: ("qrce", 4),
}


class BindBackend(RewritePass):
    """Writes ``props["backend"]`` (a registry key) and ``props["gradients"][kernel]`` into
    each quantum op node."""

    requires = ("backend", "gradients")

    def run(self, gm: fx.GraphModule, props: PropertySet) -> None:
        key = props["backend"]
        get_backend(key)  # fails early, listing the known backends
        for node in gm.graph.nodes:
            binding = BACKEND_ARGUMENT.get(node.target)
            if binding is not None:
                kernel, position = binding
                args = list(node.args)
                args[position] = key
                args[position + 1] = props["gradients"][kernel]
                node.args = tuple(args)
        gm.recompile()
