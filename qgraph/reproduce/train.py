"""Training one arm with one seed: AdamW, linear warm-up and decay, clipping, evaluation each
epoch, metrics as JSON lines while it runs, checkpoints, and resume after a kill.

A resumed run ends with the same metrics as an uninterrupted one on the exact backend: the
checkpoint holds the trainable state, the optimiser and schedule, the step, and the random
states (dropout), and the batch order is a function of (seed, epoch).

Under ``torchrun`` (a process group of more than one rank) an arm trains data-parallel: each
rank takes its share of every global batch, the module is wrapped by
``qgraph.data_parallel`` (or DDP for the classical arms), and each rank's loss is weighted
by its share of the rows, so the averaged gradient is that of the global batch's mean loss
even when the batch does not split evenly. Rank 0 evaluates, logs, checkpoints and writes
the result; every rank reads the checkpoint on resume. ``qgraph reproduce --nproc N`` starts
the ranks (docs/scale.md).
"""

from __future__ import annotations

import json
import math
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

import qgraph
from qgraph.backends.exact import ExactBackend
from qgraph.backends.shots import ShotsBackend
from qgraph.data import batches
from qgraph.models import minilm_path
from qgraph.reproduce.arms import Arm, use_low_rank_table
from qgraph.reproduce.distill import distill
from qgraph.reproduce.presets import Preset

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
RESULT = "result.json"


@dataclass
class EncodedData:
    """Token ids and labels of the train and dev splits."""

    train_ids: list[list[int]]
    train_labels: list[int]
    dev_ids: list[list[int]]
    dev_labels: list[int]
    vocab_size: int
    num_labels: int
    pad_id: int = 0
    source: str = ""


@dataclass
class ArmRun:
    """What training one arm with one seed measured."""

    arm: str
    seed: int
    accuracy: list[float] = field(default_factory=list)  # dev accuracy after each epoch
    steps: int = 0
    step_s: list[float] = field(default_factory=list)  # wall time of each training step
    train_wall_s: float = 0.0
    parameters: int = 0
    quantum_calls: int = 0
    captures: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The figures results.json keeps for this run."""
        return {
            "arm": self.arm,
            "seed": self.seed,
            "final_accuracy": self.accuracy[-1] if self.accuracy else None,
            "best_accuracy": max(self.accuracy) if self.accuracy else None,
            "accuracy_per_epoch": self.accuracy,
            "steps": self.steps,
            "median_step_s": statistics.median(self.step_s) if self.step_s else None,
            "train_wall_s": self.train_wall_s,
            "parameters": self.parameters,
            "quantum_calls": self.quantum_calls,
            "captures": self.captures,
            "notes": self.notes,
        }


def build_model(preset: Preset, data: EncodedData, seed: int) -> nn.Module:
    """The classifier every arm starts from (the same weights for the same seed)."""
    import transformers

    torch.manual_seed(seed)
    if preset.pretrained:
        return transformers.AutoModelForSequenceClassification.from_pretrained(
            minilm_path(), num_labels=data.num_labels
        )
    config = transformers.BertConfig(
        vocab_size=data.vocab_size,
        hidden_size=preset.hidden,
        num_hidden_layers=preset.layers,
        num_attention_heads=preset.heads,
        intermediate_size=preset.ff,
        max_position_embeddings=max(512, preset.max_length),
        pad_token_id=data.pad_id,
    )
    config.num_labels = data.num_labels
    return transformers.BertForSequenceClassification(config)


def build_arm(
    arm: Arm, preset: Preset, data: EncodedData, seed: int, device: str
) -> tuple[nn.Module, list[str]]:
    """The module an arm trains, and notes on how it was built."""
    model = build_model(preset, data, seed).to(device)
    notes: list[str] = []
    if arm.low_rank_control:
        rank = use_low_rank_table(model, preset.qrce_qubits, preset.qrce_layers)
        notes.append(f"word table replaced by a rank-{rank} table + Linear({rank}, d)")
        model.to(device)
    if arm.compile_options is None:
        return model, notes

    backend = ShotsBackend(shots=preset.shots, seed=seed) if arm.shots else ExactBackend()
    example = next(batches(data.train_ids[:2], data.train_labels[:2], 2, shuffle=False))
    compiled = qgraph.compile(
        model,
        (),
        {
            "input_ids": example["input_ids"].to(device),
            "attention_mask": example["attention_mask"].to(device),
        },
        backend=backend,
        qrce_qubits=preset.qrce_qubits,
        qrce_layers=preset.qrce_layers,
        seed=seed,
        max_captures=32,
        **arm.compile_options,
    )
    sites = compiled.report.quantum_sites
    notes.append(
        f"{len(sites)} quantum site(s): "
        + ", ".join(sorted({f"{s.op} ×{sum(t.op == s.op for t in sites)}" for s in sites}))
    )
    return compiled, notes


def trainable_state(module: nn.Module) -> dict[str, Any]:
    """The state to checkpoint: the model's, and the quantum layers' of a compiled module."""
    if isinstance(module, qgraph.CompiledModule):
        return {
            "model": module.model.state_dict(),
            "quantum_layers": {k: v.state_dict() for k, v in module.quantum_layers.items()},
        }
    return {"model": module.state_dict()}


def load_trainable_state(module: nn.Module, state: dict[str, Any]) -> None:
    """Load what ``trainable_state`` returned."""
    if isinstance(module, qgraph.CompiledModule):
        module.model.load_state_dict(state["model"])
        for key, layer_state in state["quantum_layers"].items():
            module.quantum_layers[key].load_state_dict(layer_state)
    else:
        module.load_state_dict(state["model"])


def _is_token_table(name: str) -> bool:
    """Parameters that hold per-token values: the word table, QRCE's angles and circuit
    weights, the low-rank control's table."""
    return any(
        key in name
        for key in ("word_embeddings.weight", ".angles", ".weights", "word_embeddings.table")
    )


