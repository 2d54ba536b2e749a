"""qgraph's exceptions. Each message names the problem and what to do about it."""

from __future__ import annotations


class QGraphError(Exception):
    """Base class of every error qgraph raises on purpose."""


class CaptureError(QGraphError):
    """The model could not be captured into a graph."""


class UnknownBackendError(QGraphError, ValueError):
    """A backend name that is not registered."""


class PolicyError(QGraphError, ValueError):
    """A policy that is unknown, not available yet, or returned a non-bool."""


class InputError(QGraphError, ValueError):
    """Example inputs or call inputs that do not fit the model."""


class MissingDependencyError(QGraphError, ImportError):
    """An optional feature whose packages are not installed; the message names the extra."""


class UnsupportedGraphError(QGraphError, ValueError):
    """A graph with a construct qgraph cannot handle (e.g. control flow in an export)."""


class DataError(QGraphError, ValueError):
    """A data file or data option that cannot be read; the message names file and line."""
