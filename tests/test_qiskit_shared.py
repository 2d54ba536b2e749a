"""What the qiskit backends share: fake-backend lookup, and decoding measured bits into
QRCE's Z features."""

from __future__ import annotations

import numpy as np
import pytest

from qgraph.backends.qiskit_shared import (
    cached_fake_backend,
    fake_backend,
    fake_backend_names,
    job_chunks,
    z_features,
)


def test_z_features_are_the_shot_means_of_z_and_neighbouring_zz() -> None:
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, size=(3, 101, 5), dtype=np.uint8)  # the 5th bit is not read
    z = 1.0 - 2.0 * bits[..., :4].astype(np.float64)
    expected = np.concatenate([z.mean(axis=1), (z * np.roll(z, -1, axis=-1)).mean(axis=1)], axis=-1)
    np.testing.assert_allclose(z_features(bits, 4), expected, rtol=0, atol=1e-12)


def test_z_features_of_known_states() -> None:
    zeros = np.zeros((1, 8, 3), dtype=np.int8)  # |000⟩ every shot: every Z and ZZ is +1
    np.testing.assert_array_equal(z_features(zeros, 3), np.ones((1, 6)))
    one_hot = np.tile(np.array([1, 0, 0], dtype=np.int8), (1, 8, 1))  # |001⟩ (qubit 0 set)
    # Z = (−1, 1, 1); ZZ pairs (0,1), (1,2), (2,0) = (−1, 1, −1)
    np.testing.assert_array_equal(z_features(one_hot, 3), [[-1, 1, 1, -1, 1, -1]])


def test_fake_backends_are_found_by_their_backend_name() -> None:
    pytest.importorskip("qiskit_ibm_runtime")
    names = fake_backend_names()
    assert names == sorted(names) and {"fake_fez", "fake_manila"} <= set(names)
    manila = fake_backend("fake_manila")
    assert manila.name == "fake_manila" and manila.num_qubits == 5
    assert fake_backend("fake_manila") is not manila  # a fresh instance each call
    assert cached_fake_backend("fake_fez") is cached_fake_backend("fake_fez")


def test_an_unknown_fake_backend_names_close_matches_and_examples() -> None:
    pytest.importorskip("qiskit_ibm_runtime")
    with pytest.raises(
        ValueError, match=r"unknown fake backend 'fake_manilla'. Did you mean fake_manila\b"
    ):
        fake_backend("fake_manilla")
    with pytest.raises(ValueError, match=r"unknown fake backend 'nowhere'.*fake_santiago"):
        fake_backend("nowhere")


def test_job_chunks_pack_pubs_in_order_and_split_where_a_job_fills() -> None:
    assert job_chunks([5], 2) == [[(0, 0, 2)], [(0, 2, 4)], [(0, 4, 5)]]
    # 3 + 0 + 4 circuits in jobs of 3: the empty pub gets no range, the last one is split
    assert job_chunks([3, 0, 4], 3) == [[(0, 0, 3)], [(2, 0, 3)], [(2, 3, 4)]]
    assert job_chunks([1, 1, 1], 2) == [[(0, 0, 1), (1, 0, 1)], [(2, 0, 1)]]
    assert job_chunks([], 4) == []
    with pytest.raises(ValueError, match="at least one circuit"):
        job_chunks([1], 0)
