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
from qgraph.layers import QRCEEmbedding, QRCEOptions
from qgraph.passes.analysis.patterns import Match
from qgraph.passes.base import PropertySet, RewritePass
from qgraph.passes.rewrite.graph_edit import drop_unused_attributes, erase_dead
from qgraph.passes.rewrite.replace_attention import UNBOUND_BACKEND, UNBOUND_GRADIENT, site_label
from qgraph.site import SiteRecord


def layer_attribute(path: str) -> str:
    """The attribute name a site's quantum layer gets on the GraphModule."""
    return "qgraph_qrce_" + re.sub(r"\W", "_", path)


def table_target(match: Match) -> str:
    """The attribute path of the table an embedding match reads (its weight, for a
    symbolic_trace ``nn.Embedding`` call)."""
    table = match.roles["table"]
    return table if isinstance(table, str) else str(table.target)


def make_layer(
    gm: fx.GraphModule, site: SiteRecord, match: Match, options: QRCEOptions, seed: int
) -> QRCEEmbedding:
    """A new QRCE layer for ``site``, in its table's dtype and device, seeded ``seed + index``;
    fitted to the table when ``options.init`` is "distill"."""
    target = table_target(match)
    table = gm.get_parameter(target) if "." in target or hasattr(gm, target) else None
    if table is None or not site.vocab_size or not site.embed_dim:
        raise RuntimeError(
            f"ReplaceEmbedding: site {site.key!r} has no (vocab, dim) table parameter "
            f"{target!r} on the graph module to build its QRCE layer from."
        )
    layer = QRCEEmbedding(
        site.vocab_size,
        site.embed_dim,
        options.qubits,
        options.layers,
        seed=seed + site.index,
        dtype=table.dtype,
        device=table.device,
    )
    if options.init == "distill":
        layer.distill_from(table)
    return layer


class ReplaceEmbedding(RewritePass):
    """Replace every embedding site whose decision is "quantum" by QRCE.

    Each site's layer comes from ``quantum_layers`` (site key -> ``QRCEEmbedding``, shared by
    every capture of one compiled model); a site without one gets a new layer
    (``make_layer``, from ``qrce_options`` and ``seed``), which is added to that store, so
    later captures train the same parameters. That store is the only property this pass
    changes, and only by adding layers.
    """

    requires = (
        "sites",
        "site_matches",
        "decisions",
        "site_label_prefix",
        "quantum_layers",
        "qrce_options",
        "seed",
    )

    def run(self, gm: fx.GraphModule, props: PropertySet) -> None:
        graph = gm.graph
        layers: dict[str, QRCEEmbedding] = props["quantum_layers"]
        released: list[str] = []
        for site in props["sites"]:
            if site.kind != "embedding" or props["decisions"][site.index].decision != "quantum":
                continue
            match = props["site_matches"][site.index]
            roles, output = match.roles, match.roles["output"]
            if site.key not in layers:
                # Tables are released after the loop, so this site's table is still here.
                layers[site.key] = make_layer(gm, site, match, props["qrce_options"], props["seed"])
            layer = layers[site.key]
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
                        site_label(props["site_label_prefix"], site.key),
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
            released.append(table_target(match))
            if output.op == "call_module":
                released.append(str(output.target))
            erase_dead(graph, match.nodes)
        drop_unused_attributes(gm, released)
        gm.recompile()
