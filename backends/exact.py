"""The exact backend: closed-form QAAP and a batched torch statevector for QRCE.

It is the default, needs nothing beyond torch, runs on the device of its inputs and is
differentiable, so the compiled model trains with ordinary autograd. QAAP runs in one of two
exact forms, quadratic or linear in the sequence length, chosen per call from the shapes
(``qgraph.costmodel.qaap_form``); the op's backward computes the same form's gradients.
QRCE's heads, dtypes and deduplication are the shared front end's (``backends/frontend.py``).
"""

from __future__ import annotations

import torch

from qgraph.backends.base import BackendStats, Capabilities
from qgraph.backends.frontend import QAAPRows, QuantumFrontEnd, classical_attention
from qgraph.costmodel.qaap_form import resolve_form
from qgraph.kernels.qaap import qaap_scores
from qgraph.kernels.qaap_linear import qaap_linear_attention
from qgraph.kernels.qaap_quadratic import quadratic_attention
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
        form: str = "auto",
    ) -> torch.Tensor:
        """QAAP with SDPA's calling convention in the form ``form`` resolves to: the
        quadratic closed form or the linear feature-map form (equal results). A subclass
        that overrides ``qaap_rows`` (to perturb or wrap the rows) gets the front end's
        row path instead, with its result checks."""
        if type(self).qaap_rows is not ExactBackend.qaap_rows:
            return super().qaap(q, k, v, attn_mask, is_causal, dropout_keep, dropout_p, site)
        self._check_qaap_ranks(q, k, v)
        choice, key_keep, causal = resolve_form(
            form, q, k, v, attn_mask, is_causal, dropout_keep, dropout_p
        )

        def exact() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            if choice.form == "linear":
                return qaap_linear_attention(q, k, v, key_keep, causal)
            return quadratic_attention(q, k, v, attn_mask, is_causal, dropout_keep, dropout_p)

        def classical() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            out = classical_attention(q, k, v, attn_mask, is_causal)
            no_rows = torch.zeros(out.shape[:-1], dtype=torch.bool, device=out.device)
            return out, no_rows, no_rows

        out, fallback, empty = self._job("qaap", site, exact, exact, classical)
        self._count_qaap(site, q.shape[:-1].numel(), fallback, empty)
        return out

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
