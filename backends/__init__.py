"""Quantum backends behind one protocol (``base.Backend``), looked up by name."""

from __future__ import annotations

from collections.abc import Callable

from qgraph.backends.base import Backend, BackendStats, Capabilities, KernelCounters
from qgraph.errors import UnknownBackendError

__all__ = [
    "Backend",
    "BackendStats",
    "Capabilities",
    "KernelCounters",
    "available",
    "get_backend",
]


def _make_exact() -> Backend:
    from qgraph.backends.exact import ExactBackend

    return ExactBackend()


#: name -> factory; instances are created on first use and then shared by every graph.
_FACTORIES: dict[str, Callable[[], Backend]] = {"exact": _make_exact}
_INSTANCES: dict[str, Backend] = {}


def available() -> dict[str, Capabilities]:
    """The known backends and what each can do."""
    return {name: get_backend(name).capabilities for name in _FACTORIES}


def get_backend(name: str) -> Backend:
    """The backend registered under ``name``; an unknown name lists the known ones."""
    if not isinstance(name, str) or name not in _FACTORIES:
        known = ", ".join(sorted(_FACTORIES))
        raise UnknownBackendError(f"unknown backend {name!r}; known backends: {known}.")
    if name not in _INSTANCES:
        _INSTANCES[name] = _FACTORIES[name]()
    return _INSTANCES[name]
