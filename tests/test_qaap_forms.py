"""QAAP's two exact forms on the exact backend: the lean quadratic kernel and its hand-written
backward against the plain closed form, the linear form against the quadratic one through
the op (outputs and gradients), mask recognition, the roofline choice, and the compile option."""

from __future__ import annotations

import os

import pytest
import torch

import qgraph
from qgraph.backends.exact import ExactBackend
from qgraph.costmodel.qaap_form import (
    call_mask_kind,
    choose_form,
    crossover_length,
    resolve_form,
)
from qgraph.errors import InputError
from qgraph.kernels.qaap import qaap_attention
from qgraph.kernels.qaap_quadratic import quadratic_attention, quadratic_attention_backward

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MASKS = (
    "none",
    "padding",
    "additive",
    "arbitrary",
    "zero-query",
    "orthogonal",
    "orthogonal+padding",
    "all-padded",
)


def _inputs(mask: str, causal: bool, dtype: torch.dtype = torch.float64, heads: int = 4):
    torch.manual_seed(0)
    batch, kv_heads, n_q, d, dv = 2, 2, 5, 3, 4
    n_k = n_q if causal else 7
    q = torch.randn(batch, heads, n_q, d, dtype=dtype)
    k = torch.randn(batch, kv_heads, n_k, d, dtype=dtype)
    v = torch.randn(batch, kv_heads, n_k, dv, dtype=dtype)
    attn_mask = None
    if mask in ("padding", "all-padded", "orthogonal+padding"):
        keep = torch.ones(batch, n_k, dtype=torch.bool)
        keep[0, -2:] = False
        if mask == "all-padded":
            keep[1] = False
        attn_mask = keep[:, None, None, :].expand(batch, 1, n_q, n_k).contiguous()
    elif mask == "additive":
        attn_mask = torch.zeros(batch, 1, 1, n_k, dtype=dtype)
        attn_mask[0, ..., -3:] = torch.finfo(dtype).min
    elif mask == "arbitrary":
        attn_mask = torch.rand(batch, 1, n_q, n_k, generator=torch.Generator().manual_seed(1)) > 0.3
    elif mask == "zero-query":
        q[0, 0, 0] = 0.0
    if mask.startswith("orthogonal"):  # every key orthogonal to one query: uniform fallback
        q[0, 0, 0] = torch.tensor([1.0, 0.0, 0.0], dtype=dtype)
        k[..., 0] = 0.0
    return q, k, v, attn_mask


def _closed_form_with_grads(q, k, v, attn_mask, causal, keep, p, grad):
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out, counts = qaap_attention(*leaves, attn_mask, causal, keep, p)
    out.backward(grad)
    return out.detach(), [t.grad for t in leaves], counts


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dropout", [False, True])
def test_quadratic_kernel_equals_the_closed_form_and_its_autograd(
    mask: str, causal: bool, dropout: bool
) -> None:
    q, k, v, attn_mask = _inputs(mask, causal)
    keep, p = None, 0.0
    if dropout:
        keep = torch.rand(2, 4, q.shape[-2], k.shape[-2]) > 0.2
        p = 0.2
    grad = torch.randn(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    ref, ref_grads, counts = _closed_form_with_grads(q, k, v, attn_mask, causal, keep, p, grad)
    out, fallback, empty = quadratic_attention(q, k, v, attn_mask, causal, keep, p)
    grads = quadratic_attention_backward(grad, q, k, v, attn_mask, causal, keep, p)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
    assert int(fallback.sum()) == counts.fallback_rows
    assert int(empty.sum()) == counts.empty_rows


def test_quadratic_kernel_counts_fallback_and_empty_rows() -> None:
    q, k, v, mask = _inputs("orthogonal", False)
    assert int(quadratic_attention(q, k, v, mask)[1].sum()) == 1
    q, k, v, mask = _inputs("all-padded", False)
    _, fallback, empty = quadratic_attention(q, k, v, mask)
    assert int(empty.sum()) == 4 * q.shape[-2] and int(fallback.sum()) == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_quadratic_kernel_computes_half_precision_in_float32(dtype: torch.dtype) -> None:
    q, k, v, mask = _inputs("padding", False, torch.float32)
    grad = torch.randn(*q.shape[:-1], v.shape[-1])
    ref = quadratic_attention(q, k, v, mask)[0]
    ref_grads = quadratic_attention_backward(grad, q, k, v, mask)
    half = [t.to(dtype) for t in (q, k, v)]
    out = quadratic_attention(*half, mask)[0]
    grads = quadratic_attention_backward(grad.to(dtype), *half, mask)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got.float(), want, rtol=5e-2, atol=5e-2)


