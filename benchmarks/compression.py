"""How small one job's measurement results travel: ``qgraph.backends.codec`` on sampled QAAP
and QRCE histograms, against the raw shot records they stand for.

The paper claims measurement data is compressed to ~1/10 for transfer. This measures it, on
histograms drawn by qgraph's own samplers at a small BERT-sized site (the QAAP and QRCE
histograms come from ``qgraph.costmodel.result_sizes``, which the cost model's transfer term
measures the same way, at the circuit shape of each call):

* QAAP: batch × 12 heads × 128 queries, 128 keys of head dim 64 (standard normal q, k,
  seeded), no mask. One circuit per query row; a shot measures a + b = 7 + 6 = 13 qubits
  (``qaap_register_sizes``). The histogram is what ``sample_qaap_counts`` draws, the shots
  backend's job result: per row, the kept shots per key (feature register read 0) and one
  bin of rejected shots, (circuits, 129).
* QAAP, full register (extra, not one of the four targets): what a gate-level backend reads
  before post-selection, every shot's 13 bits, (circuits, 8192). The split of the rejected
  shots over the 63 non-zero feature values depends on how U_i is synthesised (the sampler
  only knows their total); here U_i is the Householder reflection I − 2wwᵀ/‖w‖², w = e_0 − q̂_i
  (real, symmetric, U_i|0⟩ = |q̂_i⟩), so outcome (j, r) has probability (U_i k_j)_r² / ‖K‖_F²,
  drawn with ``multinomial_counts``.
* QRCE: the unique tokens of a batch (distinct ids drawn from a 30,522-token vocabulary),
  ``QRCEEmbedding(30522, 384, 8 qubits, 2 layers, seed 0)``'s initial angles and weights,
  exact probabilities from ``qrce_probabilities`` and counts from ``multinomial_counts`` (the
  draw inside ``estimate_z_features``): (tokens, 256), 8 bits a shot.

At 1,024 and 4,096 shots per circuit, per job:

* ``raw_shot_bytes``: ``codec.raw_shot_bytes`` = shots × ceil(bits/8) (qiskit's BitArray);
  ``packed_shot_bytes`` = ceil(shots × bits / 8), the densest raw records, for reference;
  ``int64_histogram_bytes``: what the backends record today (circuits × outcomes × 8).
* ``encoded_bytes``: ``encode_counts``'s payload (32-byte header included), its layout and
  compressor, and the size of every other layout × compressor. The records layout is built
  for at most ``MAX_RECORDS`` shots, fewer than any whole job here has, so every layout ×
  compressor is also listed for the job's first MAX_RECORDS // shots circuits.
* ``compression_ratio`` = raw_shot_bytes / encoded_bytes (the figure the paper's claim is
  about) and ``compression_ratio_packed`` = packed_shot_bytes / encoded_bytes.
* Two lower bounds from the sampled distributions p_i (the circuit's exact outcome
  probabilities, the rejected bin included): ``shot_entropy_bytes`` = Σ_i H(p_i) × shots / 8,
  the least any lossless code of the *ordered* shot records needs on average; and
  ``histogram_entropy_bytes`` ≈ Σ_i [shots · H(p_i) − log2(shots! / Π_j c_ij!)] / 8, the
  entropy of the *histogram* (the order of the shots carries log2 of the multinomial
  coefficient of information, which a histogram drops), estimated from the drawn counts
  themselves (an unbiased estimate of the sum over circuits). A histogram can beat the first
  bound; no code of the histogram beats the second on average, but reaching it needs the
  p_i, which the receiver does not have. A third figure, ``count_symbol_entropy_bytes``, is
  the empirical order-0 entropy of the job's count values (all bins, zeros included) × the
  number of bins / 8: what a coder that sends every count as an independent symbol from
  one distribution (the best that the dense layout through an order-0 entropy coder can do,
  ignoring the cost of describing the distribution) would need. Each is also reported as
  the best ratio it allows (raw / bound).
* Encode and decode time per job (median of repeats; decode is checked to round-trip).

Target (issue 13): compression_ratio ≥ 10 for each of the four cases; a case below it is
reported with its bounds. --quick: batch 1 and 512 tokens; default: batch 4 and 2,048 tokens
(the full-register histogram, 8,192 bins a circuit, stays at batch 1).

    python benchmarks/compression.py [--quick] [--json PATH]
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

import numpy as np
import torch
from common import median_seconds, parse_args, write_result

from qgraph.backends.codec import (
    MAX_RECORDS,
    decode_counts,
    describe_payload,
    encode_counts,
    encoding_sizes,
    raw_shot_bytes,
)
from qgraph.costmodel.result_sizes import qaap_histograms, qrce_histograms
from qgraph.kernels.qaap import qaap_register_sizes
from qgraph.kernels.sampling import multinomial_counts
from qgraph.layers import QRCEEmbedding

SHOTS = (1024, 4096)
HEADS, N_KEYS, HEAD_DIM = 12, 128, 64
VOCAB, QRCE_QUBITS, QRCE_LAYERS, D_MODEL = 30522, 8, 2, 384
TARGET = 10.0
#: an encode slower than this (s) is timed once, not ``repeats`` times
SLOW_S = 1.0
SEED = 0


def qaap_job(batch: int, shots: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(counts (circuits, Sk + 1), probabilities of those bins, bits a shot measures)."""
    generator = torch.Generator().manual_seed(SEED)
    shape = (batch, HEADS, N_KEYS, HEAD_DIM)
    q = torch.randn(shape, generator=generator, dtype=torch.float64)
    k = torch.randn(shape, generator=generator, dtype=torch.float64)
    return qaap_histograms(q, k, shots, generator)


