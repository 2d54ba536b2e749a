"""qgraph: offload Transformer attention and embedding subgraphs to quantum kernels.

cm = qgraph.compile(model, (input_ids,), {"attention_mask": mask}, policy="all")
out = cm(input_ids, attention_mask=mask)
print(cm.report)
qgraph.export_onnx(cm, (input_ids,), "out", {"attention_mask": mask})
"""

from __future__ import annotations

from typing import Any

import qgraph.ops  # noqa: F401  (registers torch.ops.qgraph.*)
from qgraph.api import CompiledModule, compile, devices, explain
from qgraph.atomic import atomic_backward
from qgraph.backends.job_policy import JobFailedError, JobPolicy
from qgraph.distributed import data_parallel
from qgraph.errors import CaptureError, InputError, PolicyError, QGraphError, UnknownBackendError
from qgraph.persist import load, save
from qgraph.report import Report
from qgraph.site import Site
from qgraph.version import __version__


def export_onnx(*args: Any, **kwargs: Any) -> Any:
    """``qgraph.onnx.export_onnx`` (imported on first use: it needs the ``onnx`` extra)."""
    from qgraph.onnx import export_onnx as export

    return export(*args, **kwargs)


__all__ = [
    "CaptureError",
    "CompiledModule",
    "InputError",
    "JobFailedError",
    "JobPolicy",
    "PolicyError",
    "QGraphError",
    "Report",
    "Site",
    "UnknownBackendError",
    "__version__",
    "atomic_backward",
    "compile",
    "data_parallel",
    "devices",
    "explain",
    "export_onnx",
    "load",
    "save",
]
