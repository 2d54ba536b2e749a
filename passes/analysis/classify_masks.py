"""ClassifyMasks: name each attention site's mask (none, padding, causal, ...)."""

from __future__ import annotations

import torch
import torch.fx as fx

from qgraph.kernels.qaap import ADDITIVE_MASK_THRESHOLD
from qgraph.passes.analysis.graph_utils import depends_on_user_input
from qgraph.passes.base import AnalysisPass, PropertySet


def classify_mask(mask: torch.Tensor | None, is_causal: bool, depends_on_input: bool) -> str:
    """The kind of an attention mask from its value at the example inputs.

    Values show the structure (a lower triangle, rows equal across queries); the graph shows
    whether it depends on an input, which catches a padding mask whose example was all ones.
    """
    if mask is None:
        return "causal" if is_causal else "none"
    if mask.dtype == torch.bool:
        keep = mask
    else:
        keep = mask > ADDITIVE_MASK_THRESHOLD
        if bool((mask.masked_fill(~keep, 0.0) != 0).any()):
            return "additive"
    n_queries, n_keys = keep.shape[-2], keep.shape[-1]
    tril = torch.ones(n_queries, n_keys, dtype=torch.bool, device=keep.device).tril()
    visible_keys = keep.any(dim=-2, keepdim=True)  # keys some query may see
    causal = is_causal or (bool((keep == (tril & visible_keys)).all()) and not bool(keep.all()))
    structure = keep & tril if is_causal else keep
    padding = not bool(visible_keys.all()) or depends_on_input
    if causal:
        if not bool((structure == (tril & visible_keys)).all()):
            return "arbitrary"
        return "causal+padding" if padding else "causal"
    if bool((keep == keep[..., :1, :]).all()):
        return "padding" if padding else "none"
    return "arbitrary"


class ClassifyMasks(AnalysisPass):
    """Writes ``mask_kinds``: attention anchor name -> mask kind."""

    requires = ("matches", "values")
    provides = ("mask_kinds",)

    def run(self, gm: fx.GraphModule, props: PropertySet) -> None:
        kinds: dict[str, str] = {}
        for match in props["matches"]:
            if match.pattern.kind != "attention":
                continue
            mask_node = match.roles.get("mask")
            value = props["values"].get(mask_node.name) if isinstance(mask_node, fx.Node) else None
            depends = isinstance(mask_node, fx.Node) and depends_on_user_input(mask_node)
            kinds[match.anchor.name] = classify_mask(value, match.roles["is_causal"], depends)
        props["mask_kinds"] = kinds
