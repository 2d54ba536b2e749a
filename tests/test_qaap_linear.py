"""The linear-time QAAP form equals the closed form: outputs, gradients, fallbacks, counts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from qgraph.errors import InputError
from qgraph.kernels.qaap import qaap_attention
from qgraph.kernels.qaap_linear import (
    linear_form_flops,
    padding_keys,
    qaap_linear_attention,
    quadratic_form_flops,
)

#: max |difference| allowed, relative to max(1, largest |reference| entry)
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
#: float32 inputs get this component along (1, ..., 1) in q and k: every row then has a
#: post-selection probability P_i well above 0. On rows with tiny P_i the factorised form errs
#: by up to ~eps·max|v|/P_i (the closed form by ~eps/√P_i): test_float32_error_bound.
WELL_CONDITIONED = 2.0

Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _inputs(
    shape_q: tuple[int, ...],
    n_kv: int,
    n_keys: int,
    dv: int,
    dtype: torch.dtype,
    seed: int = 0,
) -> Inputs:
    gen = torch.Generator().manual_seed(seed)
    *batch, _, _, d = shape_q
    q = torch.randn(shape_q, generator=gen, dtype=torch.float64)
    k = torch.randn(*batch, n_kv, n_keys, d, generator=gen, dtype=torch.float64)
    v = torch.randn(*batch, n_kv, n_keys, dv, generator=gen, dtype=torch.float64)
    if dtype != torch.float64:
        q, k = q + WELL_CONDITIONED, k + WELL_CONDITIONED
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _with_grads(fn: Callable[..., torch.Tensor], inputs: Inputs) -> list[torch.Tensor]:
    """The output and d(Σ out·C)/d(q, k, v) for one fixed cotangent C."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    # Multiples of 1/8 in [-2, 2]: exact in every dtype, so all dtypes see the same C.
    gen = torch.Generator().manual_seed(1)
    cotangent = (torch.randint(-16, 17, out.shape, generator=gen) / 8).to(out.dtype)
    grads = torch.autograd.grad((out * cotangent).sum(), leaves)
    return [out.detach(), *grads]


def _assert_close(
    actual: list[torch.Tensor],
    expected: list[torch.Tensor],
    tol: float,
    names: tuple[str, ...] = ("out", "dq", "dk", "dv"),
) -> None:
    for name, a, e in zip(names, actual, expected, strict=True):
        assert a.dtype == e.dtype and a.shape == e.shape, name
        scale = max(1.0, float(e.abs().max()))
        error = float((a.double() - e.double()).abs().max())
        assert error <= tol * scale, f"{name}: max |difference| {error:.3g} > {tol * scale:.3g}"


def _closed(keep: torch.Tensor | None, causal: bool) -> Callable[..., torch.Tensor]:
    mask = None if keep is None else keep.unsqueeze(-2)  # (..., Sk) -> (..., 1, Sk)
    return lambda q, k, v: qaap_attention(q, k, v, mask, causal)[0]


def _linear(keep: torch.Tensor | None, causal: bool, chunk: int) -> Callable[..., torch.Tensor]:
    return lambda q, k, v: qaap_linear_attention(q, k, v, keep, causal, chunk_size=chunk)[0]


