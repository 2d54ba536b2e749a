"""SPSA: a gradient estimate from two extra forward evaluations, for sampled backends.

For a function f of inputs x (any number of tensors) and an upstream gradient g, draw one
Rademacher direction Δ (±1 in every entry of every input) and estimate the vector-Jacobian
product as

    ĝ_x = [⟨g, f(x + cΔ)⟩ − ⟨g, f(x − cΔ)⟩] / (2c) · Δ_x

which is unbiased up to O(c²) for smooth f (Spall 1992). Its variance grows with the number
of inputs: that is the price of needing only two evaluations, whatever the dimension.
The directions come from torch's global generator (``torch.manual_seed`` reproduces them),
not from the backend's seed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: perturbation size c, relative to each input's mean absolute value
DEFAULT_RELATIVE_STEP = 1e-2

Inputs = tuple[torch.Tensor, ...]


def spsa_vjp(
    evaluate_pair: Callable[[Inputs, Inputs], tuple[torch.Tensor, torch.Tensor]],
    inputs: Inputs,
    grad_out: torch.Tensor,
    relative_step: float = DEFAULT_RELATIVE_STEP,
    generator: torch.Generator | None = None,
) -> Inputs:
    """The SPSA estimate of the VJP of f at ``inputs``.

    ``evaluate_pair(plus, minus)`` returns (f(plus), f(minus)); a backend evaluates both in
    one job. Each input gets its own step c = relative_step · mean|x| (so the perturbation is
    small on every scale), and the estimate is divided accordingly.
    """
    directions = [
        torch.randint(0, 2, x.shape, generator=generator).to(x.device, x.dtype) * 2 - 1
        for x in inputs
    ]
    steps = [relative_step * float(x.detach().abs().mean().clamp_min(1e-6)) for x in inputs]
    plus = tuple(x + c * d for x, c, d in zip(inputs, steps, directions, strict=True))
    minus = tuple(x - c * d for x, c, d in zip(inputs, steps, directions, strict=True))
    f_plus, f_minus = evaluate_pair(plus, minus)
    # ⟨g, f(x+cΔ) − f(x−cΔ)⟩ ≈ 2 Σ_x c_x ⟨∇_x, Δ_x⟩, and E[Δ_y Δ_xᵀ] = 0 for x ≠ y, I for
    # x = y, so change / (2 c_y) · Δ_y is unbiased for ∇_y.
    change = float((grad_out.to(f_plus.dtype) * (f_plus - f_minus)).sum())
    return tuple(change / (2.0 * c) * d for c, d in zip(steps, directions, strict=True))
