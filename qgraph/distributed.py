"""Data-parallel training of compiled modules with ``torch.distributed``.

A compiled module is an ``nn.Module`` whose quantum layers (QRCE angles, circuit weights and
read-out projections) are ordinary parameters, so ``DistributedDataParallel`` reduces their
gradients like any other's; every rank runs its own op calls on its own slice of the batch
(QRCE deduplicates the tokens of that slice). What data parallelism adds for a hybrid model
is handled here:

* **Sampled backends draw different shots on each rank.** ``data_parallel`` reseeds the
  module's backend with ``rank_seed(seed, rank)``, so two ranks never draw the same samples
  and a run with the same seeds and world size is reproducible. It cannot equal a single
  process on the whole batch: the shots are drawn from other streams, in other splits.
* **FSDP is refused.** A compiled module's captured graphs hold the parameter tensors they
  were captured with; FSDP2's ``fully_shard`` replaces them with sharded DTensors and gathers
  new full tensors on each forward, which those graphs never read, so training would
  silently update nothing. ``refuse_sharded`` raises instead, before any step.
* **Every rank must run the same graph.** A module compiled with ``policy="auto"`` on ranks
  whose calibration differs, or with different seeds, would offload different sites or
  build different QRCE circuits; DDP would then reduce gradients of parameters that do not
  correspond. ``data_parallel`` compares a fingerprint of the compiled graph across ranks
  and refuses to wrap modules that differ.

Start ranks with ``torchrun``; ``docs/scale.md`` has the commands.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from qgraph.compiled import CompiledModule
from qgraph.errors import InputError
from qgraph.sharding import FSDP_MISSING, ShardingUnsupportedError, refuse_sharded

__all__ = [
    "STRATEGIES",
    "ShardingUnsupportedError",
    "data_parallel",
    "graph_fingerprint",
    "rank_seed",
    "refuse_sharded",
    "seed_for_rank",
]

logger = logging.getLogger(__name__)

#: how ``data_parallel`` can spread the module: replicate it (DDP); FSDP2 is refused, see above
STRATEGIES = ("ddp",)


#: backend → the seed it had before ``seed_for_rank`` first changed it
_BASE_SEEDS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of ``rank``'s sampled backend in a run seeded with ``seed``.

    Derived with NumPy's ``SeedSequence`` from the pair (seed, rank), so the ranks' streams
    are independent of each other and of a single-process run seeded ``seed + k``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"rank_seed: seed must be a non-negative int; got {seed!r}.")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise InputError(f"rank_seed: rank must be a non-negative int; got {rank!r}.")
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0] >> 1)


def seed_for_rank(backend: Any, rank: int) -> int | None:
    """Reseed a sampled ``backend`` for ``rank`` (``rank_seed`` of the seed it had when
    ``seed_for_rank`` first saw it) and return the new seed; exact backends draw nothing and
    are left alone (None).

    Calling it again, for the same or another rank, derives from that first seed, not from
    the rank's.
    """
    if backend.capabilities.exact:
        return None
    reseed = getattr(backend, "reseed", None)
    seed = getattr(backend, "seed", None)
    if reseed is None or not isinstance(seed, int):
        raise InputError(
            f"{backend!r} samples shots but has no integer seed and reseed(seed) method, so "
            "every rank would draw from the same stream. Give each rank its own instance, "
            "seeded with qgraph.distributed.rank_seed(seed, rank)."
        )
    base = _BASE_SEEDS.setdefault(backend, seed)
    derived = rank_seed(base, rank)
    reseed(derived)
    logger.info("rank %d: %r reseeded with %d (from seed %d)", rank, backend, derived, base)
    return derived


def graph_fingerprint(compiled: CompiledModule) -> str:
    """A hash of what must agree across ranks: the offloaded sites, their kernels and QRCE
    circuit structures, and every parameter's name and shape."""
    sites = sorted(compiled.report.quantum_sites, key=lambda site: site.key)
    parts = [f"{site.key}:{site.op}" for site in sites]
    parts += [
        f"{key}:{getattr(layer, 'structure', None)!r}"
        for key, layer in sorted(compiled.quantum_layers.items())
    ]
    parts += [f"{name}:{tuple(p.shape)}" for name, p in compiled.named_parameters()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _check_same_graph(compiled: CompiledModule, rank: int, world: int) -> None:
    prints: list[str | None] = [None] * world
    dist.all_gather_object(prints, graph_fingerprint(compiled))
    differing = [r for r, fingerprint in enumerate(prints) if fingerprint != prints[0]]
    if differing:
        raise InputError(
            f"rank {rank}: ranks {differing} compiled a different graph than rank 0 (other "
            "offloaded sites, QRCE circuits or parameter shapes), so their gradients cannot "
            "be averaged. Compile with the same model, example inputs, seed and options on "
            "every rank, and a fixed policy (policy='all' or a list) rather than 'auto' where "
            "ranks may calibrate differently."
        )


def data_parallel(
    compiled: nn.Module,
    strategy: Literal["ddp", "fsdp"] = "ddp",
    *,
    check_graph: bool = True,
    **wrapper_options: Any,
) -> nn.Module:
    """Wrap a compiled module for data-parallel training in the current process group.

    Args:
        compiled: what ``qgraph.compile`` returned, on this rank's device.
        strategy: ``"ddp"`` (``DistributedDataParallel``: replicas, gradients all-reduced);
            ``"fsdp"`` raises ``ShardingUnsupportedError`` saying why.
        check_graph: compare ``graph_fingerprint`` across ranks first (one all-gather).
        wrapper_options: passed to ``DistributedDataParallel`` (e.g. ``device_ids``).

    Returns:
        The DDP module; the backend was reseeded for this rank when it samples
        (``seed_for_rank``).
    """
    if not isinstance(compiled, CompiledModule):
        raise InputError(
            f"data_parallel wraps a qgraph CompiledModule (qgraph.compile(model, ...)); got "
            f"{type(compiled).__name__}. Wrap a plain module with DistributedDataParallel."
        )
    if strategy == "fsdp":
        raise ShardingUnsupportedError(FSDP_MISSING)
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r}; use one of {list(STRATEGIES)}.")
    if not (dist.is_available() and dist.is_initialized()):
        raise InputError(
            "data_parallel needs a process group: call torch.distributed.init_process_group("
            "'gloo' on CPU, 'nccl' on CUDA) first, in a process started by torchrun "
            "(torchrun --nproc-per-node 2 train.py), which sets RANK, WORLD_SIZE and "
            "MASTER_ADDR."
        )
    rank, world = dist.get_rank(), dist.get_world_size()
    if check_graph:
        _check_same_graph(compiled, rank, world)
    seed_for_rank(compiled.backend, rank)
    if torch.cuda.is_available() and "device_ids" not in wrapper_options:
        device = next(compiled.parameters()).device
        if device.type == "cuda":
            wrapper_options["device_ids"] = [device.index]
    return nn.parallel.DistributedDataParallel(compiled, **wrapper_options)
