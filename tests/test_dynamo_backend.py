"""torch.compile(backend="qgraph"): the dynamo backend against eager and against qgraph.compile."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch._dynamo.exc import BackendCompilerFailed

import qgraph
import qgraph.dynamo as qd
from qgraph.backends.exact import ExactBackend
from qgraph.errors import QGraphError
from qgraph.models import ModelCase, encoder_model, hf_model


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    qd.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def bert() -> ModelCase:
    return hf_model("bert")


@pytest.fixture(scope="module")
def gpt2() -> ModelCase:
    case = hf_model("gpt2")
    case.kwargs["use_cache"] = False  # a KV cache output has no place in a compiled graph
    return case


def attention_only(site: qgraph.Site) -> bool:
    """qgraph.compile's policy that reaches what the backend offloads under "all"."""
    return site.kind == "attention"


def _qaap_calls(backend: ExactBackend) -> dict[str, int]:
    return {label: c.calls for label, c in backend.stats.per_site.items()}


def _qgraph_targets(gm: torch.fx.GraphModule) -> list[Any]:
    return [n.target for n in gm.graph.nodes if str(n.target).startswith("qgraph.")]


def test_backend_is_registered_under_its_name() -> None:
    from torch._dynamo.backends.registry import lookup_backend

    assert "qgraph" in torch._dynamo.list_backends()
    assert lookup_backend("qgraph") is qd.qgraph_backend


def test_loading_through_the_entry_point_registers_once() -> None:
    # torch finds the torch_dynamo_backends entry point before qgraph is imported, imports
    # qgraph.dynamo through it and registers what it loaded: importing must not register too.
    code = (
        "from importlib.metadata import EntryPoint\n"
        "import sys, torch\n"
        "from torch._dynamo.backends import registry\n"
        "registry._lazy_import()\n"
        "registry._BACKENDS['qgraph'] = EntryPoint("
        "'qgraph', 'qgraph.dynamo:qgraph_backend', 'torch_dynamo_backends')\n"
        "assert 'qgraph.dynamo' not in sys.modules\n"
        "f = torch.compile(lambda x: x * 2, backend='qgraph', options={'policy': 'none'})\n"
        "assert f(torch.ones(2)).tolist() == [2.0, 2.0]\n"
        "import qgraph.dynamo\n"
        "assert registry.lookup_backend('qgraph') is qgraph.dynamo.qgraph_backend\n"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_policy_none_matches_eager_and_runs_no_quantum_op(bert: ModelCase) -> None:
    backend = ExactBackend()
    compiled = torch.compile(
        bert.model, backend="qgraph", options={"policy": "none", "backend": backend}
    )
    with torch.no_grad():
        out = compiled(*bert.args, **bert.kwargs)
        eager = bert.model(*bert.args, **bert.kwargs)
    torch.testing.assert_close(out.last_hidden_state, eager.last_hidden_state, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.pooler_output, eager.pooler_output, atol=1e-6, rtol=0)
    assert backend.stats.per_site == {}
    (report,) = qd.reports()
    assert _qgraph_targets(report.graph_module) == []
    # Nothing is rewritten, but every site is listed with its reason.
    assert [s.kind for s in report.sites].count("attention") == bert.layers
    for site in report.sites:
        assert site.decision == "classical"
        expected = "policy 'none'" if site.kind == "attention" else "torch.compile backend"
        assert site.reason.startswith(expected), site.reason


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_policy_all_offloads_attention_as_qgraph_compile_does(
    name: str, request: pytest.FixtureRequest
) -> None:
    case: ModelCase = request.getfixturevalue(name)
    backend = ExactBackend()
    compiled = torch.compile(
        case.model, backend="qgraph", options={"policy": "all", "backend": backend}
    )
    with torch.no_grad():
        out = compiled(*case.args, **case.kwargs).last_hidden_state
        cm = qgraph.compile(
            case.model, case.args, case.kwargs, backend=ExactBackend(), policy=attention_only
        )
        reference = cm(*case.args, **case.kwargs).last_hidden_state
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)

    (report,) = qd.reports()
    attention = [s for s in report.sites if s.kind == "attention"]
    assert len(attention) == case.layers
    assert all(s.decision == "quantum" and s.op == "qaap" for s in attention)
    # The same sites as the other front end: module paths, mask kinds, shapes.
    expected = [s for s in cm.report.sites if s.kind == "attention"]
    assert [(s.path, s.mask_kind, s.heads, s.seq_len) for s in attention] == [
        (s.path, s.mask_kind, s.heads, s.seq_len) for s in expected
    ]
    # Each rewritten site ran once on the backend, under a label naming graph and site.
    graph_id = qd.graphs()[0].id
    assert _qaap_calls(backend) == {f"dynamo{graph_id}:{s.key}": 1 for s in attention}
    assert _qgraph_targets(report.graph_module).count(torch.ops.qgraph.qaap.default) == len(
        attention
    )
    # Embeddings are found and reported, and stay classical with the reason.
    embeddings = [s for s in report.sites if s.kind == "embedding"]
    assert embeddings and all(s.decision == "classical" for s in embeddings)
    assert all(s.reason == qd.EMBEDDING_REASON for s in embeddings)


