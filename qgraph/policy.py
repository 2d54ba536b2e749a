"""Policies: which supported sites become quantum. Every decision carries its reason."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from qgraph.errors import PolicyError
from qgraph.site import Site, SiteDecision

PolicyLike = str | Callable[[Site], bool]
POLICY_NAMES = ("auto", "all", "none")
EMBEDDING_TABLES = ("word", "position", "token_type", "other")


def validate_policy(policy: PolicyLike, embedding_tables: Sequence[str]) -> None:
    """Raise PolicyError for an unknown policy or embedding-table name."""
    if not callable(policy) and policy not in POLICY_NAMES:
        raise PolicyError(
            f"unknown policy {policy!r}; use 'auto', 'all', 'none', or a callable site -> bool."
        )
    if isinstance(embedding_tables, str):
        raise PolicyError(
            f"embedding_tables takes a sequence of table names, e.g. ({embedding_tables!r},); "
            f"got the string {embedding_tables!r}, which would be read letter by letter."
        )
    unknown = [t for t in embedding_tables if t not in EMBEDDING_TABLES]
    if unknown:
        raise PolicyError(
            f"unknown embedding table(s) {unknown}; choose from {list(EMBEDDING_TABLES)}."
        )


def decide(
    site: Site,
    policy: PolicyLike,
    embedding_tables: Sequence[str],
    verdict: tuple[bool, str] | None = None,
) -> SiteDecision:
    """The decision on ``site`` under ``policy``, with its reason; ``site`` is not changed.

    ``verdict`` is the cost model's (offload, reason) for the site, used by "auto". A policy
    callable is asked about supported candidate sites only.
    """
    if not site.supported:
        return SiteDecision(reason=f"not supported: {site.support_reason}")
    if site.kind == "embedding" and site.table not in embedding_tables:
        named = ", ".join(embedding_tables)
        candidates = f"only {named} tables are" if embedding_tables else "no tables are"
        return SiteDecision(
            reason=f"{site.table} table: {candidates} candidates; opt in with "
            f"embedding_tables=(..., {site.table!r})."
        )
    if policy == "none":
        return SiteDecision(reason="policy 'none' rewrites nothing.")
    # Read before a policy callable sees the site: what it does to it cannot change the op.
    op = site.quantum_op_for_kind
    if policy == "auto":
        if verdict is None:
            raise PolicyError(f"policy 'auto' has no cost estimate for site {site.key!r}.")
        chosen, why = verdict[0], f"auto: {verdict[1]}."
    elif policy == "all":
        chosen, why = True, "policy 'all' offloads every supported site."
    else:
        assert callable(policy)
        answer = policy(site)
        if isinstance(answer, np.bool_):  # a comparison of numpy values: a bool all the same
            answer = bool(answer)
        if not isinstance(answer, bool):
            kind = type(answer)
            named = kind.__name__ if kind.__module__ == "builtins" else kind.__qualname__
            raise PolicyError(
                f"the policy callable returned {named} ({answer!r}) for site {site.path!r}; "
                "it must return True (quantum) or False (classical)."
            )
        chosen = answer
        name = getattr(policy, "__name__", type(policy).__name__)
        why = f"policy {name} returned {answer}."
    if chosen:
        return SiteDecision("quantum", op, why)
    return SiteDecision(reason=why)
