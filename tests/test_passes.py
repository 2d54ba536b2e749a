"""Passes: pattern matches, golden rewritten graphs, mask kinds, table roles, FLOP rules."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import qgraph
from qgraph.passes.analysis.classify_masks import classify_mask
from qgraph.passes.analysis.count_flops_bytes import FLOP_RULES
from qgraph.passes.analysis.patterns import ALL_PATTERNS

aten = torch.ops.aten


class TinySdpa(nn.Module):
    """Embedding → q/k/v projections → SDPA → output projection."""

    def __init__(self, vocab: int = 50, width: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Embedding(vocab, width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        b, s, w = h.shape
        q, k, v = self.qkv(h).view(b, s, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(a.transpose(1, 2).reshape(b, s, w))


class TinyEager(TinySdpa):
    """The same, with attention written out as matmul/softmax (HF 'eager' style)."""

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        b, s, w = h.shape
        q, k, v = self.qkv(h).view(b, s, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        scores = torch.matmul(q, k.transpose(-1, -2)) * (w // self.heads) ** -0.5 + additive
        weights = F.dropout(scores.softmax(dim=-1), p=0.1, training=self.training)
        return self.out(torch.matmul(weights, v).transpose(1, 2).reshape(b, s, w))


def _call_targets(gm: torch.fx.GraphModule) -> list[object]:
    return [n.target for n in gm.graph.nodes if n.op in ("call_function", "call_module")]


def test_patterns_are_data_with_comments_and_unique_names() -> None:
    names = [p.name for p in ALL_PATTERNS]
    assert len(names) == len(set(names))
    assert all(p.comment and p.kind in ("attention", "embedding") for p in ALL_PATTERNS)
    assert [p.priority for p in ALL_PATTERNS] == sorted(
        (p.priority for p in ALL_PATTERNS), reverse=True
    )


def test_sdpa_rewrite_golden_graph() -> None:
    model = TinySdpa().eval()
    ids = torch.randint(0, 50, (2, 6))
    cm = qgraph.compile(model, (ids,), policy="all")
    before = qgraph.compile(model, (ids,), policy="none").graph_module
    # The embedding becomes qrce + linear; SDPA becomes qaap; everything else is unchanged.
    expected = []
    for t in _call_targets(before):
        if t is aten.embedding.default:
            expected += [torch.ops.qgraph.qrce.default, aten.linear.default]
        elif t is aten.scaled_dot_product_attention.default:
            expected.append(torch.ops.qgraph.qaap.default)
        else:
            expected.append(t)
    assert _call_targets(cm.graph_module) == expected
    site = next(s for s in cm.report.sites if s.kind == "attention")
    assert (site.pattern, site.mask_kind, site.heads, site.head_dim, site.seq_len) == (
        "sdpa",
        "causal",
        2,
        8,
        6,
    )
    qaap_node = next(
        n for n in cm.graph_module.graph.nodes if n.target is torch.ops.qgraph.qaap.default
    )
    assert qaap_node.args[5] is True  # is_causal passed through
    assert qaap_node.args[7:9] == ("exact", "autograd")  # bound by lowering
    assert "embed.weight" not in dict(cm.named_parameters())


GOLDEN = Path(__file__).parent / "golden"


class TinyMha(nn.Module):
    """Embedding → nn.MultiheadAttention (its attention core is SDPA under torch.export)."""

    def __init__(self, vocab: int = 50, width: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        return self.attn(h, h, h, need_weights=False)[0]


#: (name, model, inputs, frontend): one per pattern and frontend that rewrites
GOLDEN_CASES = {
    "sdpa_export": (TinySdpa, False, "export"),
    "sdpa_symbolic_trace": (TinySdpa, False, "symbolic_trace"),
    "eager_chain_export": (TinyEager, True, "export"),
    "eager_chain_symbolic_trace": (TinyEager, True, "symbolic_trace"),
    "mha_export": (TinyMha, False, "export"),
}


@pytest.mark.parametrize("name", list(GOLDEN_CASES))
def test_rewritten_graph_matches_its_golden_text(name: str) -> None:
    """The whole rewritten graph as code: every node, argument and edge. After a deliberate
    change, regenerate with QGRAPH_UPDATE_GOLDEN=1 and review the diff."""
    model_class, needs_mask, frontend = GOLDEN_CASES[name]
    torch.manual_seed(0)
    model = model_class().eval()
    ids = torch.randint(0, 50, (2, 6))
    inputs = (ids, torch.ones(2, 6, dtype=torch.long)) if needs_mask else (ids,)
    cm = qgraph.compile(model, inputs, policy="all", frontend=frontend)
    # a site's tag starts with a per-process compile number ('3:embed'): not part of the graph
    code = re.sub(r"'\d+:([^']*)'", r"'#:\1'", cm.graph_module.code.strip()) + "\n"
    path = GOLDEN / f"{name}.py.txt"
    if os.environ.get("QGRAPH_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(code)
    assert code == path.read_text(), f"{name}: the rewritten graph changed (see {path})"


def test_eager_chain_is_matched_and_rewritten() -> None:
    model = TinyEager().eval()
    ids, mask = torch.randint(0, 50, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    cm = qgraph.compile(model, (ids, mask), policy="all")
    site = next(s for s in cm.report.sites if s.kind == "attention")
    assert site.pattern == "eager_softmax_chain" and site.mask_kind == "padding"
    targets = _call_targets(cm.graph_module)
    assert aten.softmax.int not in targets and torch.ops.qgraph.qaap.default in targets
    # Padded keys get no weight: changing their values leaves the other rows' outputs alone.
    out = cm(ids, mask)
    ids2 = ids.clone()
    ids2[1, 4:] = (ids2[1, 4:] + 1) % 50
    out2 = cm(ids2, mask)
    torch.testing.assert_close(out[1, :4], out2[1, :4])


def test_eager_chain_in_training_keeps_dropout() -> None:
    model = TinyEager().train()
    ids, mask = torch.randint(0, 50, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    cm = qgraph.compile(model, (ids, mask), policy="all")
    site = next(s for s in cm.report.sites if s.kind == "attention")
    assert site.dropout_p == 0.1
    qaap_node = next(
        n for n in cm.graph_module.graph.nodes if n.target is torch.ops.qgraph.qaap.default
    )
    assert qaap_node.args[4] is not None and qaap_node.args[6] == 0.1


def test_symbolic_trace_frontend() -> None:
    model = TinySdpa().eval()
    ids = torch.randint(0, 50, (2, 6))
    cm = qgraph.compile(model, (ids,), policy="all", frontend="symbolic_trace")
    assert cm.report.frontend == "symbolic_trace"
    assert {s.op for s in cm.report.sites} == {"qaap", "qrce"}
    reference = qgraph.compile(model, (ids,), policy="all", frontend="export")
    with torch.no_grad():
        reference.load_state_dict(cm.state_dict(), strict=False)
        torch.testing.assert_close(cm(ids), reference(ids))
    assert isinstance(model.embed, nn.Embedding) and model.embed.weight is not None


def test_mha_in_transformer_encoder_is_found_once_per_layer() -> None:
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    model = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False).eval()
    x = torch.randn(2, 5, 16)
    cm = qgraph.compile(model, (x,), policy="all")
    attention = [s for s in cm.report.sites if s.kind == "attention"]
    assert [s.pattern for s in attention] == ["mha_sdpa"] * 3
    assert [s.path for s in attention] == [f"layers.{i}.self_attn" for i in range(3)]


def test_classify_mask() -> None:
    tril = torch.ones(4, 4, dtype=torch.bool).tril()
    pad = torch.tensor([True, True, True, False])
    assert classify_mask(None, False, False) == "none"
    assert classify_mask(None, True, False) == "causal"
    assert classify_mask(torch.ones(1, 1, 4, 4, dtype=torch.bool), False, False) == "none"
    assert classify_mask(torch.ones(1, 1, 4, 4, dtype=torch.bool), False, True) == "padding"
    assert classify_mask(pad.expand(1, 1, 4, 4), False, False) == "padding"
    assert classify_mask(tril[None, None], False, False) == "causal"
    assert classify_mask((tril & pad)[None, None], False, False) == "causal+padding"
    arbitrary = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 1, 1]]).bool()
    assert classify_mask(arbitrary, False, False) == "arbitrary"
    bias = torch.zeros(1, 1, 4, 4)
    bias[..., 0] = -0.5  # e.g. ALiBi: a real-valued bias, not a mask
    assert classify_mask(bias, False, False) == "additive"
    additive_pad = torch.where(pad, 0.0, torch.finfo(torch.float32).min).expand(1, 1, 4, 4)
    assert classify_mask(additive_pad, False, False) == "padding"


def test_additive_bias_site_is_reported_unsupported() -> None:
    class Alibi(nn.Module):
        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            bias = -torch.arange(q.shape[-2], dtype=q.dtype)[None, :] * 0.5
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.expand(q.shape[-2], -1))

    q = torch.randn(1, 2, 4, 8)
    cm = qgraph.compile(Alibi(), (q, q, q), policy="all")
    (site,) = cm.report.sites
    assert site.mask_kind == "additive" and site.decision == "classical"
    assert "additive bias" in site.reason


class RelativeBiasEager(TinySdpa):
    """Eager attention with a learned relative-position bias added before the mask (T5-style):
    two additive terms between the scores and the softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.position_bias = nn.Parameter(torch.randn(self.heads, 8, 8) * 0.1)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        b, s, w = h.shape
        q, k, v = self.qkv(h).view(b, s, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-1, -2)) / (w // self.heads) ** 0.5
        scores += self.position_bias[:, :s, :s]
        scores = scores + (1.0 - mask[:, None, None, :].float()) * -1e9
        weights = F.dropout(scores.softmax(dim=-1), p=0.1, training=self.training)
        return self.out(torch.matmul(weights, v).transpose(1, 2).reshape(b, s, w))


@pytest.mark.parametrize("frontend", ["export", "symbolic_trace"])
def test_attention_with_a_bias_and_a_mask_is_found_and_kept_classical(frontend: str) -> None:
    ids, mask = torch.randint(0, 50, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    cm = qgraph.compile(RelativeBiasEager().eval(), (ids, mask), policy="all", frontend=frontend)
    (site,) = [s for s in cm.report.sites if s.kind == "attention"]
    assert site.decision == "classical" and not site.supported
    assert "2 additive terms" in site.reason and "additive bias" in site.reason


def test_flop_rules() -> None:
    assert FLOP_RULES[aten.matmul.default]([(2, 3, 4), (2, 4, 5)], (2, 3, 5)) == 2 * 4 * 30
    assert FLOP_RULES[aten.linear.default]([(8, 16), (32, 16), (32,)], (8, 32)) == 2 * 16 * 8 * 32
    sdpa = FLOP_RULES[aten.scaled_dot_product_attention.default]
    assert sdpa([(1, 2, 4, 8), (1, 2, 6, 8), (1, 2, 6, 8)], (1, 2, 4, 8)) == 2 * 4 * 6 * (
        16 + 5 + 16
    )
