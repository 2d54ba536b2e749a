"""The connection of one IBM backend to IBM Quantum: service, device and Batch/Session.

Every call into qiskit-ibm-runtime goes through ``RuntimeSession.call``: log records are
scrubbed of tokens while it runs, and a failure is re-raised as ``IBMRuntimeError`` with
the token masked and the original exception not chained (its text may hold the token).
A fake device (local testing mode) is built at once; a real one is connected on first use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import qiskit_ibm_runtime

from qgraph.backends.ibm_secrets import (
    KNOWN_SECRETS,
    remember_account_token,
    scrub,
    scrubbed_logging,
)
from qgraph.backends.qiskit_shared import fake_backend
from qgraph.errors import QGraphError

__all__ = ["FAKE_PREFIX", "IBMRuntimeError", "RuntimeSession"]

logger = logging.getLogger(__name__)

#: device names starting with this are qiskit-ibm-runtime fakes (local testing mode)
FAKE_PREFIX = "fake_"

_T = TypeVar("_T")


class IBMRuntimeError(QGraphError, RuntimeError):
    """A failure reported by qiskit-ibm-runtime (service, primitive or job), token scrubbed."""


class RuntimeSession:
    """Service, device and execution mode of one backend; pickles without its connection."""

    def __init__(
        self,
        device: str,
        mode: Literal["job", "batch", "session"],
        channel: str | None,
        instance: str | None,
        account_name: str | None,
    ) -> None:
        self.device = device
        self.mode = mode
        self._options = {
            key: value
            for key, value in (("channel", channel), ("instance", instance), ("name", account_name))
            if value is not None
        }
        self._local = device.startswith(FAKE_PREFIX)
        self._connect_state()

    def _connect_state(self) -> None:
        self._service: Any = None
        self._backend: Any = fake_backend(self.device) if self._local else None
        self._mode_object: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_service=None, _backend=None, _mode_object=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._connect_state()

    @property
    def connected(self) -> Any:
        """The qiskit backend if connected (fakes always are), else None."""
        return self._backend

    def call(self, what: str, function: Callable[[], _T]) -> _T:
        """Run a qiskit-ibm-runtime call with scrubbed logs; failures become IBMRuntimeError.

        The new exception is raised after the ``except`` block has finished, so the original
        (whose text may hold a token) is neither its ``__cause__`` nor its ``__context__``.
        """
        message = ""
        with scrubbed_logging():
            try:
                return function()
            except IBMRuntimeError:
                raise
            except Exception as exc:
                message = scrub(f"{type(exc).__name__}: {exc}")
        raise IBMRuntimeError(
            f"IBM Quantum ({self.device}, {self.mode} mode): {what} failed: {message}. "
            "Check the account (QISKIT_IBM_TOKEN or a saved account), the device name "
            "and the network; use a fake device such as 'fake_santiago' to test offline."
        )

    def backend(self) -> Any:
        """The qiskit backend to run on; connects to IBM Quantum on first use (real devices)."""
        if self._backend is not None:
            return self._backend
        remember_account_token(self._options.get("name"), self._options.get("channel"))
        options = self._options
        service = self.call(
            "connecting to the service", lambda: qiskit_ibm_runtime.QiskitRuntimeService(**options)
        )
        token = getattr(getattr(service, "_account", None), "token", None)
        if isinstance(token, str) and token:
            KNOWN_SECRETS.add(token)
        backend = self.call(
            f"looking up device {self.device!r}", lambda: service.backend(self.device)
        )
        self._service, self._backend = service, backend
        logger.info("IBMBackend: connected to %s (%d qubits)", self.device, backend.num_qubits)
        return backend

    def primitive_mode(self) -> Any:
        """What a primitive gets as ``mode``: the backend, or this session's Batch/Session."""
        backend = self.backend()
        if self.mode == "job":
            return backend
        if self._mode_object is None:
            factory = (
                qiskit_ibm_runtime.Batch if self.mode == "batch" else qiskit_ibm_runtime.Session
            )
            self._mode_object = self.call(
                f"opening a {self.mode}", lambda: factory(backend=backend)
            )
        return self._mode_object

    def close(self) -> None:
        """Close the batch or session, if one is open (running jobs still finish)."""
        mode_object, self._mode_object = self._mode_object, None
        if mode_object is not None:
            self.call(f"closing the {self.mode}", mode_object.close)
