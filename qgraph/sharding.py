"""FSDP and compiled modules: why they do not mix, and the check that says so.

A compiled module's captured graphs hold the parameter tensors they were captured with;
FSDP2's ``fully_shard`` replaces them with sharded DTensors and gathers new full tensors on
each forward, which those graphs never read, so training would silently update nothing.
``CompiledModule`` calls ``refuse_sharded`` on every call (a type check on the module itself).
"""

from __future__ import annotations

from torch import nn
from torch.distributed.fsdp import FSDPModule

from qgraph.errors import InputError

__all__ = ["FSDP_MISSING", "ShardingUnsupportedError", "refuse_sharded"]


class ShardingUnsupportedError(InputError, NotImplementedError):
    """FSDP was asked to shard a compiled module."""


def refuse_sharded(compiled: nn.Module) -> None:
    """Raise ``ShardingUnsupportedError`` if FSDP2 sharded ``compiled``.

    Only the module itself is looked at (FSDP2's usual pattern shards the blocks, then the
    root): walking every submodule on every call would cost more than the check is worth.
    """
    if isinstance(compiled, FSDPModule):
        raise ShardingUnsupportedError(FSDP_MISSING)


FSDP_MISSING = (
    "FSDP (fully_shard) cannot train a qgraph compiled module: its captured graphs "
    "hold the parameters they were captured with, while FSDP swaps them for sharded "
    "DTensors and gathers new tensors each forward, which those graphs never read, so "
    "no parameter would be updated. What is missing is a graph that reads its "
    "parameters from the module at every call. Use qgraph.data_parallel(compiled) "
    "(DistributedDataParallel) instead."
)
