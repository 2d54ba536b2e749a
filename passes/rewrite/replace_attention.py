"""ReplaceAttention: each attention core chosen for offload becomes one ``qgraph::qaap`` call.

Only the core (scores, weighting, pooling) is replaced; the q/k/v/o projections and their
weights stay, and q, k, v, mask and dropout arrive exactly as the original op got them.
"""

from __future__ import annotations

import torch
import torch.fx as fx

import qgraph.ops  # noqa: F401  (registers torch.ops.qgraph.*)
from qgraph.passes.analysis.patterns import TRANSPOSE_TARGETS
from qgraph.passes.base import PropertySet, RewritePass
from qgraph.passes.rewrite.graph_edit import erase_dead

#: the backend and gradient written by rewriting; BindBackend replaces them
UNBOUND_BACKEND = "unbound"
UNBOUND_GRADIENT = "unbound"


def site_label(prefix: str, key: str) -> str:
    """The ``site`` argument of a site's quantum op, ``"<prefix>:<site key>"``: backends count
    calls per label, and the prefix (one per compiled module or dynamo graph) keeps two
    compiled copies of one model apart."""
    return f"{prefix}:{key}"


def attention_dropout_keep(q: torch.Tensor, k: torch.Tensor, p: float) -> torch.Tensor:
    """A Bernoulli(1 - p) keep mask over the (B, H, Sq, Sk) attention weights."""
    shape = (*q.shape[:-1], k.shape[-2])
    return torch.rand(shape, device=q.device) >= p


def _untransposed(graph: fx.Graph, k_transposed: fx.Node) -> fx.Node:
    """k from the node the eager chain multiplied by (kᵀ)."""
    if (
        k_transposed.op == "call_function"
        and k_transposed.target in TRANSPOSE_TARGETS
        and {k_transposed.args[1], k_transposed.args[2]} in ({-2, -1}, {2, 3})
    ):
        source = k_transposed.args[0]
        assert isinstance(source, fx.Node)
        return source
    return graph.call_function(torch.ops.aten.transpose.int, (k_transposed, -2, -1))


class ReplaceAttention(RewritePass):
    """Replace every attention site whose decision is "quantum" by ``qgraph::qaap``."""

    requires = ("sites", "site_matches", "decisions", "site_label_prefix", "qaap_form")

    def run(self, gm: fx.GraphModule, props: PropertySet) -> None:
        graph = gm.graph
        for site in props["sites"]:
            if site.kind != "attention" or props["decisions"][site.index].decision != "quantum":
                continue
            match = props["site_matches"][site.index]
            roles, output = match.roles, match.roles["output"]
            with graph.inserting_before(output):
                k = roles.get("k") or _untransposed(graph, roles["k_transposed"])
                dropout_p = float(roles.get("dropout_p") or 0.0)
                keep = None
                if dropout_p > 0.0:
                    keep = graph.call_function(attention_dropout_keep, (roles["q"], k, dropout_p))
                qaap = graph.call_function(
                    torch.ops.qgraph.qaap.default,
                    (
                        roles["q"],
                        k,
                        roles["v"],
                        roles.get("mask"),
                        keep,
                        bool(roles.get("is_causal")),
                        dropout_p,
                        UNBOUND_BACKEND,
                        UNBOUND_GRADIENT,
                        site_label(props["site_label_prefix"], site.key),
                        props["qaap_form"],
                    ),
                )
            qaap.meta.update(
                {
                    k_: v
                    for k_, v in output.meta.items()
                    if k_ in ("nn_module_stack", "stack_trace", "val")
                }
            )
            qaap.meta["qgraph_site"] = site.index
            output.replace_all_uses_with(qaap)
            erase_dead(graph, match.nodes)
        gm.recompile()
