"""The concurrent backward: each micro-batch's graph runs backward in its own worker thread.

The gradient reaching the merged outputs of the last run (and any parameter the loss uses
directly, e.g. a head on top) is computed first, on the calling thread; it is then split
along dim 0 and each micro-batch's slice runs backward in a worker, so the backward quantum
jobs (QRCE parameter shift, QAAP SPSA) of different micro-batches overlap.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.utils._pytree as pytree

from qgraph.backends import ExecutionRecord
from qgraph.scheduler.jobs import raw_bytes
from qgraph.scheduler.timeline import Timeline, TimelineEvent

__all__ = ["LastRun", "concurrent_backward", "record_backward"]


@dataclass
class LastRun:
    """What backward needs of the last forward step."""

    gm: fx.GraphModule
    raw: list[Any]  # each micro-batch's output-node value
    outputs: Any  # merged (before process_outputs)


def concurrent_backward(
    loss: torch.Tensor, last: LastRun | None, pool: Callable[[], cf.Executor]
) -> None:
    """``loss.backward()``, with the micro-batches of ``last`` run backward in ``pool()``.

    Plain ``loss.backward()`` when there is nothing to split: no last run, one micro-batch,
    or outputs that carry no gradient.
    """
    merged = [] if last is None else grad_leaves(last.outputs)
    if last is None or len(last.raw) == 1 or not merged:
        loss.backward()
    else:
        _parallel_backward(loss, last, merged, pool())


def _parallel_backward(
    loss: torch.Tensor, last: LastRun, merged: list[torch.Tensor], pool: cf.Executor
) -> None:
    stops = {t.grad_fn for t in merged}
    head = head_leaves(loss, stops)
    for t in merged:
        t.retain_grad()
    torch.autograd.backward(loss, inputs=[*head, *merged])
    per_batch: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = [([], []) for _ in last.raw]
    raw_leaves = [pytree.tree_flatten(r)[0] for r in last.raw]
    merged_leaves = pytree.tree_flatten(last.outputs)[0]
    for position, whole in enumerate(merged_leaves):
        if not any(whole is t for t in merged) or whole.grad is None:
            continue
        sizes = [leaves[position].shape[0] for leaves in raw_leaves]
        for m, piece in enumerate(whole.grad.split(sizes)):
            per_batch[m][0].append(raw_leaves[m][position])
            per_batch[m][1].append(piece)
        whole.grad = None
    futures = [
        pool.submit(_backward_worker, tensors, grads) for tensors, grads in per_batch if tensors
    ]
    # every micro-batch ends before an error propagates: one still running would add its
    # gradients after the caller restored them (HybridScheduler.backward is atomic)
    cf.wait(futures)
    for future in futures:
        future.result()


def _backward_worker(tensors: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    # grad mode is thread-local: a worker thread does not inherit the caller's
    with torch.set_grad_enabled(True):
        torch.autograd.backward(tensors, grads)


def grad_leaves(outputs: Any) -> list[torch.Tensor]:
    """The tensors among ``outputs`` that autograd reaches (those with a grad_fn)."""
    return [
        t
        for t in pytree.tree_flatten(outputs)[0]
        if isinstance(t, torch.Tensor) and t.grad_fn is not None
    ]


def head_leaves(loss: torch.Tensor, stops: set[Any]) -> list[torch.Tensor]:
    """Leaf tensors requiring grad that ``loss`` reaches without passing through ``stops``."""
    leaves: list[torch.Tensor] = []
    seen: set[Any] = set()
    stack = [loss.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen or fn in stops:
            continue
        seen.add(fn)
        variable = getattr(fn, "variable", None)
        if isinstance(variable, torch.Tensor):
            leaves.append(variable)
            continue
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return leaves


def record_backward(
    timeline: Timeline,
    start: float,
    end: float,
    thread: str,
    records: list[tuple[ExecutionRecord, str, float]],
    site_qubits: dict[str, int],
) -> None:
    """Add a backward pass to ``timeline``: one event for the pass, one per backend record
    (a failed attempt or a fallback too: its event counts it, not a job).

    ``records`` are (record, thread, perf_counter when it was appended); a backend appends a
    record when its job ends, so the job's event ends there and lasts the record's wall time.
    """
    origin = timeline.origin
    timeline.add(
        TimelineEvent(
            "backward",
            "backward",
            start - origin,
            end - origin,
            thread,
            phase="backward",
        )
    )
    for record, record_thread, at in records:
        shots = record.shots
        timeline.add(
            TimelineEvent(
                f"{record.kernel}:{record.site}",
                "quantum",
                at - record.wall_s - origin,
                at - origin,
                record_thread,
                site=record.site,
                phase="backward",
                queue_s=record.queue_s,
                run_s=None if record.queue_s is None else max(record.wall_s - record.queue_s, 0.0),
                jobs=int(record.outcome == "done"),
                circuits=record.circuits,
                shots=shots,
                bytes_received=record.bytes_received,
                raw_shot_bytes=raw_bytes([record], shots, site_qubits.get(record.site, 0)),
                retries=int(record.outcome == "retried"),
                timeouts=int(record.timed_out),
                fallbacks=int(record.outcome == "fallback"),
            )
        )
    timeline.backward_s += end - start
