"""The compile pipeline's pass lists: analysis (find the sites), decision (cost and decide),
rewrite (replace and lower). ``passes/README.md`` states what each pass reads and writes."""

from __future__ import annotations

from collections.abc import Callable

from qgraph.passes.analysis.build_sites import BuildSites
from qgraph.passes.analysis.choose_qaap_form import ChooseQaapForm
from qgraph.passes.analysis.classify_masks import ClassifyMasks
from qgraph.passes.analysis.cost_sites import CostSites
from qgraph.passes.analysis.count_flops_bytes import CountFlopsBytes
from qgraph.passes.analysis.decide_offload import DecideOffload
from qgraph.passes.analysis.find_candidates import FindCandidates
from qgraph.passes.analysis.shape_propagation import ShapePropagation
from qgraph.passes.base import PassManager
from qgraph.passes.lower.bind_backend import BindBackend
from qgraph.passes.rewrite.replace_attention import ReplaceAttention
from qgraph.passes.rewrite.replace_embedding import ReplaceEmbedding

__all__ = ["analysis_pipeline", "decision_pipeline", "rewrite_pipeline"]


def analysis_pipeline(normalize_path: Callable[[str], str] | None = None) -> PassManager:
    """The analysis passes that find the sites, in dependency order (``normalize_path``:
    see ``BuildSites``)."""
    return PassManager(
        [
            FindCandidates(),
            ShapePropagation(),
            ClassifyMasks(),
            CountFlopsBytes(),
            BuildSites() if normalize_path is None else BuildSites(normalize_path),
        ]
    )


def decision_pipeline() -> PassManager:
    """The analysis passes that cost the sites and decide on them, after
    ``analysis_pipeline``."""
    return PassManager([CostSites(), DecideOffload(), ChooseQaapForm()])


def rewrite_pipeline() -> PassManager:
    """The rewrite and lowering passes, in order."""
    return PassManager([ReplaceAttention(), ReplaceEmbedding(), BindBackend()])