def qaap_full_register_job(batch: int, shots: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(counts (circuits, 2^(a+b)) over every measured bitstring, probabilities, a + b)."""
    generator = torch.Generator().manual_seed(SEED)
    shape = (batch, HEADS, N_KEYS, HEAD_DIM)
    q = torch.randn(shape, generator=generator, dtype=torch.float64)
    k = torch.randn(shape, generator=generator, dtype=torch.float64)
    w = -q / q.norm(dim=-1, keepdim=True)
    w[..., 0] += 1.0  # w = e_0 − q̂ (random q: never zero)
    # (U_i k_j)_r = k_jr − 2 (k_j·w_i) w_ir / ‖w_i‖²: (batch, heads, query i, key j, r)
    kw = torch.einsum("bhjr,bhir->bhij", k, w)
    rotated = k[:, :, None] - 2 * (kw / w.square().sum(-1)[..., None])[..., None] * w[..., None, :]
    probs = rotated.square().reshape(-1, N_KEYS * HEAD_DIM)  # index r + d·j: qiskit's order
    probs = probs / probs.sum(-1, keepdim=True)
    counts = multinomial_counts(probs, shots, generator)
    return counts.numpy(), probs.numpy(), sum(qaap_register_sizes(N_KEYS, HEAD_DIM))


def qrce_job(tokens: int, shots: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(counts (tokens, 2^q), their probabilities, q) for distinct random token ids."""
    layer = QRCEEmbedding(VOCAB, D_MODEL, QRCE_QUBITS, QRCE_LAYERS, seed=SEED)
    generator = torch.Generator().manual_seed(SEED)
    ids = torch.randperm(VOCAB, generator=generator)[:tokens]
    return qrce_histograms(
        layer.angles.detach()[ids], layer.weights.detach(), layer.structure, shots, generator
    )


def entropy_bounds(counts: np.ndarray, probs: np.ndarray, shots: int) -> tuple[float, float]:
    """(ordered-records bound, histogram bound) in bytes, as the module docstring defines."""
    p = np.where(probs > 0, probs, 1.0)
    shot_bits = float(-(probs * np.log2(p)).sum()) * shots
    log_factorials = torch.lgamma(torch.from_numpy(counts).double() + 1).sum()
    order_bits = (counts.shape[0] * math.lgamma(shots + 1) - float(log_factorials)) / math.log(2)
    return shot_bits / 8, max(shot_bits - order_bits, 0.0) / 8


def measure(
    name: str, counts: np.ndarray, probs: np.ndarray, bits: int, repeats: int, quick: bool
) -> dict:
    """Every figure of one job (module docstring); --quick skips listing every encoding of a
    job whose encode is slow (each compresses megabytes again)."""
    circuits, outcomes = counts.shape
    shots = int(counts[0].sum())
    assert bool((counts.sum(axis=1) == shots).all()), "every circuit ran the same shots"
    began = time.perf_counter()
    payload = encode_counts(counts, bits)
    slow = time.perf_counter() - began > SLOW_S
    repeats = 1 if slow else repeats  # seconds a call: one timed call is enough
    decoded, decoded_bits = decode_counts(payload)
    if decoded_bits != bits or not np.array_equal(decoded.numpy(), counts):
        raise AssertionError(f"{name}: the payload does not decode to the histogram")
    encode_s, _ = median_seconds(lambda: encode_counts(counts, bits), repeats)
    decode_s, _ = median_seconds(lambda: decode_counts(payload), repeats)
    raw = raw_shot_bytes(circuits * shots, bits)
    packed = (circuits * shots * bits + 7) // 8
    shot_bound, histogram_bound = entropy_bounds(counts, probs, shots)
    _, freq = np.unique(counts, return_counts=True)
    symbol_bound = (
        float(-(freq / counts.size * np.log2(freq / counts.size)).sum()) * counts.size / 8
    )
    info = describe_payload(payload)
    skipped = "skipped in --quick (slow encode)" if quick and slow else None
    return {
        "circuits": circuits,
        "outcomes": outcomes,
        "shots_per_circuit": shots,
        "bits_per_shot": bits,
        "nonzero_bins_fraction": float((counts > 0).mean()),
        "raw_shot_bytes": raw,
        "packed_shot_bytes": packed,
        "int64_histogram_bytes": counts.size * 8,
        "encoded_bytes": len(payload),
        "layout": info.layout,
        "compressor": info.compressor,
        "all_encodings_bytes": skipped or encoding_sizes(counts, bits),
        # the records layout exists only up to MAX_RECORDS shots: compare all three there
        "records_subset_circuits": MAX_RECORDS // shots,
        "records_subset_encodings_bytes": skipped
        or encoding_sizes(counts[: MAX_RECORDS // shots], bits),
        "compression_ratio": raw / len(payload),
        "compression_ratio_packed": packed / len(payload),
        "shot_entropy_bytes": shot_bound,
        "histogram_entropy_bytes": histogram_bound,
        "ratio_at_shot_entropy": raw / shot_bound,
        "ratio_at_histogram_entropy": raw / histogram_bound,
        "count_symbol_entropy_bytes": symbol_bound,
        "ratio_at_count_symbol_entropy": raw / symbol_bound,
        "encoded_over_histogram_entropy": len(payload) / histogram_bound,
        "encode_s": encode_s,
        "decode_s": decode_s,
        "meets_target": raw / len(payload) >= TARGET,
    }


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    batch, tokens, repeats = (1, 512, 3) if args.quick else (4, 2048, 5)
    torch.manual_seed(SEED)
    results: dict[str, Any] = {
        "site": {
            "qaap": f"batch {batch} x {HEADS} heads x {N_KEYS} queries, {N_KEYS} keys, "
            f"head dim {HEAD_DIM}, standard normal q and k",
            "qrce": f"{tokens} distinct tokens, {QRCE_QUBITS} qubits, {QRCE_LAYERS} layers, "
            "QRCEEmbedding initial parameters",
        },
        "target": TARGET,
    }
    ratios: dict[str, float] = {}
    for shots in SHOTS:
        jobs = {
            "qaap": qaap_job(batch, shots),
            "qrce": qrce_job(tokens, shots),
            "qaap_full_register": qaap_full_register_job(1, shots),  # 8192 bins: batch 1
        }
        for kernel, job in jobs.items():
            key = f"{kernel}_{shots}"
            row = measure(key, *job, repeats=repeats, quick=args.quick)
            results[key] = row
            ratios[f"compression_ratio_{key}"] = row["compression_ratio"]
            print(
                f"{key}: {row['circuits']} circuits, raw {row['raw_shot_bytes']:,} B -> "
                f"{row['encoded_bytes']:,} B ({row['layout']}+{row['compressor']}), ratio "
                f"{row['compression_ratio']:.2f} (packed-raw "
                f"{row['compression_ratio_packed']:.2f}); ratio bounds: shot entropy "
                f"{row['ratio_at_shot_entropy']:.2f}, histogram entropy "
                f"{row['ratio_at_histogram_entropy']:.2f}, count symbols "
                f"{row['ratio_at_count_symbol_entropy']:.2f}; encode "
                f"{row['encode_s'] * 1e3:.1f} ms, decode {row['decode_s'] * 1e3:.1f} ms"
            )
    write_result(args.json, "compression", results, ratios)


if __name__ == "__main__":
    main()
