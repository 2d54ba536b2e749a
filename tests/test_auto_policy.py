"""policy="auto": the cost model decides, the report shows the numbers, explain shows why."""

from __future__ import annotations

import pytest
import torch

import qgraph
import qgraph.costmodel
from panel import PANEL


@pytest.fixture(scope="module")
def bert():
    return PANEL["bert"]()


@pytest.fixture(scope="module")
def auto_cm(bert):
    return qgraph.compile(bert.model, bert.args, bert.kwargs, report_devices=("ionq_aria",))


def test_auto_is_the_default_and_costs_every_candidate(auto_cm) -> None:
    assert auto_cm.report.policy == "auto"
    candidates = [s for s in auto_cm.report.sites if s.kind == "attention" or s.table == "word"]
    for site in candidates:
        heron = site.costs["ibm_heron_r2"]
        assert heron["supported"] and heron["qubits"] > 0 and heron["two_qubit_gates"] > 0
        assert heron["time_s"] > 0 and 0 < heron["fidelity"] <= 1 and heron["money_usd"] > 0
        assert "ionq_aria" in site.costs and site.classical_s is not None and site.classical_s > 0
        assert site.reason.startswith("auto: ")


def test_auto_keeps_sites_classical_when_the_device_is_slower_or_noisier(auto_cm, bert) -> None:
    for site in auto_cm.report.sites:
        if site.costs and site.reason.startswith("auto"):
            heron = site.costs["ibm_heron_r2"]
            slower = heron["time_s"] >= site.classical_s
            noisy = heron["fidelity"] < 0.5
            assert site.decision == ("classical" if slower or noisy else "quantum")
            assert ("slower" in site.reason) == (slower and not noisy)
    if not auto_cm.report.quantum_sites:  # nothing offloaded: the original module runs
        with torch.no_grad():
            assert torch.equal(
                auto_cm(*bert.args, **bert.kwargs).last_hidden_state,
                bert.model(*bert.args, **bert.kwargs).last_hidden_state,
            )


def test_auto_offloads_where_the_cost_model_says_so(bert, monkeypatch) -> None:
    def always(quantum, classical, min_fidelity=0.5, score=None):
        return True, "test verdict"

    monkeypatch.setattr(qgraph.costmodel, "decide", always)
    cm = qgraph.compile(bert.model, bert.args, bert.kwargs, device="exact")
    assert len(cm.report.quantum_sites) == 3
    assert all(s.reason == "auto: test verdict." for s in cm.report.quantum_sites)


def test_explain_prints_the_arithmetic(auto_cm, capsys) -> None:
    text = qgraph.explain(auto_cm, "encoder.layer.0.attention.self")
    assert text == capsys.readouterr().out.rstrip("\n")
    assert "ibm_heron_r2" in text and "ionq_aria" in text and "Classical roofline" in text
    assert "TOTAL" in text and auto_cm.report.sites[3].reason in text
    assert "no cost estimate" in qgraph.explain(auto_cm, 1) or "TOTAL" in qgraph.explain(auto_cm, 1)
    with pytest.raises(qgraph.InputError, match="no site 'nowhere'"):
        qgraph.explain(auto_cm, "nowhere")
    with pytest.raises(qgraph.InputError, match="no site 99"):
        qgraph.explain(auto_cm, 99)


def test_devices_lists_the_profiles() -> None:
    names = {profile.name for profile in qgraph.devices()}
    assert {"ibm_heron_r2", "ibm_heron_r3", "ibm_eagle_r3", "ionq_aria", "ideal_ft"} <= names
    assert {"exact", "shots", "aer", "cpu_local", "gpu_h100"} <= names


def test_report_shows_cost_columns(auto_cm) -> None:
    text = str(auto_cm.report)
    assert "quantum s" in text and "classical s" in text and "fidelity" in text
    row = auto_cm.report.rows()[3]
    assert row["quantum s"] > row["classical s"] > 0


def test_report_has_columns_for_every_costed_device(auto_cm) -> None:
    assert auto_cm.report.devices == ["ibm_heron_r2", "ionq_aria"]
    header = auto_cm.report.to_csv(per_device=True).splitlines()[0].split(",")
    assert (
        "ibm_heron_r2 s" in header and "ionq_aria fidelity" in header and "ionq_aria usd" in header
    )
    row = auto_cm.report.device_rows()[3]
    assert row["ionq_aria s"] > 0 and row["ibm_heron_r2 usd"] > 0


def test_sites_are_costed_with_the_gradient_the_training_uses(bert) -> None:
    def attention_costs(gradient: str | dict[str, str]) -> dict:
        cm = qgraph.compile(bert.model, bert.args, bert.kwargs, backend="shots", gradient=gradient)
        site = next(s for s in cm.report.sites if s.kind == "attention" and s.costs)
        return site.costs["ibm_heron_r2"]

    default = attention_costs("auto")
    spsa = attention_costs({"qaap": "spsa"})
    assert default["gradient"] == "straight-through" and spsa["gradient"] == "spsa"
    # SPSA runs two extra sampled forwards per step, so its backward costs device time
    assert spsa["breakdown_s"]["execution_s"] > default["breakdown_s"]["execution_s"]
    assert spsa["time_s"] > default["time_s"]
    # autograd exists only on simulators: hardware is costed with the device's default
    exact = qgraph.compile(bert.model, bert.args, bert.kwargs, gradient="autograd")
    site = next(s for s in exact.report.sites if s.kind == "attention" and s.costs)
    assert site.costs["ibm_heron_r2"]["gradient"] == "straight-through"
