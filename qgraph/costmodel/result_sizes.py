"""Measured sizes of a job's results as ``qgraph.backends.codec`` sends them (the cost model's
transfer down).

A sampled job returns, per circuit, a histogram of its outcomes. Sent raw, one bitstring a
shot, that is ``shots × ⌈bits/8⌉`` bytes a circuit (``codec.raw_shot_bytes``, qiskit's
``BitArray``). Sent as ``encode_counts`` payloads, as ``ShotsBackend(codec=True)`` sends
them, it is far less and depends on the histogram: how many outcomes there are, how many
shots, how the probability is spread. No formula gives that; this module measures it.

``result_size(kernel, shape, shots)`` draws the histograms of ``SAMPLE_CIRCUITS`` circuits of
the kernel at the cost model's circuit shape with qgraph's own samplers, encodes them with
``encode_counts`` and returns the payload's body bytes per circuit (the 32-byte header is
per job) as a ``Quantity`` whose source says all that. What is sampled:

* QAAP, shape (a, b): 2^a keys of head dim 2^b; a head's keys and ``SAMPLE_CIRCUITS`` query
  rows, standard normal (seeded); the histogram ``sample_qaap_counts`` draws and the shots
  backend sends: kept shots per key (feature register read 0) and one bin of rejected shots,
  2^a + 1 outcomes, a + b bits a shot. (A backend that sent every measured bitstring, 2^(a+b)
  outcomes, would send more: benchmarks/compression.py measures that case too.)
* QRCE, shape (q, L): ``SAMPLE_CIRCUITS`` tokens of a ``QRCEEmbedding``'s initial angles and
  weights (seed 0), exact probabilities from ``qrce_probabilities`` and counts from
  ``multinomial_counts``: 2^q outcomes, q bits a shot.

Measurements are cached per (kernel, shape, shots) and take under 0.5 s each (QAAP up to
2^15 keys and QRCE up to 16 qubits at 100 to 10^8 shots, timed on 2 cores that another job
kept busy: median 0.15 s, at most 0.5 s): fewer circuits are sampled where they would draw
more than ``MAX_DRAWS`` shots or encode more than ``MAX_BINS`` bins, and histograms of more
than ``MAX_OUTCOMES`` outcomes are not measured (None: the caller assumes raw bitstrings). Fewer
circuits give more bytes per circuit, since the compressor has less to learn from: 64
circuits' were within 20 % above a whole job's in benchmarks/compression.py (QAAP at 1,024
shots: 14.3 B against 12.1 B over 1,536 circuits; QRCE: 105.6 B against 103.6 B over 512
tokens), one 16-qubit QRCE circuit's 10 % above four's: the figure errs on the large side.

``qaap_histograms`` and ``qrce_histograms`` are also what benchmarks/compression.py measures.
"""

from __future__ import annotations

import datetime
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from qgraph.backends.codec import describe_payload, encode_counts, raw_shot_bytes
from qgraph.costmodel.profiles import Quantity
from qgraph.kernels.qaap import qaap_register_sizes
from qgraph.kernels.qrce import QRCEStructure, qrce_probabilities
from qgraph.kernels.sampling import multinomial_counts, qaap_kept_probabilities, sample_qaap_counts
from qgraph.layers import QRCEEmbedding

__all__ = [
    "MAX_OUTCOMES",
    "SAMPLE_CIRCUITS",
    "ResultSize",
    "qaap_histograms",
    "qrce_histograms",
    "result_size",
]

#: circuits whose histograms are drawn and encoded for one measurement, at most
SAMPLE_CIRCUITS = 64
#: shots drawn for one measurement at most (beyond, fewer circuits): ~0.05 s of sampling
MAX_DRAWS = 1 << 20
#: histogram bins encoded for one measurement at most (beyond, fewer circuits): encoding
#: tries every layout and compressor, ~0.05 s for 2^16 bins
MAX_BINS = 1 << 16
#: histograms with more outcomes per circuit are not measured (their sampling and encoding
#: would cost seconds); the transfer term then counts raw bitstrings
MAX_OUTCOMES = 1 << 16
#: seed of every measurement's inputs and draws: the same figures on every run (with the same
#: zlib and liblzma, which ``encode_counts`` compresses with)
SEED = 0


@dataclass(frozen=True)
class ResultSize:
    """Measured size of one circuit's results, encoded and raw."""

    kernel: str
    shape: tuple[int, int]
    shots: int  # per circuit
    outcomes: int  # histogram bins per circuit
    bits: int  # bits a shot measures
    encoded: Quantity  # payload body bytes per circuit, measured
    header_bytes: int  # per payload (per job)

    @property
    def raw(self) -> int:
        """Bytes of one circuit's shots as one bitstring each (``codec.raw_shot_bytes``)."""
        return raw_shot_bytes(self.shots, self.bits)

    @property
    def ratio(self) -> float:
        """Raw over encoded bytes per circuit (headers left out)."""
        return self.raw / max(float(self.encoded), 1e-12)

    def call_bytes(self, circuits: int, jobs: int) -> int:
        """Encoded bytes of ``circuits`` circuits' results sent back in ``jobs`` payloads."""
        return jobs * self.header_bytes + math.ceil(circuits * float(self.encoded))


