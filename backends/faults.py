"""A wrapper that makes a backend's jobs fail, transiently, at a seeded rate (tests, benchmarks).

``FaultyBackend(inner, failure_rate, seed)`` runs ``inner``'s row methods, but first draws
from its own seeded stream and, with probability ``failure_rate``, raises
``TransientJobError`` instead, before ``inner`` does anything: ``inner``'s random streams are
untouched, so the shared front end's retries (``backends/job_policy.py``) reproduce the
fault-free run exactly. It shares ``inner``'s stats (counters and job records) and
capabilities. ``hang_s`` makes a failing job sleep that long before failing, to exercise
timeouts.
"""

from __future__ import annotations

import math
import random
import threading
import time

import torch

from qgraph.backends.frontend import QAAPRows, QuantumFrontEnd, classical_attention
from qgraph.backends.job_policy import TransientJobError
from qgraph.kernels.qrce import QRCEStructure

__all__ = ["FaultyBackend"]


class FaultyBackend(QuantumFrontEnd):
    """``inner`` whose jobs fail transiently with probability ``failure_rate`` (seeded)."""

    def __init__(
        self, inner: QuantumFrontEnd, failure_rate: float, seed: int = 0, hang_s: float = 0.0
    ) -> None:
        if not isinstance(inner, QuantumFrontEnd):
            raise TypeError(
                f"FaultyBackend wraps a backend built on QuantumFrontEnd (exact, shots, aer, "
                f"ibm); got {type(inner).__name__}."
            )
        if (
            isinstance(failure_rate, bool)
            or not isinstance(failure_rate, (int, float))
            or not (0.0 <= failure_rate < 1.0)
        ):
            raise ValueError(
                f"FaultyBackend: failure_rate is a probability in [0, 1); got {failure_rate!r}."
            )
        if (
            isinstance(hang_s, bool)
            or not isinstance(hang_s, (int, float))
            or not (math.isfinite(hang_s) and hang_s >= 0)
        ):
            raise ValueError(f"FaultyBackend: hang_s must be a finite number ≥ 0; got {hang_s!r}.")
        self.inner = inner
        self.name = f"faulty({inner.name})"
        self.capabilities = inner.capabilities
        self.stats = inner.stats
        self.failure_rate = float(failure_rate)
        self.hang_s = float(hang_s)
        self.injected = 0  # faults raised so far
        self._draws = random.Random(seed)
        self._lock = threading.Lock()

    def _maybe_fail(self, kernel: str) -> None:
        with self._lock:
            fail = self._draws.random() < self.failure_rate
            if fail:
                self.injected += 1
        if fail:
            if self.hang_s:
                time.sleep(self.hang_s)
            raise TransientJobError(f"injected fault in a {kernel} job")

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
        """``inner``'s QAAP, unless this job is drawn to fail. An ``inner`` that computes QAAP
        whole (the exact backend's two forms) is called as it is, so that a run with faults
        equals the run without them bit for bit; others go through their rows."""
        args = (q, k, v, attn_mask, is_causal, dropout_keep, dropout_p, site)
        if type(self.inner).qaap is QuantumFrontEnd.qaap:
            return super().qaap(*args, form=form)

        def call() -> torch.Tensor:
            self._maybe_fail("qaap")
            return self.inner.qaap(*args, form=form)

        return self._job(
            "qaap",
            site,
            call,
            lambda: self.inner.qaap(*args, form=form),
            lambda: classical_attention(q, k, v, attn_mask, is_causal),
        )

    def qaap_rows(
        self, keys: torch.Tensor, queries: torch.Tensor, keep: torch.Tensor, site: str
    ) -> QAAPRows:
        """``inner``'s QAAP rows, unless this job is drawn to fail."""
        self._maybe_fail("qaap")
        return self.inner.qaap_rows(keys, queries, keep, site)

    def qrce_rows(
        self, angles: torch.Tensor, weights: torch.Tensor, structure: QRCEStructure, site: str
    ) -> torch.Tensor:
        """``inner``'s QRCE rows, unless this job is drawn to fail."""
        self._maybe_fail("qrce")
        return self.inner.qrce_rows(angles, weights, structure, site)

    def qrce_layer_rows(
        self,
        layer_angles: torch.Tensor,
        layer_weights: torch.Tensor,
        structure: QRCEStructure,
        site: str,
    ) -> torch.Tensor:
        """``inner``'s shifted QRCE rows, unless this job is drawn to fail."""
        self._maybe_fail("qrce-gradient")
        return self.inner.qrce_layer_rows(layer_angles, layer_weights, structure, site)

    def __repr__(self) -> str:
        return (
            f"FaultyBackend({self.inner!r}, failure_rate={self.failure_rate}, hang_s={self.hang_s})"
        )
