"""The IBM backend in local testing mode: a fake backend as the mode, nothing leaves the machine.

Every test here runs with outgoing network blocked (``no_network``, autouse): DNS lookups and
socket connects raise, so nothing can reach IBM's servers even by mistake.

Fake device: ``fake_santiago`` (5 qubits, linear; CX error median 6.0e-3, readout median
1.4e-2: the lowest errors of the 5-qubit fakes). Measured here, one QRCE job of 2 circuits:
at 256 shots fake_santiago/fake_lima/fake_athens ~0.1 s, fake_fez (156 qubits) ~8 s; at 1024
shots through IBMBackend fake_santiago 0.3-0.6 s, fake_fez 11-16 s (the fake's whole-device
noise model is rebuilt for every job).
"""

from __future__ import annotations

import logging
import math
import pickle
import socket
import traceback

import pytest
import torch

pytest.importorskip("qiskit_ibm_runtime")

import qiskit_ibm_runtime
from qiskit_ibm_runtime import fake_provider

from qgraph.backends.base import Backend
from qgraph.backends.ibm import (
    MAX_EXECUTIONS_PER_JOB,
    IBMBackend,
    IBMRuntimeError,
    fake_backend_names,
)
from qgraph.kernels.qaap import qaap_attention
from qgraph.kernels.qrce import (
    QRCEStructure,
    qrce_features_per_layer,
    qrce_token_features,
)

