"""Splitting a call into micro-batches along dim 0, and concatenating their outputs."""

from __future__ import annotations

from typing import Any

import torch
import torch.utils._pytree as pytree

__all__ = ["merge", "split"]

Call = tuple[tuple[Any, ...], dict[str, Any]]


def split(args: tuple[Any, ...], kwargs: dict[str, Any], k: int) -> list[Call]:
    """The call ``(args, kwargs)`` as ``k`` calls on slices of the batch.

    The batch size is dim 0 of the first tensor input; every tensor input with that dim 0 is
    sliced, everything else goes to each slice as is. Raises ValueError when ``k`` does not
    divide the batch or no input has a batch dimension.
    """
    if k == 1:
        return [(args, kwargs)]
    leaves, spec = pytree.tree_flatten((args, kwargs))
    batched = [x for x in leaves if isinstance(x, torch.Tensor) and x.dim() >= 1]
    if not batched:
        raise ValueError(
            f"microbatches={k} splits the inputs along dim 0, but no input is a tensor with "
            "a batch dimension."
        )
    batch = batched[0].shape[0]
    if batch % k:
        divisors = [d for d in range(1, batch + 1) if batch % d == 0]
        raise ValueError(
            f"microbatches={k} does not divide the batch size {batch} (dim 0 of the first "
            f"tensor input, shape {tuple(batched[0].shape)}); use one of {divisors}."
        )
    size = batch // k
    pieces = []
    for m in range(k):
        sliced = [
            x[m * size : (m + 1) * size]
            if isinstance(x, torch.Tensor) and x.dim() >= 1 and x.shape[0] == batch
            else x
            for x in leaves
        ]
        sub_args, sub_kwargs = pytree.tree_unflatten(sliced, spec)
        pieces.append((tuple(sub_args), dict(sub_kwargs)))
    return pieces


def merge(results: list[Any]) -> Any:
    """The micro-batches' outputs as one: tensors concatenated along dim 0, anything else
    taken from the first. Raises ValueError for a 0-d tensor output (not batch-major)."""
    if len(results) == 1:
        return results[0]
    flats = [pytree.tree_flatten(r) for r in results]
    spec = flats[0][1]
    merged = []
    for position, leaves in enumerate(zip(*(f[0] for f in flats), strict=True)):
        first = leaves[0]
        if isinstance(first, torch.Tensor):
            if first.dim() == 0:
                raise ValueError(
                    f"output {position} is a 0-d tensor per micro-batch (a reduction over "
                    "the batch?); micro-batched outputs must be batch-major. Reduce after "
                    "run(), or use microbatches=1."
                )
            merged.append(torch.cat(leaves, dim=0))
        else:
            merged.append(first)
    return pytree.tree_unflatten(merged, spec)
