"""ReplaceEmbedding: each embedding chosen for offload becomes ``qgraph::qrce`` + Linear.

The QRCE parameters live in a ``QRCEEmbedding`` module registered on the GraphModule, so
``parameters()``, optimizers and ``state_dict()`` see them; the replaced table, when nothing
else uses it, is removed from the GraphModule (the user's model keeps it).
"""

from __future__ import annotations

import re

import torch
import torch.fx as fx

import qgraph.ops  # noqa: F401  (registers torch.ops.qgraph.*)
from qgraph.passes.base import PropertySet, RewritePass
from qgraph.passes.rewrite.graph_edit import drop_unused_attributes, erase_dead
from qgraph.passes.rewrite.replace_attention import UNBOUND_BACKEND, UNBOUND_GRADIENT


def layer_attribute(path: str) -> str:
    """The attribute name a site's quantum layer gets on the GraphModule."""
    return "qgraph_qrce_" + re.sub(r"\W", "_", path)


class ReplaceEmbedding(RewritePass):
    """Replace every embedding site whose decision is "quantum" by QRCE."""

    requires = ("sites", "site_matches", "site_labels", "quantum_layers")

    def run(self, gm: fx.GraphModule, props: PropertySet) -> None:
        graph = gm.graph
        released: list[str] = []
        for site in props["sites"]:
            if site.kind != "embedding" or site.decision != "quantum":
                continue
            match = props["site_matches"][site.index]
            roles, output = match.roles, match.roles["output"]
            layer = props["quantum_layers"][site.key]
            name = layer_attribute(site.key)
            gm.add_submodule(name, layer)
            with graph.inserting_before(output):
                angles = graph.get_attr(f"{name}.angles")
                weights = graph.get_attr(f"{name}.weights")
                features = graph.call_function(
                    torch.ops.qgraph.qrce.default,
                    (
                        roles["ids"],
                        angles,
                        weights,
                        layer.seed,
                        UNBOUND_BACKEND,
                        UNBOUND_GRADIENT,
                        props["site_labels"][site.index],
                    ),
                )
                projected = graph.call_function(
                    torch.ops.aten.linear.default,
                    (
                        features,
                        graph.get_attr(f"{name}.proj.weight"),
                        graph.get_attr(f"{name}.proj.bias"),
                    ),
                )
            for new in (features, projected):
                new.meta["nn_module_stack"] = output.meta.get("nn_module_stack", {})
                new.meta["qgraph_site"] = site.index
            output.replace_all_uses_with(projected)
            table = roles["table"]
            released.append(table if isinstance(table, str) else str(table.target))
            if output.op == "call_module":
                released.append(str(output.target))
            erase_dead(graph, match.nodes)
        drop_unused_attributes(gm, released)
        gm.recompile()
