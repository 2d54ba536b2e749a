"""QRCE rows shared between the micro-batches of a step and kept across steps.

Outside autograd a QRCE node's output is a pure function of its token ids and its site's
parameters, so rows computed for one micro-batch serve the others (``StepRows``), and rows
of one step serve the next while the parameters are unchanged (``QRCECache``). The cache is
keyed by site and checked against the parameters' version counters, which every in-place
update (each optimizer step) increments, and against a snapshot of their values, since
edits through ``.data`` bypass the counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx as fx

__all__ = ["CacheEntry", "Chunk", "QRCECache", "StepRows", "StepSite", "Waiter", "assemble"]


@dataclass
class Chunk:
    """QRCE rows for a set of token ids: ready, or being computed by a job."""

    ids: torch.Tensor  # sorted distinct ids
    rows: torch.Tensor | None = None
    waiters: list[Waiter] = field(default_factory=list)


@dataclass
class Waiter:
    """A QRCE node waiting for chunks computed by jobs."""

    microbatch: int
    node: fx.Node
    token_ids: torch.Tensor
    chunks: list[Chunk]
    tokens: tuple[int, int, int] = (0, 0, 0)  # total, unique, computed
    own_job: bool = False

    @property
    def ready(self) -> bool:
        """Whether every chunk the node needs has its rows."""
        return all(c.rows is not None for c in self.chunks)


@dataclass
class StepSite:
    """A QRCE site's parameters and rows within one step."""

    angles: torch.Tensor
    weights: torch.Tensor
    chunks: list[Chunk] = field(default_factory=list)


@dataclass
class CacheEntry:
    """QRCE rows kept across steps while the site's parameters are unchanged."""

    versions: tuple[int, int, int, int]
    angles: torch.Tensor
    weights: torch.Tensor
    chunk: Chunk


def versions(angles: torch.Tensor, weights: torch.Tensor) -> tuple[int, int, int, int]:
    """The parameters' version counters and storages: any in-place update changes them."""
    return (angles._version, weights._version, angles.data_ptr(), weights.data_ptr())


class QRCECache:
    """QRCE rows per site, kept across steps while the site's parameters are unchanged."""

    def __init__(self) -> None:
        self._entries: dict[str, CacheEntry] = {}

    def clear(self) -> None:
        """Forget every site's rows."""
        self._entries.clear()

    def lookup(self, site: str, angles: torch.Tensor, weights: torch.Tensor) -> Chunk | None:
        """The rows kept for ``site`` if its parameters are still these; stale rows are
        dropped."""
        entry = self._entries.get(site)
        if entry is None:
            return None
        if self.valid(entry, angles, weights):
            return entry.chunk
        del self._entries[site]
        return None

    @staticmethod
    def valid(entry: CacheEntry, angles: torch.Tensor, weights: torch.Tensor) -> bool:
        """Whether ``entry`` was computed with these parameter values."""
        if entry.versions != versions(angles, weights):
            return False
        # .data edits bypass the version counter: compare with the snapshot too
        return torch.equal(entry.angles, angles.detach()) and torch.equal(
            entry.weights, weights.detach()
        )

    def store(self, site: str, step_site: StepSite) -> None:
        """Keep the rows a step computed or reused for ``site``, as one chunk."""
        ready = [c for c in step_site.chunks if c.rows is not None]
        if not ready:
            return
        ids = torch.cat([c.ids.to(ready[0].ids.device) for c in ready])
        rows = torch.cat([c.rows.detach() for c in ready if c.rows is not None])
        order = torch.argsort(ids)
        angles, weights = step_site.angles, step_site.weights
        self._entries[site] = CacheEntry(
            versions(angles, weights),
            angles.detach().clone(),
            weights.detach().clone(),
            Chunk(ids[order], rows[order]),
        )


class StepRows:
    """The QRCE rows of one step, per site: from the cache, or computed by this step's jobs."""

    def __init__(self, cache: QRCECache) -> None:
        self.cache = cache
        self.sites: dict[str, StepSite] = {}

    def request(
        self,
        microbatch: int,
        node: fx.Node,
        site: str,
        token_ids: torch.Tensor,
        unique: torch.Tensor,
        angles: torch.Tensor,
        weights: torch.Tensor,
    ) -> tuple[Waiter, Chunk | None]:
        """The rows a QRCE node needs: a waiter on the chunks that hold (or will hold) its
        tokens, and the new chunk of the tokens nobody computes yet (None if there are none),
        for the caller to compute in a job."""
        if site not in self.sites:
            self.sites[site] = StepSite(angles, weights)
            cached = self.cache.lookup(site, angles, weights)
            if cached is not None:
                self.sites[site].chunks.append(cached)
        chunks = self.sites[site].chunks
        waiter = Waiter(microbatch, node, token_ids, [])
        covered = torch.zeros_like(unique, dtype=torch.bool)
        for chunk in chunks:
            hits = torch.isin(unique, chunk.ids.to(unique.device))
            if bool(hits.any()):
                waiter.chunks.append(chunk)
                covered |= hits
        missing = unique[~covered]
        waiter.tokens = (token_ids.numel(), int(unique.numel()), int(missing.numel()))
        if not missing.numel():
            return waiter, None
        new = Chunk(missing)
        chunks.append(new)
        waiter.chunks.append(new)
        waiter.own_job = True
        return waiter, new

    def keep(self) -> None:
        """Store every site's rows in the cache for later steps."""
        for site, step_site in self.sites.items():
            self.cache.store(site, step_site)


def assemble(token_ids: torch.Tensor, chunks: list[Chunk]) -> torch.Tensor:
    """Rows for ``token_ids`` gathered from disjoint chunks of sorted ids."""
    device = token_ids.device
    ids = torch.cat([c.ids.to(device) for c in chunks])
    rows = torch.cat([c.rows for c in chunks if c.rows is not None])
    order = torch.argsort(ids)
    flat = token_ids.reshape(-1)
    position = torch.searchsorted(ids[order], flat)
    return rows[order.to(rows.device)[position.to(rows.device)]].reshape(
        *token_ids.shape, rows.shape[-1]
    )
