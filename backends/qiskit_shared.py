"""What the qiskit-based backends (aer, ibm) and the cost model share: finding
qiskit-ibm-runtime's fake backends by name, splitting rows into jobs, and decoding
measured bits (BitArrays, Z features).

One place for each rule, so the backends cannot drift apart.
"""

from __future__ import annotations

import difflib
import functools
import importlib
from typing import Any

import numpy as np

__all__ = [
    "RowRange",
    "bit_array_bits",
    "cached_fake_backend",
    "fake_backend",
    "fake_backend_names",
    "job_chunks",
    "z_features",
]

#: (pub index, first row, row after the last) of one piece of a job
RowRange = tuple[int, int, int]

#: a few fake backends named in error messages as examples
_EXAMPLE_FAKES = ("fake_santiago", "fake_manila", "fake_fez", "fake_torino")


@functools.lru_cache(maxsize=1)
def _fake_classes() -> dict[str, type]:
    """``backend_name`` → class of every BackendV2 fake in ``qiskit_ibm_runtime.fake_provider``.

    Read from the class attribute ``backend_name`` (``fake_provider/fake_backend.py``), so no
    fake is instantiated (building all of them takes seconds and prints their warnings).
    """
    try:
        provider = importlib.import_module("qiskit_ibm_runtime.fake_provider")
        base = importlib.import_module("qiskit_ibm_runtime.fake_provider.fake_backend")
    except ImportError as exc:
        raise ImportError(
            "IBM fake backends (device snapshots and noise models) need qiskit-ibm-runtime: "
            "pip install 'qgraph[ibm]'."
        ) from exc
    found: dict[str, type] = {}
    for value in vars(provider).values():
        is_fake = isinstance(value, type) and issubclass(value, base.FakeBackendV2)
        if is_fake and isinstance(getattr(value, "backend_name", None), str):
            found[value.backend_name] = value
    return found


def fake_backend_names() -> list[str]:
    """Names of qiskit-ibm-runtime's fake backends ("fake_fez", "fake_manila", …), sorted."""
    return sorted(_fake_classes())


def fake_backend(name: str) -> Any:
    """A new instance of qiskit-ibm-runtime's fake backend ``name``.

    An unknown name raises ValueError naming close matches and a few available fakes.
    """
    classes = _fake_classes()
    if name not in classes:
        close = difflib.get_close_matches(str(name), list(classes), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown fake backend {name!r}.{hint} qiskit_ibm_runtime.fake_provider has "
            f"{len(classes)} fakes, e.g. {', '.join(_EXAMPLE_FAKES)} "
            "(qgraph.backends.qiskit_shared.fake_backend_names() lists them all)."
        )
    return classes[name]()


@functools.lru_cache(maxsize=16)
def cached_fake_backend(name: str) -> Any:
    """One shared instance per name, for read-only use (targets, calibration snapshots)."""
    return fake_backend(name)


def bit_array_bits(bit_array: Any) -> np.ndarray:
    """A qiskit ``BitArray`` as uint8 bits (..., shots, num_bits), column i = clbit i.

    ``BitArray.array`` packs each shot big-endian (``int.from_bytes(data, "big")``), so the
    unpacked bits are reversed to put clbit 0 first.
    """
    packed = np.asarray(bit_array.array)
    unpacked = np.unpackbits(packed, axis=-1, bitorder="big")[..., ::-1]
    return np.ascontiguousarray(unpacked[..., : bit_array.num_bits])


def job_chunks(row_counts: list[int], limit: int) -> list[list[RowRange]]:
    """Split pubs of ``row_counts`` circuits into jobs of at most ``limit`` circuits.

    Pubs are packed in order and split across jobs where a job fills up, so every job but
    the last holds exactly ``limit`` circuits; a pub with no rows gets no range.
    """
    if limit < 1:
        raise ValueError(f"a job holds at least one circuit; got limit={limit}.")
    chunks: list[list[RowRange]] = [[]]
    room = limit
    for index, count in enumerate(row_counts):
        start = 0
        while start < count:
            if room == 0:
                chunks.append([])
                room = limit
            stop = min(count, start + room)
            chunks[-1].append((index, start, stop))
            room -= stop - start
            start = stop
    return [chunk for chunk in chunks if chunk]


def z_features(bits: np.ndarray, n_qubits: int) -> np.ndarray:
    """(rows, shots, ≥ q) measured 0/1 bits → (rows, 2q) QRCE features: the shot means of
    Z_i, then of Z_i Z_{(i+1) mod q}.

    Z = 1 − 2·bit and Z_i Z_j = 1 − 2·(bit_i XOR bit_j), so integer sums over the shots
    give both without a float array per shot.
    """
    bits = bits[..., :n_qubits]
    shots = bits.shape[-2]
    ring = bits ^ np.roll(bits, -1, axis=-1)
    z = 1.0 - 2.0 * bits.sum(axis=-2, dtype=np.int64) / shots
    zz = 1.0 - 2.0 * ring.sum(axis=-2, dtype=np.int64) / shots
    return np.concatenate([z, zz], axis=-1)
