"""Each pass alone, on a small hand-built fx graph and a hand-filled property set.

Analysis passes must write exactly the keys they provide and leave the graph's text as it
was; rewrite passes must leave the property set as it was and produce exactly the graph
text given here. The contract (passes/README.md) is checked too: every pass has a unit test,
the README's key table matches each pass's ``requires``/``provides``, and the pipelines'
order satisfies every ``requires``.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.fx as fx
from torch import nn

import qgraph.passes
from qgraph.compiled import analysis_pipeline, decision_pipeline, rewrite_pipeline
from qgraph.costing import CostOptions, SiteCosts
from qgraph.errors import PolicyError, UnknownBackendError
from qgraph.layers import QRCEEmbedding, QRCEOptions
from qgraph.passes.analysis.build_sites import BuildSites
from qgraph.passes.analysis.choose_qaap_form import ChooseQaapForm
from qgraph.passes.analysis.classify_masks import ClassifyMasks
from qgraph.passes.analysis.cost_sites import CostSites
from qgraph.passes.analysis.count_flops_bytes import CountFlopsBytes
from qgraph.passes.analysis.decide_offload import DecideOffload, decided_sites
from qgraph.passes.analysis.find_candidates import FindCandidates
from qgraph.passes.analysis.patterns import ALL_PATTERNS, Match
from qgraph.passes.analysis.shape_propagation import ShapePropagation
from qgraph.passes.base import AnalysisPass, PassManager, PropertySet, RewritePass
from qgraph.passes.lower.bind_backend import BindBackend
from qgraph.passes.rewrite.replace_attention import ReplaceAttention
from qgraph.passes.rewrite.replace_embedding import ReplaceEmbedding
from qgraph.site import Site, SiteDecision, SiteRecord

aten = torch.ops.aten
PATTERNS = {p.name: p for p in ALL_PATTERNS}
README = Path(qgraph.passes.__file__).parent / "README.md"

#: what the callers (CompiledModule._build, the dynamo backend) write before the pipelines
PIPELINE_INPUTS = (
    "example_inputs",
    "cost_options",
    "known_site_costs",
    "policy",
    "embedding_tables",
    "kept_classical",
    "site_label_prefix",
    "quantum_layers",
    "qrce_options",
    "seed",
    "backend",
    "gradients",
    "qaap_form",
)


# -- hand-built graphs ----------------------------------------------------------------------
def _call(
    graph: fx.Graph,
    target: Any,
    args: tuple[Any, ...],
    name: str,
    module: tuple[str, str] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> fx.Node:
    """A call_function node named ``name``, traced inside ``module`` (path, class name)."""
    node = graph.create_node("call_function", target, args, kwargs or {}, name=name)
    if module is not None:
        node.meta["nn_module_stack"] = {module[0]: module}
    return node


def sdpa_graph(module_class: str = "torch.nn.Module") -> fx.GraphModule:
    """q, k, v, mask -> aten SDPA (inside module ``layer.attn``) -> output."""
    graph = fx.Graph()
    q, k, v, mask = (graph.placeholder(n) for n in ("q", "k", "v", "mask"))
    graph.output(
        _call(
            graph,
            aten.scaled_dot_product_attention.default,
            (q, k, v, mask),
            "sdpa",
            ("layer.attn", module_class),
        )
    )
    return fx.GraphModule(nn.Module(), graph)


def eager_graph(softmax_dim: int = -1, dropout_p: float = 0.1) -> fx.GraphModule:
    """matmul(q, kᵀ) -> scale -> + mask -> softmax -> dropout -> matmul(·, v)."""
    graph = fx.Graph()
    q, k, v, mask = (graph.placeholder(n) for n in ("q", "k", "v", "mask"))
    module = ("layer.attn", "torch.nn.Module")
    kt = _call(graph, aten.transpose.int, (k, -2, -1), "kt", module)
    scores = _call(graph, aten.matmul.default, (q, kt), "scores", module)
    scaled = _call(graph, aten.mul.Tensor, (scores, 0.25), "scaled", module)
    masked = _call(graph, aten.add.Tensor, (scaled, mask), "masked", module)
    weights = _call(graph, aten.softmax.int, (masked, softmax_dim), "weights", module)
    dropped = _call(graph, aten.dropout.default, (weights, dropout_p, True), "dropped", module)
    graph.output(_call(graph, aten.matmul.default, (dropped, v), "pooled", module))
    return fx.GraphModule(nn.Module(), graph)


def embedding_graph(tables: int = 1) -> fx.GraphModule:
    """ids -> one aten.embedding per table (``table0``, ``table1``: parameters of the root,
    no module path) -> their sum."""
    root = nn.Module()
    graph = fx.Graph()
    ids = graph.placeholder("ids")
    outputs = []
    for i in range(tables):
        root.register_parameter(f"table{i}", nn.Parameter(torch.randn(10, 4)))
        table = graph.get_attr(f"table{i}")
        outputs.append(_call(graph, aten.embedding.default, (table, ids), f"lookup{i}"))
    result = outputs[0]
    for i, other in enumerate(outputs[1:]):
        result = _call(graph, aten.add.Tensor, (result, other), f"sum{i}")
    graph.output(result)
    return fx.GraphModule(root, graph)


def any_graph() -> fx.GraphModule:
    """A graph for the passes that read only the property set."""
    return sdpa_graph()


def node(gm: fx.GraphModule, name: str) -> fx.Node:
    """The graph's node called ``name``."""
    return next(n for n in gm.graph.nodes if n.name == name)


