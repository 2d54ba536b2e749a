"""qgraph.save / qgraph.load, torch.save and deepcopy of a compiled module."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import qgraph
from qgraph.backends.shots import ShotsBackend
from qgraph.models import ModelCase, hf_model


def _compiled(case: ModelCase, **options) -> qgraph.CompiledModule:
    return qgraph.compile(case.model, case.args, case.kwargs, policy="all", **options)


def _decisions(cm: qgraph.CompiledModule) -> list[tuple[str, str]]:
    return [(s.key, s.decision) for s in cm.report.sites]


def _step(cm: qgraph.CompiledModule, optimizer: torch.optim.Optimizer, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 1000, (2, 8), generator=generator)
    mask = torch.ones_like(ids)
    torch.manual_seed(seed)  # the same dropout masks for both modules
    loss = cm(ids, attention_mask=mask).last_hidden_state.square().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_save_load_gives_bit_equal_outputs_and_identical_training(tmp_path: Path) -> None:
    case = hf_model("bert")
    cm = _compiled(case).train()
    optimizer = torch.optim.AdamW(cm.parameters(), lr=1e-3)
    _step(cm, optimizer, seed=1)  # trained state differs from the fresh model's
    qgraph.save(cm, tmp_path / "cm.pt")
    torch.save(optimizer.state_dict(), tmp_path / "opt.pt")

    fresh = hf_model("bert", seed=7)  # other weights: load must restore them
    loaded = qgraph.load(tmp_path / "cm.pt", fresh.model)
    assert loaded.training and _decisions(loaded) == _decisions(cm)
    loaded_optimizer = torch.optim.AdamW(loaded.parameters(), lr=1e-3)
    loaded_optimizer.load_state_dict(torch.load(tmp_path / "opt.pt"))

    cm.eval(), loaded.eval()
    assert torch.equal(
        cm(*case.args, **case.kwargs).last_hidden_state,
        loaded(*case.args, **case.kwargs).last_hidden_state,
    )
    cm.train(), loaded.train()
    for seed in (2, 3):
        _step(cm, optimizer, seed)
        _step(loaded, loaded_optimizer, seed)
    for a, b in zip(cm.parameters(), loaded.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_callable_policy_is_replayed_from_its_decisions(tmp_path: Path) -> None:
    case = hf_model("bert")

    def first_layer_only(site: qgraph.Site) -> bool:
        return site.path.startswith("encoder.layer.0")

    cm = qgraph.compile(case.model, case.args, case.kwargs, policy=first_layer_only)
    qgraph.save(cm, tmp_path / "cm.pt")
    loaded = qgraph.load(tmp_path / "cm.pt", hf_model("bert").model)
    assert _decisions(loaded) == _decisions(cm)
    assert [s.decision for s in loaded.report.sites].count("quantum") == 1


def test_a_backend_instance_must_be_passed_again(tmp_path: Path) -> None:
    case = hf_model("bert")
    cm = _compiled(case, backend=ShotsBackend(shots=256, seed=3))
    qgraph.save(cm, tmp_path / "cm.pt")
    with pytest.raises(qgraph.InputError, match=r"pass one again: qgraph.load\(path, model"):
        qgraph.load(tmp_path / "cm.pt", hf_model("bert").model)
    loaded = qgraph.load(tmp_path / "cm.pt", hf_model("bert").model, backend=ShotsBackend(256))
    assert loaded.backend.name == "shots"


def test_load_refuses_other_files_and_classes(tmp_path: Path) -> None:
    case = hf_model("bert")
    qgraph.save(_compiled(case), tmp_path / "cm.pt")
    with pytest.raises(qgraph.InputError, match=r"holds a compiled .*BertModel; got a .*GPT2Model"):
        qgraph.load(tmp_path / "cm.pt", hf_model("gpt2").model)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(qgraph.InputError, match=r"not written by qgraph\.save"):
        qgraph.load(tmp_path / "plain.pt", case.model)
    with pytest.raises(qgraph.InputError, match="no file"):
        qgraph.load(tmp_path / "missing.pt", case.model)
    with pytest.raises(qgraph.InputError, match="takes the CompiledModule"):
        qgraph.save(case.model, tmp_path / "x.pt")  # type: ignore[arg-type]
    # a misspelt override names the options there are
    with pytest.raises(qgraph.InputError, match=r"unknown compile option\(s\) \['bakend'\]"):
        qgraph.load(tmp_path / "cm.pt", case.model, bakend="shots")


def test_torch_save_and_deepcopy_compile_again(tmp_path: Path) -> None:
    case = hf_model("bert")
    cm = _compiled(case)
    expected = cm(*case.args, **case.kwargs).last_hidden_state
    torch.save(cm, tmp_path / "whole.pt")
    restored = torch.load(tmp_path / "whole.pt", weights_only=False)
    assert isinstance(restored, qgraph.CompiledModule) and restored.model is not case.model
    assert torch.equal(restored(*case.args, **case.kwargs).last_hidden_state, expected)
    twin = copy.deepcopy(cm)
    assert torch.equal(twin(*case.args, **case.kwargs).last_hidden_state, expected)