def test_gradients_reach_the_parameters_as_under_qgraph_compile(bert: ModelCase) -> None:
    model = bert.model
    compiled = torch.compile(model, backend="qgraph", options={"policy": "all"})
    cm = qgraph.compile(model, bert.args, bert.kwargs, policy=attention_only)

    # A fixed random read-out: the mean square of a LayerNorm output barely depends on the
    # weights, so its gradients would be near zero and any comparison vacuous.
    readout = torch.randn(64, generator=torch.Generator().manual_seed(0))

    def loss_of(run: Any) -> torch.Tensor:
        return (run(*bert.args, **bert.kwargs).last_hidden_state @ readout).square().mean()

    def grads(run: Any) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        loss_of(run).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ours, reference = grads(compiled), grads(cm)
    model.zero_grad(set_to_none=True)
    assert qd.reports()[0].quantum_sites
    assert set(ours) == set(reference)
    for name, grad in reference.items():
        torch.testing.assert_close(ours[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    # QAAP's backward reaches the query and key projections.
    assert ours["encoder.layer.0.attention.self.query.weight"].abs().sum() > 0
    assert ours["encoder.layer.0.attention.self.key.weight"].abs().sum() > 0

    # Training mode (attention dropout inside QAAP) recompiles and still trains.
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    try:
        loss = loss_of(compiled)
        loss.backward()
        trained = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        torch.optim.SGD(model.parameters(), lr=1e-2).step()
        query = "encoder.layer.0.attention.self.query.weight"
        changed = not torch.equal(before[query], model.get_parameter(query))
    finally:
        model.eval()
        model.zero_grad(set_to_none=True)
        with torch.no_grad():  # the fixture is shared: put the weights back
            for name, parameter in model.named_parameters():
                parameter.copy_(before[name])
    assert torch.isfinite(loss)
    assert set(trained) == set(reference)
    assert all(torch.isfinite(g).all() for g in trained.values())
    assert changed
    train_report = qd.reports()[-1]
    assert any(s.dropout_p for s in train_report.quantum_sites)


class BrokenBert(torch.nn.Module):
    """BERT's embeddings and two layers with a graph break between the layers."""

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden = self.bert.embeddings(input_ids=ids)
        hidden = self.bert.encoder.layer[0](hidden)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        torch._dynamo.graph_break()
        hidden = self.bert.encoder.layer[1](hidden)
        return hidden[0] if isinstance(hidden, tuple) else hidden


def test_graph_breaks_are_reported_and_each_graph_offloads(bert: ModelCase) -> None:
    backend = ExactBackend()
    model = BrokenBert(bert.model)
    compiled = torch.compile(model, backend="qgraph", options={"policy": "all", "backend": backend})
    with torch.no_grad():
        out = compiled(bert.args[0])
    assert torch.isfinite(out).all()

    records = qd.graphs()
    assert [r.compile_id for r in records] == ["0/0", "1/0"]
    assert [r.report for r in records] == qd.reports()
    assert all(r.analysed and len(r.report.quantum_sites) == 1 for r in records)
    assert len(_qaap_calls(backend)) == 2  # one site in each graph ran on the backend
    first, second = records
    assert first.graph_break is not None and "graph_break()" in first.graph_break
    assert first.break_location.startswith(__file__)
    assert second.graph_break is None

    summary = qd.summary()
    (reason,) = summary.graph_breaks
    assert "graph_break()" in reason and summary.graph_breaks[reason] == 1
    assert [g["qaap"] for g in summary.to_dict()["graphs"]] == [1, 1]
    text = str(summary)
    assert "2 graph(s), 1 graph break(s)" in text
    assert "ended by a graph break at" in text

    # reset() forgets the graphs and the breaks counted so far (dynamo's counters remain).
    qd.reset()
    assert qd.reports() == []
    assert qd.summary().graph_breaks == {}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"polcy": "all"},
            r"unknown option\(s\) \['polcy'\].*known options: policy, backend, gradient",
        ),
        ({"policy": "most"}, r"unknown policy 'most'; use 'auto', 'all', 'none'"),
        ({"backend": "nope"}, r"unknown backend 'nope'; known backends: exact"),
        ({"gradient": "spsa"}, r"cannot compute gradients by 'spsa'"),
        ({"precision": "high"}, r"option 'precision' must be a number"),
        ({"device": "mars"}, r"unknown device 'mars'"),
    ],
)
def test_bad_options_name_the_problem(options: dict[str, Any], message: str) -> None:
    compiled = torch.compile(lambda x: torch.softmax(x, -1), backend="qgraph", options=options)
    # Dynamo wraps backend errors; its message carries qgraph's.
    with pytest.raises(BackendCompilerFailed, match=message) as info:
        compiled(torch.ones(3))
    assert isinstance(info.value.inner_exception, QGraphError)


