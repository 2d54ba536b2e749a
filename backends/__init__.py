"""Quantum backends behind one protocol (``base.Backend``), looked up by registry key.

``qgraph.compile(backend=...)`` takes a name (``"exact"``, ``"shots"``, ``"aer"``, ``"ibm"``:
the backend with its default options) or a configured instance (``ShotsBackend(shots=4096)``),
which is registered under a key of its own. Graph nodes carry only the key.

The named backends stay registered for the life of the process. A configured instance is
held weakly: it stays registered while something references it (the compiled module that
runs on it does) and drops out of the registry when nothing does, so compiling with a new
instance per call does not grow the registry. Its key then raises UnknownBackendError.
"""

from __future__ import annotations

import importlib
import re
import threading
import weakref
from collections.abc import Callable

from qgraph.backends.base import (
    GRADIENT_METHODS,
    Backend,
    BackendStats,
    Capabilities,
    ExecutionRecord,
    JobLog,
    KernelCounters,
    job_log,
)
from qgraph.errors import UnknownBackendError

__all__ = [
    "GRADIENT_METHODS",
    "Backend",
    "BackendStats",
    "Capabilities",
    "ExecutionRecord",
    "JobLog",
    "KernelCounters",
    "available",
    "get_backend",
    "job_log",
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
_NAMED: dict[str, Backend] = {}  # the instances behind the names above, made on first use
#: configured instances, held weakly: each stays registered while something references it
_REGISTERED: weakref.WeakValueDictionary[str, Backend] = weakref.WeakValueDictionary()
#: configured instances whose class refuses weak references (``__slots__``), held strongly
_PINNED: dict[str, Backend] = {}
_lock = threading.RLock()
_last_id = 0  # the number of the last key handed out ("shots#3": 3)
_KEY = re.compile(r".+#(\d+)")


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
    if isinstance(key, str):
        for registry in (_NAMED, _REGISTERED, _PINNED):
            found = registry.get(key)
            if found is not None:
                return found
        issued = _KEY.fullmatch(key)
        if issued is not None and 0 < int(issued.group(1)) <= _last_id:
            raise UnknownBackendError(
                f"backend {key!r} was registered by an instance that no longer exists; keep "
                "a reference to it or pass it to qgraph.compile again."
            )
    if not isinstance(key, str) or key not in _CLASSES:
        known = ", ".join(_CLASSES)
        raise UnknownBackendError(
            f"unknown backend {key!r}; known backends: {known} (or pass a configured "
            "backend instance, e.g. ShotsBackend(shots=4096))."
        )
    with _lock:
        if key not in _NAMED:
            _NAMED[key] = _factory(key)()
        return _NAMED[key]


def register(backend: Backend) -> str:
    """Register a configured backend instance; returns the key graph nodes will carry.

    The registry holds the instance weakly: whatever runs on the key must keep a reference
    to the instance (a compiled module does), or the key stops resolving once it is gone.
    """
    global _last_id
    with _lock:
        for registry in (_NAMED, _REGISTERED, _PINNED):
            for key, existing in list(registry.items()):
                if existing is backend:
                    return key
        if not isinstance(backend, Backend):
            raise UnknownBackendError(
                f"{type(backend).__name__} is not a qgraph backend: it needs name, "
                "capabilities, stats, qaap(), qrce() and qrce_gradient() (see "
                "qgraph.backends.base.Backend)."
            )
        _last_id += 1
        key = f"{backend.name}#{_last_id}"
        try:
            _REGISTERED[key] = backend
        except TypeError:  # no weak references to it: registered for the process's life
            _PINNED[key] = backend
        return key


def resolve(backend: str | Backend) -> str:
    """The registry key for a backend name or instance (validated)."""
    if isinstance(backend, str):
        get_backend(backend)
        return backend
    return register(backend)