def match_at(gm: fx.GraphModule, pattern: str, anchor: str) -> Match:
    """What FindCandidates would record for ``pattern`` at ``anchor`` (built without it)."""
    roles = PATTERNS[pattern].extract(gm, node(gm, anchor))
    assert roles is not None, f"{pattern} does not match at {anchor}"
    region = roles.pop("nodes")
    return Match(PATTERNS[pattern], node(gm, anchor), region, roles)


def attention_record(**changes: Any) -> SiteRecord:
    """The record BuildSites makes for ``sdpa_graph`` at (1, 2, 4, 8) q/k/v."""
    shape = (1, 2, 4, 8)
    fields: dict[str, Any] = {
        "index": 0,
        "kind": "attention",
        "path": "layer.attn",
        "pattern": "sdpa",
        "anchor": "sdpa",
        "key": "layer.attn",
        "shapes": {"q": shape, "v": shape, "k": shape, "mask": (1, 1, 4, 4), "out": shape},
        "dtype": "float32",
        "flops": 1000,
        "bytes": 400,
        "heads": 2,
        "kv_heads": 2,
        "head_dim": 8,
        "seq_len": 4,
        "kv_len": 4,
        "mask_kind": "causal",
        "gqa_group": 1,
        "dropout_p": 0.0,
    }
    return SiteRecord(**{**fields, **changes})


def embedding_record(**changes: Any) -> SiteRecord:
    """The record BuildSites makes for ``embedding_graph``'s first lookup of (2, 3) ids."""
    fields: dict[str, Any] = {
        "index": 0,
        "kind": "embedding",
        "path": "",
        "pattern": "embedding",
        "anchor": "lookup0",
        "key": "<root>",
        "shapes": {"table": (10, 4), "ids": (2, 3), "out": (2, 3, 4)},
        "dtype": "float32",
        "bytes": 144,
        "table": "word",
        "vocab_size": 10,
        "embed_dim": 4,
    }
    return SiteRecord(**{**fields, **changes})


# -- running one pass -----------------------------------------------------------------------
def run_analysis(analysis: AnalysisPass, gm: fx.GraphModule, props: PropertySet) -> PropertySet:
    """Run one analysis pass; check that it left the graph's text and every earlier key as
    they were and wrote exactly its ``provides``; return what it wrote."""
    text, code = str(gm.graph), gm.code
    before = dict(props)
    analysis.run(gm, props)
    assert str(gm.graph) == text and gm.code == code, f"{analysis.name} changed the graph"
    assert all(props[key] is value for key, value in before.items()), "an input was replaced"
    written = PropertySet({k: v for k, v in props.items() if k not in before})
    assert set(written) == set(analysis.provides)
    return written


def run_rewrite(rewrite: RewritePass, gm: fx.GraphModule, props: PropertySet) -> str:
    """Run one rewrite pass; check that it left the property set as it was (same keys, same
    objects); return the rewritten graph's code."""
    before = dict(props)
    rewrite.run(gm, props)
    assert props.keys() == before.keys(), f"{rewrite.name} wrote {props.keys() - before.keys()}"
    assert all(props[key] is value for key, value in before.items())
    return gm.code.strip()


# -- FindCandidates -------------------------------------------------------------------------
def test_find_candidates_records_the_sdpa_and_its_mask() -> None:
    gm = sdpa_graph()
    written = run_analysis(FindCandidates(), gm, PropertySet())
    (match,) = written["matches"]
    q, k, v, mask, sdpa = (node(gm, n) for n in ("q", "k", "v", "mask", "sdpa"))
    assert (match.pattern.name, match.anchor, match.nodes, match.path) == (
        "sdpa",
        sdpa,
        [sdpa],
        "layer.attn",
    )
    assert match.roles == {
        "q": q,
        "k": k,
        "v": v,
        "mask": mask,
        "dropout_p": 0.0,
        "is_causal": False,
        "output": sdpa,
    }
    assert written["observe"] == {"mask"}