#: the initial scale the presets' learning rates are tuned for: BERT's initializer_range
REFERENCE_SCALE = 0.02


def parameter_groups(module: nn.Module, preset: Preset) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and LayerNorm, and the learning rate of each
    per-token parameter scaled to its size.

    Adam moves every parameter by about ``lr`` per step whatever its size, so a table
    initialised at std 0.02 (BERT's word table) and QRCE's angles (radians, RMS near 1) do
    not learn at the same relative speed under one learning rate; at one rate the QRCE arms
    stayed at chance (docs/reproduce.md, the study). ``token_lr_scale=None`` gives each
    per-token parameter, in every arm alike, ``lr × RMS(initial value) / 0.02``, so the
    classical table keeps ``lr``; a number fixes the factor instead.
    """
    groups: list[dict[str, Any]] = []
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        decay = parameter.ndim >= 2 and "LayerNorm" not in name
        factor = 1.0
        if _is_token_table(name):
            factor = preset.token_lr_scale or max(
                1.0, float(parameter.detach().float().square().mean().sqrt()) / REFERENCE_SCALE
            )
        groups.append(
            {
                "params": [parameter],
                "weight_decay": preset.weight_decay if decay else 0.0,
                "lr": preset.lr * factor,
                "name": name,
            }
        )
    return groups


def _linear_schedule(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def evaluate(module: nn.Module, data: EncodedData, preset: Preset, device: str) -> float:
    """Accuracy on the dev split."""
    was_training = module.training
    module.eval()
    correct = 0
    for batch in batches(
        data.dev_ids, data.dev_labels, preset.eval_batch_size, shuffle=False, pad_id=data.pad_id
    ):
        logits = module(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
        ).logits
        correct += int((logits.argmax(dim=-1).cpu() == batch["labels"]).sum())
    module.train(was_training)
    return correct / len(data.dev_labels)


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    partial = path.with_suffix(".partial")
    torch.save(payload, partial)
    partial.replace(path)  # a kill mid-write leaves the previous checkpoint whole


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the process group, (0, 1) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _data_parallel(module: nn.Module, world: int) -> nn.Module:
    """The module the training steps call: ``module`` itself, or its data-parallel wrapper."""
    if world == 1:
        return module
    if isinstance(module, qgraph.CompiledModule):
        return qgraph.data_parallel(module)
    return nn.parallel.DistributedDataParallel(module)


def _my_rows(batch: dict[str, torch.Tensor], rank: int, world: int) -> tuple[slice, float]:
    """This rank's rows of a global batch and the weight of its mean loss: its share of the
    rows × world, so the ranks' averaged gradients are the global mean loss's. A batch with
    fewer rows than ranks is given whole to every rank (weight 1: the same gradient)."""
    rows = len(batch["labels"])
    if rows < world:
        return slice(0, rows), 1.0
    start, stop = rows * rank // world, rows * (rank + 1) // world
    return slice(start, stop), (stop - start) * world / rows


def _quantum_calls(module: nn.Module) -> int:
    if not isinstance(module, qgraph.CompiledModule):
        return 0
    return sum(c.calls for c in module.backend.stats.per_site.values())


def train_arm(
    arm: Arm,
    preset: Preset,
    data: EncodedData,
    seed: int,
    folder: Path,
    *,
    resume: bool = False,
    device: str = "cpu",
    progress: bool = True,
    stop_after: int | None = None,
) -> ArmRun:
    """Train one arm with one seed in ``folder`` (metrics, checkpoint, result).

    ``stop_after`` stops (as a kill would) after that many steps of this call, leaving the
    checkpoint of the last ``checkpoint_every`` boundary: the tests resume from it.
    """

    rank, world = rank_and_world()
    lead = rank == 0  # the rank that evaluates, logs, checkpoints and writes the result
    folder.mkdir(parents=True, exist_ok=True)
    module, notes = build_arm(arm, preset, data, seed, device)
    module.train()
    if world > 1:
        notes.append(f"data-parallel over {world} ranks (rank 0's figures)")
    run = ArmRun(arm.name, seed, notes=notes)
    run.parameters = sum(p.numel() for p in module.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW(parameter_groups(module, preset), lr=preset.lr)
    steps_per_epoch = math.ceil(len(data.train_ids) / preset.batch_size)
    total_steps = steps_per_epoch * preset.epochs
    scheduler = _linear_schedule(optimizer, max(1, int(preset.warmup * total_steps)), total_steps)

    step, wall = 0, 0.0
    metrics_path, checkpoint_path = folder / METRICS, folder / CHECKPOINT

    def log(record: dict[str, Any]) -> None:
        if not lead:
            return
        with metrics_path.open("a") as handle:
            handle.write(json.dumps({"arm": arm.name, "seed": seed, **record}) + "\n")

    if resume and checkpoint_path.is_file():
        saved = torch.load(checkpoint_path, weights_only=False)
        load_trainable_state(module, saved["state"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"]["torch"])
        random.setstate(saved["rng"]["python"])
        step, wall = saved["step"], saved["wall_s"]
        run.accuracy, run.step_s = saved["accuracy"], saved["step_s"]
        if lead:
            lines = metrics_path.read_text().splitlines()[: saved["metric_lines"]]
            metrics_path.write_text("".join(line + "\n" for line in lines))
        run.notes.append(f"resumed at step {step}")
    else:
        if lead:
            metrics_path.write_text("")
        torch.manual_seed(seed)
        if preset.distill_steps and arm.compile_options is not None:
            teacher = build_model(preset, data, seed).to(device)
            summary = distill(
                module,
                teacher,
                data,
                preset,
                seed,
                parameter_groups(module, preset),
                device,
                log=log,
            )
            run.notes.append(
                f"distilled from the classical model for {preset.distill_steps} steps "
                f"(hidden-state loss {summary['first_loss']:.3f} → {summary['last_loss']:.3f}, "
                f"{summary['wall_s']:.0f} s, not counted in the training time)"
            )
            torch.manual_seed(seed)

    def checkpoint() -> None:
        if not lead:
            return
        _save_checkpoint(
            checkpoint_path,
            {
                "state": trainable_state(module),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
                "step": step,
                "wall_s": wall,
                "accuracy": run.accuracy,
                "step_s": run.step_s,
                "metric_lines": len(metrics_path.read_text().splitlines()),
            },
        )

    # wrapped after any resume or distillation changed the parameters: DDP starts every rank
    # from rank 0's
    stepped = _data_parallel(module, world)
    bar = tqdm(
        total=total_steps,
        initial=step,
        desc=f"{arm.name} seed {seed}",
        disable=not progress or not lead,
        leave=False,
    )
    taken = 0
    for epoch in range(step // steps_per_epoch, preset.epochs):
        order = batches(
            data.train_ids,
            data.train_labels,
            preset.batch_size,
            seed=seed * 1_000 + epoch,
            pad_id=data.pad_id,
        )
        for position, batch in enumerate(order):
            if epoch * steps_per_epoch + position < step:
                continue  # consumed before the checkpoint this run resumed from
            if stop_after is not None and taken >= stop_after:
                bar.close()
                return run
            start = time.perf_counter()
            rows, weight = _my_rows(batch, rank, world)
            output = stepped(
                input_ids=batch["input_ids"][rows].to(device),
                attention_mask=batch["attention_mask"][rows].to(device),
                labels=batch["labels"][rows].to(device),
            )
            optimizer.zero_grad(set_to_none=True)
            (output.loss * weight).backward()  # weight 1.0 outside data parallelism
            torch.nn.utils.clip_grad_norm_(module.parameters(), preset.clip)
            optimizer.step()
            scheduler.step()
            elapsed = time.perf_counter() - start
            step, taken, wall = step + 1, taken + 1, wall + elapsed
            run.step_s.append(elapsed)
            loss = float(output.loss.detach())
            bar.update(1)
            bar.set_postfix(
                loss=f"{loss:.3f}",
                acc=f"{run.accuracy[-1]:.3f}" if run.accuracy else "-",
                ex_s=f"{len(batch['labels']) / elapsed:.0f}",
            )
            if step % preset.log_every == 0:
                log(
                    {
                        "kind": "train",
                        "step": step,
                        "epoch": epoch,
                        "loss": loss,
                        "lr": scheduler.get_last_lr()[0],
                        "step_s": elapsed,
                        "wall_s": wall,
                    }
                )
            if step % steps_per_epoch == 0 and lead:
                run.accuracy.append(evaluate(module, data, preset, device))
                log(
                    {
                        "kind": "eval",
                        "step": step,
                        "epoch": epoch,
                        "accuracy": run.accuracy[-1],
                        "wall_s": wall,
                    }
                )
            if step % preset.checkpoint_every == 0 or step % steps_per_epoch == 0:
                checkpoint()
    bar.close()
    run.steps, run.train_wall_s = step, wall
    run.quantum_calls = _quantum_calls(module)
    if isinstance(module, qgraph.CompiledModule):
        run.captures = len(module.captures)
    if lead:
        (folder / RESULT).write_text(json.dumps(run.summary(), indent=2) + "\n")
    return run
