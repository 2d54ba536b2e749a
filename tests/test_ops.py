"""The custom ops: opcheck, finite-difference gradients, fake shapes, dtypes, export."""

from __future__ import annotations

import pytest
import torch

import qgraph
from qgraph.backends import get_backend
from qgraph.kernels.qaap import qaap_attention

qaap = torch.ops.qgraph.qaap.default
qrce = torch.ops.qgraph.qrce.default


def _qaap_inputs(dtype: torch.dtype = torch.float32, requires_grad: bool = False):
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 5, 8, generator=generator, dtype=dtype, requires_grad=requires_grad)
    k = torch.randn(2, 2, 5, 8, generator=generator, dtype=dtype, requires_grad=requires_grad)
    v = torch.randn(2, 2, 5, 6, generator=generator, dtype=dtype, requires_grad=requires_grad)
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    mask[1, ..., 3:] = False
    return q, k, v, mask


def _qrce_inputs(dtype: torch.dtype = torch.float32, requires_grad: bool = False):
    generator = torch.Generator().manual_seed(0)
    ids = torch.tensor([[0, 3, 3, 1], [2, 0, 4, 4]])
    table = torch.randn(5, 3, generator=generator, dtype=dtype, requires_grad=requires_grad)
    weights = torch.randn(2, 3, generator=generator, dtype=dtype, requires_grad=requires_grad)
    return ids, table, weights


def test_opcheck_qaap() -> None:
    q, k, v, mask = _qaap_inputs(requires_grad=True)
    torch.library.opcheck(qaap, (q, k, v, mask, None, False, 0.0, "exact", "autograd", "test"))
    torch.library.opcheck(qaap, (q, k, v, None, None, True, 0.0, "exact", "autograd", "test"))


def test_opcheck_qrce() -> None:
    ids, table, weights = _qrce_inputs(requires_grad=True)
    torch.library.opcheck(qrce, (ids, table, weights, 7, "exact", "autograd", "test"))


def test_qaap_backward_matches_finite_differences() -> None:
    q, k, v, mask = _qaap_inputs(torch.float64, requires_grad=True)
    keep = torch.rand(2, 4, 5, 5, generator=torch.Generator().manual_seed(1)) > 0.2
    assert torch.autograd.gradcheck(
        lambda q, k, v: qaap(q, k, v, mask, keep, False, 0.2, "exact", "autograd", "test"),
        (q, k, v),
    )


def test_qrce_backward_matches_finite_differences() -> None:
    ids, table, weights = _qrce_inputs(torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda t, w: qrce(ids, t, w, 7, "exact", "autograd", "test"), (table, weights)
    )


def test_qaap_op_equals_the_closed_form() -> None:
    q, k, v, mask = _qaap_inputs()
    expected, _ = qaap_attention(q, k, v, mask)
    torch.testing.assert_close(
        qaap(q, k, v, mask, None, False, 0.0, "exact", "autograd", "t"), expected
    )


def test_fake_shapes_follow_sdpa_and_embedding() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q, k, v = torch.empty(3, 4, 7, 8), torch.empty(3, 2, 9, 8), torch.empty(3, 2, 9, 5)
        assert qaap(q, k, v, None, None, False, 0.0, "exact", "autograd", "t").shape == (3, 4, 7, 5)
        ids, table, weights = (
            torch.empty(3, 7, dtype=torch.long),
            torch.empty(10, 6),
            torch.empty(2, 6),
        )
        assert qrce(ids, table, weights, 0, "exact", "autograd", "t").shape == (3, 7, 12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_ops_keep_half_precision_dtypes(dtype: torch.dtype) -> None:
    q, k, v, mask = _qaap_inputs(dtype)
    assert qaap(q, k, v, mask, None, False, 0.0, "exact", "autograd", "t").dtype == dtype
    ids, table, weights = _qrce_inputs(dtype)
    assert qrce(ids, table, weights, 0, "exact", "autograd", "t").dtype == dtype


def test_backend_counts_calls_and_unique_tokens() -> None:
    ids, table, weights = _qrce_inputs()
    qrce(ids, table, weights, 0, "exact", "autograd", "count-test")
    counters = get_backend("exact").stats.site("count-test")
    assert counters.calls == 1 and counters.instances == 5  # tokens 0..4, each once


def test_rewritten_graph_exports_again() -> None:
    class Block(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    q, _, _, _ = _qaap_inputs()
    cm = qgraph.compile(Block(), (q, q, q), policy="all")
    # The graph takes the model's arguments by name (qgraph.calls' canonical form).
    program = torch.export.export(cm.graph_module, (), {"q": q, "k": q, "v": q}, strict=False)
    assert any(n.target is qaap for n in program.graph.nodes)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA device absent")
def test_ops_run_on_cuda() -> None:
    q, k, v, mask = (t.cuda() for t in _qaap_inputs())
    assert qaap(q, k, v, mask, None, False, 0.0, "exact", "autograd", "t").device.type == "cuda"
    ids, table, weights = (t.cuda() for t in _qrce_inputs())
    assert qrce(ids, table, weights, 0, "exact", "autograd", "t").device.type == "cuda"
