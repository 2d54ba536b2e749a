"""CostSites: the cost model's estimates for every supported site (``qgraph.costing``)."""

from __future__ import annotations

from collections.abc import Mapping

import torch.fx as fx

from qgraph.costing import CostOptions, SiteCosts, cost_sites
from qgraph.passes.base import AnalysisPass, PropertySet
from qgraph.site import SiteRecord


class CostSites(AnalysisPass):
    """Writes ``site_costs``: site key -> ``SiteCosts`` (quantum and classical estimates and
    the cost model's verdict).

    Reads ``cost_options`` (``CostOptions``, or None: nothing is costed) and
    ``known_site_costs``. When that is a mapping (the estimates of an earlier capture of the
    same model), the sites get those estimates by key and nothing is costed anew, so every
    capture decides on the first capture's numbers; when it is None, the supported sites are
    costed here.
    """

    requires = ("sites", "cost_options", "known_site_costs")
    provides = ("site_costs",)

    def run(self, gm: fx.GraphModule, props: PropertySet) -> None:
        sites: tuple[SiteRecord, ...] = props["sites"]
        options: CostOptions | None = props["cost_options"]
        known: Mapping[str, SiteCosts] | None = props["known_site_costs"]
        if known is not None:
            props["site_costs"] = {s.key: known[s.key] for s in sites if s.key in known}
        elif options is not None:
            props["site_costs"] = cost_sites([s.as_site() for s in sites], options)
        else:
            props["site_costs"] = {}
