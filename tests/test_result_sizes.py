"""The cost model's transfer down: the results' size as qgraph's codec sends them, measured
(``qgraph.costmodel.result_sizes``), with the raw bit-arrays beside it in the explanation."""

from __future__ import annotations

import math
import re

import pytest
import torch

from qgraph.backends.codec import decode_counts, encode_counts, raw_shot_bytes
from qgraph.backends.shots import ShotsBackend
from qgraph.costmodel import estimate, load
from qgraph.costmodel.result_sizes import (
    MAX_OUTCOMES,
    qaap_histograms,
    qrce_histograms,
    result_size,
)
from qgraph.site import Site

TRANSFER = re.compile(
    r"transfer = \(([\d,]+) B parameters \(float64\) \+ ([\d,]+) B results encoded by "
    r"qgraph's codec \(([\d,]+) × 32 B header \+ ([\d,]+) × ([\d.e+-]+) B; as raw shot "
    r"bit-arrays ([\d,]+) B: raw/encoded ([\d,.]+)\)\) / bandwidth = "
)


def _attention(seq: int, dim: int, heads: int = 2, batch: int = 1) -> Site:
    return Site.attention_of_shape(batch, heads, seq, dim, path="layer.attention")


def _numbers(text: str) -> list[int]:
    return [int(part.replace(",", "")) for part in text]


def test_the_measured_size_is_what_the_codec_sends_for_the_sampled_histograms() -> None:
    size = result_size("qrce", (4, 2), 1024)
    assert size is not None and size.bits == 4 and size.outcomes == 16
    assert size.encoded.unit == "B" and "encode_counts" in size.encoded.source
    assert "result_sizes" in size.encoded.source and "1,024 shots" in size.encoded.source
    # the same draw, done here, encodes to the bytes the measurement reports
    from qgraph.layers import QRCEEmbedding

    circuits = int(re.search(r"on (\d+) QRCE tokens", size.encoded.source).group(1))  # type: ignore[union-attr]
    layer = QRCEEmbedding(circuits, 1, 4, 2, seed=0, dtype=torch.float64)
    counts, _, bits = qrce_histograms(
        layer.angles.detach(),
        layer.weights.detach(),
        layer.structure,
        1024,
        torch.Generator().manual_seed(0),
    )
    payload = encode_counts(counts, bits)
    assert len(payload) == size.header_bytes + round(float(size.encoded) * circuits)
    assert size.call_bytes(circuits, jobs=1) == len(payload)
    assert size.raw == raw_shot_bytes(1024, 4) and size.ratio == size.raw / float(size.encoded)
    assert result_size("qrce", (4, 2), 1024) is size  # measured once, then cached


def test_qaap_histograms_are_the_shots_backends_job_results() -> None:
    generator = torch.Generator().manual_seed(3)
    q = torch.randn(2, 5, 4, generator=generator, dtype=torch.float64)
    k = torch.randn(2, 8, 4, generator=generator, dtype=torch.float64)
    counts, probs, bits = qaap_histograms(q, k, 256, torch.Generator().manual_seed(1))
    assert counts.shape == probs.shape == (10, 9) and bits == 3 + 2
    assert (counts.sum(-1) == 256).all()
    assert probs.sum(-1) == pytest.approx(1.0)
    sent = []  # what ShotsBackend(codec=True) decodes, for the same rows and seed

    def through(drawn: torch.Tensor) -> torch.Tensor:
        sent.append(drawn.clone())
        return decode_counts(encode_counts(drawn, bits))[0]

    from qgraph.kernels.sampling import sample_qaap_counts

    sample_qaap_counts(q, k, None, 256, torch.Generator().manual_seed(1), transfer=through)
    assert (sent[0].numpy() == counts).all()


def test_sizes_grow_with_shots_and_outcomes_but_stay_below_raw() -> None:
    small, more_shots = result_size("qaap", (3, 2), 1024), result_size("qaap", (3, 2), 8192)
    wider = result_size("qaap", (7, 2), 8192)
    assert small and more_shots and wider
    assert float(small.encoded) < float(more_shots.encoded) < float(wider.encoded)
    assert more_shots.ratio > small.ratio > 10  # 9 bins of counts against 1 byte a shot
    # QRCE spreads its shots over 2^q outcomes: far less to gain than post-selected QAAP
    qrce = result_size("qrce", (8, 2), 1024)
    assert qrce and 2 < qrce.ratio < small.ratio