FAKE = "fake_santiago"
F64 = torch.float64
TOKEN = "tok-SECRET-123"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Block DNS and socket connects; returns the list of attempted destinations."""
    attempts: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(repr(args[:2]))
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def _noise_tolerance(backend: IBMBackend, n_cx: int) -> float:
    """|sampled − exact| bound for a ±1 feature of ≤ 2 measured qubits after ``n_cx`` CXs.

    Shot noise: std ≤ 1/√shots, allow 5σ. Readout: a flip with probability p scales ⟨Z⟩ by
    (1 − 2p), so a ZZ feature moves by ≤ 2(p₁ + p₂) ≤ 4·max p. Each CX (depolarizing with
    error e) moves a feature by ≤ 2e. Errors read from the fake's own target.
    """
    target = backend._backend().target
    readout = max(props.error for props in target["measure"].values())
    cx = max(props.error for props in target["cx"].values())
    return 5 / math.sqrt(backend.shots) + 4 * readout + 2 * n_cx * cx


# --------------------------------------------------------------------------- QRCE


def test_is_a_backend_with_ibm_capabilities() -> None:
    backend = IBMBackend(FAKE, shots=1000)
    assert isinstance(backend, Backend) and backend.name == "ibm"
    caps = backend.capabilities
    assert not caps.exact and caps.needs_transpilation and not caps.differentiable
    assert caps.max_qubits == 5
    assert caps.max_circuits_per_job == MAX_EXECUTIONS_PER_JOB // 1000 == 10_000
    assert set(caps.gradient_methods) == {"parameter-shift", "straight-through", "spsa"}
    assert FAKE in fake_backend_names() and "fake_fez" in fake_backend_names()


def test_qrce_forward_close_to_statevector() -> None:
    backend = IBMBackend(FAKE, shots=4096, seed=1)
    structure = QRCEStructure.from_seed(2, 1, seed=0)
    gen = torch.Generator().manual_seed(0)
    table = torch.rand(5, 2, generator=gen, dtype=F64) * math.pi
    weights = torch.rand(1, 2, generator=gen, dtype=F64) * math.pi
    ids = torch.tensor([[1, 3, 1]])  # 2 distinct tokens
    features = backend.qrce(ids, table, weights, structure, site="emb")
    assert features.shape == (1, 3, 4) and features.dtype == F64
    assert features.abs().max() <= 1.0
    assert torch.equal(features[0, 0], features[0, 2])  # a repeated token runs once
    expected = qrce_token_features(ids, table, weights, structure)
    tolerance = _noise_tolerance(backend, n_cx=1)
    assert tolerance < 0.2
    torch.testing.assert_close(features, expected, atol=tolerance, rtol=0)


def test_one_job_per_call_and_chunking() -> None:
    backend = IBMBackend(FAKE, mode="job", shots=64, seed=0)
    structure = QRCEStructure.from_seed(2, 1, seed=3)
    table = torch.randn(6, 2, dtype=F64)
    weights = torch.randn(1, 2, dtype=F64)
    backend.qrce(torch.tensor([0, 2, 2, 5, 0]), table, weights, structure, site="emb")
    (record,) = backend.stats.records
    assert (record.kernel, record.site, record.circuits) == ("qrce", "emb", 3)
    assert record.shots == 3 * 64 and record.wall_s > 0
    assert record.bytes_received == 3 * 64  # one byte per shot of a 2-bit register
    assert record.queue_s is not None and record.queue_s >= 0  # local jobs: ~0
    assert backend.stats.site("emb").calls == 1 and backend.stats.site("emb").instances == 3

    q = torch.randn(1, 2, 2, 2, dtype=F64)
    k = torch.randn(1, 2, 2, 2, dtype=F64)
    v = torch.randn(1, 2, 2, 2, dtype=F64)
    backend.qaap(q, k, v, None, False, None, 0.0, site="attn")
    assert backend.stats.jobs == 2
    assert backend.stats.records[-1].kernel == "qaap"
    assert backend.stats.records[-1].circuits == 4  # B × H × Sq circuits, one job

    chunked = IBMBackend(FAKE, mode="session", shots=64, seed=0, max_circuits_per_job=2)
    out = chunked.qrce(torch.tensor([0, 2, 5]), table, weights, structure, site="emb")
    assert [r.circuits for r in chunked.stats.records] == [2, 1]  # 3 tokens, ≤ 2 per job
    assert out.shape == (3, 4)


def test_qrce_per_layer_template_matches_statevector() -> None:
    """The per-layer template (parameter shift's ``evaluate``) runs the right circuit."""
    backend = IBMBackend(FAKE, shots=4096, seed=2)
    structure = QRCEStructure.from_seed(2, 2, seed=5)
    gen = torch.Generator().manual_seed(4)
    layer_angles = torch.rand(3, 2, 2, generator=gen, dtype=F64) * math.pi
    layer_weights = torch.rand(3, 2, 2, generator=gen, dtype=F64) * math.pi
    features = backend._run_qrce(
        "qrce-gradient",
        "emb",
        layer_angles.numpy(),
        layer_weights.numpy(),
        structure,
        per_layer=True,
    )
    expected = qrce_features_per_layer(layer_angles, layer_weights, structure)
    tolerance = _noise_tolerance(backend, n_cx=2)
    torch.testing.assert_close(torch.as_tensor(features), expected, atol=tolerance, rtol=0)


def test_qrce_parameter_shift_gradient() -> None:
    pytest.importorskip("qgraph.kernels.parameter_shift")
    backend = IBMBackend(FAKE, shots=4096, seed=3)
    structure = QRCEStructure.from_seed(2, 1, seed=0)
    gen = torch.Generator().manual_seed(5)
    table = torch.rand(4, 2, generator=gen, dtype=F64) * math.pi
    weights = torch.rand(1, 2, generator=gen, dtype=F64) * math.pi
    ids = torch.tensor([0, 2, 2])
    grad_out = torch.randn(3, 4, generator=gen, dtype=F64)
    grad_table, grad_weights = backend.qrce_gradient(
        grad_out, ids, table, weights, structure, "parameter-shift", site="emb"
    )

    def features(t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return qrce_token_features(ids, t, w, structure)

    expected_table, expected_weights = torch.func.vjp(features, table, weights)[1](grad_out)
    (record,) = backend.stats.records
    assert record.kernel == "qrce-gradient" and record.circuits == 2 * 4 * 1 * 2  # U·4·L·q
    assert grad_table.shape == (4, 2) and torch.all(grad_table[[1, 3]] == 0)
    # Each component is Σ_k g_k (f₊ − f₋)/2 with per-feature shot variance ≤ 1/(2·shots), so
    # its std is ≤ |g|/√(2·shots), with |g| (per token, or summed over tokens for θ) ≤
    # √2·‖grad_out‖: σ ≤ ‖grad_out‖/√shots. The fake's noise scales differences by
    # ≈ (1 − 4p)(1 − 2e) ≈ 0.9, so allow 5σ plus 15 % of the exact gradient.
    sigma = float(grad_out.norm()) / math.sqrt(backend.shots)
    for got, want in ((grad_table, expected_table), (grad_weights, expected_weights)):
        assert torch.all((got - want).abs() <= 5 * sigma + 0.15 * want.abs().max())
    with pytest.raises(ValueError, match="parameter-shift"):
        backend.qrce_gradient(grad_out, ids, table, weights, structure, "autograd", "emb")


# --------------------------------------------------------------------------- QAAP


def test_qaap_forward_tiny() -> None:
    backend = IBMBackend(FAKE, shots=1024, seed=4)
    gen = torch.Generator().manual_seed(6)
    q = torch.randn(1, 1, 2, 2, generator=gen)
    k = torch.randn(1, 1, 2, 2, generator=gen)
    v = torch.randn(1, 1, 2, 2, generator=gen)
    out = backend.qaap(q, k, v, None, False, None, 0.0, site="attn")
    assert out.shape == (1, 1, 2, 2) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # weights are a distribution over the keys: every output lies between the values' rows
    low, high = v[0, 0].min(dim=0).values, v[0, 0].max(dim=0).values
    assert torch.all(out[0, 0] >= low - 1e-6) and torch.all(out[0, 0] <= high + 1e-6)
    counters = backend.stats.site("attn")
    assert counters.calls == 1 and counters.instances == 2
    # with two keys, out = v0 + w1 (v1 - v0): read each query's weight on key 1 back from the
    # output and compare it with the exact kernel's (the key weights here are 0.63 and 0.20,
    # so weighting the wrong key or dropping the post-selection is off by 0.26 or more)
    exact = qaap_attention(q, k, v)[0]
    v0, v1 = v[0, 0, 0], v[0, 0, 1]
    sampled_weight = ((out[0, 0] - v0) / (v1 - v0)).mean(dim=-1)
    exact_weight = ((exact[0, 0] - v0) / (v1 - v0)).mean(dim=-1)
    assert (sampled_weight - exact_weight).abs().max() < 0.1, (sampled_weight, exact_weight)


def test_qaap_masks_gqa_and_fallback() -> None:
    """Causal mask: query 0 sees key 0 only, so its output is v[0] exactly (shots on the
    masked key are discarded, not redistributed); a zero query falls back to uniform."""
    backend = IBMBackend(FAKE, shots=256, seed=5)
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(1, 2, 2, 2, generator=gen, dtype=F64)  # 2 query heads
    q[0, 1, 1] = 0.0  # head 1, query 1: zero norm → uniform over keys 0 and 1
    k = torch.randn(1, 1, 2, 2, generator=gen, dtype=F64)  # 1 kv head (GQA)
    v = torch.randn(1, 1, 2, 3, generator=gen, dtype=F64)
    out = backend.qaap(q, k, v, None, True, None, 0.0, site="attn")
    assert out.shape == (1, 2, 2, 3)
    for head in range(2):
        torch.testing.assert_close(out[0, head, 0], v[0, 0, 0])
    torch.testing.assert_close(out[0, 1, 1], v[0, 0].mean(dim=0))
    counters = backend.stats.site("attn")
    assert counters.fallback_rows == 1 and counters.empty_rows == 0
    assert backend.stats.records[-1].circuits == 3  # the zero query needs no circuit

    # one template per register shape (and device), transpiled once: a second call reuses it
    templates = [key for key in backend._isa_cache if key[0] == "qaap"]
    backend.qaap(q, k, v, None, True, None, 0.0, site="attn")
    qaap_keys = [key for key in backend._isa_cache if key[0] == "qaap"]
    assert qaap_keys == templates == [("qaap", 1, 1, FAKE)]

    # dropout as in the exact backend: weights · keep / (1 − p)
    keep = torch.tensor([[[[True, True], [False, False]]]])
    dropped = backend.qaap(q[:, :1], k, v, None, True, keep, 0.5, site="attn")
    torch.testing.assert_close(dropped[0, 0, 0], 2.0 * v[0, 0, 0])  # weight 1 on key 0
    torch.testing.assert_close(dropped[0, 0, 1], torch.zeros(3, dtype=F64))


# --------------------------------------------------------------------------- secrets


def _assert_no_token(
    backend: IBMBackend, error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    texts = [
        str(error),
        repr(error),
        "".join(traceback.format_exception(error)),
        repr(backend),
        str(backend),
        repr(backend.stats),
        repr(backend.stats.records),
        repr(backend.capabilities),
        caplog.text,
        *(record.getMessage() for record in caplog.records),
    ]
    for text in texts:
        assert TOKEN not in text
    assert error.__cause__ is None and error.__context__ is None
    assert TOKEN.encode() not in pickle.dumps(backend)


def test_token_never_leaks_when_the_service_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, no_network: list[str]
) -> None:
    """The real qiskit-ibm-runtime service, with the network blocked: it fails to connect."""
    monkeypatch.setenv("QISKIT_IBM_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    backend = IBMBackend("ibm_fez", mode="batch", shots=8)
    assert repr(backend) == "IBMBackend(device='ibm_fez', mode='batch', shots=8)"
    assert backend.capabilities.max_qubits == 156  # from the fake snapshot: no connection
    assert no_network == []  # construction is lazy
    structure = QRCEStructure.from_seed(2, 1, seed=0)
    with pytest.raises(IBMRuntimeError, match="connecting to the service") as info:
        backend.qrce(torch.tensor([0]), torch.zeros(1, 2), torch.zeros(1, 2), structure, "emb")
    assert no_network  # the service did try to connect, and was refused locally
    _assert_no_token(backend, info.value, caplog)


def test_token_is_scrubbed_from_errors_and_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Worst case: a service that puts the token in its exception text and its logs."""
    monkeypatch.setenv("QISKIT_IBM_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    leaky = logging.getLogger("qiskit_ibm_runtime.leaky_test_double")

    class LeakyService:
        def __init__(self, **options: object) -> None:
            leaky.debug("authenticating with token %s", TOKEN)
            self._account = type("Account", (), {"token": TOKEN})()

        def backend(self, name: str) -> object:
            try:
                raise ConnectionError(f"401 for apikey={TOKEN}")
            except ConnectionError:
                leaky.exception("request failed (Authorization: Bearer %s)", TOKEN)
                raise

    monkeypatch.setattr(qiskit_ibm_runtime, "QiskitRuntimeService", LeakyService)
    factory = logging.getLogRecordFactory()
    backend = IBMBackend("ibm_fez", mode="session", shots=8, instance="crn:test")
    structure = QRCEStructure.from_seed(2, 1, seed=0)
    with pytest.raises(IBMRuntimeError, match=r"looking up device .*apikey=\*\*\*") as info:
        backend.qrce(torch.tensor([0]), torch.zeros(1, 2), torch.zeros(1, 2), structure, "emb")
    assert "***" in caplog.text  # the log lines were written, with the token masked
    _assert_no_token(backend, info.value, caplog)
    assert logging.getLogRecordFactory() is factory  # the scrubber is uninstalled again


def test_real_device_flow_connects_lazily_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real-device path (service → device → batch → sampler) with a stand-in service
    whose ``backend()`` hands out a fake, so the job itself runs in local testing mode."""
    monkeypatch.setenv("QISKIT_IBM_TOKEN", TOKEN)
    calls: list[tuple[str, object]] = []

    class StubService:
        def __init__(self, **options: object) -> None:
            calls.append(("service", options))

        def backend(self, name: str) -> object:
            calls.append(("backend", name))
            return fake_provider.FakeSantiagoV2()

    monkeypatch.setattr(qiskit_ibm_runtime, "QiskitRuntimeService", StubService)
    backend = IBMBackend("ibm_fez", mode="batch", shots=32, channel="ibm_cloud", instance="crn:x")
    assert calls == [] and backend.capabilities.max_qubits == 156  # fez snapshot, no call
    structure = QRCEStructure.from_seed(2, 1, seed=0)
    for _ in range(2):
        out = backend.qrce(torch.tensor([0, 1]), torch.ones(2, 2), torch.ones(1, 2), structure, "e")
        assert out.shape == (2, 4)
    assert calls == [
        ("service", {"channel": "ibm_cloud", "instance": "crn:x"}),
        ("backend", "ibm_fez"),
    ]
    assert backend.capabilities.max_qubits == 5  # now the connected device's
    assert backend.stats.jobs == 2
    backend.close()


# --------------------------------------------------------------------------- bad input


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"unknown fake backend 'fake_nowhere'.*fake_santiago"):
        IBMBackend("fake_nowhere")
    with pytest.raises(ValueError, match="Did you mean fake_fez"):
        IBMBackend("fake_fezz")
    with pytest.raises(ValueError, match="execution mode"):
        IBMBackend(FAKE, mode="dedicated")  # type: ignore[arg-type]
    for shots in (0, -5, 1.5, True):
        with pytest.raises(ValueError, match="shots must be a positive int"):
            IBMBackend(FAKE, shots=shots)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_circuits_per_job"):
        IBMBackend(FAKE, shots=1000, max_circuits_per_job=20_000)


def test_too_wide_for_the_device_and_pickle_round_trip() -> None:
    backend = IBMBackend(FAKE, shots=16)
    wide = QRCEStructure.from_seed(6, 1, seed=0)
    with pytest.raises(ValueError, match="needs 6 qubits but fake_santiago has 5"):
        backend.qrce(torch.tensor([0]), torch.zeros(1, 6), torch.zeros(1, 6), wide, "emb")
    copy = pickle.loads(pickle.dumps(backend))
    assert repr(copy) == repr(backend) and copy.capabilities.max_qubits == 5
