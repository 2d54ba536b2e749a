"""Quantum backends behind one protocol (``base.Backend``), looked up by registry key.

``qgraph.compile(backend=...)`` takes a name (``"exact"``, ``"shots"``, ``"aer"``, ``"ibm"``:
the backend with its default options) or a configured instance (``ShotsBackend(shots=4096)``),
which is registered under a key of its own. Graph nodes carry only the key.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable

from qgraph.backends.base import (
    GRADIENT_METHODS,
    Backend,
    BackendStats,
    Capabilities,
    ExecutionRecord,
    KernelCounters,
)
from qgraph.errors import UnknownBackendError

__all__ = [
    "GRADIENT_METHODS",
    "Backend",
    "BackendStats",
    "Capabilities",
    "ExecutionRecord",
    "KernelCounters",
    "available",
    "get_backend",
    "register",
    "resolve",
]

#: name -> (module, class) of each backend; modules import lazily (aer/ibm are extras)
_CLASSES: dict[str, tuple[str, str]] = {
    "exact": ("qgraph.backends.exact", "ExactBackend"),  # closed forms + torch statevector
    "shots": ("qgraph.backends.shots", "ShotsBackend"),  # exact probabilities, sampled
    "aer": ("qgraph.backends.aer", "AerBackend"),  # gate-level circuits on qiskit-aer
    "ibm": ("qgraph.backends.ibm", "IBMBackend"),  # qiskit-ibm-runtime (local testing too)
}
_INSTANCES: dict[str, Backend] = {}
_instance_ids = itertools.count(1)


def _factory(name: str) -> Callable[[], Backend]:
    module_name, class_name = _CLASSES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = {"aer": "aer", "ibm": "ibm"}.get(name, "dev")
        raise UnknownBackendError(
            f"backend {name!r} needs packages that are not installed ({exc.name}): "
            f"pip install 'qgraph[{extra}]'."
        ) from exc
    factory: Callable[[], Backend] = getattr(module, class_name)
    return factory


def available() -> dict[str, Capabilities]:
    """The backends whose packages are installed, with what each can do (default options)."""
    found = {}
    for name in _CLASSES:
        try:
            found[name] = get_backend(name).capabilities
        except UnknownBackendError:
            continue
    return found


def get_backend(key: str) -> Backend:
    """The backend registered under ``key``; an unknown name lists the known ones."""
    if isinstance(key, str) and key in _INSTANCES:
        return _INSTANCES[key]
    if not isinstance(key, str) or key not in _CLASSES:
        known = ", ".join(_CLASSES)
        raise UnknownBackendError(
            f"unknown backend {key!r}; known backends: {known} (or pass a configured "
            "backend instance, e.g. ShotsBackend(shots=4096))."
        )
    _INSTANCES[key] = _factory(key)()
    return _INSTANCES[key]


def register(backend: Backend) -> str:
    """Register a configured backend instance; returns the key graph nodes will carry."""
    for key, existing in _INSTANCES.items():
        if existing is backend:
            return key
    if not isinstance(backend, Backend):
        raise UnknownBackendError(
            f"{type(backend).__name__} is not a qgraph backend: it needs name, capabilities, "
            "stats, qaap(), qrce() and qrce_gradient() (see qgraph.backends.base.Backend)."
        )
    key = f"{backend.name}#{next(_instance_ids)}"
    _INSTANCES[key] = backend
    return key


def resolve(backend: str | Backend) -> str:
    """The registry key for a backend name or instance (validated)."""
    if isinstance(backend, str):
        get_backend(backend)
        return backend
    return register(backend)
