"""Compiler passes over torch.fx graphs (installed as ``qgraph.passes``).

Two kinds, as in Qiskit's transpiler: an *analysis* pass reads the graph and writes only the
property set; a *rewrite* pass changes only the graph (using what analyses wrote). Each pass
declares the properties it requires, and the pass manager checks them before running it.
"""

from __future__ import annotations

from qgraph.passes.base import AnalysisPass, PassManager, PropertySet, RewritePass

__all__ = ["AnalysisPass", "PassManager", "PropertySet", "RewritePass"]