def test_histograms_too_large_to_sample_are_not_measured() -> None:
    assert result_size("qaap", (16, 3), 1024) is None  # 2^16 + 1 outcomes
    assert result_size("qrce", (17, 1), 1024) is None
    assert (1 << 16) <= MAX_OUTCOMES < (1 << 16) + 1
    assert result_size("qrce", (4, 1), 0) is None
    with pytest.raises(ValueError, match="kernel"):
        result_size("qsvm", (4, 1), 10)


def test_the_transfer_term_uses_the_encoded_size_and_logs_the_raw_one() -> None:
    site = _attention(seq=128, dim=64)
    est = estimate(site, "ibm_heron_r3", precision=0.1)
    text = est.explain()
    match = TRANSFER.search(text)
    assert match is not None, text
    up, down, jobs, circuits, _, raw, _ = *_numbers(match.groups()[:4]), *match.groups()[4:]
    raw_bytes = int(raw.replace(",", ""))
    assert circuits == est.circuits_forward == 2 * 128 and jobs == est.jobs_forward
    # the old figure, kept for comparison: executions × ⌈qubits/8⌉ bytes
    assert raw_bytes == est.circuits_forward * est.shots_forward * math.ceil(est.qubits / 8)
    size = result_size("qaap", (7, 6), est.shots_forward)
    assert size is not None
    assert down == size.call_bytes(circuits, jobs) and down * 10 < raw_bytes
    bandwidth = load("ibm_heron_r3").value("network_bandwidth")
    assert est.forward.transfer_s == pytest.approx((up + down) / bandwidth)
    # where it was measured: the size is a sourced quantity in the explanation
    assert "results per circuit, encoded (129-outcome histogram" in text
    assert "[measured: qgraph.backends.codec.encode_counts" in text


def test_the_transfer_term_falls_back_to_raw_bit_arrays_when_not_measured() -> None:
    site = _attention(seq=1 << 17, dim=4, heads=1)
    est = estimate(site, "ibm_heron_r3", precision=0.1, gradient="none")
    text = est.explain()
    assert "results: raw shot bit-arrays (encoded size not measured" in text
    raw = est.circuits_forward * est.shots_forward * math.ceil(est.qubits / 8)
    assert f"+ {raw:,} B raw shot bit-arrays) / bandwidth" in text


def test_the_shots_backend_sends_about_what_the_model_assumes() -> None:
    # a real job of the shots backend through the codec, against the measured size per
    # circuit (sampled on fewer rows, with other random keys): same order, model above
    backend = ShotsBackend(shots=2048, seed=0, codec=True)
    generator = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 4, 128, 64, generator=generator) for _ in range(3))
    backend.qaap(q, k, v, None, False, None, 0.0, "s")
    (record,) = backend.stats.records
    size = result_size("qaap", (7, 6), 2048)
    assert size is not None
    predicted = size.call_bytes(record.circuits, jobs=1)
    assert record.raw_bytes == record.circuits * size.raw
    assert record.bytes_received <= predicted <= 1.5 * record.bytes_received


def test_qrce_transfer_on_ionq_counts_forward_and_shifted_circuits() -> None:
    site = Site.embedding_of_shape(2, 16, 1000, 32, path="embed", index=1)
    est = estimate(site, "ionq_aria", precision=0.1, qrce_qubits=4, qrce_layers=2)
    text = est.explain()
    found = TRANSFER.findall(text)
    assert len(found) == 2  # forward, backward (parameter shift)
    for (_, down, jobs, circuits, *_), shots in zip(
        found, (est.shots_forward, est.shots_backward), strict=True
    ):
        size = result_size("qrce", (4, 2), shots)
        assert size is not None
        assert int(down.replace(",", "")) == size.call_bytes(
            int(circuits.replace(",", "")), int(jobs.replace(",", ""))
        )