def test_find_candidates_prefers_mha_sdpa_inside_multihead_attention() -> None:
    gm = sdpa_graph("torch.nn.modules.activation.MultiheadAttention")
    (match,) = run_analysis(FindCandidates(), gm, PropertySet())["matches"]
    assert match.pattern.name == "mha_sdpa"


def test_find_candidates_matches_the_whole_eager_chain() -> None:
    gm = eager_graph()
    written = run_analysis(FindCandidates(), gm, PropertySet())
    (match,) = written["matches"]
    assert match.pattern.name == "eager_softmax_chain" and match.anchor.name == "weights"
    region = ["weights", "masked", "scaled", "scores", "dropped", "pooled"]
    assert [n.name for n in match.nodes] == region
    assert match.roles["k_transposed"] is node(gm, "kt") and match.roles["dropout_p"] == 0.1
    assert written["observe"] == {"mask"}


def test_find_candidates_skips_a_softmax_over_another_dimension() -> None:
    written = run_analysis(FindCandidates(), eager_graph(softmax_dim=1), PropertySet())
    assert written == {"matches": [], "observe": set()}


def test_find_candidates_records_embedding_lookups() -> None:
    gm = embedding_graph(tables=2)
    written = run_analysis(FindCandidates(), gm, PropertySet())
    assert [(m.pattern.name, m.anchor.name) for m in written["matches"]] == [
        ("embedding", "lookup0"),
        ("embedding", "lookup1"),
    ]
    assert written["matches"][0].roles["table"] is node(gm, "table0")
    assert written["observe"] == set()


# -- ShapePropagation -----------------------------------------------------------------------
def _stateful_graph() -> fx.GraphModule:
    """x -> relu, x > 0 (observed), and two side effects: a buffer += 1 and a random draw."""
    root = nn.Module()
    root.register_buffer("count", torch.zeros(1))
    graph = fx.Graph()
    x = graph.placeholder("x")
    relu = _call(graph, aten.relu.default, (x,), "relu")
    positive = _call(graph, aten.gt.Scalar, (x, 0), "positive")
    bumped = _call(graph, aten.add_.Tensor, (graph.get_attr("count"), 1), "bumped")
    noise = _call(graph, aten.rand.default, ([3],), "noise")
    graph.output((relu, positive, bumped, noise))
    return fx.GraphModule(root, graph)


def test_shape_propagation_records_shapes_dtypes_and_observed_values() -> None:
    gm = _stateful_graph()
    x = torch.tensor([[-1.0, 2.0]])
    props = PropertySet(example_inputs=[x], observe={"positive"})
    written = run_analysis(ShapePropagation(), gm, props)
    assert written["shapes"] == {
        "x": (1, 2),
        "relu": (1, 2),
        "positive": (1, 2),
        "count": (1,),
        "bumped": (1,),
        "noise": (3,),
    }
    assert written["dtypes"] == {
        "x": torch.float32,
        "relu": torch.float32,
        "positive": torch.bool,
        "count": torch.float32,
        "bumped": torch.float32,
        "noise": torch.float32,
    }
    assert written["values"].keys() == {"positive"}
    assert torch.equal(written["values"]["positive"], torch.tensor([[False, True]]))


def test_shape_propagation_leaves_buffers_and_the_random_state_alone() -> None:
    gm = _stateful_graph()
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    props = PropertySet(example_inputs=[torch.ones(1, 2)], observe=set())
    run_analysis(ShapePropagation(), gm, props)
    assert torch.equal(torch.rand(3), expected), "the run advanced the CPU generator"
    assert torch.equal(gm.get_buffer("count"), torch.zeros(1)), "the run kept its buffer update"


# -- ClassifyMasks --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mask", "kind"),
    [
        (torch.ones(4, 4, dtype=torch.bool).tril()[None, None], "causal"),
        (torch.ones(1, 1, 4, 4, dtype=torch.bool), "none"),
        (torch.tensor([True, True, True, False]).expand(1, 1, 4, 4), "padding"),
    ],
)
def test_classify_masks_names_each_attention_mask(mask: torch.Tensor, kind: str) -> None:
    gm = sdpa_graph()
    props = PropertySet(matches=[match_at(gm, "sdpa", "sdpa")], values={"mask": mask})
    assert run_analysis(ClassifyMasks(), gm, props) == {"mask_kinds": {"sdpa": kind}}


def test_classify_masks_ignores_embeddings() -> None:
    gm = embedding_graph()
    props = PropertySet(matches=[match_at(gm, "embedding", "lookup0")], values={})
    assert run_analysis(ClassifyMasks(), gm, props) == {"mask_kinds": {}}


