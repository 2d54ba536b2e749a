"""One conformance suite for every backend: the same calls, the same conventions.

Each backend (exact; shots; Aer exact and sampled; IBM local testing mode on a fake device)
runs the same QAAP and QRCE cases through the shared front end and is held to the exact
backend's results: output shapes and dtypes, grouped-query heads, bool/additive/causal
masks, the fallback and empty-row rules and their counters, deduplication counts, and the
parameter-shift gradient. Sampled backends are compared within a bound on shot noise (and,
on the fake IBM device, its gate and read-out noise). A backend that returns a malformed
result is stopped by the front end with an error that names the site.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from qgraph.backends.exact import ExactBackend
from qgraph.backends.frontend import BackendResultError, QAAPRows, QuantumFrontEnd
from qgraph.backends.shots import ShotsBackend
from qgraph.kernels.qrce import QRCEStructure

F64 = torch.float64


@dataclass(frozen=True)
class Case:
    """A backend under test and how far its results may be from the exact backend's."""

    make: Callable[[], QuantumFrontEnd]
    qaap_atol: float  # |output − exact| for values in [−1, 1]
    qrce_atol: float  # |⟨Z⟩ − exact|
    gradient_atol: float  # |parameter-shift gradient − exact|, relative to its max


def _aer(shots: int | None) -> QuantumFrontEnd:
    from qgraph.backends.aer import AerBackend

    return AerBackend(shots=shots, seed=3)


def _ibm() -> QuantumFrontEnd:
    from qgraph.backends.ibm import IBMBackend

    return IBMBackend("fake_santiago", mode="job", shots=4000, seed=3)


CASES = {
    "exact": Case(ExactBackend, 1e-12, 1e-12, 1e-9),
    "shots": Case(lambda: ShotsBackend(shots=20_000, seed=3), 0.05, 0.05, 0.15),
    "aer-exact": Case(lambda: _aer(None), 1e-9, 1e-9, 1e-6),
    "aer-shots": Case(lambda: _aer(20_000), 0.05, 0.05, 0.15),
    # fake_santiago's noise model: CX error ~1 %, read-out ~2 %; tiny circuits only (slow)
    "ibm-local": Case(_ibm, 0.25, 0.2, 0.5),
}
NEEDS = {"aer-exact": "qiskit_aer", "aer-shots": "qiskit_aer", "ibm-local": "qiskit_ibm_runtime"}


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest) -> tuple[str, Case]:
    name = request.param
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    return name, CASES[name]


