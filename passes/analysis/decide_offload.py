"""DecideOffload: the policy's decision on every site (``qgraph.policy.decide``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch.fx as fx

from qgraph.costing import SiteCosts
from qgraph.passes.base import AnalysisPass, PropertySet
from qgraph.policy import PolicyLike, decide
from qgraph.site import Site, SiteDecision, SiteRecord


class DecideOffload(AnalysisPass):
    """Writes ``decisions``: site index -> ``SiteDecision`` (quantum or classical, and why).

    Reads ``policy`` ("auto", "all", "none" or a callable ``Site -> bool``),
    ``embedding_tables`` (the table roles that are candidates), ``site_costs`` (the verdict
    "auto" follows; a callable sees the cost summaries) and ``kept_classical``: site kind ->
    the reason every supported site of that kind stays classical whatever the policy (the
    torch.compile backend keeps embeddings). A policy callable gets a new ``Site`` per call,
    so nothing it does to it reaches the records.
    """

    requires = ("sites", "site_costs", "policy", "embedding_tables", "kept_classical")
    provides = ("decisions",)

    def run(self, gm: fx.GraphModule, props: PropertySet) -> None:
        sites: tuple[SiteRecord, ...] = props["sites"]
        site_costs: Mapping[str, SiteCosts] = props["site_costs"]
        policy: PolicyLike = props["policy"]
        embedding_tables: Sequence[str] = props["embedding_tables"]
        kept_classical: Mapping[str, str] = props["kept_classical"]
        decisions: dict[int, SiteDecision] = {}
        for record in sites:
            costs = site_costs.get(record.key)
            if record.supported and record.kind in kept_classical:
                decisions[record.index] = SiteDecision(reason=kept_classical[record.kind])
                continue
            decisions[record.index] = decide(
                record.as_site(costs),
                policy,
                embedding_tables,
                costs.verdict if costs is not None else None,
            )
        props["decisions"] = decisions


def decided_sites(props: PropertySet) -> list[Site]:
    """The report's sites: every record of ``sites`` joined with its cost summaries
    (``site_costs``) and its decision (``decisions``), as new ``Site`` objects."""
    site_costs: Mapping[str, SiteCosts] = props["site_costs"]
    decisions: Mapping[int, SiteDecision] = props["decisions"]
    forms = props.get("qaap_forms", {})
    sites = []
    for record in props["sites"]:
        site = record.as_site(site_costs.get(record.key), decisions[record.index])
        choice = forms.get(record.index)
        if choice is not None:
            site.qaap_form, site.qaap_form_reason = choice.form, choice.reason
        sites.append(site)
    return sites
