"""The shared front end of every quantum backend: SDPA-level calls in, rows of circuits out.

A backend implements only the quantum part, on rows (``RowBackend``):

* ``qaap_rows(keys, queries, keep, site)``: query rows (..., Sq, D) over the keys
  (..., Sk, D) their group (batch, head) shares; returns what the circuits measured,
  P(index = j, feature = 0) up to one scale per row (``QAAPRows``).
* ``qrce_rows(angles, weights, structure, site)``: U distinct tokens → (U, 2q) features.
* ``qrce_layer_rows(layer_angles, layer_weights, structure, site)``: N circuits with their
  own angles per layer → (N, 2q) features (what the parameter-shift rule evaluates).

``QuantumFrontEnd`` turns those into the ``Backend`` protocol the ops call, doing once what
every backend needs: heads and grouped-query sharing, masks, the one fallback rule
(``qgraph.kernels.qaap.pooled_weights``), dropout on the weights, compute and output dtypes,
token deduplication, per-site counters, the gradient-method check, and a check of every
result (shape, dtype, finite, in range) that names the backend and the site when it fails.
Each backend still records its own jobs (``stats.records``): only it knows how a call was
split into jobs, what came back and how long it queued. Chunking rows into jobs is
``qgraph.backends.qiskit_shared.job_chunks``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch

from qgraph.backends.base import BackendStats, Capabilities, gradient_method_error
from qgraph.backends.job_policy import JobPolicy, run_job
from qgraph.errors import QGraphError
from qgraph.kernels.parameter_shift import token_parameter_shift
from qgraph.kernels.qaap import (
    compute_dtype,
    expand_kv_heads,
    keep_mask,
    pooled_weights,
    qaap_scores,
)
from qgraph.kernels.qrce import (
    QRCEStructure,
    qrce_features,
    qrce_features_per_layer,
    unique_tokens,
)

__all__ = [
    "BackendResultError",
    "QAAPRows",
    "QuantumFrontEnd",
    "RowBackend",
    "classical_attention",
    "softmax_rows",
]

_T = TypeVar("_T")

#: how far a sampled or simulated ⟨Z⟩ may stray outside [−1, 1] before it is a wrong result
_EXPECTATION_SLACK = 1e-6


class BackendResultError(QGraphError, RuntimeError):
    """A backend returned a result of the wrong shape or dtype, or with NaN/inf/out-of-range
    values; raised before the result reaches the model."""


@dataclass(frozen=True)
class QAAPRows:
    """What QAAP circuits measured for G × Sq query rows.

    ``scores`` (..., Sq, Sk) ≥ 0: P(index = j, feature = 0) · ``scale`` (zero on masked keys);
    ``scale``: per row (..., Sq, 1) or one number (1 for probabilities, shots for counts);
    ``kept_shots`` (..., Sq) int64: post-selected shots per row on sampling backends, else None.
    """

    scores: torch.Tensor
    scale: torch.Tensor | float
    kept_shots: torch.Tensor | None = None


@runtime_checkable
class RowBackend(Protocol):
    """The quantum part a backend implements; ``QuantumFrontEnd`` does the rest."""

    name: str
    capabilities: Capabilities
    stats: BackendStats

    def qaap_rows(
        self, keys: torch.Tensor, queries: torch.Tensor, keep: torch.Tensor, site: str
    ) -> QAAPRows:
        """keys (..., Sk, D) and queries (..., Sq, D) with the same leading dims (batch,
        heads; possibly expanded views), in the compute dtype and detached unless the backend
        is differentiable; keep bool, broadcastable to (..., Sq, Sk). Returns scores of shape
        (..., Sq, Sk). Rows with no unmasked key, or whose query or unmasked keys are all
        zero, need no circuit: their scores are 0."""
        ...

    def qrce_rows(
        self, angles: torch.Tensor, weights: torch.Tensor, structure: QRCEStructure, site: str
    ) -> torch.Tensor:
        """angles (U, q) of distinct tokens, weights (L, q) → (U, 2q) Z and ZZ expectations."""
        ...

    def qrce_layer_rows(
        self,
        layer_angles: torch.Tensor,
        layer_weights: torch.Tensor,
        structure: QRCEStructure,
        site: str,
    ) -> torch.Tensor:
        """(N, L, q) angles and weights per layer (the shifted circuits) → (N, 2q)."""
        ...


class QuantumFrontEnd(ABC):
    """Implements the SDPA-level ``Backend`` protocol on top of a subclass's row methods.

    Subclasses set ``name``, ``capabilities`` and ``stats`` and implement ``qaap_rows``,
    ``qrce_rows`` and ``qrce_layer_rows``. ``last_qaap_shots`` holds the post-selected shots
    per (…, H, Sq) row of the last QAAP call on a sampling backend (None otherwise).
    """

    name: str
    capabilities: Capabilities
    stats: BackendStats
    last_qaap_shots: torch.Tensor | None = None
    #: timeouts, retries and fallback of every job (assign another to change them)
    job_policy: JobPolicy = JobPolicy()

    def _job(
        self,
        kernel: str,
        site: str,
        call: Callable[[], _T],
        exact: Callable[[], _T],
        classical: Callable[[], _T] | None = None,
    ) -> _T:
        """One job under ``job_policy``; ``exact`` is its closed-form / statevector result,
        ``classical`` what the site computed before it was offloaded (default: ``exact``)."""
        describe = f"backend {self.name!r}: the {kernel} job of site {site!r}"
        substitute = classical if self.job_policy.fallback == "classical" and classical else exact
        return run_job(
            call,
            self.job_policy,
            self.stats,
            kernel,
            site,
            describe,
            substitute,
            cancel=lambda: self.cancel_running(site),
        )

    def cancel_running(self, site: str | None = None) -> int:
        """Cancel the jobs still running for ``site`` (every site: None); returns how many.

        Called on a timeout and on Ctrl-C. Simulators finish their work in-process and cancel
        nothing; backends that submit jobs to a provider (IBM) override this."""
        return 0

    # -- the row methods subclasses provide ----------------------------------------------
    @abstractmethod
    def qaap_rows(
        self, keys: torch.Tensor, queries: torch.Tensor, keep: torch.Tensor, site: str
    ) -> QAAPRows:
        """See ``RowBackend.qaap_rows``."""

    @abstractmethod
    def qrce_rows(
        self, angles: torch.Tensor, weights: torch.Tensor, structure: QRCEStructure, site: str
    ) -> torch.Tensor:
        """See ``RowBackend.qrce_rows``."""

    @abstractmethod
    def qrce_layer_rows(
        self,
        layer_angles: torch.Tensor,
        layer_weights: torch.Tensor,
        structure: QRCEStructure,
        site: str,
    ) -> torch.Tensor:
        """See ``RowBackend.qrce_layer_rows``."""

    # -- QAAP ----------------------------------------------------------------------------
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
        """QAAP pooling with SDPA's calling convention: q (..., H, Sq, D), k and v
        (..., Hkv, Sk, ·); returns (..., H, Sq, Dv) in q's dtype. Circuits have one form:
        ``form`` only matters to exact backends, which override this."""
        self._check_qaap_ranks(q, k, v)
        out_dtype, work = q.dtype, compute_dtype(q.dtype)
        n_queries, head_dim, n_keys = q.shape[-2], q.shape[-1], k.shape[-2]
        differentiable = self.capabilities.differentiable
        qf = q.to(work) if differentiable else q.detach().to(work)
        kf = expand_kv_heads((k if differentiable else k.detach()).to(work), q.shape[-3])
        vf = expand_kv_heads(v.to(work), q.shape[-3])
        lead = torch.broadcast_shapes(qf.shape[:-2], kf.shape[:-2])
        keep = keep_mask(attn_mask, is_causal, n_queries, n_keys, q.device)
        if keep is None:
            keep = torch.ones(n_queries, n_keys, dtype=torch.bool, device=q.device)
        queries = qf.expand(*lead, n_queries, head_dim)
        keys = kf.expand(*lead, n_keys, head_dim)

        rows = self._job(
            "qaap",
            site,
            lambda: self.qaap_rows(keys, queries, keep, site),
            lambda: QAAPRows(*qaap_scores(queries, keys, keep)),
            lambda: softmax_rows(queries, keys, keep),
        )
        expected = (*lead, n_queries, n_keys)
        scores = self._checked_scores(rows, expected, site).to(device=q.device, dtype=work)
        scale = rows.scale.to(scores.device) if isinstance(rows.scale, torch.Tensor) else rows.scale
        weights, fallback, empty = pooled_weights(scores, scale, keep)
        if rows.kept_shots is not None:
            self.last_qaap_shots = rows.kept_shots.reshape(*lead, n_queries)

        self._count_qaap(site, lead.numel() * n_queries, fallback, empty)
        attn = weights
        if dropout_keep is not None and dropout_p > 0.0:
            attn = attn * dropout_keep.to(work) / (1.0 - dropout_p)
        return (attn @ vf).to(out_dtype)

    def _check_qaap_ranks(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        if q.dim() < 3 or k.dim() != q.dim() or v.dim() != q.dim():
            raise ValueError(
                f"QAAP on {self.name}: q, k and v must be (..., heads, seq, dim) with the same "
                f"rank; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}."
            )

    def _count_qaap(
        self, site: str, rows: int, fallback: torch.Tensor, empty: torch.Tensor
    ) -> None:
        """One QAAP call on ``site``: its rows, and those that fell back or had no key."""
        counters = self.stats.site(site)
        counters.calls += 1
        counters.instances += rows
        counters.add_qaap_rows(fallback, empty)

    def _checked_scores(self, rows: QAAPRows, expected: tuple[int, ...], site: str) -> torch.Tensor:
        scores = rows.scores
        problem = None
        if not isinstance(scores, torch.Tensor) or not scores.is_floating_point():
            problem = f"a {type(scores).__name__} of dtype {getattr(scores, 'dtype', None)}"
        elif tuple(scores.shape) != expected:
            problem = f"shape {tuple(scores.shape)}"
        elif scores.numel() and not bool(scores.detach().amin() >= 0):  # NaN fails too
            problem = "negative or NaN values"
        elif not bool(scores.detach().sum(-1).isfinite().all()):
            problem = "infinite values"
        if problem is not None:
            raise BackendResultError(
                f"backend {self.name!r} returned QAAP scores with {problem} for site "
                f"{site!r}; expected finite non-negative floats of shape {expected} "
                "(..., heads, queries, keys). This is a bug in the backend, not in the model."
            )
        return scores

    # -- QRCE ----------------------------------------------------------------------------
    def qrce(
        self,
        token_ids: torch.Tensor,
        angle_table: torch.Tensor,
        weights: torch.Tensor,
        structure: QRCEStructure,
        site: str,
    ) -> torch.Tensor:
        """QRCE read-out features (*token_ids.shape, 2q), each distinct token run once, in
        the promoted dtype of the angle table and the weights."""
        unique_ids, inverse = unique_tokens(token_ids, angle_table, structure)
        _check_weights(weights, structure)
        counters = self.stats.site(site)
        counters.calls += 1
        counters.instances += int(unique_ids.numel())
        out_dtype = torch.promote_types(angle_table.dtype, weights.dtype)
        if unique_ids.numel() == 0:
            return angle_table.new_zeros((*token_ids.shape, structure.n_features), dtype=out_dtype)
        features = self._qrce_features(angle_table[unique_ids], weights, structure, site)
        out = features.to(device=angle_table.device, dtype=out_dtype)[inverse]
        return out.reshape(*token_ids.shape, structure.n_features)

    def _qrce_features(
        self, angles: torch.Tensor, weights: torch.Tensor, structure: QRCEStructure, site: str
    ) -> torch.Tensor:
        if not self.capabilities.differentiable:
            angles, weights = angles.detach(), weights.detach()
        weights = weights.to(angles.device)
        features = self._job(
            "qrce",
            site,
            lambda: self.qrce_rows(angles, weights, structure, site),
            lambda: qrce_features(angles, weights, structure),
        )
        return self._checked_features(features, angles.shape[0], structure, site, "QRCE")

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
        """Vector-Jacobian product of ``qrce`` by ``method``: (grad of table, grad of weights).

        "autograd" differentiates the forward (differentiable backends only);
        "parameter-shift" evaluates every shifted circuit of the call's distinct tokens
        with ``qrce_layer_rows``.
        """
        supported = [
            m
            for m in self.capabilities.gradient_methods
            if gradient_method_error(m, "qrce") is None
        ]
        if method not in supported:
            named = " or ".join(repr(m) for m in supported) + (
                " only" if len(supported) == 1 else ""
            )
            why = gradient_method_error(method, "qrce")
            raise ValueError(
                f"QRCE gradient at site {site!r}: backend {self.name!r} computes QRCE gradients "
                f"by {named}; got {method!r}" + (f" ({why})" if why else ".")
            )
        _check_weights(weights, structure)
        if method == "autograd":

            def features(table: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
                unique_ids, inverse = unique_tokens(token_ids, table, structure)
                rows = self._qrce_features(table[unique_ids], rotations, structure, site)
                return rows[inverse].reshape(*token_ids.shape, structure.n_features)

            vjp: Any = torch.func.vjp(features, angle_table, weights)[1]
            grad_table, grad_weights = vjp(grad_out)
            return grad_table, grad_weights

        def evaluate(
            layer_angles: torch.Tensor, layer_weights: torch.Tensor, layers: QRCEStructure
        ) -> torch.Tensor:
            rows = self._job(
                "qrce-gradient",
                site,
                lambda: self.qrce_layer_rows(layer_angles, layer_weights, layers, site),
                lambda: qrce_features_per_layer(layer_angles, layer_weights, layers),
            )
            checked = self._checked_features(
                rows, layer_angles.shape[0], layers, site, "shifted QRCE"
            )
            return checked.to(device=layer_angles.device, dtype=layer_angles.dtype)

        return token_parameter_shift(grad_out, token_ids, angle_table, weights, structure, evaluate)

    def _checked_features(
        self,
        features: torch.Tensor,
        n_rows: int,
        structure: QRCEStructure,
        site: str,
        what: str,
    ) -> torch.Tensor:
        expected = (n_rows, structure.n_features)
        problem = None
        if not isinstance(features, torch.Tensor) or not features.is_floating_point():
            problem = f"a {type(features).__name__} of dtype {getattr(features, 'dtype', None)}"
        elif tuple(features.shape) != expected:
            problem = f"shape {tuple(features.shape)}"
        elif features.numel() and not bool(
            features.detach().abs().amax() <= 1.0 + _EXPECTATION_SLACK  # NaN fails too
        ):
            problem = "values outside [−1, 1] or NaN"
        if problem is not None:
            raise BackendResultError(
                f"backend {self.name!r} returned {what} features with {problem} for site "
                f"{site!r}; expected expectation values in [−1, 1] of shape {expected} "
                "(circuits, 2·qubits). This is a bug in the backend, not in the model."
            )
        return features


def _check_weights(weights: torch.Tensor, structure: QRCEStructure) -> None:
    """The (L, q) trainable angles must be a real tensor matching the structure."""
    if not isinstance(weights, torch.Tensor) or not weights.is_floating_point():
        raise TypeError("QRCE: weights must be a real floating-point tensor of shape (L, q).")
    if tuple(weights.shape) != (structure.n_layers, structure.n_qubits):
        raise ValueError(
            f"QRCE: weights must have shape (L={structure.n_layers}, q={structure.n_qubits}); "
            f"got {tuple(weights.shape)}."
        )


def classical_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None,
    is_causal: bool,
) -> torch.Tensor:
    """What an attention site computed before it was offloaded: SDPA (default scale) with
    QAAP's reading of the mask; rows with no kept key give 0, as QAAP's do."""
    keep = keep_mask(attn_mask, is_causal, q.shape[-2], k.shape[-2], q.device)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, keep, enable_gqa=True)
    return out.nan_to_num(0.0)


def softmax_rows(queries: torch.Tensor, keys: torch.Tensor, keep: torch.Tensor) -> QAAPRows:
    """Softmax attention weights as QAAP rows: what an attention site computed before it was
    offloaded (SDPA's default scale 1/√D), for ``JobPolicy(fallback="classical")``.
    Rows with no kept key score 0 everywhere, as QAAP rows do."""
    logits = (queries @ keys.mT) * queries.shape[-1] ** -0.5
    logits = logits.masked_fill(~keep, float("-inf"))
    weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)
    return QAAPRows(weights, 1.0)
