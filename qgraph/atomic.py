"""Training steps that fail as a whole: no partial gradients after a failed backward.

Autograd adds each parameter's gradient into ``.grad`` as soon as it is computed, so a
backward that fails part-way (a quantum job that fails for good inside the QRCE gradient)
leaves some parameters with this step's gradient added and others without; the next
``optimizer.step()`` would apply that half-step. ``atomic_backward`` keeps a copy of every
gradient and puts it back when the backward fails, so the step can be retried as a whole.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["atomic_backward"]


def atomic_backward(loss: torch.Tensor, module: nn.Module) -> None:
    """``loss.backward()``; if it raises, every parameter of ``module`` gets back the
    ``.grad`` it had before (None stays None), and the error propagates.

    Costs one copy of the existing gradients (none on a step after ``zero_grad(set_to_none=
    True)``, the default). The optimizer state is untouched either way: call
    ``optimizer.step()`` only after this returns.
    """
    parameters = [p for p in module.parameters() if p.requires_grad]
    saved = [None if p.grad is None else p.grad.detach().clone() for p in parameters]
    try:
        loss.backward()
    except BaseException:
        for parameter, grad in zip(parameters, saved, strict=True):
            parameter.grad = grad
        raise
