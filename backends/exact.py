"""The exact backend: closed-form QAAP and a batched torch statevector for QRCE.

It is the default, needs nothing beyond torch, runs on the device of its inputs and is
differentiable, so the compiled model trains with ordinary autograd. Heads, masks,
fallbacks, dtypes and deduplication are the shared front end's (``backends/frontend.py``).
"""

from __future__ import annotations

import torch

from qgraph.backends.base import BackendStats, Capabilities
from qgraph.backends.frontend import QAAPRows, QuantumFrontEnd
from qgraph.kernels.qaap import qaap_scores
from qgraph.kernels.qrce import QRCEStructure, qrce_features, qrce_features_per_layer


class ExactBackend(QuantumFrontEnd):
    """Exact probabilities and expectation values, computed classically."""

    name = "exact"
    capabilities = Capabilities(
        exact=True,
        max_qubits=None,
        max_circuits_per_job=None,
        gradient_methods=("autograd", "parameter-shift"),
        needs_transpilation=False,
    )

    def __init__(self) -> None:
        self.stats = BackendStats()

    def qaap_rows(
        self, keys: torch.Tensor, queries: torch.Tensor, keep: torch.Tensor, site: str
    ) -> QAAPRows:
        """The closed form: (q̂·k_j)² with scale ‖K‖_F² per row (differentiable)."""
        scores, scale = qaap_scores(queries, keys, keep)
        return QAAPRows(scores, scale)

    def qrce_rows(
        self, angles: torch.Tensor, weights: torch.Tensor, structure: QRCEStructure, site: str
    ) -> torch.Tensor:
        """Statevector ⟨Z⟩ and ⟨ZZ⟩ of each token's circuit (differentiable)."""
        return qrce_features(angles, weights, structure)

    def qrce_layer_rows(
        self,
        layer_angles: torch.Tensor,
        layer_weights: torch.Tensor,
        structure: QRCEStructure,
        site: str,
    ) -> torch.Tensor:
        """Exact features of circuits with per-layer parameters (the parameter-shift rows)."""
        return qrce_features_per_layer(layer_angles, layer_weights, structure)

    def __repr__(self) -> str:
        return "ExactBackend()"
