"""The shots backend: exact outcome distributions, then S sampled shots per circuit.

It models an ideal finite-shot QPU (plus optional symmetric readout error, see
``qgraph.kernels.sampling``): no gate noise, no queue, no transpilation. It is fast because
the distributions are computed classically (closed form for QAAP, torch statevector for
QRCE); only the read-out is sampled. Its results are *estimates*: forwards are not
differentiable, QAAP gradients go through the op's straight-through or SPSA option, and QRCE
gradients use the parameter-shift rule on sampled shifted circuits (``qrce_gradient``).

Randomness: one ``torch.Generator`` per device, created on first use on that device and
seeded with ``seed``. The stream continues from call to call (two identical calls give
different samples, as two runs on hardware would), so a run is reproducible from a fresh
backend with the same seed and the same sequence of calls. ``reseed(seed)`` restarts every
stream (all devices) from a new, or the original, seed.
"""

from __future__ import annotations

import time

import torch

from qgraph.backends.base import BackendStats, Capabilities, ExecutionRecord
from qgraph.kernels.parameter_shift import token_parameter_shift
from qgraph.kernels.qaap import compute_dtype, expand_kv_heads, keep_mask
from qgraph.kernels.qrce import (
    QRCEStructure,
    qrce_probabilities,
    qrce_probabilities_per_layer,
    unique_tokens,
)
from qgraph.kernels.sampling import estimate_z_features, sample_qaap_weights

#: bytes of one count in the histograms a job returns (int64)
_COUNT_BYTES = 8

#: statevector amplitudes simulated at once when evaluating shifted circuits (memory bound)
_AMPLITUDES_PER_SLICE = 1 << 22


