"""BuildSites: turn pattern matches into site records with shapes, masks, work and support."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.fx as fx

from qgraph.passes.analysis.graph_utils import depends_on_user_input, module_path
from qgraph.passes.analysis.patterns import Match
from qgraph.passes.base import AnalysisPass, PropertySet
from qgraph.site import SiteRecord

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


def _unchanged(path: str) -> str:
    return path


def _site_path(match: Match) -> str:
    """The module path a match's site is reported under (its anchor's, for an embedding with
    no anchor path the lookup's own)."""
    if match.pattern.kind == "embedding":
        return match.path or module_path(match.roles["output"])[0]
    return match.path


class BuildSites(AnalysisPass):
    """Writes ``sites`` (a tuple of frozen ``SiteRecord``, graph order) and ``site_matches``
    (site index -> Match).

    ``normalize_path`` rewrites each site's path and key as the last step (the torch.compile
    backend spells dynamo's module paths as qgraph.compile does); keys are numbered first.
    """

    requires = ("matches", "shapes", "dtypes", "mask_kinds", "node_flops", "node_bytes")
    provides = ("sites", "site_matches")

    def __init__(self, normalize_path: Callable[[str], str] = _unchanged) -> None:
        self.normalize_path = normalize_path

    def run(self, gm: fx.GraphModule, props: PropertySet) -> None:
        sites: list[SiteRecord] = []
        site_matches: dict[int, Match] = {}
        seen: dict[str, int] = {}
        for match in props["matches"]:
            # Several sites in one module (two tables, or everything at the root) need keys
            # of their own; numbering in graph order keeps them stable across captures.
            base = _site_path(match) or "<root>"
            repeat = seen.get(base, 0)
            seen[base] = repeat + 1
            key = base if repeat == 0 else f"{base}#{repeat}"
            site = self._record(gm, props, match, index=len(sites), key=key)
            sites.append(site)
            site_matches[site.index] = match
        props["sites"] = tuple(sites)
        props["site_matches"] = site_matches

    def _record(
        self, gm: fx.GraphModule, props: PropertySet, match: Match, index: int, key: str
    ) -> SiteRecord:
        roles = match.roles
        output = roles["output"]
        path = _site_path(match)
        shapes: dict[str, tuple[int, ...]] = {}
        found: dict[str, Any] = {}
        # The pattern's check also sees the mask kind, without writing it into the match.
        checked_roles = dict(roles)
        if match.pattern.kind == "attention":
            shapes["q"], shapes["v"] = _shape(props, roles.get("q")), _shape(props, roles.get("v"))
            if "k_transposed" in roles:
                kt = _shape(props, roles["k_transposed"])
                shapes["k"] = (*kt[:-2], kt[-1], kt[-2]) if len(kt) >= 2 else kt
            else:
                shapes["k"] = _shape(props, roles.get("k"))
            if isinstance(roles.get("mask"), fx.Node):
                shapes["mask"] = _shape(props, roles["mask"])
            shapes["out"] = _shape(props, output)
            checked_roles["mask_kind"] = props["mask_kinds"].get(match.anchor.name, "none")
            found["mask_kind"] = checked_roles["mask_kind"]
            found["dropout_p"] = roles.get("dropout_p", 0.0)
            q_shape, k_shape = shapes["q"], shapes["k"]
            if len(q_shape) == 4 and len(k_shape) == 4:
                heads, kv_heads = q_shape[1], k_shape[1]
                found.update(heads=heads, seq_len=q_shape[2], head_dim=q_shape[3])
                found.update(kv_heads=kv_heads, kv_len=k_shape[2])
                found["gqa_group"] = heads // max(kv_heads, 1)
        else:
            table = roles["table"]
            if isinstance(table, str):  # an nn.Embedding call_module: its weight by path
                shapes["table"] = tuple(gm.get_parameter(table).shape)
            else:
                shapes["table"] = _shape(props, table)
            shapes["ids"] = _shape(props, roles["ids"])
            shapes["out"] = _shape(props, output)
            found["table"] = table_role(path, roles["ids"])
            if len(shapes["table"]) == 2:
                found["vocab_size"], found["embed_dim"] = shapes["table"]
        reason = match.pattern.check(checked_roles, shapes)
        return SiteRecord(
            index=index,
            kind=match.pattern.kind,  # type: ignore[arg-type]
            path=self.normalize_path(path),
            pattern=match.pattern.name,
            anchor=match.anchor.name,
            key=self.normalize_path(key),
            shapes=shapes,
            dtype=str(props["dtypes"].get(output.name, "")).replace("torch.", ""),
            supported=reason is None,
            support_reason=reason or "",
            flops=sum(props["node_flops"].get(n.name, 0) for n in match.nodes),
            bytes=sum(props["node_bytes"].get(n.name, 0) for n in match.nodes),
            **found,
        )
