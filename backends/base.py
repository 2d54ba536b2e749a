"""The one protocol every quantum backend implements.

A backend executes the two kernels for a batch of instances. Lowering binds each quantum op
of a rewritten graph to a backend by name; the op implementations look the backend up in
``qgraph.backends`` at run time, so graphs stay plain torch.fx with string attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from qgraph.kernels.qrce import QRCEStructure


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; the compiler checks requests against it before running."""

    exact: bool  # results are exact expectation values / probabilities, not samples
    differentiable: bool  # forward results carry autograd-compatible exact gradients
    max_qubits: int | None  # None: limited only by memory
    gradient_methods: tuple[str, ...]


@dataclass
class KernelCounters:
    """Running totals a backend keeps per site (the op's ``site`` label)."""

    calls: int = 0
    instances: int = 0  # QAAP: batch × head × query rows; QRCE: unique tokens simulated
    fallback_rows: int = 0
    empty_rows: int = 0


@dataclass
class BackendStats:
    """Counters per site label, for the report and for tests."""

    per_site: dict[str, KernelCounters] = field(default_factory=dict)

    def site(self, label: str) -> KernelCounters:
        """The counters of one site, created on first use."""
        return self.per_site.setdefault(label, KernelCounters())


@runtime_checkable
class Backend(Protocol):
    """Runs QAAP and QRCE instances; see ``backends/exact.py`` for the reference one."""

    name: str
    capabilities: Capabilities
    stats: BackendStats

    def qaap(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attn_mask: torch.Tensor | None,
        is_causal: bool,
        dropout_keep: torch.Tensor | None,
        dropout_p: float,
        site: str,
    ) -> torch.Tensor:
        """QAAP pooling with SDPA's calling convention; returns (B, H, Sq, Dv)."""
        ...

    def qrce(
        self,
        token_ids: torch.Tensor,
        angle_table: torch.Tensor,
        weights: torch.Tensor,
        structure: QRCEStructure,
        site: str,
    ) -> torch.Tensor:
        """QRCE read-out features (*token_ids.shape, 2q) for every token."""
        ...