def _through_the_op(form: str, q, k, v, attn_mask, causal, grad):
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = torch.ops.qgraph.qaap(
        *leaves, attn_mask, None, causal, 0.0, "exact", "autograd", "forms", form
    )
    out.backward(grad)
    return out.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize(
    ("mask", "causal"), [("none", False), ("padding", False), ("none", True), ("padding", True)]
)
def test_linear_and_quadratic_forms_agree_through_the_op_to_1e_5(mask: str, causal: bool) -> None:
    torch.manual_seed(3)
    heads, n = 4, 24
    q = torch.randn(2, heads, n, 16)
    k = q[:, ::2] + 0.3 * torch.randn(2, 2, n, 16)  # grouped-query, correlated with q
    v = torch.randn(2, 2, n, 16)
    attn_mask = None
    if mask == "padding":
        keep = torch.ones(2, n, dtype=torch.bool)
        keep[1, -5:] = False
        attn_mask = keep[:, None, None, :].expand(2, 1, n, n).contiguous()
    grad = torch.randn(2, heads, n, 16)
    quad, quad_grads = _through_the_op("quadratic", q, k, v, attn_mask, causal, grad)
    lin, lin_grads = _through_the_op("linear", q, k, v, attn_mask, causal, grad)
    torch.testing.assert_close(lin, quad, rtol=1e-5, atol=1e-5)
    for got, want in zip(lin_grads, quad_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_gpt2_style_causal_mask_is_recognised_and_runs_linear() -> None:
    n = 6
    keep = torch.ones(2, n, dtype=torch.bool)
    keep[0, -2:] = False
    tril = torch.ones(n, n, dtype=torch.bool).tril()
    mask = (tril & keep[:, None, None, :]).contiguous()  # (2, 1, n, n), is_causal False
    kind, key_keep, causal = call_mask_kind(mask, False, n, n)
    assert (kind, causal) == ("causal+padding", True)
    assert torch.equal(key_keep, keep[:, None, :])
    q, k, v = (torch.randn(2, 2, n, 4) for _ in range(3))
    grad = torch.randn(2, 2, n, 4)
    quad, _ = _through_the_op("quadratic", q, k, v, mask, False, grad)
    lin, _ = _through_the_op("linear", q, k, v, mask, False, grad)
    torch.testing.assert_close(lin, quad, rtol=1e-5, atol=1e-5)


def test_mask_kinds_of_calls() -> None:
    n = 5
    padding = torch.ones(1, 1, n, n, dtype=torch.bool)
    padding[..., -1] = False
    assert call_mask_kind(padding, False, n, n)[0] == "padding"
    assert call_mask_kind(padding[..., :1, :].expand(1, 1, n, n), False, n, n)[0] == "padding"
    assert call_mask_kind(None, True, n, n)[:1] == ("causal",)
    arbitrary = padding.clone()
    arbitrary[..., 2, 0] = False
    assert call_mask_kind(arbitrary, False, n, n) == ("arbitrary", None, False)


def test_the_roofline_picks_quadratic_for_short_and_linear_for_long_sequences() -> None:
    short = choose_form("auto", 64, 128, 128, 64, 64, "padding")
    long = choose_form("auto", 12, 16384, 16384, 64, 64, "padding")
    assert short.form == "quadratic" and long.form == "linear"
    assert short.linear_s is not None and short.linear_s > short.quadratic_s
    assert long.linear_s is not None and long.linear_s < long.quadratic_s
    crossover = crossover_length(12, 64, 64, causal=False)
    assert crossover is not None and 128 < crossover < 16384
    assert choose_form("auto", 12, crossover, crossover, 64, 64, "padding").form == "linear"
    before = crossover - 1
    assert choose_form("auto", 12, before, before, 64, 64, "padding").form == "quadratic"


def test_forced_and_impossible_forms() -> None:
    assert choose_form("linear", 64, 128, 128, 64, 64, "padding").form == "linear"
    assert choose_form("quadratic", 12, 16384, 16384, 64, 64, "none").form == "quadratic"
    arbitrary = choose_form("linear", 12, 16384, 16384, 64, 64, "arbitrary")
    assert arbitrary.form == "quadratic" and arbitrary.linear_s is None
    assert "arbitrary masks" in arbitrary.reason
    dropout = choose_form("auto", 12, 16384, 16384, 64, 64, "none", dropout=True)
    assert dropout.form == "quadratic" and "dropout" in dropout.reason
    with pytest.raises(ValueError, match="qaap_form must be one of auto, quadratic, linear"):
        choose_form("fast", 1, 4, 4, 2, 2, "none")


def test_resolve_form_reads_the_mask_only_when_linear_could_win() -> None:
    q = k = v = torch.randn(1, 1, 8, 4)
    arbitrary = torch.rand(1, 1, 8, 8) > 0.5
    choice, key_keep, _ = resolve_form("auto", q, k, v, arbitrary, False, None, 0.0)
    assert choice.form == "quadratic" and key_keep is None
    choice, _, _ = resolve_form("linear", q, k, v, arbitrary, False, None, 0.0)
    assert choice.form == "quadratic" and "arbitrary" in choice.reason


def test_exact_backend_counts_fallback_rows_on_its_fast_path() -> None:
    backend = ExactBackend()
    q, k, v, mask = _inputs("orthogonal", False, torch.float32)
    for form in ("quadratic", "linear"):
        backend.qaap(q, k, v, mask, False, None, 0.0, f"s-{form}", form=form)
        counters = backend.stats.site(f"s-{form}")
        assert (counters.calls, counters.fallback_rows) == (1, 1)
        assert counters.instances == q.shape[:-1].numel()


def _tiny_bert():
    import transformers

    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    ids = torch.randint(0, 50, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, -4:] = 0
    return model, {"input_ids": ids, "attention_mask": mask}


def test_compile_option_qaap_form_runs_and_reports_each_form() -> None:
    model, inputs = _tiny_bert()
    outputs, grads = {}, {}
    for form in ("quadratic", "linear"):
        cm = qgraph.compile(model, (), inputs, policy="all", embedding_tables=(), qaap_form=form)
        (site,) = [s for s in cm.report.sites if s.op == "qaap"]
        assert site.qaap_form == form
        assert f"│ {form}" in str(cm.report)
        model.zero_grad()
        out = cm(**inputs).last_hidden_state
        out.square().sum().backward()
        outputs[form] = out.detach()
        grads[form] = [p.grad.clone() for p in model.encoder.parameters() if p.grad is not None]
    torch.testing.assert_close(outputs["linear"], outputs["quadratic"], rtol=1e-5, atol=1e-5)
    for got, want in zip(grads["linear"], grads["quadratic"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    auto = qgraph.compile(model, (), inputs, policy="all", embedding_tables=())
    (site,) = [s for s in auto.report.sites if s.op == "qaap"]
    assert site.qaap_form == "quadratic" and "roofline" in site.qaap_form_reason


def test_bad_qaap_form_is_refused_at_compile() -> None:
    model, inputs = _tiny_bert()
    with pytest.raises(InputError, match="qaap_form must be one of 'auto', 'quadratic', 'linear'"):
        qgraph.compile(model, (), inputs, policy="all", qaap_form="fast")


def test_row_counts_held_on_a_device_settle_when_read() -> None:
    from qgraph.backends.base import KernelCounters

    counters = KernelCounters()
    counters.add_qaap_rows(torch.tensor([True, False, True]), torch.tensor([False, True, False]))
    counters.pending_rows = torch.tensor([3, 1])  # as a CUDA call leaves them: not yet synced
    assert (counters.fallback_rows, counters.empty_rows) == (5, 2)
    assert counters.pending_rows is None and counters.fallback_rows == 5
