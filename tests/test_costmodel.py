"""The cost model: device profiles, resources, estimates, support rules and decisions.

Known answers come from hand-built Site objects; the "measured" ones (transpiled depth and
gate counts) are checked against an independent transpile of the same template.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from qgraph.costmodel import (
    Quantity,
    classical_estimate,
    decide,
    device_names,
    devices,
    estimate,
    load,
)
from qgraph.costmodel.profiles import DEVICE_DIR
from qgraph.costmodel.resources import (
    circuit_cost,
    circuits_backward,
    circuits_forward,
    qaap_shape,
    shots_for_precision,
)
from qgraph.costmodel.simulators import MODEL_FEATURES
from qgraph.site import Site

SHIPPED = (
    "ibm_heron_r2",
    "ibm_heron_r3",
    "ibm_eagle_r3",
    "ionq_aria",
    "ideal_ft",
    "exact",
    "shots",
    "aer",
    "cpu_local",
    "gpu_h100",
)


def attention(batch: int = 2, heads: int = 4, seq: int = 16, dim: int = 16, **kw: Any) -> Site:
    return Site.attention_of_shape(batch, heads, seq, dim, path="encoder.layer.0.attention", **kw)


def embedding(batch: int = 2, seq: int = 16, vocab: int = 1000, dim: int = 64) -> Site:
    return Site.embedding_of_shape(
        batch, seq, vocab, dim, path="embeddings.word_embeddings", index=1
    )


# --------------------------------------------------------------------------- profiles


def test_every_shipped_profile_loads_and_every_number_has_a_source() -> None:
    names = device_names()
    for name in SHIPPED:
        assert name in names
    for profile in devices():
        assert profile.kind in ("qpu", "simulator", "classical")
        assert profile.numbers, profile.name
        for key, quantity in profile.items():
            assert isinstance(quantity, Quantity)
            assert math.isfinite(float(quantity.value)), (profile.name, key)
            assert quantity.source.strip(), (profile.name, key)
            assert quantity.date.strip(), (profile.name, key)


def test_profile_files_name_a_source_for_every_number() -> None:
    import tomllib

    for path in sorted(DEVICE_DIR.glob("*.toml")):
        data = tomllib.loads(path.read_text())
        for key, table in data["numbers"].items():
            assert {"value", "unit", "source", "date"} <= set(table), (path.name, key)


def test_a_number_without_a_source_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bad_qpu.toml").write_text(
        'name = "bad_qpu"\nkind = "qpu"\n[numbers]\n'
        'num_qubits = { value = 5, unit = "qubits", date = "2026" }\n'
    )
    monkeypatch.setenv("QGRAPH_DEVICE_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="every number has a source"):
        load("bad_qpu")


def test_ibm_numbers_follow_the_fake_backend_target() -> None:
    pytest.importorskip("qiskit_ibm_runtime")
    heron = load("ibm_heron_r2")
    assert "fake_fez Target" in heron["two_qubit_error"].source
    assert heron.max_qubits == 156
    assert heron.basis == ("cz", "rz", "sx", "x")
    assert 1e-4 < heron.value("two_qubit_error") < 1e-2
    eagle = load("ibm_eagle_r3")
    assert "ecr" in eagle.basis and eagle.max_qubits == 127


def test_unknown_device_lists_the_known_names() -> None:
    with pytest.raises(ValueError, match=r"unknown device 'nope'.*ibm_heron_r2.*ionq_aria"):
        load("nope")
    with pytest.raises(ValueError, match="known devices"):
        estimate(attention(), "nope")


def test_aliases_and_simulator_rates_are_complete() -> None:
    assert load("ibm_heron").name == "ibm_heron_r2"
    for name in ("exact", "shots", "aer"):
        profile = load(name)
        for model, features in MODEL_FEATURES.items():
            backend, kernel = model.split(".")
            if backend == name:
                for feature in features:
                    assert f"{kernel}.{feature}" in profile, (name, kernel, feature)


# --------------------------------------------------------------------------- resources


def test_tiny_circuit_estimate_matches_its_actual_transpile() -> None:
    pytest.importorskip("qiskit_ibm_runtime")
    from qiskit import transpile
    from qiskit_ibm_runtime.fake_provider import FakeFez

    from qgraph.circuits.templates import qaap_template

    site = attention(batch=1, heads=1, seq=4, dim=2)  # a = 2, b = 1: 3 qubits
    est = estimate(site, "ibm_heron_r2", gradient="none")
    compiled = transpile(
        qaap_template(2, 1, measure=True)[0],
        backend=FakeFez(),
        optimization_level=1,
        seed_transpiler=0,
    )
    assert est.supported and est.qubits == 3
    assert est.depth == compiled.depth()
    assert est.two_qubit_gates == sum(1 for i in compiled.data if i.operation.num_qubits == 2)
    assert est.circuit is not None and est.circuit.method == "transpiled"


def test_qrce_circuit_cost_matches_its_transpile() -> None:
    from qiskit import transpile

    from qgraph.circuits.templates import qrce_layer_template
    from qgraph.kernels.qrce import QRCEStructure

    ion = load("ionq_aria")
    cost = circuit_cost("qrce", (3, 2), ion)
    compiled = transpile(
        qrce_layer_template(QRCEStructure.from_seed(3, 2, 0), measure=True)[0],
        basis_gates=list(ion.basis),
        optimization_level=1,
        seed_transpiler=0,
    )
    assert cost.depth == compiled.depth()
    assert cost.two_qubit_gates == 6  # a CX ring of 3 per layer, 2 layers
    assert cost.duration_s is not None and cost.duration_s > 2 * 600e-6


def test_qaap_fit_is_used_above_the_transpile_limit_and_stays_close() -> None:
    ion = load("ionq_aria")
    fitted = circuit_cost("qaap", (4, 3), ion, transpile_limit=6)
    actual = circuit_cost("qaap", (4, 3), ion)
    assert fitted.method == "fit" and actual.method == "transpiled"
    assert abs(fitted.two_qubit_gates - actual.two_qubit_gates) <= 0.25 * actual.two_qubit_gates


def test_circuit_and_shot_rules() -> None:
    assert qaap_shape(128, 64) == (7, 6)
    assert qaap_shape(1, 1) == (1, 1)
    assert circuits_forward("qaap", batch=2, heads=12, queries=128) == 3072
    assert circuits_forward("qrce", tokens=64, vocab_size=30) == 30
    assert circuits_backward("qrce", "parameter-shift", 10, qubits=8, layers=2) == 640
    assert circuits_backward("qaap", "spsa", 10) == 20
    assert circuits_backward("qaap", "straight-through", 10) == 0
    assert shots_for_precision(0.1) == 100
    assert shots_for_precision(0.03) == 1112
    assert shots_for_precision(0.1, 0.25) == 400


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, float("nan"), True])
def test_precision_out_of_range_is_an_error(bad: float) -> None:
    with pytest.raises(ValueError, match="precision"):
        estimate(attention(), "ibm_heron_r2", precision=bad)
    with pytest.raises(ValueError, match="precision"):
        shots_for_precision(bad)


# --------------------------------------------------------------------------- estimates


def test_qaap_estimate_counts_circuits_shots_and_money_on_heron() -> None:
    site = attention(batch=2, heads=4, seq=8, dim=4)  # a = 3, b = 2
    est = estimate(site, "ibm_heron_r3", precision=0.1)
    assert est.supported and est.qubits == 5
    assert est.circuits_forward == 2 * 4 * 8
    assert est.shots_forward == math.ceil(100 * 4)  # 1/ε² ÷ prior P = 1/2^b
    assert est.success_probability == 0.25
    assert est.gradient == "straight-through" and est.circuits_backward == 0
    heron = load("ibm_heron_r3")
    minimum, price = heron.value("job_min_qpu_s"), heron.value("price_per_qpu_s")
    assert est.jobs_forward == 1
    # The minimum is a floor on the job's QPU time, not extra time on top of execution.
    assert est.forward.latency_s == pytest.approx(max(minimum - est.forward.execution_s, 0.0))
    assert est.money_usd == pytest.approx(max(minimum, est.forward.execution_s) * price)
    # a tiny job is billed at the per-job minimum
    tiny = estimate(attention(batch=1, heads=1, seq=2, dim=2), "ibm_heron_r3", precision=0.1)
    assert tiny.forward.execution_s < minimum
    assert tiny.forward.latency_s + tiny.forward.execution_s == pytest.approx(minimum)
    assert tiny.money_usd == pytest.approx(minimum * price)
    assert 0 < est.fidelity < 1  # type: ignore[operator]
    text = est.explain()
    for needle in ("fake_boston", "CLOPS_h", "per-shot time", "fidelity", "money", "USD"):
        assert needle in text


def test_qrce_parameter_shift_backward_on_ionq() -> None:
    site = embedding(batch=2, seq=16, vocab=1000)
    est = estimate(site, "ionq_aria", precision=0.1, qrce_qubits=4, qrce_layers=2)
    assert est.supported and est.qubits == 4
    assert est.circuits_forward == 32  # min(2 × 16 positions, vocab)
    assert est.gradient == "parameter-shift"
    assert est.circuits_backward == 4 * 2 * 4 * 32
    assert est.shots_forward == 100 and est.shots_backward == 50
    ion = load("ionq_aria")
    # every circuit costs at least the $1 minimum
    assert est.money_usd >= (32 + 4 * 2 * 4 * 32) * ion.value("min_price_per_circuit")
    assert est.backward.execution_s > est.forward.execution_s


def test_fault_tolerant_estimate_is_slow_but_faithful() -> None:
    est = estimate(attention(batch=1, heads=1, seq=8, dim=4), "ideal_ft", precision=0.1)
    ft = load("ideal_ft")
    assert est.fidelity == pytest.approx(1 - ft.value("error_budget"))
    assert est.physical_qubits is not None and est.physical_qubits > 1000
    assert est.money_usd is None
    assert "code distance" in est.explain()


def test_exact_simulator_estimate_uses_the_calibrated_rates() -> None:
    site = embedding()
    est = estimate(site, "exact")
    assert est.supported and est.shots_forward == 0 and est.gradient == "autograd"
    assert est.fidelity == 1.0 and est.money_usd == 0.0
    assert est.forward.total_s > 0
    assert "calibrate()" in est.explain()
    # closed-form QAAP has no qubit limit on the exact backend
    huge = attention(batch=1, heads=1, seq=1 << 20, dim=1 << 12)
    assert estimate(huge, "exact", gradient="none").supported


def test_gradient_requests_are_checked() -> None:
    with pytest.raises(ValueError, match="autograd"):
        estimate(attention(), "ibm_heron_r2", gradient="autograd")
    with pytest.raises(ValueError, match="QRCE"):
        estimate(attention(), "ibm_heron_r2", gradient="parameter-shift")
    with pytest.raises(ValueError, match="unknown gradient"):
        estimate(attention(), "ibm_heron_r2", gradient="magic")
    spsa = estimate(attention(batch=1, heads=1, seq=4, dim=2), "ibm_heron_r2", gradient="spsa")
    assert spsa.circuits_backward == 2 * spsa.circuits_forward


# --------------------------------------------------------------------------- decisions


def test_decision_site_that_fits() -> None:
    est = estimate(attention(batch=1, heads=1, seq=4, dim=4), "ibm_heron_r3")
    assert est.supported and est.reason == "needs 4 qubits; device has 156"


def test_decision_too_many_qubits() -> None:
    site = attention(batch=1, heads=1, seq=1 << 20, dim=1 << 10)  # 20 + 10 qubits
    est = estimate(site, "ionq_aria")
    assert not est.supported
    assert est.reason == "needs 30 qubits; device has 25"
    assert est.time_s is None and est.circuit is None
    verdict, why = decide(est, classical_estimate(site, "gpu_h100"))
    assert not verdict and "needs 30 qubits; device has 25" in why
    # an embedding with a wider QRCE circuit than the device
    wide = estimate(embedding(), "ionq_aria", qrce_qubits=26)
    assert not wide.supported and wide.reason == "needs 26 qubits; device has 25"


def test_decision_too_noisy() -> None:
    site = attention(batch=1, heads=1, seq=16, dim=16)  # 8 qubits, hundreds of ECRs
    est = estimate(site, "ibm_eagle_r3", gradient="none")
    assert est.supported
    assert est.fidelity is not None and est.fidelity < 0.05
    verdict, why = decide(est, classical_estimate(site, "cpu_local"), min_fidelity=0.5)
    assert not verdict and why.startswith("too noisy")


def test_decision_follows_the_times() -> None:
    site = attention(batch=1, heads=2, seq=16, dim=16)
    quantum = estimate(site, "exact", gradient="none")
    fast_cpu = classical_estimate(site, "gpu_h100", training=False)
    verdict, why = decide(quantum, fast_cpu)
    assert not verdict and why.startswith("slower")
    # a hypothetical classical device 10^12 times slower: now the simulator wins
    cpu = load("cpu_local")
    slow = cpu.with_numbers(
        peak_flops=Quantity(1e-3, "FLOP/s", "test: hypothetical", "2026"),
        per_op_overhead=Quantity(10.0, "s", "test: hypothetical", "2026"),
    )
    verdict, why = decide(quantum, classical_estimate(site, slow, training=False))
    assert verdict and why.startswith("faster")


def test_classical_roofline_arithmetic() -> None:
    site = attention()
    site.flops, site.bytes = 10**12, 10**9
    h100 = load("gpu_h100")
    est = classical_estimate(site, h100, training=True)
    peak = h100.value("peak_flops_fp32")
    bound = max(1e12 / peak, 1e9 / h100.value("memory_bandwidth"))
    overhead = h100.value("per_op_overhead")
    assert est.forward_s == pytest.approx(bound + overhead)
    assert est.backward_s == pytest.approx(2 * bound + overhead)
    assert est.bound == "compute"
    assert "NVIDIA H100" in est.explain()
    with pytest.raises(ValueError, match="classical"):
        classical_estimate(site, "ibm_heron_r2")


# --------------------------------------------------------------------------- calibration


def test_fit_rates_recovers_known_rates() -> None:
    from qgraph.costmodel.calibration import fit_rates
    from qgraph.costmodel.simulators import qrce_work

    truth = {
        "call": 2e-4,
        "pyops": 1e-5,
        "circuits": 3e-7,
        "amp_gates": 4e-10,
        "amp_gates_mid": 0.0,
        "outcomes": 7e-9,
        "outcomes_mid": 0.0,
        "outcomes_big": 2e-8,
    }
    samples = []
    for q, layers, tokens in [
        (4, 1, 16),
        (6, 2, 256),
        (8, 3, 64),
        (10, 1, 2048),
        (12, 2, 16),
        (12, 1, 4096),
        (5, 3, 8),
        (9, 2, 512),
    ]:
        work = qrce_work("exact", circuits=tokens, qubits=q, layers=layers, cache_bytes=1e12)
        seconds = sum(truth[f] * x for f, x in work.features.items())
        samples.append((work.features, seconds))
    rates, _, worst = fit_rates("exact.qrce", samples)
    assert worst < 1e-6
    for feature in ("call", "pyops", "amp_gates", "outcomes", "outcomes_big"):
        assert rates[feature] == pytest.approx(truth[feature], rel=1e-3)


def test_calibrate_writes_a_profile_that_loads_with_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qgraph.costmodel.calibration import calibrate

    written = calibrate(tmp_path, devices=("cpu_local",), quick=True, progress=None)
    assert (tmp_path / "cpu_local.toml").is_file()
    monkeypatch.setenv("QGRAPH_DEVICE_DIR", str(tmp_path))
    cpu = load("cpu_local")
    assert cpu.path == (tmp_path / "cpu_local.toml").resolve()
    for key in ("peak_flops", "memory_bandwidth", "per_op_overhead", "qaap_param_s", "count_s"):
        assert cpu.value(key) > 0
        assert "calibrate()" in cpu[key].source
    assert cpu.numbers == written["cpu_local"].numbers