# -- CountFlopsBytes ------------------------------------------------------------------------
def test_count_flops_bytes_uses_the_rules_and_counts_elementwise_ops() -> None:
    graph = fx.Graph()
    x, w = graph.placeholder("x"), graph.placeholder("w")
    product = _call(graph, aten.matmul.default, (x, w), "product")
    relu = _call(graph, aten.relu.default, (product,), "relu")
    graph.output(_call(graph, aten.neg.default, (relu,), "unshaped"))
    gm = fx.GraphModule(nn.Module(), graph)
    shapes = {"x": (2, 3, 4), "w": (4, 5), "product": (2, 3, 5), "relu": (2, 3, 5)}
    props = PropertySet(shapes=shapes, dtypes=dict.fromkeys(shapes, torch.float32))
    written = run_analysis(CountFlopsBytes(), gm, props)
    # matmul: 2·k per output element; relu: one per element; a node without a shape: none
    assert written["node_flops"] == {"product": 2 * 4 * 30, "relu": 30}
    # inputs and output, 4 bytes each, nothing cached
    assert written["node_bytes"] == {"product": (24 + 20 + 30) * 4, "relu": (30 + 30) * 4}


# -- BuildSites -----------------------------------------------------------------------------
def _build_sites_props(matches: list[Match], **changes: Any) -> PropertySet:
    shapes = {
        "q": (1, 2, 4, 8),
        "k": (1, 2, 4, 8),
        "v": (1, 2, 4, 8),
        "mask": (1, 1, 4, 4),
        "sdpa": (1, 2, 4, 8),
    }
    props = PropertySet(
        matches=matches,
        shapes=shapes,
        dtypes=dict.fromkeys(shapes, torch.float32),
        mask_kinds={"sdpa": "causal"},
        node_flops={"sdpa": 1000},
        node_bytes={"sdpa": 400},
    )
    props.update(changes)
    return props


