"""The model panel: every model compiles, runs, trains and round-trips on the exact backend."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

import qgraph
from panel import DEFAULT_TRAIN_LR, PANEL, TRAIN_LR, float_leaves, main_output
from qgraph.kernels.qaap import qaap_attention
from qgraph.kernels.qrce import qrce_token_features
from qgraph.layers import QRCEEmbedding
from qgraph.models import ModelCase, example_ids

#: the name the hand-built reference registers its attention (and mask) function under
REFERENCE_ATTENTION = "qgraph_qaap_reference"


def _qaap_reference_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *args: object,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """QAAP as a Hugging Face attention function: (B, H, S, D) in, (B, S, H, D) out. The
    mask is HF's eager one (additive, causal where the model is), so no flag is needed."""
    out, _ = qaap_attention(query, key, value, attention_mask, False)
    return out.transpose(1, 2).contiguous(), None


class _HandQRCE(torch.nn.Module):
    """A QRCE embedding written out by hand: statevector features, then the read-out."""

    def __init__(self, layer: QRCEEmbedding) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        return layer.proj(qrce_token_features(ids, layer.angles, layer.weights, layer.structure))


def test_policy_none_is_bit_identical_to_eager(case: ModelCase) -> None:
    cm = qgraph.compile(case.model, case.args, case.kwargs, policy="none")
    assert not cm.report.quantum_sites
    with torch.no_grad():
        expected = float_leaves(case.model(*case.args, **case.kwargs))
        got = float_leaves(cm(*case.args, **case.kwargs))
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert torch.equal(g, e), f"max |Δ| = {(g - e).abs().max()}"
    # policy "none" calls the original module, so the check above holds by construction;
    # the captured graph is what every other policy rewrites, and it must compute the same
    graph, _ = cm.graph_for(*case.args, **case.kwargs)
    call = cm.bind(case.args, case.kwargs)
    with torch.no_grad():
        from_graph = float_leaves(graph(*call.args, **call.kwargs))
    assert len(from_graph) == len(expected)
    for g, e in zip(from_graph, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


#: the panel models with a Hugging Face attention interface to swap QAAP into by hand
#: (nn.TransformerEncoder has none: its attention is one fused call)
HF_PANEL = [name for name in PANEL if name != "encoder"]


@pytest.mark.parametrize("attention", ["default", "eager"])
@pytest.mark.parametrize("name", HF_PANEL)
def test_policy_all_equals_the_model_with_qaap_and_qrce_swapped_in_by_hand(
    name: str, attention: str
) -> None:
    """The compiled graph against an eager reference built without qgraph's passes: the
    model's own attention interface runs QAAP, and its word embedding is QRCE. "eager" is
    HF's matmul/softmax chain (GPT-2 and Llama cast the weights after the softmax)."""
    case = PANEL[name]()
    if attention == "eager":
        case.model.set_attn_implementation("eager")
    AttentionInterface.register(REFERENCE_ATTENTION, _qaap_reference_attention)
    AttentionMaskInterface.register(REFERENCE_ATTENTION, eager_mask)
    case.model.eval()
    cm = qgraph.compile(case.model, case.args, case.kwargs, policy="all")
    reference = copy.deepcopy(case.model)
    assert sum(s.op == "qaap" for s in cm.report.sites) == case.layers, cm.report
    (layer,) = cm.quantum_layers.values()
    reference.set_input_embeddings(_HandQRCE(layer))
    reference.set_attn_implementation(REFERENCE_ATTENTION)
    with torch.no_grad():
        got = float_leaves(cm(*case.args, **case.kwargs))
        expected = float_leaves(reference(*case.args, **case.kwargs))
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_policy_all_rewrites_one_attention_per_layer_and_the_word_embedding(
    case: ModelCase,
) -> None:
    cm = qgraph.compile(case.model, case.args, case.kwargs, policy="all")
    sites = cm.report.sites
    attention = [s for s in sites if s.kind == "attention"]
    assert len(attention) == case.layers
    assert all(s.decision == "quantum" and s.op == "qaap" for s in attention), cm.report
    words = [s for s in sites if s.kind == "embedding" and s.table == "word"]
    assert len(words) == 1 and words[0].op == "qrce" and words[0].decision == "quantum"
    others = [s for s in sites if s.kind == "embedding" and s.table != "word"]
    assert all(s.decision == "classical" and "opt in" in s.reason for s in others)
    # The graph says the same as the report.
    targets = [n.target for n in cm.graph_module.graph.nodes]
    assert targets.count(torch.ops.qgraph.qaap.default) == case.layers
    assert targets.count(torch.ops.qgraph.qrce.default) == 1
    assert torch.ops.aten.scaled_dot_product_attention.default not in targets
    for site in sites:
        assert site.path and site.reason and site.shapes


def test_forward_backward_reach_every_parameter(case: ModelCase) -> None:
    cm = qgraph.compile(case.model, case.args, case.kwargs, policy="all")
    out = cm(*case.args, **case.kwargs)
    loss = sum(x.float().square().mean() for x in float_leaves(out))
    loss.backward()
    names = dict(cm.named_parameters())
    assert any("qgraph_qrce" in n for n in names)
    missing = [n for n, p in names.items() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in names.values())
    assert all(torch.isfinite(x).all() for x in float_leaves(out))


def test_training_lowers_the_loss(case: ModelCase) -> None:
    model = copy.deepcopy(case.model)
    cm = qgraph.compile(model, case.args, case.kwargs, policy="all")
    cm.train()
    width = main_output(cm(*case.args, **case.kwargs)).shape[-1]
    head = torch.nn.Linear(width, 2)
    labels = torch.tensor([0, 1] * (case.args[0].shape[0] // 2 + 1))[: case.args[0].shape[0]]
    optimizer = torch.optim.AdamW(
        [*cm.parameters(), *head.parameters()], lr=TRAIN_LR.get(case.name, DEFAULT_TRAIN_LR)
    )
    losses = []
    for _ in range(20):
        logits = head(main_output(cm(*case.args, **case.kwargs)).mean(dim=1))
        loss = torch.nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], losses


def test_state_dict_round_trip_reproduces_outputs(case: ModelCase) -> None:
    cm = qgraph.compile(case.model, case.args, case.kwargs, policy="all")
    fresh = PANEL[case.name.removeprefix("hf:")]()
    other = qgraph.compile(fresh.model, fresh.args, fresh.kwargs, policy="all", seed=0)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.5)
    other.load_state_dict(cm.state_dict())
    with torch.no_grad():
        for g, e in zip(
            float_leaves(other(*case.args, **case.kwargs)),
            float_leaves(cm(*case.args, **case.kwargs)),
            strict=True,
        ):
            assert torch.equal(g, e)


def test_runs_on_shapes_other_than_the_example(case: ModelCase) -> None:
    cm = qgraph.compile(case.model, case.args, case.kwargs, policy="all")
    for batch, seq_len in [(3, 11), (1, 5)]:
        ids, mask = example_ids(case.vocab_size, batch, seq_len, seed=1)
        out = main_output(cm(ids, attention_mask=mask))
        assert out.shape[:2] == (batch, seq_len)
        assert torch.isfinite(out).all()
    reference = qgraph.compile(case.model, case.args, case.kwargs, policy="none")
    ids, mask = example_ids(case.vocab_size, 3, 11, seed=2)
    with torch.no_grad():
        assert torch.equal(
            main_output(reference(ids, attention_mask=mask)),
            main_output(case.model(ids, attention_mask=mask)),
        )


@pytest.mark.parametrize("name", ["bert", "encoder"])
def test_train_and_eval_modes_behave_as_the_original(name: str) -> None:
    case = PANEL[name]()
    cm = qgraph.compile(case.model, case.args, case.kwargs, policy="all")
    with torch.no_grad():
        cm.eval()
        first = main_output(cm(*case.args, **case.kwargs))
        assert torch.equal(first, main_output(cm(*case.args, **case.kwargs)))
        cm.train()
        assert cm.training
        a = main_output(cm(*case.args, **case.kwargs))
        b = main_output(cm(*case.args, **case.kwargs))
        assert not torch.equal(a, b), "dropout must be active in train mode"
        targets = [n.target for n in cm.graph_module.graph.nodes]
        assert torch.ops.qgraph.qaap.default in targets
        cm.eval()
        assert torch.equal(first, main_output(cm(*case.args, **case.kwargs)))
    assert case.model.training is False, "compiling must not change the user's model mode"
