"""The result codec (qgraph.backends.codec): exact round trips, every corruption rejected,
deterministic output, and the raw-bytes convention the compression ratio is taken against."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch

from qgraph.backends.codec import (
    COMPRESSORS,
    FORMAT_VERSION,
    LAYOUTS,
    CodecError,
    decode_counts,
    describe_payload,
    encode_counts,
    encoding_sizes,
    raw_shot_bytes,
)
from qgraph.errors import QGraphError

#: header bytes (magic 4, version/layout/compressor/bits 4, six u32)
HEADER = 32


def _resign(payload: bytes | bytearray) -> bytes:
    """The payload with its transfer CRC recomputed: what an encoder with a bug, or of
    another version, would send, so that only the checks after the transfer CRC can see it."""
    head = bytes(payload[: HEADER - 4])
    return (
        head
        + struct.pack("<I", zlib.crc32(bytes(payload[HEADER:]), zlib.crc32(head)))
        + bytes(payload[HEADER:])
    )


def _histogram(
    circuits: int, bits: int, shots: int, support: int | None, seed: int, outcomes: int = 0
) -> np.ndarray:
    """(circuits, outcomes) multinomial counts of ``shots`` shots per circuit from a random
    distribution over ``support`` random outcomes (None: all of them); outcomes default to
    2^bits."""
    rng = np.random.default_rng(seed)
    outcomes = outcomes or 2**bits
    counts = np.zeros((circuits, outcomes), dtype=np.int64)
    for row in counts:
        where = rng.choice(outcomes, size=min(support or outcomes, outcomes), replace=False)
        row[where] = rng.multinomial(shots, rng.dirichlet(np.full(where.size, 0.5)))
    return counts


# name: (circuits, bits, shots per circuit, support (None: every outcome), outcomes (0: 2^bits))
CASES = {
    "1 circuit, 1 bit, 1 shot": (1, 1, 1, None, 0),
    "1 circuit, 1 bit, 10^6 shots": (1, 1, 10**6, None, 0),
    "many circuits, 1 bit, 10^6 shots": (40, 1, 10**6, None, 0),
    "many dense circuits, 8 bits": (64, 8, 4096, None, 0),
    "QAAP-like 13 bits, 129 categories": (300, 13, 1024, None, 129),
    "sparse 20 bits, 1 shot each": (4, 20, 1, None, 0),
    "1 circuit, 20 bits, 10^6 shots on 3000 outcomes": (1, 20, 10**6, 3000, 0),
    "many circuits, 20 bits, 1024 shots": (8, 20, 1024, None, 0),
}


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def case(request: pytest.FixtureRequest) -> tuple[np.ndarray, int]:
    circuits, bits, shots, support, outcomes = CASES[request.param]
    seed = list(CASES).index(request.param)
    return _histogram(circuits, bits, shots, support, seed, outcomes), bits


def test_round_trip_is_exact(case: tuple[np.ndarray, int]) -> None:
    counts, bits = case
    payload = encode_counts(counts, bits)
    decoded, decoded_bits = decode_counts(payload)
    assert decoded_bits == bits
    assert decoded.dtype == torch.int64 and decoded.shape == counts.shape
    assert np.array_equal(decoded.numpy(), counts)
    info = describe_payload(payload)
    assert (info.circuits, info.outcomes, info.bits_per_shot) == (*counts.shape, bits)
    assert info.total_bytes == len(payload) == HEADER + info.body_bytes


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_every_layout_and_compressor_round_trips(layout: str, compressor: str) -> None:
    """Each decoder, not only the one the smallest payload happens to use: counts ≥ 128 and
    ≥ 2^14 (multi-byte varints), empty rows, bins at both ends, a non-power-of-two width."""
    counts = _histogram(6, 11, 50_000, 40, seed=7, outcomes=1500)
    counts[2] = 0
    counts[3, 0], counts[3, -1] = 1, 300
    payload = encode_counts(counts, 11, layout=layout, compressor=compressor)
    info = describe_payload(payload)
    assert (info.layout, info.compressor) == (layout, compressor)
    decoded, bits = decode_counts(payload)
    assert bits == 11 and np.array_equal(decoded.numpy(), counts)


def test_edge_shapes_round_trip() -> None:
    for counts, bits in [
        (np.zeros((0, 4), dtype=np.int64), 2),  # no circuit
        (np.zeros((3, 2), dtype=np.int64), 1),  # circuits without shots
        (np.array([[0, 0, 0, 7]]), 2),  # all shots on the last outcome
        (np.array([[2**62, 1]]), 1),  # counts near the int64 limit
        (np.array([[5]]), 64),  # one category, 64 bits
    ]:
        for layout in ("sparse", "dense", None):
            decoded, decoded_bits = decode_counts(encode_counts(counts, bits, layout=layout))
            assert decoded_bits == bits and np.array_equal(decoded.numpy(), counts)


def test_payload_is_the_smallest_encoding_tried() -> None:
    few_shots = _histogram(30, 16, 2, None, seed=1)  # records are built and win here
    payload = encode_counts(few_shots, 16)
    sizes = encoding_sizes(few_shots, 16)
    assert len(payload) == min(sizes.values())
    assert describe_payload(payload).layout == "records"
    many_shots = _histogram(30, 8, 4096, None, seed=2)
    sizes = encoding_sizes(many_shots, 8)
    assert len(encode_counts(many_shots, 8)) == min(
        size for name, size in sizes.items() if not name.startswith("records")
    )


def test_output_is_deterministic_and_independent_of_the_input_type() -> None:
    counts = _histogram(20, 8, 1024, None, seed=3)
    payload = encode_counts(counts, 8)
    assert encode_counts(counts.copy(), 8) == payload
    assert encode_counts(torch.from_numpy(counts), 8) == payload
    assert encode_counts(counts.astype(np.int32), 8) == payload
    assert encode_counts(np.asfortranarray(counts), 8) == payload


@pytest.fixture(scope="module")
def payloads() -> dict[str, bytes]:
    """One small payload per layout × compressor, all of the same histogram."""
    counts = _histogram(3, 5, 200, None, seed=4)
    return {
        f"{layout}+{compressor}": encode_counts(counts, 5, layout=layout, compressor=compressor)
        for layout in LAYOUTS
        for compressor in COMPRESSORS
    }


@pytest.mark.parametrize("flip", [0x01, 0x80, 0xFF])
def test_every_flipped_byte_is_rejected(payloads: dict[str, bytes], flip: int) -> None:
    """Header or body, any layout or compressor: a changed byte never decodes silently."""
    for name, payload in payloads.items():
        for at in range(len(payload)):
            damaged = bytearray(payload)
            damaged[at] ^= flip
            with pytest.raises(CodecError):
                decode_counts(bytes(damaged))
                pytest.fail(f"{name}: byte {at} ^ {flip:#x} decoded without an error")


def test_every_truncation_and_extension_is_rejected(payloads: dict[str, bytes]) -> None:
    for payload in payloads.values():
        for length in range(len(payload)):
            with pytest.raises(CodecError):
                decode_counts(payload[:length])
        with pytest.raises(CodecError, match="extra bytes"):
            decode_counts(payload + b"\0")
        with pytest.raises(CodecError, match="truncated"):
            decode_counts(payload[:-1])


def test_foreign_and_future_payloads_are_named(payloads: dict[str, bytes]) -> None:
    payload = payloads["sparse+lzma"]
    with pytest.raises(CodecError, match="magic"):
        decode_counts(b"PK\x03\x04" + payload[4:])
    with pytest.raises(CodecError, match="magic"):
        decode_counts(b"\x1f\x8b")  # a gzip stream's start
    with pytest.raises(CodecError, match=f"version 2, this codec reads version {FORMAT_VERSION}"):
        decode_counts(payload[:4] + bytes([2]) + payload[5:])
    with pytest.raises(CodecError, match="transfer CRC32"):
        damaged = bytearray(payload)
        damaged[HEADER - 1] ^= 1  # the stored transfer CRC itself
        decode_counts(bytes(damaged))
    with pytest.raises(CodecError, match=r"layout 7, .* does not define"):
        decode_counts(_resign(payload[:5] + bytes([7]) + payload[6:]))
    with pytest.raises(CodecError, match="must be bytes"):
        decode_counts("QGRC")  # type: ignore[arg-type]


def test_a_changed_count_fails_the_crcs() -> None:
    """A count changed in place, still a valid body: the transfer CRC catches it in transit;
    re-signed (as an encoder bug would send it), the content CRC still does."""
    counts = np.array([[3, 0, 9, 1]])
    payload = bytearray(encode_counts(counts, 2, layout="dense", compressor="none"))
    payload[HEADER + 2] ^= 0x04  # 9 -> 13, still a one-byte varint
    with pytest.raises(CodecError, match="transfer CRC32"):
        decode_counts(bytes(payload))
    with pytest.raises(CodecError, match="content CRC32"):
        decode_counts(_resign(payload))
    swapped = bytearray(encode_counts(counts, 2, layout="dense", compressor="none"))
    swapped[HEADER], swapped[HEADER + 2] = swapped[HEADER + 2], swapped[HEADER]  # 9, 0, 3, 1
    with pytest.raises(CodecError, match="content CRC32"):  # same counts, other outcomes
        decode_counts(_resign(swapped))


@pytest.mark.parametrize(
    ("counts", "bits", "match"),
    [
        (np.ones((2, 4)), 2, "integer"),
        (torch.ones(2, 4), 2, "integer"),
        (torch.ones(2, 4, dtype=torch.bool), 2, "integer"),
        ([[1, 2]], 1, "torch.Tensor or numpy"),
        (np.ones(4, dtype=np.int64), 2, r"\(circuits, outcomes\)"),
        (np.ones((2, 0), dtype=np.int64), 2, r"\(circuits, outcomes\)"),
        (np.array([[1, -1]]), 1, ">= 0"),
        (np.ones((1, 5), dtype=np.int64), 2, "do not fit 2 measured bits"),
        (np.array([[2**63]], dtype=np.uint64), 1, "fit int64"),
        (np.ones((1, 2), dtype=np.int64), 0, "1..64"),
        (np.ones((1, 2), dtype=np.int64), 65, "1..64"),
        (np.ones((1, 2), dtype=np.int64), True, "must be an int"),
    ],
)
def test_bad_histograms_are_refused(counts: object, bits: object, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        encode_counts(counts, bits)  # type: ignore[arg-type]


def test_bad_layout_or_compressor_names_are_refused() -> None:
    counts = np.ones((1, 2), dtype=np.int64)
    with pytest.raises(CodecError, match="layout must be one of"):
        encode_counts(counts, 1, layout="csv")
    with pytest.raises(CodecError, match="compressor must be one of"):
        encode_counts(counts, 1, compressor="bz2")


def test_codec_error_is_a_qgraph_value_error() -> None:
    assert issubclass(CodecError, QGraphError) and issubclass(CodecError, ValueError)


def test_raw_shot_bytes_is_one_byte_padded_bitstring_per_shot() -> None:
    assert raw_shot_bytes(1024, 8) == 1024
    assert raw_shot_bytes(1024, 13) == 2048  # qiskit BitArray: ceil(13 / 8) = 2 bytes a shot
    assert raw_shot_bytes(3, 1) == 3
    assert raw_shot_bytes(0, 20) == 0
    assert raw_shot_bytes(10, 64) == 80
    for shots, bits in [(-1, 8), (8, -1), (1.5, 8), (True, 8)]:
        with pytest.raises(CodecError, match="must be an int >= 0"):
            raw_shot_bytes(shots, bits)  # type: ignore[arg-type]


# -- the codec on the shots backend ------------------------------------------------------


def _site_inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(3)
    return tuple(torch.randn(2, 2, 6, 8, generator=g) for _ in range(3))


def test_results_through_the_codec_equal_the_plain_counts() -> None:
    from qgraph.backends.shots import ShotsBackend
    from qgraph.kernels.qrce import QRCEStructure

    plain, coded = ShotsBackend(shots=512, seed=1), ShotsBackend(shots=512, seed=1, codec=True)
    q, k, v = _site_inputs()
    structure = QRCEStructure.from_seed(4, 2, 0)
    ids, table, weights = torch.tensor([[0, 3, 3, 5]]), torch.rand(6, 4), torch.rand(2, 4)
    for backend in (plain, coded):
        backend.out = (  # type: ignore[attr-defined]
            backend.qaap(q, k, v, None, True, None, 0.0, "L0"),
            backend.qrce(ids, table, weights, structure, "E0"),
            backend.qrce_gradient(
                torch.ones(1, 4, 8), ids, table, weights, structure, "parameter-shift", "E0"
            ),
        )
    for a, b in zip(pytree_leaves(plain.out), pytree_leaves(coded.out), strict=True):  # type: ignore[attr-defined]
        assert torch.equal(a, b)
    sent = {r.kernel: r for r in coded.stats.records}
    for kernel, bits in (("qaap", 3 + 3), ("qrce", 4), ("qrce-gradient", 4)):
        record = sent[kernel]
        assert record.raw_bytes == raw_shot_bytes(record.shots, bits)
        assert 0 < record.bytes_received < record.raw_bytes
    unsent = {r.kernel: r for r in plain.stats.records}
    assert unsent["qrce"].bytes_received == 3 * 2**4 * 8  # three tokens' int64 histograms


def pytree_leaves(tree: object) -> list[torch.Tensor]:
    import torch.utils._pytree as pytree

    return [leaf for leaf in pytree.tree_leaves(tree) if isinstance(leaf, torch.Tensor)]


def test_the_timeline_reports_what_the_codec_saved() -> None:
    import qgraph
    from qgraph.backends.shots import ShotsBackend
    from qgraph.models import encoder_model
    from qgraph.scheduler import HybridScheduler

    case = encoder_model(layers=1, d_model=16, heads=2, vocab=40, batch=2, seq_len=8)
    cm = qgraph.compile(
        case.model,
        case.args,
        case.kwargs,
        policy="all",
        qrce_qubits=4,
        qrce_layers=1,
        backend=ShotsBackend(shots=1024, codec=True),
    )
    scheduler = HybridScheduler(cm, microbatches=2)
    scheduler.run(*case.args, **case.kwargs)
    summary = scheduler.timeline.summary()
    records = list(cm.backend.stats.records)
    assert summary.raw_shot_bytes == sum(r.raw_bytes for r in records) > 0
    assert summary.bytes_received == sum(r.bytes_received for r in records)
    assert summary.bytes_saved == summary.raw_shot_bytes - summary.bytes_received > 0