def _attention_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """B=1, H=2 query heads sharing Hkv=1 key/value head, Sq=2, Sk=3, D=2; v one-hot-ish
    so outputs are the weights themselves."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 2, 2, generator=g, dtype=F64)
    k = torch.randn(1, 1, 3, 2, generator=g, dtype=F64)
    v = torch.eye(3, dtype=F64)[None, None]
    return q, k, v


# --------------------------------------------------------------------------- QAAP


def test_qaap_matches_exact_with_gqa_and_masks(case: tuple[str, Case]) -> None:
    name, spec = case
    backend = spec.make()
    q, k, v = _attention_inputs()
    padding = torch.tensor([[[[True, True, False]]]])  # the third key is padding
    additive = torch.zeros(2, 3, dtype=F64).masked_fill(
        torch.tensor([[False] * 2 + [True]] * 2), -1e9
    )
    for label, mask, causal in [
        ("bool", padding, False),
        ("additive", additive, False),
        ("causal", None, True),
    ]:
        expected = ExactBackend().qaap(q, k, v, mask, causal, None, 0.0, "ref")
        out = backend.qaap(q, k, v, mask, causal, None, 0.0, f"conf-{label}")
        assert out.shape == (1, 2, 2, 3) and out.dtype == F64, (name, label)
        torch.testing.assert_close(out, expected, atol=spec.qaap_atol, rtol=0, msg=label)
        masked = out[..., 2] if label != "causal" else out[..., 0, 1:]
        assert torch.all(masked == 0), f"{name} {label}: a masked key got weight"
        counters = backend.stats.site(f"conf-{label}")
        assert (counters.calls, counters.instances) == (1, 4)


def test_qaap_fallback_and_empty_rows(case: tuple[str, Case]) -> None:
    _, spec = case
    backend = spec.make()
    q, k, v = _attention_inputs()
    q = q.clone()
    q[0, 0, 0] = 0.0  # a zero query: no circuit post-selects → uniform over unmasked keys
    keep = torch.ones(1, 2, 2, 3, dtype=torch.bool)
    keep[0, 1, 1] = False  # a row with no unmasked key → zero output
    keep[0, 0, 0, 2] = False
    out = backend.qaap(q, k, v, keep, False, None, 0.0, "edge")
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.5, 0.5, 0.0], dtype=F64))
    assert torch.all(out[0, 1, 1] == 0)
    counters = backend.stats.site("edge")
    assert (counters.fallback_rows, counters.empty_rows) == (1, 1)


def test_qaap_dtypes_and_ranks(case: tuple[str, Case]) -> None:
    _, spec = case
    backend = spec.make()
    q, k, v = _attention_inputs()
    half = backend.qaap(q.half(), k.half(), v.half(), None, False, None, 0.0, "half")
    assert half.dtype == torch.float16 and half.shape == (1, 2, 2, 3)
    unbatched = backend.qaap(q[0], k[0], v[0], None, False, None, 0.0, "rank3")
    batched = ExactBackend().qaap(q, k, v, None, False, None, 0.0, "ref")
    assert unbatched.shape == (2, 2, 3)
    torch.testing.assert_close(unbatched, batched[0], atol=spec.qaap_atol, rtol=0)


# --------------------------------------------------------------------------- QRCE


def _qrce_inputs() -> tuple[QRCEStructure, torch.Tensor, torch.Tensor, torch.Tensor]:
    structure = QRCEStructure.from_seed(2, 1, seed=5)
    g = torch.Generator().manual_seed(1)
    table = torch.rand(4, 2, generator=g, dtype=F64) * 3.0
    weights = torch.rand(1, 2, generator=g, dtype=F64) * 3.0
    token_ids = torch.tensor([[0, 2, 2], [3, 0, 0]])
    return structure, table, weights, token_ids


def test_qrce_matches_exact_and_runs_each_token_once(case: tuple[str, Case]) -> None:
    _, spec = case
    backend = spec.make()
    structure, table, weights, token_ids = _qrce_inputs()
    expected = ExactBackend().qrce(token_ids, table, weights, structure, "ref")
    out = backend.qrce(token_ids, table, weights, structure, "emb")
    assert out.shape == (2, 3, 4) and out.dtype == F64
    torch.testing.assert_close(out, expected, atol=spec.qrce_atol, rtol=0)
    assert torch.equal(out[0, 1], out[0, 2])  # one circuit per distinct token
    counters = backend.stats.site("emb")
    assert (counters.calls, counters.instances) == (1, 3)
    empty = backend.qrce(token_ids[:, :0], table, weights, structure, "emb")
    assert empty.shape == (2, 0, 4)


def test_qrce_parameter_shift_matches_exact_gradient(case: tuple[str, Case]) -> None:
    _, spec = case
    backend = spec.make()
    structure, table, weights, token_ids = _qrce_inputs()
    grad_out = torch.linspace(-1, 1, 24, dtype=F64).reshape(2, 3, 4)
    exact = ExactBackend().qrce_gradient(
        grad_out, token_ids, table, weights, structure, "autograd", "ref"
    )
    shifted = backend.qrce_gradient(
        grad_out, token_ids, table, weights, structure, "parameter-shift", "emb"
    )
    for got, want in zip(shifted, exact, strict=True):
        assert got.shape == want.shape
        scale = max(float(want.abs().max()), 1.0)  # a gradient that is ~0 is held absolutely
        torch.testing.assert_close(got, want, atol=spec.gradient_atol * scale, rtol=0)


def test_unsupported_gradient_methods_name_the_supported_ones(case: tuple[str, Case]) -> None:
    _, spec = case
    backend = spec.make()
    structure, table, weights, token_ids = _qrce_inputs()
    grad_out = torch.ones(2, 3, 4, dtype=F64)
    for method in ("spsa", "bogus"):
        with pytest.raises(ValueError, match=r"site 'emb'.*computes QRCE gradients by.*parameter"):
            backend.qrce_gradient(grad_out, token_ids, table, weights, structure, method, "emb")


# --------------------------------------------------------------------------- bad results


class _Broken(ExactBackend):
    """The exact backend with one row method replaced by a faulty one."""

    def __init__(self, qaap_fault: str | None = None, qrce_fault: str | None = None) -> None:
        super().__init__()
        self.qaap_fault, self.qrce_fault = qaap_fault, qrce_fault

    def qaap_rows(
        self, keys: torch.Tensor, queries: torch.Tensor, keep: torch.Tensor, site: str
    ) -> QAAPRows:
        rows = super().qaap_rows(keys, queries, keep, site)
        scores = rows.scores
        if self.qaap_fault == "transposed":
            scores = scores.transpose(-2, -1)
        elif self.qaap_fault == "nan":
            scores = scores.clone().index_fill_(-1, torch.tensor([0]), float("nan"))
        elif self.qaap_fault == "negative":
            scores = -scores
        elif self.qaap_fault == "int":
            scores = scores.round().long()
        return QAAPRows(scores, rows.scale)

    def qrce_rows(
        self, angles: torch.Tensor, weights: torch.Tensor, structure: QRCEStructure, site: str
    ) -> torch.Tensor:
        features = super().qrce_rows(angles, weights, structure, site)
        if self.qrce_fault == "out-of-range":
            return features * 3.0
        if self.qrce_fault == "missing-row":
            return features[1:]
        return features


@pytest.mark.parametrize(
    ("fault", "reported"),
    [
        ("transposed", r"shape \(1, 2, 3, 2\)"),
        ("nan", "negative or NaN"),
        ("negative", "negative or NaN"),
        ("int", "dtype torch.int64"),
    ],
)
def test_a_malformed_qaap_result_is_stopped_with_its_site(fault: str, reported: str) -> None:
    q, k, v = _attention_inputs()
    with pytest.raises(BackendResultError, match=rf"'exact'.*{reported}.*site 'layer0'"):
        _Broken(qaap_fault=fault).qaap(q, k, v, None, False, None, 0.0, "layer0")


@pytest.mark.parametrize(
    ("fault", "reported"), [("out-of-range", r"outside \[−1, 1\]"), ("missing-row", "shape")]
)
def test_a_malformed_qrce_result_is_stopped_with_its_site(fault: str, reported: str) -> None:
    structure, table, weights, token_ids = _qrce_inputs()
    with pytest.raises(BackendResultError, match=rf"{reported}.*site 'emb'"):
        _Broken(qrce_fault=fault).qrce(token_ids, table, weights, structure, "emb")
