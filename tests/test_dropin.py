"""The compiled module is a drop-in replacement: call forms, attributes, moves, threads."""

from __future__ import annotations

import inspect
import threading
import time

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor

import qgraph
from qgraph.backends.exact import ExactBackend
from qgraph.backends.latency import LatencyBackend
from qgraph.models import ModelCase, encoder_model, hf_model


@pytest.fixture
def bert() -> ModelCase:
    return hf_model("bert")


def _ids(batch: int, seq: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 1000, (batch, seq), generator=generator)
    return ids, torch.ones(batch, seq, dtype=torch.long)


# -- call binding ----------------------------------------------------------------------------
def test_signature_is_the_models(bert: ModelCase) -> None:
    cm = qgraph.compile(bert.model, bert.args, bert.kwargs, policy="all")
    assert inspect.signature(cm.forward) == inspect.signature(bert.model.forward)
    assert "input_ids" in inspect.signature(cm.forward).parameters


def test_positional_and_keyword_calls_run_one_graph(bert: ModelCase) -> None:
    cm = qgraph.compile(bert.model, bert.args, bert.kwargs, policy="all")
    ids, mask = bert.args[0], bert.kwargs["attention_mask"]
    by_keyword = cm(input_ids=ids, attention_mask=mask).last_hidden_state
    by_position = cm(ids, mask).last_hidden_state
    assert torch.equal(by_keyword, by_position)
    assert len(cm.captures) == 1


@pytest.mark.parametrize(
    ("call", "note"),
    [
        (lambda ids, mask: {"input_ids": ids}, "attention_mask left out"),
        (
            lambda ids, mask: {"input_ids": ids, "attention_mask": mask.bool()},
            "attention_mask: Tensor[bool",
        ),
        (
            lambda ids, mask: {"input_ids": ids, "attention_mask": mask.float()},
            "attention_mask: Tensor[float32",
        ),
    ],
    ids=["no-mask", "bool-mask", "float-mask"],
)
def test_other_call_forms_get_their_own_capture(bert: ModelCase, call, note: str) -> None:
    backend = ExactBackend()
    cm = qgraph.compile(bert.model, bert.args, bert.kwargs, policy="all", backend=backend)
    ids, mask = _ids(3, 6)
    kwargs = call(ids, mask)
    out = cm(**kwargs)
    reference = cm(ids, attention_mask=mask)  # the example's structure: a long mask
    assert type(out) is type(bert.model(**kwargs))
    # Every mask form means "attend everywhere" here, so the outputs agree.
    torch.testing.assert_close(out.last_hidden_state, reference.last_hidden_state)
    assert len(cm.captures) == 2
    assert any(note in line for line in cm.report.notes), cm.report.notes
    assert sum(c.calls for c in backend.stats.per_site.values()) > 0


def test_return_dict_false_gives_the_originals_tuple(bert: ModelCase) -> None:
    cm = qgraph.compile(bert.model, bert.args, bert.kwargs, policy="none")
    expected = bert.model(*bert.args, **bert.kwargs, return_dict=False)
    got = cm(*bert.args, **bert.kwargs, return_dict=False)
    assert type(got) is type(expected) is tuple
    quantum = qgraph.compile(bert.model, bert.args, bert.kwargs, policy="all")
    out = quantum(*bert.args, **bert.kwargs, return_dict=False)
    assert type(out) is tuple and len(out) == len(expected)
    assert any("return_dict=False given" in line for line in quantum.report.notes)


def test_output_types_are_the_originals(bert: ModelCase) -> None:
    cm = qgraph.compile(bert.model, bert.args, bert.kwargs, policy="all")
    assert type(cm(*bert.args, **bert.kwargs)) is type(bert.model(*bert.args, **bert.kwargs))


def test_a_call_that_does_not_fit_names_the_signature() -> None:
    case = encoder_model(layers=1, d_model=16, heads=2, vocab=100)
    cm = qgraph.compile(case.model, case.args, case.kwargs, policy="all")
    with pytest.raises(
        qgraph.InputError, match=r"does not fit EncoderClassifier.forward\(input_ids"
    ):
        cm(case.args[0], not_an_argument=1)


def test_captures_are_bounded(bert: ModelCase) -> None:
    cm = qgraph.compile(bert.model, bert.args, bert.kwargs, policy="all", max_captures=2)
    ids, mask = bert.args[0], bert.kwargs["attention_mask"]
    cm(ids)  # the second capture
    with pytest.raises(qgraph.CaptureError, match=r"max_captures=2.*attention_mask: Tensor\[bool"):
        cm(ids, attention_mask=mask.bool())
    with pytest.raises(qgraph.InputError, match="max_captures must be an integer"):
        qgraph.compile(bert.model, bert.args, bert.kwargs, policy="all", max_captures=0)


