"""Policies and options seen from the user's side: opt-in tables, callables, dtypes."""

from __future__ import annotations

import pytest
import torch

import qgraph
from panel import PANEL


@pytest.fixture(scope="module")
def bert():
    return PANEL["bert"]()


def _quantum_paths(cm: qgraph.CompiledModule) -> list[str]:
    return [s.path for s in cm.report.quantum_sites]


def test_position_and_token_type_tables_can_be_opted_in(bert) -> None:
    cm = qgraph.compile(
        bert.model,
        bert.args,
        bert.kwargs,
        embedding_tables=("word", "position", "token_type"),
        policy="all",
    )
    embeddings = [s for s in cm.report.sites if s.kind == "embedding"]
    assert {s.table for s in embeddings} == {"word", "position", "token_type"}
    assert all(s.op == "qrce" for s in embeddings)
    targets = [n.target for n in cm.graph_module.graph.nodes]
    assert targets.count(torch.ops.qgraph.qrce.default) == 3
    assert torch.ops.aten.embedding.default not in targets
    assert torch.isfinite(cm(*bert.args, **bert.kwargs).last_hidden_state).all()


def test_callable_policy_chooses_sites_and_is_named_in_the_reason(bert) -> None:
    def first_layer_only(site: qgraph.Site) -> bool:
        return site.kind == "attention" and ".layer.0." in site.path

    cm = qgraph.compile(bert.model, bert.args, bert.kwargs, policy=first_layer_only)
    assert _quantum_paths(cm) == ["encoder.layer.0.attention.self"]
    consulted = [s for s in cm.report.sites if s.kind == "attention" or s.table == "word"]
    assert all("first_layer_only returned" in s.reason for s in consulted)
    targets = [n.target for n in cm.graph_module.graph.nodes]
    assert targets.count(torch.ops.qgraph.qaap.default) == 1
    assert targets.count(torch.ops.aten.scaled_dot_product_attention.default) == 1


def test_bfloat16_model_runs_with_bfloat16_outputs() -> None:
    case = PANEL["bert"]()
    model = case.model.to(torch.bfloat16)
    cm = qgraph.compile(model, case.args, case.kwargs, policy="all")
    out = cm(*case.args, **case.kwargs).last_hidden_state
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    layer = next(iter(cm.quantum_layers.values()))
    assert layer.angles.dtype == torch.bfloat16


def test_autocast_runs_the_quantum_ops(bert) -> None:
    cm = qgraph.compile(bert.model, bert.args, bert.kwargs, policy="all")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cm(*bert.args, **bert.kwargs).last_hidden_state
    reference = cm(*bert.args, **bert.kwargs).last_hidden_state
    # bf16 matmuls around fp32 kernels: agreement to bf16 precision over two layers.
    torch.testing.assert_close(out.float(), reference, rtol=0.1, atol=0.1)


def test_report_exports(bert) -> None:
    cm = qgraph.compile(bert.model, bert.args, bert.kwargs, policy="all")
    rows = cm.report.rows()
    assert [r["path"] for r in rows] == [s.path for s in cm.report.sites]
    csv_text = cm.report.to_csv()
    assert csv_text.splitlines()[0].startswith("index,kind,path,pattern,op,decision")
    assert len(csv_text.strip().splitlines()) == len(rows) + 1
    assert all("flops" in d and "mask_kind" in d for d in cm.report.to_dicts())
    text = str(cm.report)
    assert all(s.path in text for s in cm.report.sites)
    assert repr(cm.report) == "Report(model='BertModel', sites=5, quantum=3)"
