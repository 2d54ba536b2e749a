"""Compact, checked transfer of one job's measurement results (a counts histogram).

A sampled job returns, per circuit, how often each outcome was measured: a (circuits,
outcomes) int64 histogram, plus how many bits a shot measured. ``encode_counts`` turns that
into a small self-describing payload and ``decode_counts`` gives back exactly the same
histogram, or raises ``CodecError`` naming what is wrong with the bytes.

**Payload** (little-endian): a 32-byte header, then the body. Header: magic ``b"QGRC"`` (4
bytes); ``FORMAT_VERSION`` (1); layout (1: 0 sparse, 1 records, 2 dense); compressor (1: 0
none, 1 raw deflate level 6, 2 raw LZMA2); bits per shot (1: 1..64); circuits, outcomes (at
most 2^bits), body bytes before and after compression (u32 each); the content CRC32 (u32) of
the decoded histogram as little-endian int64; the transfer CRC32 (u32) of every byte before
it and of the body as sent. The transfer CRC is checked before anything is inflated or
allocated, and catches any damaged byte, even one the decompressor would ignore (deflate's
padding bits) or one the layout never reads (``bits`` in a sparse payload); the content CRC
checks the decoded histogram itself.

**Layouts** (integers are unsigned LEB128 varints, 7 bits a byte; each layout writes its
streams one after another, not interleaved, so that the compressor sees like with like):

* sparse: per circuit its number of non-zero bins; then every non-zero bin's index as the gap
  from the previous non-zero bin of its circuit (index − previous − 1; the first is absolute);
  then every non-zero count minus 1.
* records: per circuit its total shots; then one record per shot, the outcome index in
  ``bits`` bits, packed LSB first, sorted by (circuit, outcome): the histogram does not keep
  the order of the shots, so sorted order is the canonical one. Never built for more than
  ``MAX_RECORDS`` shots in a job (they cost 8 + ``bits`` bytes of memory per shot to build).
* dense: every count, row by row.

``encode_counts`` passes the layouts through every compressor (no compression included)
and keeps the smallest payload; ties go to the first in (layout, compressor) order, so the
output is a function of the input alone (with the same zlib and liblzma versions: another
version may compress differently, and every version decodes every payload). A layout whose
uncompressed body is over ``SKIP_FACTOR`` times the smallest one's is not built: it would
have to compress that many times better to win, which never happened in
benchmarks/compression.py (it lists every layout's size), and compressing megabytes of shot
records or of empty bins was most of the encode time. Records win when a job has fewer shots
than outcomes (one 20-bit shot: 4 bytes of body against 5 sparse); dense wins when most bins
are full.
"""

from __future__ import annotations

import lzma
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from qgraph.errors import QGraphError

__all__ = [
    "COMPRESSORS",
    "FORMAT_VERSION",
    "LAYOUTS",
    "MAX_RECORDS",
    "SKIP_FACTOR",
    "CodecError",
    "PayloadInfo",
    "decode_counts",
    "describe_payload",
    "encode_counts",
    "encoding_sizes",
    "raw_shot_bytes",
]

FORMAT_VERSION = 1
MAGIC = b"QGRC"
#: layout names by their header code
LAYOUTS = ("sparse", "records", "dense")
#: compressor names by their header code
COMPRESSORS = ("none", "zlib", "lzma")
#: the records layout is never built for more shots than this (each costs 8 + bits bytes)
MAX_RECORDS = 1 << 20
#: encode_counts skips layouts whose body is over this × the smallest body (module doc)
SKIP_FACTOR = 4

_PREFIX = struct.Struct("<4sBBBBIIIII")  # what the transfer CRC covers, with the body
_HEADER = struct.Struct("<4sBBBBIIIIII")
_U32 = (1 << 32) - 1
#: LZMA2 presets: 6 (normal mode) up to this body size, 1 (fast mode) above. On the
#: benchmark's 2.7 MB body, 6 took 3.4 s and 1 took 0.46 s for 15 % more bytes; 9 compressed
#: no better than 6. Deflate: level 9 took 5-20× level 6's time for 2-14 % fewer bytes.
_LZMA_FULL_EFFORT_BYTES = 1 << 21
_ZLIB_WBITS = -15  # raw deflate: no zlib header or Adler-32 (the payload has its own CRC)


