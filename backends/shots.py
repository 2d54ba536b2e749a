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
from qgraph.backends.codec import decode_counts, encode_counts, raw_shot_bytes
from qgraph.backends.frontend import QAAPRows, QuantumFrontEnd
from qgraph.kernels.qaap import compute_dtype, qaap_register_sizes
from qgraph.kernels.qrce import QRCEStructure, qrce_probabilities, qrce_probabilities_per_layer
from qgraph.kernels.sampling import MAX_SHOTS, estimate_z_features, sample_qaap_counts

#: bytes of one count in the histograms a job returns (int64)
_COUNT_BYTES = 8

#: statevector amplitudes simulated at once when evaluating shifted circuits (memory bound)
_AMPLITUDES_PER_SLICE = 1 << 22


class _Transfer:
    """A job's outcome histograms on their way back: as int64 counts, or through the result
    codec (``qgraph.backends.codec``: encoded, then decoded, so the job computes with what
    arrived); ``sent`` adds up the bytes that travelled."""

    def __init__(self, bits_per_shot: int, codec: bool) -> None:
        self.bits_per_shot = bits_per_shot
        self.codec = codec
        self.sent = 0

    def __call__(self, counts: torch.Tensor) -> torch.Tensor:
        if not self.codec:
            self.sent += counts.numel() * _COUNT_BYTES
            return counts
        payload = encode_counts(counts, self.bits_per_shot)
        self.sent += len(payload)
        decoded, _ = decode_counts(payload)
        return decoded.to(counts.device)


class ShotsBackend(QuantumFrontEnd):
    """Exact probabilities, sampled with ``shots`` shots per circuit (seeded); with
    ``codec=True`` every job's histograms travel through the result codec and its records
    say how many bytes that took (``bytes_received``) against one bitstring per shot
    (``raw_bytes``)."""

    name = "shots"
    capabilities = Capabilities(
        exact=False,
        max_qubits=None,
        max_circuits_per_job=None,
        gradient_methods=("parameter-shift", "straight-through", "spsa"),
        needs_transpilation=False,
    )

    def __init__(
        self, shots: int = 1024, seed: int = 0, readout_error: float = 0.0, codec: bool = False
    ) -> None:
        if isinstance(shots, bool) or not isinstance(shots, int):
            raise ValueError(
                f"ShotsBackend: shots must be an int (shots per circuit); got {shots!r}."
            )
        if shots < 1:
            raise ValueError(f"ShotsBackend: shots must be >= 1; got {shots}.")
        if shots >= MAX_SHOTS:
            raise ValueError(
                f"ShotsBackend: shots must be below 2^53 = {MAX_SHOTS} (counts are drawn in "
                f"float64, exact only up to 2^53); got {shots}."
            )
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
        if not isinstance(codec, bool):
            raise ValueError(f"ShotsBackend: codec must be True or False; got {codec!r}.")
        self.codec = codec
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

    # ------------------------------------------------------------------ rows

    def _record(
        self, kernel: str, site: str, circuits: int, began: float, transfer: _Transfer
    ) -> None:
        """One job: ``circuits`` × ``shots`` shots, whose histograms came back through
        ``transfer``."""
        shots = circuits * self.shots
        self.stats.records.append(
            ExecutionRecord(
                kernel=kernel,
                site=site,
                circuits=circuits,
                shots=shots,
                wall_s=time.perf_counter() - began,
                bytes_received=transfer.sent,
                raw_bytes=raw_shot_bytes(shots, transfer.bits_per_shot),
            )
        )

    def qaap_rows(
        self, keys: torch.Tensor, queries: torch.Tensor, keep: torch.Tensor, site: str
    ) -> QAAPRows:
        """Kept-shot counts of every query row's circuit (``shots`` shots each, readout
        error applied); one ExecutionRecord for the (circuits, Sk + 1) outcome histogram
        (kept shots per key, then the rejected ones)."""
        began = time.perf_counter()
        transfer = _Transfer(sum(qaap_register_sizes(keys.shape[-2], keys.shape[-1])), self.codec)
        with torch.no_grad():
            counts, _, _ = sample_qaap_counts(
                queries,
                keys,
                keep,
                self.shots,
                self.generator(queries.device),
                self.readout_error,
                transfer,
            )
        circuits = queries.shape[:-1].numel()
        self._record("qaap", site, circuits, began, transfer)
        return QAAPRows(counts.to(queries.dtype), float(self.shots), counts.sum(-1))

    def qrce_rows(
        self, angles: torch.Tensor, weights: torch.Tensor, structure: QRCEStructure, site: str
    ) -> torch.Tensor:
        """Z and ZZ means over ``shots`` shots of each token's circuit; one ExecutionRecord
        for the (tokens, 2^q) outcome histogram."""
        began = time.perf_counter()
        transfer = _Transfer(structure.n_qubits, self.codec)
        with torch.no_grad():
            probs = qrce_probabilities(angles, weights, structure)
            features = estimate_z_features(
                probs.to(compute_dtype(probs.dtype)),
                self.shots,
                self.generator(probs.device),
                self.readout_error,
                transfer,
            )
        self._record("qrce", site, angles.shape[0], began, transfer)
        return features

    def qrce_layer_rows(
        self,
        layer_angles: torch.Tensor,
        layer_weights: torch.Tensor,
        structure: QRCEStructure,
        site: str,
    ) -> torch.Tensor:
        """Sampled features of the shifted circuits, all in one job (kernel
        "qrce-gradient"); each shifted expectation has variance ≤ 1/shots."""
        began = time.perf_counter()
        circuits = layer_angles.shape[0]
        generator = self.generator(layer_angles.device)
        transfer = _Transfer(structure.n_qubits, self.codec)
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
                    estimate_z_features(probs, self.shots, generator, self.readout_error, transfer)
                )
        features = torch.cat(parts) if parts else layer_angles.new_zeros(0, structure.n_features)
        self._record("qrce-gradient", site, circuits, began, transfer)
        return features

    def __repr__(self) -> str:
        return (
            f"ShotsBackend(shots={self.shots}, seed={self.seed}, "
            f"readout_error={self.readout_error}" + (", codec=True)" if self.codec else ")")
        )
