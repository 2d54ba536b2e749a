"""Distillation of a quantum arm from the classical model it was compiled from.

When QAAP replaces the attention of a pretrained model and QRCE its word table, every layer
starts computing something else than the weights around it were trained for. Before
fine-tuning, a few hundred steps on unlabelled training sentences pull each layer's output
back towards the original's: the loss is the mean over the embedding output and every
layer's hidden states of ‖student − teacher‖² / ‖teacher‖² over real (unpadded) tokens. The
teacher is the arm's own starting model, frozen; the classification head gets no gradient.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from qgraph.data import batches
from qgraph.reproduce.presets import Preset


def hidden_state_loss(
    student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...], mask: torch.Tensor
) -> torch.Tensor:
    """Mean over layers of the relative squared error of the real tokens' hidden states."""
    if len(student) != len(teacher):
        raise ValueError(
            f"distillation needs the same number of hidden states from student and teacher; "
            f"got {len(student)} and {len(teacher)}."
        )
    keep = mask.unsqueeze(-1).to(student[0].dtype)
    losses = [
        ((s - t) * keep).square().sum() / (t * keep).square().sum().clamp_min(1e-12)
        for s, t in zip(student, teacher, strict=True)
    ]
    return torch.stack(losses).mean()


def distill(
    student: nn.Module,
    teacher: nn.Module,
    data: Any,
    preset: Preset,
    seed: int,
    groups: list[dict[str, Any]],
    device: str = "cpu",
    log: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, float]:
    """``preset.distill_steps`` AdamW steps of hidden-state distillation (module doc).

    ``groups`` are the optimiser's parameter groups (the arm's own, with their rates); the
    schedule is linear warm-up over the first tenth, then linear decay. Returns the first
    and last logged loss and the wall time.
    """
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    optimizer = torch.optim.AdamW(groups, lr=preset.lr)
    total = preset.distill_steps
    warmup = max(1, total // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (step + 1) / warmup if step < warmup else max(0.0, (total - step) / total),
    )
    losses: list[float] = []
    start, step, epoch = time.perf_counter(), 0, 0
    while step < total:
        order = batches(
            data.train_ids,
            data.train_labels,
            preset.batch_size,
            seed=seed * 1_000 + 500 + epoch,  # not the fine-tuning order
            pad_id=data.pad_id,
        )
        for batch in order:
            if step >= total:
                break
            ids = batch["input_ids"].to(device)
            mask = batch["attention_mask"].to(device)
            with torch.no_grad():
                target = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            output = student(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            loss = hidden_state_loss(output.hidden_states, target.hidden_states, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), preset.clip)
            optimizer.step()
            schedule.step()
            step += 1
            losses.append(float(loss.detach()))
            if log is not None and step % preset.log_every == 0:
                log({"kind": "distill", "step": step, "loss": losses[-1]})
        epoch += 1
    return {
        "first_loss": losses[0],
        "last_loss": statistics_mean_tail(losses),
        "wall_s": time.perf_counter() - start,
    }


def statistics_mean_tail(values: list[float], tail: int = 10) -> float:
    """Mean of the last ``tail`` values (single steps are noisy)."""
    chosen = values[-tail:]
    return sum(chosen) / len(chosen)
