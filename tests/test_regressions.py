"""Behaviours found by review: each test failed before its fix."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import qgraph
from qgraph.passes.base import AnalysisPass, PassManager, PropertySet


class TwoTables(nn.Module):
    """Two embedding lookups in one module: they share a module path."""

    def __init__(self) -> None:
        super().__init__()
        self.words = nn.Parameter(torch.randn(30, 8))
        self.tags = nn.Parameter(torch.randn(70, 8))

    def forward(self, words: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        return F.embedding(words, self.words) + F.embedding(tags, self.tags)


def test_two_tables_in_one_module_get_their_own_layers() -> None:
    words, tags = torch.randint(0, 30, (2, 5)), torch.randint(0, 70, (2, 5))
    cm = qgraph.compile(
        TwoTables(), (words, tags), embedding_tables=("word", "other"), qrce_qubits=2, policy="all"
    )
    keys = [s.key for s in cm.report.sites]
    assert keys == ["<root>", "<root>#1"]
    assert {k: layer.angles.shape[0] for k, layer in cm.quantum_layers.items()} == {
        "<root>": 30,
        "<root>#1": 70,
    }
    assert cm(words, tags).shape == (2, 5, 8)


class NormAndDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.norm = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.drop(self.norm(self.embed(ids).transpose(1, 2)).transpose(1, 2))


def test_compiling_in_training_mode_leaves_buffers_and_rng_alone() -> None:
    model = NormAndDropout().train()
    ids = torch.randint(0, 20, (2, 6))
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    torch.manual_seed(5)
    expected_draw = torch.rand(3)
    torch.manual_seed(5)
    qgraph.compile(model, (ids,), policy="all", qrce_qubits=2)
    assert torch.equal(torch.rand(3), expected_draw), "compile consumed random numbers"
    for name, value in model.named_buffers():
        assert torch.equal(value, buffers[name]), name


def test_eval_stops_dropout_with_the_symbolic_trace_frontend() -> None:
    model = NormAndDropout().train()
    ids = torch.randint(0, 20, (2, 6))
    cm = qgraph.compile(model, (ids,), frontend="symbolic_trace", qrce_qubits=2, policy="all")
    cm.eval()
    with torch.no_grad():
        assert torch.equal(cm(ids), cm(ids))
    assert model.training, "the user's model keeps its own mode"
    cm.train()
    with torch.no_grad():
        assert not torch.equal(cm(ids), cm(ids))


class _Meddling(AnalysisPass):
    provides = ("x",)

    def run(self, gm: torch.fx.GraphModule, props: PropertySet) -> None:
        props["x"] = 1
        gm.graph.call_function(torch.relu, (next(iter(gm.graph.nodes)),))


class _Forgetful(AnalysisPass):
    provides = ("y",)

    def run(self, gm: torch.fx.GraphModule, props: PropertySet) -> None:
        return None


def test_pass_manager_enforces_the_pass_contract() -> None:
    gm = torch.fx.symbolic_trace(nn.ReLU())
    with pytest.raises(RuntimeError, match="analysis pass _Meddling changed the graph"):
        PassManager([_Meddling()]).run(gm, PropertySet())
    with pytest.raises(RuntimeError, match=r"did not write \['y'\]"):
        PassManager([_Forgetful()]).run(torch.fx.symbolic_trace(nn.ReLU()), PropertySet())