class CodecError(QGraphError, ValueError):
    """A histogram that cannot be encoded, or a payload that is not a valid encoding."""


def _corrupt(problem: str) -> CodecError:
    """The error for a payload whose bytes were damaged or cut in transfer."""
    return CodecError(
        f"decode_counts: {problem}: the payload is corrupted or truncated; request the job's "
        "results again."
    )


@dataclass(frozen=True)
class PayloadInfo:
    """What a payload's header says (``describe_payload``); the body is not decoded."""

    version: int
    layout: str
    compressor: str
    bits_per_shot: int
    circuits: int
    outcomes: int
    body_bytes: int  # body as sent
    raw_body_bytes: int  # body before compression
    total_bytes: int  # header + body as sent


def raw_shot_bytes(shots: int, bits: int) -> int:
    """Bytes of the raw per-shot records of ``shots`` shots of ``bits`` measured bits.

    Convention: one bitstring per shot, each padded to whole bytes, ``shots × ceil(bits/8)``,
    which is how qiskit's ``BitArray`` (what aer's and IBM's samplers return) stores shots.
    It equals the scheduler timeline's ``shots × bits // 8`` when ``bits`` is a multiple of
    8 and is larger otherwise (13 bits: 2 bytes a shot against 1.625).
    """
    for name, value in (("shots", shots), ("bits", bits)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CodecError(f"raw_shot_bytes: {name} must be an int >= 0; got {value!r}.")
    return shots * ((bits + 7) // 8)


# --------------------------------------------------------------------------- varints


def _varints(values: np.ndarray) -> bytes:
    """Unsigned LEB128 of every value (non-negative ints), concatenated."""
    values = np.ascontiguousarray(values, dtype=np.uint64).reshape(-1)
    widths = np.ones(values.size, dtype=np.int64)
    rest = values >> np.uint64(7)
    while rest.any():
        widths += rest > 0
        rest >>= np.uint64(7)
    if int(widths.max(initial=1)) == 1:  # the common case, ~30× faster than the general one
        return values.astype(np.uint8).tobytes()
    ends = np.cumsum(widths)
    k = np.arange(ends[-1], dtype=np.uint64) - np.repeat(ends - widths, widths).astype(np.uint64)
    more = (k < np.repeat(widths - 1, widths).astype(np.uint64)).astype(np.uint64) << np.uint64(7)
    low7 = (np.repeat(values, widths) >> (np.uint64(7) * k)) & np.uint64(0x7F)
    return (low7 | more).astype(np.uint8).tobytes()


def _varint_bytes(values: np.ndarray) -> int:
    """len(_varints(values)) of non-negative int64 values, without building them."""
    size, shift = values.size, 7
    while shift < 63 and (more := int(np.count_nonzero(values >> shift))):
        size, shift = size + more, shift + 7
    return size


def _read_varints(body: np.ndarray, offset: int, count: int, what: str) -> tuple[np.ndarray, int]:
    """``count`` varints of ``body`` from ``offset``: (uint64 values, offset after them)."""
    head = body[offset : offset + count]
    if head.size == count and not bool((head & 0x80).any()):  # all one-byte: no search needed
        return head.astype(np.uint64), offset + count
    ends = np.flatnonzero(body[offset:] < 0x80)[:count]
    if ends.size < count:
        raise _corrupt(f"the body ends inside the {what} ({ends.size} of {count} present)")
    ends = ends + offset
    starts = np.concatenate(([offset], ends[:-1] + 1))
    widths = ends - starts + 1
    if bool(np.any((widths > 10) | ((widths == 10) & (body[ends] > 1)))):
        raise _corrupt(f"a value in the {what} does not fit 64 bits")
    values = np.zeros(count, dtype=np.uint64)
    for k in range(int(widths.max())):
        sel = widths > k
        low7 = body[starts[sel] + k].astype(np.uint64) & np.uint64(0x7F)
        values[sel] |= low7 << np.uint64(7 * k)
    return values, int(ends[-1]) + 1


# --------------------------------------------------------------------------- layouts


def _sparse_body(counts: np.ndarray) -> bytes:
    rows, cols = np.nonzero(counts)
    nnz = np.bincount(rows, minlength=counts.shape[0])
    gaps = cols.astype(np.int64)
    follows = np.zeros(cols.size, dtype=bool)
    follows[1:] = rows[1:] == rows[:-1]
    gaps[follows] = cols[follows] - cols[np.flatnonzero(follows) - 1] - 1
    return _varints(nnz) + _varints(gaps) + _varints(counts[rows, cols] - 1)


def _records_body(counts: np.ndarray, bits: int) -> bytes:
    totals = counts.sum(axis=1)
    n_records = int(totals.sum())
    rows, cols = np.nonzero(counts)  # row-major: records come sorted by (circuit, outcome)
    records = np.repeat(cols.astype(np.uint64), counts[rows, cols])
    planes = np.empty((n_records, bits), dtype=np.uint8)  # one byte per record bit, not eight
    for k in range(bits):
        planes[:, k] = (records >> np.uint64(k)) & np.uint64(1)
    packed = np.packbits(planes.reshape(-1), bitorder="little")
    return _varints(totals) + packed.tobytes()


def _sparse_decode(body: np.ndarray, circuits: int, outcomes: int) -> np.ndarray:
    nnz, at = _read_varints(body, 0, circuits, "non-zero bin counts")
    if bool(np.any(nnz > outcomes)):
        raise _corrupt(f"a circuit claims more non-zero bins than its {outcomes} outcomes")
    total = int(nnz.sum())
    gaps, at = _read_varints(body, at, total, "bin indices")
    values, at = _read_varints(body, at, total, "bin counts")
    _check_consumed(at, body.size)
    if bool(np.any(gaps >= outcomes)) or bool(np.any(values >= np.uint64((1 << 63) - 1))):
        raise _corrupt("a bin index or count is out of range for the header's shape")
    rows = np.repeat(np.arange(circuits), nnz.astype(np.int64))
    steps = gaps.astype(np.int64) + 1
    first = np.ones(total, dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    steps[first] -= 1  # the first index of a circuit is absolute
    run = np.cumsum(steps)
    run_start = np.maximum.accumulate(np.where(first, np.arange(total), 0))
    cols = run - np.concatenate(([0], run))[run_start]  # cumsum restarted per circuit
    if bool(np.any(cols >= outcomes)):
        raise _corrupt(f"a bin index reaches past the header's {outcomes} outcomes")
    counts = np.zeros((circuits, outcomes), dtype=np.int64)
    counts[rows, cols] = values.astype(np.int64) + 1
    return counts


def _records_decode(body: np.ndarray, circuits: int, outcomes: int, bits: int) -> np.ndarray:
    totals, at = _read_varints(body, 0, circuits, "per-circuit shot totals")
    # in float first: corrupted totals could overflow an integer sum
    if float(totals.sum(dtype=np.float64)) * bits > 8 * (body.size - at) + 7:
        raise _corrupt("the shot totals need more record bits than the body holds")
    n_records = int(totals.sum())
    _check_consumed(at + (n_records * bits + 7) // 8, body.size)
    planes = np.unpackbits(body[at:], count=n_records * bits, bitorder="little").reshape(-1, bits)
    records = np.zeros(n_records, dtype=np.uint64)
    for k in range(bits):
        records |= planes[:, k].astype(np.uint64) << np.uint64(k)
    if bool(np.any(records >= np.uint64(outcomes))):
        raise _corrupt(f"a shot record reads an outcome past the header's {outcomes}")
    rows = np.repeat(np.arange(circuits, dtype=np.int64), totals.astype(np.int64))
    flat_index = rows * outcomes + records.astype(np.int64)
    return np.bincount(flat_index, minlength=circuits * outcomes).reshape(circuits, outcomes)


def _dense_decode(body: np.ndarray, circuits: int, outcomes: int) -> np.ndarray:
    values, at = _read_varints(body, 0, circuits * outcomes, "counts")
    _check_consumed(at, body.size)
    if bool(np.any(values >= np.uint64(1 << 63))):
        raise _corrupt("a count does not fit int64")
    return values.astype(np.int64).reshape(circuits, outcomes)


def _check_consumed(at: int, size: int) -> None:
    if at != size:
        raise _corrupt(f"the body has {size} bytes but its layout uses {at}")


def _lzma_filters(raw_size: int) -> list[dict[str, Any]]:
    """Raw LZMA2 (no .xz container: its ~60 bytes of headers and its own check would double
    what a small job's histogram needs, and the payload has its own CRC). The dictionary is
    the body's size rounded up to a power of two, from 4 KiB to 64 MiB: a bigger one cannot
    find more matches and costs its allocation (60 ms for preset 9's 64 MiB on a 2 kB body).
    The decoder derives the same size from the header's raw length."""
    dict_size = 1 << min(26, max(12, (raw_size - 1).bit_length()))
    preset = 6 if raw_size <= _LZMA_FULL_EFFORT_BYTES else 1  # both: lc 3, lp 0, pb 2
    return [{"id": lzma.FILTER_LZMA2, "preset": preset, "dict_size": dict_size}]


def _compress(body: bytes, compressor: int) -> bytes:
    if compressor == 1:
        packer = zlib.compressobj(6, zlib.DEFLATED, _ZLIB_WBITS)
        return packer.compress(body) + packer.flush()
    if compressor == 2:
        return lzma.compress(body, format=lzma.FORMAT_RAW, filters=_lzma_filters(len(body)))
    return body


def _decompress(data: bytes, compressor: int, raw_size: int) -> bytes:
    """The body, of exactly ``raw_size`` bytes (never more is inflated: a corrupted length
    cannot make the decoder allocate more than the header promised)."""
    try:
        if compressor == 0:
            body, complete = data, True
        elif compressor == 1:
            inflater = zlib.decompressobj(_ZLIB_WBITS)
            body = inflater.decompress(data, raw_size + 1)
            complete = inflater.eof and not inflater.unused_data and not inflater.unconsumed_tail
        else:
            unpacker = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=_lzma_filters(raw_size))
            body = unpacker.decompress(data, raw_size + 1)
            complete = unpacker.eof and not unpacker.unused_data
    except (zlib.error, lzma.LZMAError) as error:
        raise _corrupt(f"the body does not decompress ({error})") from error
    if len(body) != raw_size or not complete:
        raise _corrupt(
            f"the {COMPRESSORS[compressor]} body inflates to {len(body)}"
            f"{'' if complete else '+'} bytes, not the header's {raw_size}"
        )
    return body


def _as_counts(counts: object, bits_per_shot: object) -> tuple[np.ndarray, int]:
    """The histogram as a C-ordered int64 numpy array, checked, and the bits."""
    if (
        isinstance(bits_per_shot, bool)
        or not isinstance(bits_per_shot, int)
        or not (1 <= bits_per_shot <= 64)
    ):
        raise CodecError(
            f"encode_counts: bits_per_shot must be an int in 1..64 (the bits one shot "
            f"measured); got {bits_per_shot!r}."
        )
    array = counts.detach().cpu() if isinstance(counts, torch.Tensor) else counts
    if isinstance(array, torch.Tensor) and not array.is_floating_point():
        array = array.numpy()  # (numpy has no bfloat16: floats stay tensors, refused below)
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.integer):
        raise CodecError(
            "encode_counts: counts must be a torch.Tensor or numpy array of integers; got "
            f"{getattr(array, 'dtype', type(array).__name__)}. Pass counts.to(torch.int64) "
            "(torch) or counts.astype(np.int64) (numpy) if the values are whole numbers."
        )
    if array.ndim != 2 or array.shape[1] == 0:
        raise CodecError(
            f"encode_counts: counts must be a (circuits, outcomes) histogram with outcomes >= "
            f"1; got shape {tuple(array.shape)}. Reshape to (-1, outcomes)."
        )
    circuits, outcomes = array.shape
    if circuits > _U32 or outcomes > min(_U32, 2**bits_per_shot):
        raise CodecError(
            f"encode_counts: {outcomes} outcomes do not fit {bits_per_shot} measured bits (at "
            f"most {min(_U32, 2**bits_per_shot)}), or {circuits} circuits exceed 2^32 - 1; "
            "pass the number of bits a shot measured, and split larger jobs."
        )
    if array.dtype == np.uint64 and array.size and int(array.max()) >= 1 << 63:
        raise CodecError("encode_counts: counts must fit int64; got a count >= 2^63.")
    array = np.ascontiguousarray(array, dtype=np.int64)
    if array.size and (int(array.min()) < 0 or array.sum(1, dtype=np.float64).max() >= 2**63):
        raise CodecError(
            "encode_counts: counts must be >= 0 (shots per outcome) and each circuit's total "
            f"must fit int64; got a minimum of {int(array.min())}."
        )
    return array, bits_per_shot


def _content_crc(counts: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(counts, dtype="<i8").reshape(-1).view(np.uint8).data)


def _payloads(
    counts: np.ndarray, bits: int, every: bool, layouts: tuple[int, ...], packers: tuple[int, ...]
) -> list[tuple[str, bytes]]:
    """The payloads of the histogram for the given layout and compressor codes, in tie-break
    order; unless ``every``, not those whose body is over ``SKIP_FACTOR`` × the smallest."""
    circuits, outcomes = counts.shape
    totals = counts.sum(axis=1)
    shots = int(totals.sum())
    sparse = _sparse_body(counts)
    sizes = {0: len(sparse), 2: _varint_bytes(counts)}
    if shots <= MAX_RECORDS:  # records are never built above it
        sizes[1] = _varint_bytes(totals) + (shots * bits + 7) // 8
    smallest = min(sizes.values())
    content_crc = _content_crc(counts)
    found = []
    for layout in layouts:
        if layout not in sizes or (not every and sizes[layout] > SKIP_FACTOR * smallest):
            continue
        if layout == 1:
            body = _records_body(counts, bits)
        else:
            body = sparse if layout == 0 else _varints(counts)
        for compressor in packers:
            sent = _compress(body, compressor)
            if len(body) > _U32 or len(sent) > _U32:
                continue  # the header's u32 lengths cannot describe it
            prefix = _PREFIX.pack(
                MAGIC, FORMAT_VERSION, layout, compressor, bits, circuits, outcomes, len(body),
                len(sent), content_crc,
            )  # fmt: skip
            transfer_crc = struct.pack("<I", zlib.crc32(sent, zlib.crc32(prefix)))
            name = f"{LAYOUTS[layout]}+{COMPRESSORS[compressor]}"
            found.append((name, prefix + transfer_crc + sent))
    if not found:
        raise CodecError(
            f"encode_counts: no encoding of this histogram fits the format ({shots} shots, "
            f"more than MAX_RECORDS = {MAX_RECORDS} records, or a body over 4 GiB); choose "
            "another layout or split the job."
        )
    return found


def _codes(names: tuple[str, ...], name: str | None, what: str) -> tuple[int, ...]:
    if name is None:
        return tuple(range(len(names)))
    if name not in names:
        raise CodecError(f"encode_counts: {what} must be one of {names} or None; got {name!r}.")
    return (names.index(name),)


def encode_counts(
    counts: torch.Tensor | np.ndarray,
    bits_per_shot: int,
    *,
    layout: str | None = None,
    compressor: str | None = None,
) -> bytes:
    """The smallest payload of one job's (circuits, outcomes) outcome histogram.

    Args:
        counts: integer counts >= 0, one row per circuit, one column per outcome (outcome
            index = measured bitstring as an integer, or any category numbering below
            2^bits_per_shot); torch (any device) or numpy.
        bits_per_shot: bits one shot measured (1..64); outcomes must be <= 2^bits_per_shot.
        layout, compressor: force one of ``LAYOUTS`` / ``COMPRESSORS`` (None: try them all,
            as the module docstring says; a forced "records" is built whatever its size up
            to ``MAX_RECORDS``).

    Returns:
        The payload (module docstring), never larger than the uncompressed histogram layouts
        it tried. Deterministic for a given input (and zlib/liblzma version).

    Raises:
        CodecError: counts not a 2-D integer histogram of non-negative values, outcomes that
            do not fit ``bits_per_shot``, or an unknown layout or compressor name.
    """
    array, bits = _as_counts(counts, bits_per_shot)
    layouts = _codes(LAYOUTS, layout, "layout")
    packers = _codes(COMPRESSORS, compressor, "compressor")
    candidates = _payloads(array, bits, layout is not None, layouts, packers)
    return min(candidates, key=lambda named: len(named[1]))[1]


def encoding_sizes(counts: torch.Tensor | np.ndarray, bits_per_shot: int) -> dict[str, int]:
    """Bytes of the payload of every ``"layout+compressor"`` (records included whatever their
    size, up to ``MAX_RECORDS``); ``encode_counts`` returns the smallest of those it
    tries. For benchmarks and logs."""
    array, bits = _as_counts(counts, bits_per_shot)
    every = tuple(range(len(LAYOUTS))), tuple(range(len(COMPRESSORS)))
    return {name: len(payload) for name, payload in _payloads(array, bits, True, *every)}


def describe_payload(payload: bytes) -> PayloadInfo:
    """What the header of ``payload`` says; checks the header and the transfer CRC (so the
    bytes are the ones sent), not that the body decodes."""
    fields = _read_header(payload)
    return PayloadInfo(
        version=fields[1],
        layout=LAYOUTS[fields[2]],
        compressor=COMPRESSORS[fields[3]],
        bits_per_shot=fields[4],
        circuits=fields[5],
        outcomes=fields[6],
        body_bytes=fields[8],
        raw_body_bytes=fields[7],
        total_bytes=_HEADER.size + fields[8],
    )


def _read_header(payload: object) -> tuple[Any, ...]:
    """The header's fields, once the payload is whole, undamaged and of a known format."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise CodecError(
            f"decode_counts: payload must be bytes (what encode_counts returned); got "
            f"{type(payload).__name__}."
        )
    payload = bytes(payload)
    if payload[:4] != MAGIC[: len(payload)]:
        raise CodecError(
            f"decode_counts: the payload does not start with the codec's magic {MAGIC!r} (it "
            f"starts {payload[:4]!r}): it is not a qgraph result payload; pass the bytes "
            "encode_counts produced."
        )
    if len(payload) > 4 and payload[4] != FORMAT_VERSION:
        raise CodecError(
            f"decode_counts: payload format version {payload[4]}, this codec reads version "
            f"{FORMAT_VERSION}: decode it with the qgraph version that encoded it."
        )
    if len(payload) < _HEADER.size:
        raise _corrupt(f"{len(payload)} bytes, shorter than the {_HEADER.size}-byte header")
    fields = _HEADER.unpack_from(payload)
    _, _, layout, compressor, bits, _, outcomes, _, size, _, transfer_crc = fields
    if len(payload) != _HEADER.size + size:
        what = "truncated" if len(payload) < _HEADER.size + size else "followed by extra bytes"
        raise CodecError(
            f"decode_counts: the payload has {len(payload)} bytes but its header announces "
            f"{_HEADER.size + size}: it is {what}; request the job's results again, or pass "
            "exactly one payload."
        )
    sent = zlib.crc32(payload[_HEADER.size :], zlib.crc32(payload[: _PREFIX.size]))
    if sent != transfer_crc:
        raise _corrupt("transfer CRC32 mismatch: bytes changed after encoding")
    if layout >= len(LAYOUTS) or compressor >= len(COMPRESSORS) or not 1 <= bits <= 64:
        raise CodecError(
            f"decode_counts: the header names layout {layout}, compressor {compressor}, {bits} "
            f"bits per shot, which format version {FORMAT_VERSION} does not define; decode it "
            "with the qgraph version that encoded it."
        )
    if outcomes < 1 or outcomes > 2**bits:
        raise _corrupt(f"the header's {outcomes} outcomes do not fit its {bits} bits per shot")
    return fields


def decode_counts(payload: bytes) -> tuple[torch.Tensor, int]:
    """The histogram and bits per shot that ``encode_counts`` encoded, exactly.

    Returns:
        ``(counts (circuits, outcomes) int64 CPU tensor, bits_per_shot)``.

    Raises:
        CodecError: wrong magic, another format version, a truncated or extended payload, a
            transfer CRC32 mismatch (a damaged byte), an unknown layout or compressor, a body
            that does not decompress or does not fit the header's shape, or a content CRC32
            mismatch (the decoded histogram is not the encoded one); the message names which.
    """
    fields = _read_header(payload)
    _, _, layout, compressor, bits, circuits, outcomes, raw_size, _, content_crc, _ = fields
    raw = _decompress(bytes(payload)[_HEADER.size :], compressor, raw_size)
    body = np.frombuffer(raw, dtype=np.uint8)
    if layout == 0:
        counts = _sparse_decode(body, circuits, outcomes)
    elif layout == 1:
        counts = _records_decode(body, circuits, outcomes, bits)
    else:
        counts = _dense_decode(body, circuits, outcomes)
    if _content_crc(counts) != content_crc:
        raise _corrupt("content CRC32 mismatch: the decoded histogram is not the one encoded")
    return torch.from_numpy(counts), bits