def test_a_mode_is_refused_with_the_options_to_use() -> None:
    compiled = torch.compile(lambda x: x + 1, backend="qgraph", mode="max-autotune")
    with pytest.raises(BackendCompilerFailed, match=r"has no mode 'max-autotune'.*options="):
        compiled(torch.ones(3))


def test_auto_policy_costs_every_site_and_says_why(bert: ModelCase) -> None:
    compiled = torch.compile(bert.model, backend="qgraph")  # policy "auto" by default
    with torch.no_grad():
        out = compiled(*bert.args, **bert.kwargs)
        eager = bert.model(*bert.args, **bert.kwargs)
    (report,) = qd.reports()
    assert report.device == "ibm_heron_r2" and report.policy == "auto"
    attention = [s for s in report.sites if s.kind == "attention"]
    # On today's devices the cost model keeps attention classical, with its numbers.
    assert attention and all(s.reason.startswith("auto: ") for s in attention)
    assert all("ibm_heron_r2" in s.costs for s in attention)
    if not report.quantum_sites:
        torch.testing.assert_close(out.last_hidden_state, eager.last_hidden_state)


def test_new_shapes_reuse_one_dynamic_rewritten_graph(bert: ModelCase) -> None:
    backend = ExactBackend()
    asked: list[str] = []

    def attention_counted(site: qgraph.Site) -> bool:
        asked.append(site.key)
        return site.kind == "attention"

    compiled = torch.compile(
        bert.model, backend="qgraph", options={"policy": attention_counted, "backend": backend}
    )
    ids = torch.randint(3, 1000, (3, 11))
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    with torch.no_grad():
        compiled(*bert.args, **bert.kwargs)
        out = compiled(ids, attention_mask=mask).last_hidden_state
        compiled(ids[:, :5].contiguous(), attention_mask=mask[:, :5].contiguous())
        cm = qgraph.compile(bert.model, (ids,), {"attention_mask": mask}, policy=attention_only)
        reference = cm(ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
    # Dynamo recompiled once with dynamic sizes; that one rewritten graph took both shapes.
    static, dynamic = qd.graphs()
    calls = _qaap_calls(backend)
    assert {n for label, n in calls.items() if label.startswith(f"dynamo{static.id}:")} == {1}
    assert {n for label, n in calls.items() if label.startswith(f"dynamo{dynamic.id}:")} == {2}
    # Each graph was analysed and decided once, on its first call (the callable is asked about
    # attention sites only).
    assert len(asked) == 2 * bert.layers
    assert all(r.policy == "attention_counted" for r in qd.reports())


class NormedAttention(torch.nn.Module):
    """BatchNorm (buffers updated in training mode) before a bare SDPA."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        h = self.norm(x.transpose(1, 2)).transpose(1, 2)
        q = h.reshape(batch, seq, 2, width // 2).transpose(1, 2)
        return torch.nn.functional.scaled_dot_product_attention(q, q, q)


def test_the_analysis_run_leaves_the_models_buffers_alone() -> None:
    # Buffers are graph inputs under dynamo: the analysis run gets copies, so one compiled
    # training step moves the BatchNorm statistics exactly as one eager step does.
    model = NormedAttention().train()
    eager = NormedAttention().train()
    eager.load_state_dict(model.state_dict())
    x = torch.randn(3, 5, 8)
    compiled = torch.compile(model, backend="qgraph", options={"policy": "all"})
    compiled(x)
    eager(x)
    assert qd.reports()[0].quantum_sites
    assert int(model.norm.num_batches_tracked) == 1
    torch.testing.assert_close(model.norm.running_mean, eager.norm.running_mean)
    torch.testing.assert_close(model.norm.running_var, eager.norm.running_var)


def test_multihead_attention_kept_whole_by_dynamo_is_reported() -> None:
    case = encoder_model(layers=2, d_model=32, heads=4, vocab=100)
    compiled = torch.compile(case.model, backend="qgraph", options={"policy": "all"})
    compiled(*case.args, **case.kwargs)
    (report,) = qd.reports()
    attention = [s for s in report.sites if s.kind == "attention"]
    assert [s.path for s in attention] == [
        "encoder.layers.0.self_attn",
        "encoder.layers.1.self_attn",
    ]
    assert all(s.pattern == "fused_mha" and s.decision == "classical" for s in attention)
    assert all("qgraph.compile" in s.reason for s in attention)


class SelfAttention(torch.nn.Module):
    """Bare SDPA with q = k = v."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.scaled_dot_product_attention(x, x, x)


class CheckpointedAttention(torch.nn.Module):
    """SDPA under activation checkpointing: dynamo puts it in a higher-order-op subgraph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sdpa = torch.nn.functional.scaled_dot_product_attention
        return torch.utils.checkpoint.checkpoint(sdpa, x, x, x, use_reentrant=False)


def test_attention_the_passes_cannot_reach_is_named_not_dropped() -> None:
    compiled = torch.compile(CheckpointedAttention(), backend="qgraph", options={"policy": "all"})
    compiled(torch.randn(1, 2, 4, 8, requires_grad=True)).sum().backward()
    (record,) = qd.graphs()
    assert record.unreached == ["wrap_body_0 (1 attention-like op(s))"]
    assert "not reached inside higher-order ops: wrap_body_0" in str(qd.summary())
    assert any("higher-order-op subgraphs" in note for note in record.report.notes)


def test_a_graph_is_reported_on_arrival_and_analysed_on_its_first_call() -> None:
    gm = torch.fx.symbolic_trace(SelfAttention())  # what dynamo hands over is an FX graph too
    compiled = qd.qgraph_backend(gm, [], {"policy": "all"})
    (report,) = qd.reports()
    assert report.sites == [] and "not run yet" in str(qd.summary())
    compiled(torch.randn(1, 2, 4, 8))
    assert qd.graphs()[0].analysed and "not run yet" not in str(qd.summary())
    assert [(s.kind, s.decision) for s in report.sites] == [("attention", "quantum")]


@pytest.mark.parametrize(
    ("dynamo_path", "expected"),
    [
        ("L['self'].encoder.layer.0.attention.self", "encoder.layer.0.attention.self"),
        ("L['self'].layers[1]._modules['attn']", "layers.1.attn"),
        ("L['model'].h.0.attn", "h.0.attn"),
        ("L['self']", ""),
        ("encoder.layer.0#1", "encoder.layer.0#1"),
    ],
)
def test_module_paths_are_spelled_as_qgraph_compile_spells_them(
    dynamo_path: str, expected: str
) -> None:
    assert qd.normalize_module_path(dynamo_path) == expected
