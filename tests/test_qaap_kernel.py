"""The QAAP closed form: the weights it must give, masks, fallbacks, GQA, dropout, dtypes."""

from __future__ import annotations

import pytest
import torch

from qgraph.kernels.qaap import expand_kv_heads, keep_mask, qaap_attention, qaap_weights


def _reference_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(q̂·k_j)² / Σ_l (q̂·k_l)² written out with loops."""
    out = torch.empty(q.shape[0], k.shape[0], dtype=torch.float64)
    for i in range(q.shape[0]):
        q_hat = q[i] / q[i].norm()
        scores = torch.stack([(q_hat @ k[j]) ** 2 for j in range(k.shape[0])])
        out[i] = scores / scores.sum()
    return out


def test_weights_are_normalised_squared_cosines() -> None:
    q, k = torch.randn(5, 4, dtype=torch.float64), torch.randn(7, 4, dtype=torch.float64)
    weights, fallback, empty = qaap_weights(q, k, None)
    torch.testing.assert_close(weights, _reference_weights(q, k), rtol=1e-12, atol=1e-12)
    assert not fallback.any() and not empty.any()


def test_weights_ignore_the_scale_of_q() -> None:
    q, k = torch.randn(3, 4), torch.randn(6, 4)
    torch.testing.assert_close(qaap_weights(q, k, None)[0], qaap_weights(7.5 * q, k, None)[0])


def test_masked_keys_get_zero_weight_and_rows_renormalise() -> None:
    q, k = torch.randn(4, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    keep = torch.tensor([True, True, False, True, False, True])
    weights, _, _ = qaap_weights(q, k, keep)
    assert torch.all(weights[:, ~keep] == 0)
    torch.testing.assert_close(weights[:, keep], _reference_weights(q, k[keep]))


def test_causal_mask_is_sdpa_lower_triangle() -> None:
    keep = keep_mask(None, True, 3, 3, torch.device("cpu"))
    assert keep is not None
    assert torch.equal(keep, torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))


def test_additive_mask_threshold() -> None:
    additive = torch.tensor([0.0, -3.4e38, -10000.0, 0.0])
    keep = keep_mask(additive, False, 1, 4, torch.device("cpu"))
    assert keep is not None and keep.tolist() == [True, False, False, True]


def test_zero_norm_query_falls_back_to_uniform_and_is_counted() -> None:
    q = torch.zeros(1, 1, 2, 4)
    q[0, 0, 1] = 1.0
    k, v = torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 3)
    keep = torch.tensor([True, True, True, False, False])
    out, counts = qaap_attention(q, k, v, keep)
    torch.testing.assert_close(out[0, 0, 0], v[0, 0, :3].mean(dim=0))
    assert counts.fallback_rows == 1 and counts.empty_rows == 0


def test_fully_masked_rows_give_zero_and_are_counted() -> None:
    q, k, v = torch.randn(1, 1, 2, 4), torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 2)
    keep = torch.tensor([[True, False, True], [False, False, False]])
    out, counts = qaap_attention(q, k, v, keep)
    assert torch.all(out[0, 0, 1] == 0) and counts.empty_rows == 1


def test_fallback_rows_have_finite_gradients() -> None:
    q = torch.zeros(1, 1, 1, 4, requires_grad=True)
    k = torch.randn(1, 1, 3, 4, requires_grad=True)
    v = torch.randn(1, 1, 3, 2, requires_grad=True)
    out, _ = qaap_attention(q, k, v)
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_grouped_query_attention_equals_explicit_repeat() -> None:
    q = torch.randn(2, 4, 5, 8)
    k, v = torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    grouped, _ = qaap_attention(q, k, v)
    explicit, _ = qaap_attention(q, k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1))
    torch.testing.assert_close(grouped, explicit)
    with pytest.raises(ValueError, match="multiple of the kv heads"):
        expand_kv_heads(torch.randn(1, 3, 2, 2), 4)


def test_dropout_keep_mask_scales_kept_weights() -> None:
    q, k, v = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4), torch.eye(3).view(1, 1, 3, 3)
    weights, _, _ = qaap_weights(q, k, None)
    drop = torch.tensor([[[[True, False, True]] * 3]])
    out, _ = qaap_attention(q, k, v, dropout_keep=drop, dropout_p=0.25)
    torch.testing.assert_close(out, weights * drop / 0.75)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_compute_in_float32(dtype: torch.dtype) -> None:
    q, k, v = (torch.randn(2, 2, 6, 8) for _ in range(3))
    reference, _ = qaap_attention(q, k, v)
    low, _ = qaap_attention(q.to(dtype), k.to(dtype), v.to(dtype))
    assert low.dtype == dtype
    # Inputs rounded to 8 (bf16) or 11 (fp16) mantissa bits, output rounded once more.
    tolerance = 3e-2 if dtype == torch.bfloat16 else 4e-3
    torch.testing.assert_close(low.float(), reference, rtol=tolerance, atol=tolerance)


def test_register_widths_follow_one_rule_everywhere() -> None:
    from qgraph.circuits.qaap import qaap_registers
    from qgraph.costmodel.resources import qaap_shape
    from qgraph.kernels.qaap import qaap_register_sizes
    from qgraph.scheduler import _qaap_qubits

    # (keys, head_dim) -> (index, feature) qubits
    expected = {
        (1, 1): (1, 1),
        (2, 4): (1, 2),
        (3, 5): (2, 3),
        (5, 64): (3, 6),
        (1024, 65): (10, 7),
    }
    for (keys, dim), widths in expected.items():
        assert qaap_register_sizes(keys, dim) == widths
        registers = qaap_registers(keys, dim)
        assert (registers.index_qubits, registers.feature_qubits) == widths
        assert qaap_shape(keys, dim) == widths
        # the scheduler's timeline counted 0 index qubits for a single key
        assert _qaap_qubits(torch.zeros(1, 1, 1, dim), torch.zeros(1, 1, keys, dim)) == sum(widths)