def qaap_histograms(
    q: torch.Tensor, k: torch.Tensor, shots: int, generator: torch.Generator
) -> tuple[np.ndarray, np.ndarray, int]:
    """QAAP job results as the shots backend draws them: (counts (circuits, Sk + 1) of kept
    shots per key then the rejected ones, the probabilities of those bins, bits a shot
    measures) for query rows ``q`` (..., Sq, D) against keys ``k`` (..., Sk, D), no mask."""
    n_keys, head_dim = k.shape[-2], k.shape[-1]
    kept, _, _ = sample_qaap_counts(q, k, None, shots, generator)
    kept = kept.reshape(-1, n_keys)
    counts = torch.cat([kept, shots - kept.sum(-1, keepdim=True)], dim=-1)
    accept, _ = qaap_kept_probabilities(q, k, None)
    accept = accept.reshape(-1, n_keys)
    probs = torch.cat([accept, (1.0 - accept.sum(-1, keepdim=True)).clamp_min(0.0)], dim=-1)
    return counts.numpy(), probs.numpy(), sum(qaap_register_sizes(n_keys, head_dim))


def qrce_histograms(
    angles: torch.Tensor,
    weights: torch.Tensor,
    structure: QRCEStructure,
    shots: int,
    generator: torch.Generator,
) -> tuple[np.ndarray, np.ndarray, int]:
    """QRCE job results: (counts (tokens, 2^q), their exact probabilities, q) of the circuits
    of ``angles`` (tokens, q) with ``weights`` (L, q), drawn as ``estimate_z_features`` does."""
    with torch.no_grad():
        probs = qrce_probabilities(angles.double(), weights.double(), structure)
    counts = multinomial_counts(probs, shots, generator)
    return counts.numpy(), probs.numpy(), structure.n_qubits


def _sampled_circuits(shots: int, outcomes: int) -> int:
    return max(1, min(SAMPLE_CIRCUITS, MAX_DRAWS // shots, MAX_BINS // outcomes))


def _outcomes(kernel: str, shape: tuple[int, int]) -> int:
    return (1 << shape[0]) + 1 if kernel == "qaap" else 1 << shape[0]


@functools.lru_cache(maxsize=256)
def result_size(kernel: str, shape: tuple[int, int], shots: int) -> ResultSize | None:
    """The measured encoded size of one circuit's results (module docstring), or None where
    it is not measured (more than ``MAX_OUTCOMES`` outcomes, or no shots).

    Args:
        kernel: "qaap" or "qrce".
        shape: the circuit's shape as the cost model has it (``CircuitCost.shape``): QAAP
            (a, b) = (⌈log2 keys⌉, ⌈log2 head dim⌉), QRCE (qubits, layers).
        shots: shots per circuit.
    """
    if kernel not in ("qaap", "qrce"):
        raise ValueError(f"result_size: kernel must be 'qaap' or 'qrce'; got {kernel!r}.")
    outcomes = _outcomes(kernel, shape)
    if shots < 1 or outcomes > MAX_OUTCOMES:
        return None
    circuits = _sampled_circuits(shots, outcomes)
    generator = torch.Generator().manual_seed(SEED)
    if kernel == "qaap":
        n_keys, head_dim = 1 << shape[0], 1 << shape[1]
        q = torch.randn(circuits, head_dim, generator=generator, dtype=torch.float64)
        k = torch.randn(n_keys, head_dim, generator=generator, dtype=torch.float64)
        counts, _, bits = qaap_histograms(q, k, shots, generator)
        what = f"{circuits} QAAP rows, {n_keys} keys of head dim {head_dim} (standard normal)"
    else:
        layer = QRCEEmbedding(circuits, 1, shape[0], shape[1], seed=SEED, dtype=torch.float64)
        counts, _, bits = qrce_histograms(
            layer.angles.detach(), layer.weights.detach(), layer.structure, shots, generator
        )
        what = f"{circuits} QRCE tokens, {shape[0]} qubits, {shape[1]} layers (initial angles)"
    info = describe_payload(encode_counts(counts, bits))
    per_circuit = info.body_bytes / circuits
    source = (
        f"measured: qgraph.backends.codec.encode_counts ({info.layout}+{info.compressor}) on "
        f"{what}, {shots:,} shots each, sampled by qgraph (qgraph.costmodel.result_sizes)"
    )
    return ResultSize(
        kernel=kernel,
        shape=shape,
        shots=shots,
        outcomes=counts.shape[1],
        bits=bits,
        encoded=Quantity(per_circuit, "B", source, datetime.date.today().isoformat()),
        header_bytes=info.total_bytes - info.body_bytes,
    )
