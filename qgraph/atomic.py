"""Training steps that fail as a whole: no partial gradients after a failed backward.

Autograd adds each parameter's gradient into ``.grad`` as soon as it is computed, so a
backward that fails part-way (a quantum job that fails for good inside the QRCE gradient)
leaves some parameters with this step's gradient added and others without; the next
``optimizer.step()`` would apply that half-step. ``atomic_backward`` keeps a copy of every
gradient and puts it back when the backward fails, so the step can be retried as a whole.
``HybridScheduler.backward`` does the same, and ``AtomicTrainingStep`` brings it (with step
retries) to a Hugging Face ``Trainer``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from qgraph.backends.job_policy import JobFailedError

__all__ = ["AtomicTrainingStep", "atomic_backward", "grads_restored_on_error"]


@contextlib.contextmanager
def grads_restored_on_error(module: nn.Module) -> Iterator[None]:
    """Within the block, an error puts back the ``.grad`` every parameter of ``module`` had
    when it began (None stays None) before it propagates."""
    parameters = [p for p in module.parameters() if p.requires_grad]
    saved = [None if p.grad is None else p.grad.detach().clone() for p in parameters]
    try:
        yield
    except BaseException:
        for parameter, grad in zip(parameters, saved, strict=True):
            parameter.grad = grad
        raise


def atomic_backward(loss: torch.Tensor, module: nn.Module) -> None:
    """``loss.backward()``; if it raises, every parameter of ``module`` gets back the
    ``.grad`` it had before (None stays None), and the error propagates.

    Costs one copy of the existing gradients (none on a step after ``zero_grad(set_to_none=
    True)``, the default). The optimizer state is untouched either way: call
    ``optimizer.step()`` only after this returns.
    """
    with grads_restored_on_error(module):
        loss.backward()


class AtomicTrainingStep:
    """Mix into a ``transformers.Trainer`` (``class MyTrainer(AtomicTrainingStep, Trainer)``):
    a training step (forward and backward of one batch) whose quantum job fails for good
    (``JobFailedError``) leaves no partial gradients and runs again, up to ``step_retries``
    times; then the error propagates, still with no partial gradients. The optimizer only
    steps after a complete step, so its state never sees a failed one.
    """

    step_retries: int = 2
    failed_steps: int = 0  # steps that failed and ran again, over the trainer's life

    def training_step(self, model: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        """``Trainer.training_step``, atomic and retried (see the class)."""
        attempt = 0
        while True:
            try:
                with grads_restored_on_error(model):
                    step: torch.Tensor = super().training_step(model, *args, **kwargs)  # type: ignore[misc]
                    return step
            except JobFailedError:
                if attempt >= self.step_retries:
                    raise
                attempt += 1
                self.failed_steps += 1
