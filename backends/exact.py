"""The exact backend: closed-form QAAP and a batched torch statevector for QRCE.

It is the default, needs nothing beyond torch, runs on the device of its inputs and is
differentiable, so the compiled model trains with ordinary autograd.
"""

from __future__ import annotations

from typing import Any

import torch

from qgraph.backends.base import BackendStats, Capabilities
from qgraph.kernels.qaap import qaap_attention
from qgraph.kernels.qrce import QRCEStructure, qrce_token_features


class ExactBackend:
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
        """Closed-form QAAP; counts fallback and empty rows per site."""
        out, counts = qaap_attention(q, k, v, attn_mask, is_causal, dropout_keep, dropout_p)
        counters = self.stats.site(site)
        counters.calls += 1
        counters.instances += q.shape[:-1].numel()
        counters.fallback_rows += counts.fallback_rows
        counters.empty_rows += counts.empty_rows
        return out

    def qrce(
        self,
        token_ids: torch.Tensor,
        angle_table: torch.Tensor,
        weights: torch.Tensor,
        structure: QRCEStructure,
        site: str,
    ) -> torch.Tensor:
        """Statevector QRCE, each unique token simulated once."""
        counters = self.stats.site(site)
        counters.calls += 1
        counters.instances += int(torch.unique(token_ids).numel())
        return qrce_token_features(token_ids, angle_table, weights, structure)

    def qrce_gradient(
        self,
        grad_out: torch.Tensor,
        token_ids: torch.Tensor,
        angle_table: torch.Tensor,
        weights: torch.Tensor,
        structure: QRCEStructure,
        method: str,
        site: str,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact VJP of the QRCE features: autograd, or parameter shift on exact values."""
        if method == "autograd":

            def features(table: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
                return qrce_token_features(token_ids, table, rotations, structure)

            vjp: Any = torch.func.vjp(features, angle_table, weights)[1]
            grad_table, grad_weights = vjp(grad_out)
            return grad_table, grad_weights
        if method == "parameter-shift":
            from qgraph.kernels.parameter_shift import token_parameter_shift
            from qgraph.kernels.qrce import qrce_features_per_layer

            return token_parameter_shift(
                grad_out, token_ids, angle_table, weights, structure, qrce_features_per_layer
            )
        raise ValueError(
            f"the exact backend computes QRCE gradients by {self.capabilities.gradient_methods}"
            f"; got {method!r}."
        )

    def __repr__(self) -> str:
        return "ExactBackend()"