class ShotsBackend:
    """Exact probabilities, sampled with ``shots`` shots per circuit (seeded)."""

    name = "shots"
    capabilities = Capabilities(
        exact=False,
        max_qubits=None,
        max_circuits_per_job=None,
        gradient_methods=("parameter-shift", "straight-through", "spsa"),
        needs_transpilation=False,
    )

    def __init__(self, shots: int = 1024, seed: int = 0, readout_error: float = 0.0) -> None:
        if isinstance(shots, bool) or not isinstance(shots, int):
            raise ValueError(
                f"ShotsBackend: shots must be an int (shots per circuit); got {shots!r}."
            )
        if shots < 1:
            raise ValueError(f"ShotsBackend: shots must be >= 1; got {shots}.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"ShotsBackend: seed must be an int; got {seed!r}.")
        if (
            isinstance(readout_error, bool)
            or not isinstance(readout_error, (int, float))
            or not 0.0 <= readout_error < 0.5
        ):
            raise ValueError(
                "ShotsBackend: readout_error is the probability that a measured bit flips and "
                f"must lie in [0, 0.5); got {readout_error!r}. (At 0.5 the read-out carries "
                "no information.)"
            )
        self.shots = shots
        self.seed = seed
        self.readout_error = float(readout_error)
        self.stats = BackendStats()
        self._generators: dict[str, torch.Generator] = {}

    # ------------------------------------------------------------------ randomness

    def generator(self, device: torch.device | str) -> torch.Generator:
        """The seeded generator of ``device``, created (seeded with ``seed``) on first use."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def reseed(self, seed: int | None = None) -> None:
        """Restart the random streams of every device from ``seed`` (default: the current one)."""
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ValueError(f"ShotsBackend: seed must be an int; got {seed!r}.")
            self.seed = seed
        self._generators.clear()

    # ------------------------------------------------------------------ QAAP

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
        """Sampled QAAP pooling with SDPA's calling convention; returns (B, H, Sq, Dv).

        Every B × H × Sq query row is one circuit with ``shots`` shots; post-selected counts
        give the weights, rows with no success fall back to uniform over unmasked keys
        (counted). GQA, masks and dropout on the weights as in the exact backend; half
        precision is computed in float32 and cast back. One ExecutionRecord per call, whose
        ``bytes_received`` is the (circuits, Sk + 1) int64 outcome histogram.
        """
        start = time.perf_counter()
        out_dtype = q.dtype
        work = compute_dtype(q.dtype)
        n_heads = q.shape[-3]
        with torch.no_grad():
            qf = q.detach().to(work)
            kf = expand_kv_heads(k.detach().to(work), n_heads)
            vf = expand_kv_heads(v.detach().to(work), n_heads)
            keep = keep_mask(attn_mask, is_causal, q.shape[-2], k.shape[-2], q.device)
            weights, sample = sample_qaap_weights(
                qf, kf, keep, self.shots, self.generator(q.device), self.readout_error
            )
            if dropout_keep is not None and dropout_p > 0.0:
                weights = weights * dropout_keep.to(work) / (1.0 - dropout_p)
            out = (weights @ vf).to(out_dtype)
        circuits = q.shape[:-1].numel()
        counters = self.stats.site(site)
        counters.calls += 1
        counters.instances += circuits
        counters.fallback_rows += sample.fallback_rows
        counters.empty_rows += sample.empty_rows
        self.stats.records.append(
            ExecutionRecord(
                kernel="qaap",
                site=site,
                circuits=circuits,
                shots=circuits * self.shots,
                wall_s=time.perf_counter() - start,
                bytes_received=circuits * (k.shape[-2] + 1) * _COUNT_BYTES,
            )
        )
        return out

    # ------------------------------------------------------------------ QRCE

    def qrce(
        self,
        token_ids: torch.Tensor,
        angle_table: torch.Tensor,
        weights: torch.Tensor,
        structure: QRCEStructure,
        site: str,
    ) -> torch.Tensor:
        """Sampled QRCE features (*token_ids.shape, 2q), one circuit per distinct token.

        Output dtype is ``angle_table``'s. One ExecutionRecord per call, whose
        ``bytes_received`` is the (tokens, 2^q) int64 outcome histogram.
        """
        start = time.perf_counter()
        unique_ids, inverse = unique_tokens(token_ids, angle_table, structure)
        n_tokens = int(unique_ids.numel())
        with torch.no_grad():
            angles = angle_table.detach()[unique_ids]
            probs = qrce_probabilities(angles, weights.detach().to(angles.device), structure)
            work = compute_dtype(probs.dtype)
            features = estimate_z_features(
                probs.to(work), self.shots, self.generator(probs.device), self.readout_error
            )
            out = features[inverse].reshape(*token_ids.shape, structure.n_features)
        counters = self.stats.site(site)
        counters.calls += 1
        counters.instances += n_tokens
        self.stats.records.append(
            ExecutionRecord(
                kernel="qrce",
                site=site,
                circuits=n_tokens,
                shots=n_tokens * self.shots,
                wall_s=time.perf_counter() - start,
                bytes_received=n_tokens * 2**structure.n_qubits * _COUNT_BYTES,
            )
        )
        return out.to(angle_table.dtype)

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
        """Parameter-shift VJP from sampled shifted circuits: (grad (V, q), grad (L, q)).

        All U·4·L·q shifted circuits of the distinct tokens run as one job (one
        ExecutionRecord, kernel "qrce-gradient"), each with ``shots`` shots. The estimate is
        unbiased; each shifted expectation has variance ≤ 1/shots.
        """
        if method != "parameter-shift":
            raise ValueError(
                f"the shots backend computes QRCE gradients by 'parameter-shift' only (its "
                f"gradient methods: {self.capabilities.gradient_methods}; 'straight-through' "
                f"and 'spsa' apply to QAAP); got {method!r}."
            )

        def evaluate(
            layer_angles: torch.Tensor, layer_weights: torch.Tensor, structure: QRCEStructure
        ) -> torch.Tensor:
            start = time.perf_counter()
            circuits = layer_angles.shape[0]
            generator = self.generator(layer_angles.device)
            # statevectors in slices of ≤ 2^22 amplitudes (memory), sampled slice by slice
            rows = max(1, _AMPLITUDES_PER_SLICE >> structure.n_qubits)
            parts = []
            with torch.no_grad():
                for first in range(0, circuits, rows):
                    probs = qrce_probabilities_per_layer(
                        layer_angles[first : first + rows],
                        layer_weights[first : first + rows],
                        structure,
                    )
                    parts.append(
                        estimate_z_features(probs, self.shots, generator, self.readout_error)
                    )
            features = (
                torch.cat(parts) if parts else layer_angles.new_zeros(0, structure.n_features)
            )
            self.stats.records.append(
                ExecutionRecord(
                    kernel="qrce-gradient",
                    site=site,
                    circuits=circuits,
                    shots=circuits * self.shots,
                    wall_s=time.perf_counter() - start,
                    bytes_received=circuits * 2**structure.n_qubits * _COUNT_BYTES,
                )
            )
            return features

        return token_parameter_shift(grad_out, token_ids, angle_table, weights, structure, evaluate)

    def __repr__(self) -> str:
        return (
            f"ShotsBackend(shots={self.shots}, seed={self.seed}, "
            f"readout_error={self.readout_error})"
        )
