"""Keeping IBM Quantum tokens out of every message, log record, report and export.

The token of the environment (``QISKIT_IBM_TOKEN``) and of any account qgraph loads are
collected in ``KNOWN_SECRETS``; ``scrub`` masks them in text, and ``scrubbed_logging``
masks them in every log record created while qiskit-ibm-runtime is being called.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["KNOWN_SECRETS", "TOKEN_ENV", "remember_account_token", "scrub", "scrubbed_logging"]

#: environment variable qiskit-ibm-runtime reads the API token from
TOKEN_ENV = "QISKIT_IBM_TOKEN"
_MASK = "***"

#: tokens known to this process that must never be printed (filled on connection)
KNOWN_SECRETS: set[str] = set()
_log_lock = threading.Lock()
_log_depth = 0
_log_previous_factory: Callable[..., logging.LogRecord] | None = None


def known_secrets() -> list[str]:
    """Every token to hide: the environment's and those of accounts this module loaded."""
    found = set(KNOWN_SECRETS)
    env = os.environ.get(TOKEN_ENV)
    if env:
        found.add(env)
    # longest first, so a token that contains another is replaced whole
    return sorted((s for s in found if s), key=len, reverse=True)


def scrub(text: str) -> str:
    """``text`` with every known token replaced by ``***``."""
    for secret in known_secrets():
        text = text.replace(secret, _MASK)
    return text


def _scrubbing_factory(previous: Callable[..., logging.LogRecord]) -> Callable[..., Any]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error handling
            return record
        record.msg, record.args = scrub(message), None
        if record.exc_info:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return record

    return factory


@contextmanager
def scrubbed_logging() -> Iterator[None]:
    """While active, every log record created in this process (any logger) is scrubbed.

    Installed with ``logging.setLogRecordFactory`` only around calls into qiskit-ibm-runtime
    (reference-counted, so overlapping calls from several threads nest correctly).
    """
    global _log_depth, _log_previous_factory
    with _log_lock:
        if _log_depth == 0:
            _log_previous_factory = logging.getLogRecordFactory()
            logging.setLogRecordFactory(_scrubbing_factory(_log_previous_factory))
        _log_depth += 1
    try:
        yield
    finally:
        with _log_lock:
            _log_depth -= 1
            if _log_depth == 0 and _log_previous_factory is not None:
                logging.setLogRecordFactory(_log_previous_factory)
                _log_previous_factory = None


def remember_account_token(account_name: str | None, channel: str | None) -> None:
    """Add the token of the account the service would load (env or saved) to the secrets.

    Reads the local account file only (``qiskit_ibm_runtime.accounts.AccountManager.get``), so
    a saved-account token is scrubbed even when the service fails before it exists.
    """
    try:
        accounts = importlib.import_module("qiskit_ibm_runtime.accounts")
        account = accounts.AccountManager.get(name=account_name, channel=channel)
        token = getattr(account, "token", None)
    except Exception:
        return
    if isinstance(token, str) and token:
        KNOWN_SECRETS.add(token)
