"""BuildSites: turn pattern matches into Site records with shapes, masks, costs, support."""

from __future__ import annotations

from typing import Any

import torch.fx as fx

from qgraph.passes.analysis.graph_utils import depends_on_user_input, module_path
from qgraph.passes.analysis.patterns import Match
from qgraph.passes.base import AnalysisPass, PropertySet
from qgraph.site import Site

#: substrings of an embedding's module path that name its table role (checked in order)
TABLE_ROLE_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("position", ("position", "wpe", "pos_emb", "pos_embed")),  # learned positions
    ("token_type", ("token_type", "segment", "type_emb")),  # BERT segment ids
)


def table_role(path: str, ids: Any) -> str:
    """word | position | token_type | other, from the module path and where the ids come from."""
    name = path.rsplit(".", 1)[-1].lower()
    for role, keywords in TABLE_ROLE_KEYWORDS:
        if any(k in name for k in keywords):
            return role
    if isinstance(ids, fx.Node) and (ids.op == "placeholder" or depends_on_user_input(ids)):
        return "word"
    return "other"


def _shape(props: PropertySet, node: Any) -> tuple[int, ...]:
    return tuple(props["shapes"].get(node.name, ())) if isinstance(node, fx.Node) else ()


class BuildSites(AnalysisPass):
    """Writes ``sites`` (list[Site]) and ``site_matches`` (site index -> Match)."""

    requires = ("matches", "shapes", "dtypes", "mask_kinds", "node_flops", "node_bytes")
    provides = ("sites", "site_matches")

    def run(self, gm: fx.GraphModule, props: PropertySet) -> None:
        sites: list[Site] = []
        site_matches: dict[int, Match] = {}
        seen: dict[str, int] = {}
        for match in props["matches"]:
            site = self._site(gm, props, match, index=len(sites))
            # Several sites in one module (two tables, or everything at the root) need keys
            # of their own; numbering in graph order keeps them stable across captures.
            base = site.path or "<root>"
            repeat = seen.get(base, 0)
            seen[base] = repeat + 1
            site.key = base if repeat == 0 else f"{base}#{repeat}"
            sites.append(site)
            site_matches[site.index] = match
        props["sites"] = sites
        props["site_matches"] = site_matches

    def _site(self, gm: fx.GraphModule, props: PropertySet, match: Match, index: int) -> Site:
        roles = match.roles
        shapes: dict[str, tuple[int, ...]] = {}
        site = Site(
            index=index,
            kind=match.pattern.kind,  # type: ignore[arg-type]
            path=match.path,
            pattern=match.pattern.name,
            anchor=match.anchor.name,
            flops=sum(props["node_flops"].get(n.name, 0) for n in match.nodes),
            bytes=sum(props["node_bytes"].get(n.name, 0) for n in match.nodes),
        )
        output = roles["output"]
        site.dtype = str(props["dtypes"].get(output.name, "")).replace("torch.", "")
        if site.kind == "attention":
            shapes["q"], shapes["v"] = _shape(props, roles.get("q")), _shape(props, roles.get("v"))
            if "k_transposed" in roles:
                kt = _shape(props, roles["k_transposed"])
                shapes["k"] = (*kt[:-2], kt[-1], kt[-2]) if len(kt) >= 2 else kt
            else:
                shapes["k"] = _shape(props, roles.get("k"))
            if isinstance(roles.get("mask"), fx.Node):
                shapes["mask"] = _shape(props, roles["mask"])
            shapes["out"] = _shape(props, output)
            roles["mask_kind"] = props["mask_kinds"].get(match.anchor.name, "none")
            site.mask_kind = roles["mask_kind"]
            site.dropout_p = roles.get("dropout_p", 0.0)
            q_shape, k_shape = shapes["q"], shapes["k"]
            if len(q_shape) == 4 and len(k_shape) == 4:
                site.heads, site.seq_len, site.head_dim = q_shape[1], q_shape[2], q_shape[3]
                site.kv_heads, site.kv_len = k_shape[1], k_shape[2]
                site.gqa_group = site.heads // max(site.kv_heads, 1)
        else:
            table = roles["table"]
            if isinstance(table, str):  # an nn.Embedding call_module: its weight by path
                shapes["table"] = tuple(gm.get_parameter(table).shape)
            else:
                shapes["table"] = _shape(props, table)
            shapes["ids"] = _shape(props, roles["ids"])
            shapes["out"] = _shape(props, output)
            site.path = site.path or module_path(output)[0]
            site.table = table_role(site.path, roles["ids"])
            if len(shapes["table"]) == 2:
                site.vocab_size, site.embed_dim = shapes["table"]
        site.shapes = shapes
        reason = match.pattern.check(roles, shapes)
        site.supported = reason is None
        site.support_reason = reason or ""
        return site
