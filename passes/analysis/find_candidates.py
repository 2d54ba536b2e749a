"""FindCandidates: run the pattern table over the graph and record every match."""

from __future__ import annotations

import torch.fx as fx

from qgraph.passes.analysis.patterns import ALL_PATTERNS, Match
from qgraph.passes.base import AnalysisPass, PropertySet


class FindCandidates(AnalysisPass):
    """Writes ``matches`` (list[Match], graph order) and ``observe`` (mask node names).

    Patterns are tried best first; a node claimed by one match is not matched again, so an
    SDPA inside nn.MultiheadAttention is reported once, as ``mha_sdpa``.
    """

    provides = ("matches", "observe")

    def run(self, gm: fx.GraphModule, props: PropertySet) -> None:
        claimed: set[fx.Node] = set()
        matches: list[Match] = []
        for node in gm.graph.nodes:
            if node in claimed:
                continue
            for pattern in ALL_PATTERNS:
                roles = pattern.extract(gm, node)
                if roles is None:
                    continue
                region = roles.pop("nodes")
                if claimed.intersection(region):
                    continue
                claimed.update(region)
                matches.append(Match(pattern, node, region, roles))
                break
        props["matches"] = matches
        # The mask values at the example inputs tell its kind (see ClassifyMasks).
        props["observe"] = {
            m.roles["mask"].name for m in matches if isinstance(m.roles.get("mask"), fx.Node)
        }