def test_build_sites_writes_one_frozen_record_per_match() -> None:
    gm = sdpa_graph()
    match = match_at(gm, "sdpa", "sdpa")
    roles = dict(match.roles)
    written = run_analysis(BuildSites(), gm, _build_sites_props([match]))
    assert written["sites"] == (attention_record(),)
    assert written["site_matches"] == {0: match}
    assert match.roles == roles, "BuildSites changed FindCandidates' match"
    (record,) = written["sites"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.key = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        record.shapes["q"] = (1,)  # type: ignore[index]


def test_build_sites_marks_an_additive_mask_unsupported() -> None:
    gm = sdpa_graph()
    props = _build_sites_props([match_at(gm, "sdpa", "sdpa")], mask_kinds={"sdpa": "additive"})
    (record,) = run_analysis(BuildSites(), gm, props)["sites"]
    assert record.mask_kind == "additive" and not record.supported
    assert "additive bias" in record.support_reason


def test_build_sites_numbers_repeated_paths_and_reads_embedding_tables() -> None:
    gm = embedding_graph(tables=2)
    matches = [match_at(gm, "embedding", "lookup0"), match_at(gm, "embedding", "lookup1")]
    shapes = {"ids": (2, 3), "table0": (10, 4), "table1": (10, 4)}
    shapes |= {"lookup0": (2, 3, 4), "lookup1": (2, 3, 4)}
    props = PropertySet(
        matches=matches,
        shapes=shapes,
        dtypes={**dict.fromkeys(shapes, torch.float32), "ids": torch.int64},
        mask_kinds={},
        node_flops={"lookup0": 0, "lookup1": 0},
        node_bytes={"lookup0": 144, "lookup1": 144},
    )
    written = run_analysis(BuildSites(), gm, props)
    assert written["sites"] == (
        embedding_record(),
        embedding_record(index=1, anchor="lookup1", key="<root>#1"),
    )


def test_build_sites_normalizes_paths_after_numbering_keys() -> None:
    gm = sdpa_graph()
    props = _build_sites_props([match_at(gm, "sdpa", "sdpa")])
    (record,) = run_analysis(BuildSites(normalize_path=str.upper), gm, props)["sites"]
    assert (record.path, record.key) == ("LAYER.ATTN", "LAYER.ATTN")


# -- CostSites ------------------------------------------------------------------------------
UNSUPPORTED = attention_record(index=1, key="odd", supported=False, support_reason="odd")


def test_cost_sites_costs_supported_sites_on_every_device() -> None:
    options = CostOptions(report_devices=("ionq_aria",))
    sites = (attention_record(), UNSUPPORTED)
    props = PropertySet(sites=sites, cost_options=options, known_site_costs=None)
    written = run_analysis(CostSites(), any_graph(), props)
    assert written["site_costs"].keys() == {"layer.attn"}
    costs = written["site_costs"]["layer.attn"]
    assert costs.quantum.keys() == {"ibm_heron_r2", "ionq_aria"}
    assert costs.classical_s is not None and costs.classical_s > 0
    assert costs.verdict is not None and isinstance(costs.verdict[0], bool)
    assert props["sites"] == (attention_record(), UNSUPPORTED), "a record changed"


def test_cost_sites_without_options_costs_nothing() -> None:
    props = PropertySet(sites=(attention_record(),), cost_options=None, known_site_costs=None)
    assert run_analysis(CostSites(), any_graph(), props) == {"site_costs": {}}


def test_cost_sites_reuses_known_estimates_by_key_and_costs_nothing_new() -> None:
    known = SiteCosts(verdict=(True, "known"))
    props = PropertySet(
        sites=(attention_record(), UNSUPPORTED),
        cost_options=CostOptions(),
        known_site_costs={"layer.attn": known, "gone": SiteCosts()},
    )
    written = run_analysis(CostSites(), any_graph(), props)
    assert written["site_costs"] == {"layer.attn": known}
    assert written["site_costs"]["layer.attn"] is known


# -- DecideOffload --------------------------------------------------------------------------
DECIDE_SITES = (
    attention_record(),
    UNSUPPORTED,
    embedding_record(index=2),
    embedding_record(index=3, key="<root>#1", table="position"),
)


def _decide_props(policy: Any, **changes: Any) -> PropertySet:
    props = PropertySet(
        sites=DECIDE_SITES,
        site_costs={},
        policy=policy,
        embedding_tables=("word",),
        kept_classical={},
    )
    props.update(changes)
    return props


def test_decide_offload_under_policy_all() -> None:
    written = run_analysis(DecideOffload(), any_graph(), _decide_props("all"))
    everything = "policy 'all' offloads every supported site."
    assert written == {
        "decisions": {
            0: SiteDecision("quantum", "qaap", everything),
            1: SiteDecision(reason="not supported: odd"),
            2: SiteDecision("quantum", "qrce", everything),
            3: SiteDecision(
                reason="position table: only word tables are candidates; opt in with "
                "embedding_tables=(..., 'position')."
            ),
        }
    }


def test_decide_offload_names_no_candidate_table_when_there_is_none() -> None:
    props = _decide_props("all", embedding_tables=())
    decisions = run_analysis(DecideOffload(), any_graph(), props)["decisions"]
    assert decisions[2].reason == (
        "word table: no tables are candidates; opt in with embedding_tables=(..., 'word')."
    )


def test_decide_offload_keeps_the_kept_kinds_classical() -> None:
    props = _decide_props("all", kept_classical={"embedding": "kept"})
    decisions = run_analysis(DecideOffload(), any_graph(), props)["decisions"]
    assert [d.reason for d in decisions.values()] == [
        "policy 'all' offloads every supported site.",
        "not supported: odd",
        "kept",
        "kept",
    ]


def test_decide_offload_follows_the_cost_verdict_under_auto() -> None:
    costs = {"layer.attn": SiteCosts(verdict=(False, "slower")), "<root>": SiteCosts()}
    props = _decide_props("auto", sites=DECIDE_SITES[:1], site_costs=costs)
    written = run_analysis(DecideOffload(), any_graph(), props)
    assert written == {"decisions": {0: SiteDecision(reason="auto: slower.")}}
    with pytest.raises(PolicyError, match="no cost estimate for site '<root>'"):
        DecideOffload().run(any_graph(), _decide_props("auto", site_costs=costs))


def test_decide_offload_shows_a_policy_callable_new_sites_with_their_costs() -> None:
    seen: list[Site] = []

    def attention_only(site: Site) -> bool:
        seen.append(site)
        site.heads, site.kind = 99, "embedding"  # must reach neither the records nor the op
        return site.path == "layer.attn"

    costs = {"layer.attn": SiteCosts(classical=SimpleNamespace(time_s=2e-3))}
    props = _decide_props(attention_only, site_costs=costs)
    decisions = run_analysis(DecideOffload(), any_graph(), props)["decisions"]
    assert decisions[0] == SiteDecision("quantum", "qaap", "policy attention_only returned True.")
    assert decisions[2] == SiteDecision(reason="policy attention_only returned False.")
    assert [s.index for s in seen] == [0, 2], "asked about supported candidates only"
    assert all(isinstance(s, Site) for s in seen) and seen[0].classical_s == 2e-3
    assert props["sites"] == DECIDE_SITES


def test_decide_offload_rejects_a_policy_that_returns_no_bool() -> None:
    with pytest.raises(PolicyError, match=re.escape("returned int (1) for site 'layer.attn'")):
        DecideOffload().run(any_graph(), _decide_props(lambda site: 1))


def test_decided_sites_join_records_costs_and_decisions() -> None:
    costs = SiteCosts(classical=SimpleNamespace(time_s=2e-3))
    decision = SiteDecision("quantum", "qaap", "why")
    props = PropertySet(
        sites=(attention_record(),), site_costs={"layer.attn": costs}, decisions={0: decision}
    )
    (site,) = decided_sites(props)
    expected = Site(
        **{f.name: getattr(attention_record(), f.name) for f in dataclasses.fields(SiteRecord)}
        | {"shapes": dict(attention_record().shapes)},
        op="qaap",
        decision="quantum",
        reason="why",
        costs={},
        classical_s=2e-3,
    )
    assert site == expected


def test_site_record_has_the_site_fields_less_costs_and_decision() -> None:
    record_fields = [f.name for f in dataclasses.fields(SiteRecord)]
    site_fields = [f.name for f in dataclasses.fields(Site)]
    later = ["op", "decision", "reason", "costs", "classical_s", "qaap_form", "qaap_form_reason"]
    assert [f for f in site_fields if f not in later] == record_fields


# -- ChooseQaapForm -------------------------------------------------------------------------
def _form_props(setting: str, **record: Any) -> PropertySet:
    return PropertySet(
        sites=(attention_record(**record), embedding_record(index=1)),
        decisions={0: SiteDecision("quantum", "qaap", "why"), 1: SiteDecision("quantum", "qrce")},
        qaap_form=setting,
    )


def test_choose_qaap_form_writes_the_roofline_choice_of_quantum_attention_sites() -> None:
    written = run_analysis(ChooseQaapForm(), any_graph(), _form_props("auto"))
    (index,) = written["qaap_forms"]
    choice = written["qaap_forms"][index]
    assert index == 0 and choice.form == "quadratic" and choice.setting == "auto"
    assert choice.reason.startswith("roofline: linear")
    forced = run_analysis(ChooseQaapForm(), any_graph(), _form_props("linear"))
    assert forced["qaap_forms"][0].form == "linear"
    arbitrary = _form_props("linear", mask_kind="arbitrary")
    assert run_analysis(ChooseQaapForm(), any_graph(), arbitrary)["qaap_forms"][0].form == (
        "quadratic"
    )


def test_choose_qaap_form_skips_classical_sites() -> None:
    props = _form_props("auto")
    props["decisions"] = {0: SiteDecision(reason="kept"), 1: SiteDecision(reason="kept")}
    assert run_analysis(ChooseQaapForm(), any_graph(), props) == {"qaap_forms": {}}


def test_decided_sites_carry_the_chosen_form() -> None:
    props = _form_props("linear")
    ChooseQaapForm().run(any_graph(), props)
    props["site_costs"] = {}
    attention, embedding = decided_sites(props)
    assert (attention.qaap_form, attention.qaap_form_reason) == ("linear", "set by qaap_form")
    assert embedding.qaap_form is None


# -- ReplaceAttention -----------------------------------------------------------------------
def _attention_props(match: Match, decision: SiteDecision) -> PropertySet:
    return PropertySet(
        sites=(attention_record(),),
        site_matches={0: match},
        decisions={0: decision},
        site_label_prefix="m",
        qaap_form="auto",
    )


QUANTUM_ATTENTION = SiteDecision("quantum", "qaap", "test")


def test_replace_attention_swaps_the_sdpa_for_qaap() -> None:
    gm = sdpa_graph()
    props = _attention_props(match_at(gm, "sdpa", "sdpa"), QUANTUM_ATTENTION)
    assert run_rewrite(ReplaceAttention(), gm, props) == (
        "def forward(self, q, k, v, mask):\n"
        "    qaap_default = torch.ops.qgraph.qaap.default(q, k, v, mask, None, False, 0.0, "
        "'unbound', 'unbound', 'm:layer.attn', 'auto');  q = k = v = mask = None\n"
        "    return qaap_default"
    )
    qaap = node(gm, "qaap_default")
    assert qaap.meta["qgraph_site"] == 0
    assert qaap.meta["nn_module_stack"] == {"layer.attn": ("layer.attn", "torch.nn.Module")}


def test_replace_attention_takes_k_from_the_transpose_and_draws_the_dropout_keep() -> None:
    gm = eager_graph(dropout_p=0.1)
    match = match_at(gm, "eager_softmax_chain", "weights")
    props = _attention_props(match, QUANTUM_ATTENTION)
    assert run_rewrite(ReplaceAttention(), gm, props) == (
        "def forward(self, q, k, v, mask):\n"
        "    attention_dropout_keep = qgraph_passes_rewrite_replace_attention_attention_dropout_"
        "keep(q, k, 0.1)\n"
        "    qaap_default = torch.ops.qgraph.qaap.default(q, k, v, mask, attention_dropout_keep, "
        "False, 0.1, 'unbound', 'unbound', 'm:layer.attn', 'auto');  q = k = v = mask = "
        "attention_dropout_keep = None\n"
        "    return qaap_default"
    )


def test_replace_attention_leaves_classical_and_embedding_sites_alone() -> None:
    gm = sdpa_graph()
    code = gm.code.strip()
    classical = SiteDecision(reason="no")
    props = _attention_props(match_at(gm, "sdpa", "sdpa"), classical)
    assert run_rewrite(ReplaceAttention(), gm, props) == code
    gm = embedding_graph()
    code = gm.code.strip()
    props = PropertySet(
        sites=(embedding_record(),),
        site_matches={0: match_at(gm, "embedding", "lookup0")},
        decisions={0: SiteDecision("quantum", "qrce", "test")},
        site_label_prefix="m",
    )
    assert run_rewrite(ReplaceAttention(), gm, props) == code


# -- ReplaceEmbedding -----------------------------------------------------------------------
def _embedding_props(gm: fx.GraphModule, layers: dict[str, QRCEEmbedding]) -> PropertySet:
    """Site 2 (two attention sites come first, say) is the lookup, decided quantum."""
    return PropertySet(
        sites=(embedding_record(index=2),),
        site_matches={2: match_at(gm, "embedding", "lookup0")},
        decisions={2: SiteDecision("quantum", "qrce", "test")},
        site_label_prefix="m",
        quantum_layers=layers,
        qrce_options=QRCEOptions(qubits=2, layers=1, init="random"),
        seed=7,
    )


EMBEDDING_CODE = (
    "def forward(self, ids):\n"
    "    qgraph_qrce__root__angles = self.qgraph_qrce__root_.angles\n"
    "    qgraph_qrce__root__weights = self.qgraph_qrce__root_.weights\n"
    "    qrce_default = torch.ops.qgraph.qrce.default(ids, qgraph_qrce__root__angles, "
    "qgraph_qrce__root__weights, 9, 'unbound', 'unbound', 'm:<root>');  ids = "
    "qgraph_qrce__root__angles = qgraph_qrce__root__weights = None\n"
    "    qgraph_qrce__root__proj_weight = self.qgraph_qrce__root_.proj.weight\n"
    "    qgraph_qrce__root__proj_bias = self.qgraph_qrce__root_.proj.bias\n"
    "    linear_default = torch.ops.aten.linear.default(qrce_default, "
    "qgraph_qrce__root__proj_weight, qgraph_qrce__root__proj_bias);  qrce_default = "
    "qgraph_qrce__root__proj_weight = qgraph_qrce__root__proj_bias = None\n"
    "    return linear_default"
)


def test_replace_embedding_makes_a_layer_and_swaps_the_lookup_for_qrce() -> None:
    gm = embedding_graph()
    layers: dict[str, QRCEEmbedding] = {}
    assert run_rewrite(ReplaceEmbedding(), gm, _embedding_props(gm, layers)) == EMBEDDING_CODE
    (layer,) = layers.values()
    assert list(layers) == ["<root>"] and layer.seed == 9  # seed + site index
    assert layer.angles.shape == (10, 2) and layer.proj.out_features == 4
    assert gm.get_submodule("qgraph_qrce__root_") is layer
    assert not hasattr(gm, "table0"), "the unused table stays on the graph module"


def test_replace_embedding_reuses_a_stored_layer() -> None:
    gm = embedding_graph()
    stored = QRCEEmbedding(10, 4, 2, 1, seed=9)
    layers = {"<root>": stored}
    assert run_rewrite(ReplaceEmbedding(), gm, _embedding_props(gm, layers)) == EMBEDDING_CODE
    assert layers == {"<root>": stored} and gm.get_submodule("qgraph_qrce__root_") is stored


def test_replace_embedding_leaves_classical_sites_alone() -> None:
    gm = embedding_graph()
    code = gm.code.strip()
    props = _embedding_props(gm, {})
    props["decisions"] = {2: SiteDecision(reason="no")}
    assert run_rewrite(ReplaceEmbedding(), gm, props) == code
    assert props["quantum_layers"] == {} and hasattr(gm, "table0")


def test_replace_embedding_needs_the_table_as_a_parameter() -> None:
    graph = fx.Graph()
    table, ids = graph.placeholder("table"), graph.placeholder("ids")
    graph.output(_call(graph, aten.embedding.default, (table, ids), "lookup0"))
    gm = fx.GraphModule(nn.Module(), graph)
    with pytest.raises(RuntimeError, match=r"site '<root>' has no .* table parameter 'table'"):
        ReplaceEmbedding().run(gm, _embedding_props(gm, {}))


# -- BindBackend ----------------------------------------------------------------------------
def _unbound_graph() -> fx.GraphModule:
    graph = fx.Graph()
    q, k, v = (graph.placeholder(n) for n in ("q", "k", "v"))
    args = (q, k, v, None, None, False, 0.0, "unbound", "unbound", "m:attn")
    graph.output(_call(graph, torch.ops.qgraph.qaap.default, args, "qaap"))
    return fx.GraphModule(nn.Module(), graph)


def test_bind_backend_fills_the_backend_and_gradient_slots() -> None:
    gm = _unbound_graph()
    props = PropertySet(backend="exact", gradients={"qaap": "autograd", "qrce": "spsa"})
    assert run_rewrite(BindBackend(), gm, props) == (
        "def forward(self, q, k, v):\n"
        "    qaap = torch.ops.qgraph.qaap.default(q, k, v, None, None, False, 0.0, 'exact', "
        "'autograd', 'm:attn');  q = k = v = None\n"
        "    return qaap"
    )


def test_bind_backend_rejects_an_unknown_backend_before_editing() -> None:
    gm = _unbound_graph()
    code = gm.code
    with pytest.raises(UnknownBackendError, match="unknown backend 'nope'"):
        BindBackend().run(gm, PropertySet(backend="nope", gradients={"qaap": "autograd"}))
    assert gm.code == code


# -- the contract ---------------------------------------------------------------------------
def _pass_classes() -> list[type]:
    """Every pass class defined under qgraph.passes (analysis, rewrite, lower)."""
    found = []
    for package in ("analysis", "rewrite", "lower"):
        module = importlib.import_module(f"qgraph.passes.{package}")
        for info in pkgutil.iter_modules(module.__path__):
            source = importlib.import_module(f"{module.__name__}.{info.name}")
            found += [
                c
                for c in vars(source).values()
                if isinstance(c, type)
                and issubclass(c, AnalysisPass | RewritePass)
                and c.__module__ == source.__name__
            ]
    return found


#: each pass and a no-argument factory for it
UNIT_TESTED: dict[type, Callable[[], Any]] = {
    FindCandidates: FindCandidates,
    ShapePropagation: ShapePropagation,
    ClassifyMasks: ClassifyMasks,
    CountFlopsBytes: CountFlopsBytes,
    BuildSites: BuildSites,
    CostSites: CostSites,
    DecideOffload: DecideOffload,
    ChooseQaapForm: ChooseQaapForm,
    ReplaceAttention: ReplaceAttention,
    ReplaceEmbedding: ReplaceEmbedding,
    BindBackend: BindBackend,
}


def test_every_pass_has_unit_tests_and_a_file_of_its_own() -> None:
    classes = _pass_classes()
    assert set(classes) == set(UNIT_TESTED)
    assert len({c.__module__ for c in classes}) == len(classes), "two passes share a file"


#: the passes that need some key before they run
REQUIRING = [c for c, make in UNIT_TESTED.items() if make().requires]


@pytest.mark.parametrize("pass_class", REQUIRING, ids=lambda c: c.__name__)
def test_a_missing_required_key_is_a_clear_error(pass_class: type) -> None:
    the_pass = UNIT_TESTED[pass_class]()
    present = {key: None for key in the_pass.requires[1:]}
    missing = [the_pass.requires[0]]
    with pytest.raises(RuntimeError, match=re.escape(f"pass {the_pass.name} requires {missing}")):
        PassManager([the_pass]).run(sdpa_graph(), PropertySet(present))


def test_the_pipelines_run_in_the_documented_order_and_meet_every_requirement() -> None:
    order = [p.name for m in (analysis_pipeline(), decision_pipeline()) for p in m.passes]
    order += [p.name for p in rewrite_pipeline().passes]
    assert order == [
        "FindCandidates",
        "ShapePropagation",
        "ClassifyMasks",
        "CountFlopsBytes",
        "BuildSites",
        "CostSites",
        "DecideOffload",
        "ChooseQaapForm",
        "ReplaceAttention",
        "ReplaceEmbedding",
        "BindBackend",
    ]
    available = set(PIPELINE_INPUTS)
    for manager in (analysis_pipeline(), decision_pipeline(), rewrite_pipeline()):
        for p in manager.passes:
            assert set(p.requires) <= available, f"{p.name} needs {set(p.requires) - available}"
            if isinstance(p, RewritePass):
                assert not p.provides, f"rewrite pass {p.name} declares property outputs"
            available |= set(p.provides)


def _readme_rows() -> dict[str, tuple[set[str], set[str]]]:
    """The README's pass table: pass name -> (keys read, keys written)."""
    rows = {}
    for line in README.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`\w+`", cells[0]):
            reads, writes = (set(re.findall(r"`(\w+)`", c)) for c in cells[2:4])
            rows[cells[0].strip("`")] = (reads, writes)
    return rows


def test_the_readme_table_lists_what_each_pass_reads_and_writes() -> None:
    rows = _readme_rows()
    for pass_class, factory in UNIT_TESTED.items():
        the_pass = factory()
        assert rows.get(pass_class.__name__) == (set(the_pass.requires), set(the_pass.provides))