def _padding(batch: int, n_keys: int, seed: int = 2) -> torch.Tensor:
    """(B, 1, Sk): a different number of trailing pad keys per batch element, ≥ 1 kept."""
    lengths = torch.randint(1, n_keys + 1, (batch,), generator=torch.Generator().manual_seed(seed))
    return (torch.arange(n_keys) < lengths[:, None]).unsqueeze(1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mask", ["none", "padding", "causal", "causal+padding"])
@pytest.mark.parametrize(("heads", "kv_heads"), [(3, 3), (4, 2)])
def test_equals_the_closed_form_with_gradients(
    dtype: torch.dtype, mask: str, heads: int, kv_heads: int
) -> None:
    # 23 positions in chunks of 5: five chunks, the last one short.
    inputs = _inputs((2, heads, 23, 6), kv_heads, 23, 4, dtype)
    keep = _padding(2, 23) if "padding" in mask else None
    causal = "causal" in mask
    expected = _with_grads(_closed(keep, causal), inputs)
    _assert_close(_with_grads(_linear(keep, causal, 5), inputs), expected, TOL[dtype])


@pytest.mark.parametrize("head_dim", [1, 2, 5, 7])
@pytest.mark.parametrize("causal", [False, True])
def test_odd_and_tiny_head_dims(head_dim: int, causal: bool) -> None:
    # The features pair x_a with x_{a+s mod d} for s ≤ d/2: odd d has no self-paired shift.
    inputs = _inputs((2, 2, 9, head_dim), 2, 9, 3, torch.float64)
    keep = _padding(2, 9)
    expected = _with_grads(_closed(keep, causal), inputs)
    _assert_close(_with_grads(_linear(keep, causal, 4), inputs), expected, 1e-10)


def test_float32_error_bound() -> None:
    """Generic data, where some rows' keys are nearly orthogonal to the query: the float32
    error of row i stays below eps·max|v|/P_i, P_i = Σ_j (q̂_i·k_j)² / Σ_j ‖k_j‖²."""
    q, k, v = _inputs((4, 4, 40, 4), 4, 40, 5, torch.float64, seed=5)
    truth = qaap_attention(q, k, v, None, True)[0]
    out = qaap_linear_attention(q.float(), k.float(), v.float(), None, True, chunk_size=7)[0]
    q_hat = q / q.norm(dim=-1, keepdim=True)
    visible = torch.ones(40, 40, dtype=torch.float64).tril()
    success = ((q_hat @ k.transpose(-2, -1)).square() * visible).sum(-1)
    success = success / (visible @ k.square().sum(-1, keepdim=True)).squeeze(-1)
    assert success.min() < 1e-2  # the bound is exercised, not just the well-conditioned rows
    bound = torch.finfo(torch.float32).eps * v.abs().amax((-2, -1)).unsqueeze(-1) / success
    assert torch.all((out.double() - truth).abs().amax(-1) <= bound)


@pytest.mark.parametrize("causal", [False, True])
def test_more_queries_than_one_chunk_and_several_head_blocks(causal: bool) -> None:
    # A 1-byte budget gives the smallest chunks and one head per block.
    inputs = _inputs((2, 3, 150, 8), 3, 150, 5, torch.float64)
    keep = _padding(2, 150)

    def linear(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return qaap_linear_attention(q, k, v, keep, causal, memory_budget=1)[0]

    expected = _with_grads(_closed(keep, causal), inputs)
    _assert_close(_with_grads(linear, inputs), expected, TOL[torch.float64])


def test_unequal_query_and_key_lengths_with_padding() -> None:
    inputs = _inputs((1, 2, 7, 4), 2, 19, 3, torch.float64)
    keep = _padding(1, 19)
    expected = _with_grads(_closed(keep, False), inputs)
    _assert_close(_with_grads(_linear(keep, False, 4), inputs), expected, 1e-10)


def test_a_padding_mask_that_differs_between_query_heads_of_a_gqa_group() -> None:
    inputs = _inputs((2, 4, 9, 4), 2, 9, 3, torch.float64)
    keep = torch.rand(2, 4, 9, generator=torch.Generator().manual_seed(3)) > 0.4
    for causal in (False, True):
        expected = _with_grads(_closed(keep, causal), inputs)
        _assert_close(_with_grads(_linear(keep, causal, 4), inputs), expected, 1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_hf_additive_and_bool_4d_masks_through_padding_keys(causal: bool) -> None:
    inputs = _inputs((2, 2, 11, 4), 2, 11, 3, torch.float32)
    keep = _padding(2, 11).unsqueeze(-2)  # (B, 1, 1, Sk)
    additive = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    for mask in (keep, additive, additive.expand(2, 1, 11, 11)):  # HF writes both shapes
        key_keep = padding_keys(mask, 11, 11)
        assert key_keep is not None

        def closed(
            q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor = mask
        ) -> torch.Tensor:
            return qaap_attention(q, k, v, mask, causal)[0]

        expected = _with_grads(closed, inputs)
        _assert_close(_with_grads(_linear(key_keep, causal, 3), inputs), expected, 1e-5)


def test_padding_keys_refuses_masks_that_depend_on_the_query() -> None:
    arbitrary = torch.rand(6, 6, generator=torch.Generator().manual_seed(4)) > 0.5
    assert padding_keys(arbitrary, 6, 6) is None
    assert padding_keys(torch.ones(6, 6, dtype=torch.bool).tril(), 6, 6) is None
    additive_causal = torch.zeros(1, 1, 6, 6).masked_fill(torch.ones(6, 6).triu(1) > 0, -1e9)
    assert padding_keys(additive_causal, 6, 6) is None
    same_rows = torch.tensor([True, False, True]).expand(4, 3)
    assert torch.equal(padding_keys(same_rows, 4, 3), torch.tensor([True, False, True]))
    one_dim = torch.tensor([0.0, -torch.inf, 0.0])  # SDPA broadcasts a 1-D mask over queries
    assert torch.equal(padding_keys(one_dim, 4, 3), torch.tensor([True, False, True]))


def test_zero_query_falls_back_and_fully_masked_rows_are_empty_as_in_the_closed_form() -> None:
    q, k, v = _inputs((3, 2, 8, 4), 2, 8, 3, torch.float64)
    q[0, 1, 4] = 0.0  # a zero query: q̂ undefined, uniform weights
    k[1, :, :, 0] = 0.0
    q[1, 0, 5] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # orthogonal to every key
    keep = torch.ones(3, 1, 8, dtype=torch.bool)
    keep[2] = False  # no key at all: every row of element 2 is empty
    keep[0, 0, :3] = False  # causal + padding: the first three queries of element 0 see nothing
    for causal in (False, True):
        _, counts = qaap_attention(q, k, v, keep.unsqueeze(-2), causal)
        out, fallback, empty = qaap_linear_attention(q, k, v, keep, causal, chunk_size=3)
        assert (int(fallback.sum()), int(empty.sum())) == (
            counts.fallback_rows,
            counts.empty_rows,
        )
        assert fallback[0, 1, 4] and fallback[1, 0, 5] and empty[2].all()
        assert torch.all(out[2] == 0)
        visible = v[0, 1, 3:5] if causal else v[0, 1, 3:]  # keys 0..2 are padding
        torch.testing.assert_close(out[0, 1, 4], visible.mean(0))
        expected = _with_grads(_closed(keep, causal), (q, k, v))
        _assert_close(_with_grads(_linear(keep, causal, 3), (q, k, v)), expected, 1e-10)
    assert int(qaap_linear_attention(q, k, v, keep, True)[2].sum()) == 16 + 2 * 3


def test_causal_rows_judge_the_fallback_by_the_keys_they_see() -> None:
    # Tiny keys first, large ones later: the first rows post-select fine among the keys they
    # see, though (q̂·k)² is below 1e-24 of the norm of the whole sequence's keys.
    q, k, v = _inputs((1, 1, 8, 4), 1, 8, 3, torch.float64)
    k[..., :3, :] *= 1e-10
    k[..., 3:, :] *= 1e3
    _, counts = qaap_attention(q, k, v, None, True)
    fallback = qaap_linear_attention(q, k, v, None, True, chunk_size=3)[1]
    assert counts.fallback_rows == 0 and not fallback.any()
    expected = _with_grads(_closed(None, True), (q, k, v))
    _assert_close(_with_grads(_linear(None, True, 3), (q, k, v)), expected, 1e-10)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("causal", [False, True])
def test_half_precision_computes_in_float32(dtype: torch.dtype, tol: float, causal: bool) -> None:
    q, k, v = _inputs((2, 2, 13, 8), 2, 13, 4, dtype)
    keep = _padding(2, 13)
    # The reference is the float32 closed form on the same (rounded) inputs.
    expected = _with_grads(_closed(keep, causal), (q.float(), k.float(), v.float()))
    actual = _with_grads(_linear(keep, causal, 4), (q, k, v))
    assert all(t.dtype == dtype for t in actual)
    _assert_close([t.float() for t in actual], expected, tol)


@pytest.mark.parametrize("causal", [False, True])
def test_torch_func_vjp_equals_autograd(causal: bool) -> None:
    q, k, v = _inputs((2, 4, 10, 4), 2, 10, 3, torch.float64)
    keep = _padding(2, 10)
    linear = _linear(keep, causal, 3)
    autograd = _with_grads(linear, (q, k, v))
    out, vjp = torch.func.vjp(linear, q, k, v)
    gen = torch.Generator().manual_seed(1)  # the cotangent of _with_grads
    cotangent = (torch.randint(-16, 17, out.shape, generator=gen) / 8).double()
    _assert_close([out, *vjp(cotangent)], autograd, 1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_backward_saves_nothing_of_size_n_d_squared(causal: bool) -> None:
    heads, n, d, dv = 2, 256, 32, 4
    q, k, v = (x.requires_grad_() for x in _inputs((1, heads, n, d), heads, n, dv, torch.float32))
    sizes: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        qaap_linear_attention(q, k, v, None, causal, chunk_size=32)[0].sum().backward()
    # Tensors the size of q, k, v and one (d·(d/2 + 1), dv + 1) state per head; nothing n·d².
    inputs, state = heads * n * (d + dv + 1), heads * d * (d // 2 + 1) * (dv + 1)
    assert max(sizes) <= max(inputs, state)
    assert sum(sizes) <= 8 * inputs + state < heads * n * d * d / 2


@pytest.mark.parametrize("causal", [False, True])
def test_keys_at_any_scale_give_the_same_weights(causal: bool) -> None:
    # QAAP ignores one common scale of the keys; in float32 ‖k‖⁴ overflows past ~1e19 and
    # underflows below ~1e-11, which the linear form must not notice.
    q, k, v = _inputs((1, 2, 12, 4), 2, 12, 3, torch.float32)
    reference = qaap_linear_attention(q, k, v, None, causal, chunk_size=5)[0]
    for scale in (1e-30, 1e30):
        out, fallback, _ = qaap_linear_attention(q, k * scale, v, None, causal, chunk_size=5)
        assert not fallback.any()
        torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_vmap_over_the_batch_equals_the_closed_form_per_element(causal: bool) -> None:
    # generate_vmap_rule: torch.func transforms beyond vjp (vmap, grad, jacrev) also work.
    q, k, v = _inputs((3, 2, 9, 4), 1, 9, 3, torch.float64)

    def loss_linear(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return qaap_linear_attention(q, k, v, None, causal, chunk_size=4)[0].square().sum()

    def loss_closed(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return qaap_attention(q, k, v, None, causal)[0].square().sum()

    batched = torch.vmap(torch.func.grad(loss_linear, argnums=(0, 1, 2)))(q, k, v)
    for i in range(3):
        each = torch.func.grad(loss_closed, argnums=(0, 1, 2))(q[i], k[i], v[i])
        _assert_close([b[i] for b in batched], list(each), 1e-10, ("dq", "dk", "dv"))


def test_bad_inputs_name_the_fix() -> None:
    q, k, v = _inputs((1, 2, 5, 4), 2, 5, 3, torch.float32)
    with pytest.raises(InputError, match="padding_keys"):
        qaap_linear_attention(q, k, v, torch.ones(1, 1, 5))
    with pytest.raises(InputError, match="qaap_attention"):
        qaap_linear_attention(q, k[..., :4, :], v[..., :4, :], None, True)
    with pytest.raises(InputError, match="multiple of the kv heads"):
        qaap_linear_attention(torch.randn(1, 3, 5, 4), k, v)
    with pytest.raises(InputError, match="broadcast"):
        qaap_linear_attention(q, k, v, torch.ones(7, dtype=torch.bool))
    with pytest.raises(InputError, match="SDPA's mask"):
        padding_keys(torch.ones(3, 5, dtype=torch.bool), 4, 5)
    with pytest.raises(InputError, match="chunk_size must be a positive int"):
        qaap_linear_attention(q, k, v, chunk_size=0)
    with pytest.raises(InputError, match="empty sequence"):
        qaap_linear_attention(q[..., :0, :], k, v)


def test_flop_counts_are_linear_and_quadratic_in_the_length() -> None:
    for causal in (False, True):
        short = linear_form_flops(12, 2048, 2048, 64, 64, causal, chunk_size=128)
        assert linear_form_flops(12, 4096, 4096, 64, 64, causal, chunk_size=128) == 2 * short
        short = quadratic_form_flops(12, 2048, 2048, 64, 64, causal)
        assert quadratic_form_flops(12, 4096, 4096, 64, 64, causal) == 4 * short
    # ~d²/2·(dv + 1) per row against n·(d + dv): the closed form is cheaper when short.
    short_args, long_args = (1, 64, 64, 64, 64, False), (1, 8192, 8192, 64, 64, False)
    assert linear_form_flops(*short_args) > quadratic_form_flops(*short_args)
    assert linear_form_flops(*long_args, backward=True) < quadratic_form_flops(
        *long_args, backward=True
    )
