"""Pass base classes, the property set and the pass manager."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch.fx as fx


class PropertySet(dict[str, Any]):
    """What analysis passes found, keyed by property name."""


class _Pass(ABC):
    #: property names that must be present before this pass runs
    requires: ClassVar[tuple[str, ...]] = ()
    #: property names this pass writes; the pass manager checks they are there afterwards
    provides: ClassVar[tuple[str, ...]] = ()

    @property
    def name(self) -> str:
        return type(self).__name__

    @abstractmethod
    def run(self, gm: fx.GraphModule, props: PropertySet) -> None:
        """Run the pass on ``gm``."""


class AnalysisPass(_Pass):
    """Reads the graph; writes only ``props``."""


class RewritePass(_Pass):
    """Changes the graph (and the modules it owns); reads ``props``."""


class PassManager:
    """Runs passes in order, checking each one's requirements first."""

    def __init__(self, passes: list[_Pass]) -> None:
        self.passes = passes

    def run(self, gm: fx.GraphModule, props: PropertySet) -> PropertySet:
        """Run every pass on ``gm``; returns the property set."""
        for p in self.passes:
            missing = [r for r in p.requires if r not in props]
            if missing:
                raise RuntimeError(
                    f"pass {p.name} requires {missing}, which no earlier pass provided; "
                    "put the analysis that provides them before it."
                )
            before = _fingerprint(gm) if isinstance(p, AnalysisPass) else None
            p.run(gm, props)
            unwritten = [key for key in p.provides if key not in props]
            if unwritten:
                raise RuntimeError(f"pass {p.name} did not write {unwritten}, which it provides.")
            if before is not None and _fingerprint(gm) != before:
                raise RuntimeError(
                    f"analysis pass {p.name} changed the graph; only rewrite passes may."
                )
        return props


def _fingerprint(gm: fx.GraphModule) -> list[tuple[str, str, str]]:
    """What an analysis pass must not change: every node's name, opcode and target."""
    return [(n.name, n.op, str(n.target)) for n in gm.graph.nodes]