# -- attributes ------------------------------------------------------------------------------
def test_attributes_resolve_on_the_original(bert: ModelCase) -> None:
    model = bert.model
    cm = qgraph.compile(model, bert.args, bert.kwargs, policy="all")
    assert cm.config is model.config
    assert cm.device == model.device and cm.dtype == model.dtype
    assert cm.main_input_name == "input_ids"
    assert cm.get_input_embeddings() is model.get_input_embeddings()
    with pytest.raises(AttributeError, match="neither the CompiledModule nor its BertModel"):
        _ = cm.no_such_attribute


# -- moves -----------------------------------------------------------------------------------
@pytest.mark.parametrize("move", ["to", "half", "bfloat16"])
def test_moves_reach_everything_later_captures_read(bert: ModelCase, move: str) -> None:
    cm = qgraph.compile(bert.model, bert.args, bert.kwargs, policy="all", qrce_init="random")
    dtype = torch.float16 if move == "half" else torch.bfloat16
    moved = cm.to(dtype) if move == "to" else getattr(cm, move)()
    assert moved is cm
    tensors = [*bert.model.parameters(), *cm.parameters()]
    assert all(t.dtype == dtype for t in tensors)
    ids, mask = _ids(3, 11)
    out = cm(ids, attention_mask=mask).last_hidden_state  # a new shape: a new capture
    assert out.dtype == dtype and torch.isfinite(out).all()
    cm.train()
    assert cm(ids, attention_mask=mask).last_hidden_state.dtype == dtype
    # The same as compiling a model that was moved first.
    twin = hf_model("bert")
    twin.model.to(dtype)
    fresh = qgraph.compile(twin.model, twin.args, twin.kwargs, policy="all", qrce_init="random")
    cm.eval()
    for call in ((ids,), {"attention_mask": mask}), (bert.args, bert.kwargs):  # new, example
        torch.testing.assert_close(
            cm(*call[0], **call[1]).last_hidden_state,
            fresh(*call[0], **call[1]).last_hidden_state,
        )


def test_a_dtype_move_recaptures_graphs_that_baked_the_old_dtype() -> None:
    # Llama's rotary embedding computes in float32 and casts back to the input's dtype: the
    # capture writes that dtype (float32) into the graph, so the old graph cannot serve.
    case = hf_model("llama")
    cm = qgraph.compile(case.model, case.args, case.kwargs, policy="all", qrce_init="random")
    assert "torch.bfloat16" not in cm.graph_module.code
    cm.bfloat16()
    assert "torch.bfloat16" in cm.graph_module.code  # casts back to the new dtype
    out = cm(*case.args, **case.kwargs).last_hidden_state
    twin = hf_model("llama")
    twin.model.bfloat16()
    fresh = qgraph.compile(twin.model, twin.args, twin.kwargs, policy="all", qrce_init="random")
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, fresh(*twin.args, **twin.kwargs).last_hidden_state)


def test_a_move_that_changes_nothing_keeps_the_graphs(bert: ModelCase) -> None:
    cm = qgraph.compile(bert.model, bert.args, bert.kwargs, policy="all")
    graph = cm.graph_module
    cm.to("cpu")
    cm.float()
    assert cm.graph_module is graph and len(cm.captures) == 1


# -- threads ---------------------------------------------------------------------------------
def _three_threads_each_needing_a_capture() -> None:
    case = hf_model("bert")
    cm = qgraph.compile(case.model, case.args, case.kwargs, policy="all")
    calls = {n: _ids(1, n, seed=n) for n in (7, 1, 3)}
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(calls))

    def work(n: int) -> None:
        try:
            start.wait()
            ids, mask = calls[n]
            results[n] = cm(ids, attention_mask=mask).last_hidden_state
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert not any(isinstance(p, FakeTensor) for p in case.model.parameters())
    assert len(cm.captures) == 3
    for n, (ids, mask) in calls.items():
        assert not isinstance(results[n], FakeTensor)
        torch.testing.assert_close(results[n], cm(ids, attention_mask=mask).last_hidden_state)


def test_threads_that_each_need_a_capture() -> None:
    # batch 1 specialises the batch size (torch.export's 0/1 rule), length 1 the length too:
    # each of the three calls needs a capture of its own, at the same moment. Without the
    # capture lock this failed in about half of the runs.
    for _ in range(4):
        _three_threads_each_needing_a_capture()


def test_calls_that_need_no_capture_run_concurrently(bert: ModelCase) -> None:
    backend = LatencyBackend("exact", latency_s=0.2, exclusive=False)
    cm = qgraph.compile(bert.model, bert.args, bert.kwargs, policy="all", backend=backend)
    spans: list[tuple[float, float]] = []
    start = threading.Barrier(2)

    def work() -> None:
        start.wait()
        began = time.perf_counter()
        cm(*bert.args, **bert.kwargs)
        spans.append((began, time.perf_counter()))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (a_start, a_end), (b_start, b_end) = spans
    assert max(a_start, b_start) < min(a_end, b_end)  # the two calls overlapped in time
    assert len(cm.captures) == 1
