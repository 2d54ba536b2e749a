"""ONNX export for review: the whole rewritten model, its partitioned form, and runners.

    manifest = qgraph.onnx.export_onnx(cm, (input_ids,), "out", {"attention_mask": mask})
    outputs = qgraph.onnx.run("out", {"input_ids": ids, "attention_mask": mask})

``qgraph.onnx.schemas`` explains the two domains (``ai.qgraph`` for review,
``ai.onnx.contrib`` for onnxruntime-extensions), ``qgraph.onnx.manifest`` the manifest.
Needs the ``onnx`` extra: ``pip install 'qgraph[onnx]'``.
"""

from __future__ import annotations

try:
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import onnxscript  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"qgraph.onnx needs onnx, onnxruntime and onnxscript ({exc.name} is missing): "
        "pip install 'qgraph[onnx]'."
    ) from exc

from qgraph.onnx.export import export_onnx
from qgraph.onnx.manifest import Manifest, ManifestError, load_manifest
from qgraph.onnx.runtime import run, run_model, runnable_model, runnable_session
from qgraph.onnx.schemas import REVIEW_DOMAIN, RUNNABLE_DOMAIN, register_schemas

register_schemas()

__all__ = [
    "REVIEW_DOMAIN",
    "RUNNABLE_DOMAIN",
    "Manifest",
    "ManifestError",
    "export_onnx",
    "load_manifest",
    "register_schemas",
    "run",
    "run_model",
    "runnable_model",
    "runnable_session",
]
