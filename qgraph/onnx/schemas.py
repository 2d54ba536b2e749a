"""The ONNX form of the quantum ops: two domains, their schemas and the exporter's translations.

Two domains, because one cannot serve both readers:

* ``ai.qgraph`` (:data:`REVIEW_DOMAIN`) is what ``model.onnx`` and the quantum partition files
  use: one node per quantum op (``QAAP``, ``QRCE``) with every attribute a reviewer needs
  (kernel, qubits, shots, precision, OpenQASM 3 circuit, device, module path, partition).
  The schemas are registered with ``onnx.defs`` so that ``onnx.checker`` validates the nodes.
* ``ai.onnx.contrib`` (:data:`RUNNABLE_DOMAIN`) is the only domain in which
  onnxruntime-extensions runs Python custom ops (``@onnx_op`` has no domain argument).
  ``qgraph.onnx.runnable_model`` rewrites a reviewable model into it; a separate op type per
  mask variant is needed there because a Python custom op has a fixed input list.

``ai.qgraph`` is the stable, documented form; the runnable form is derived and never written
as the reference artefact.
"""

from __future__ import annotations

from typing import Any

import onnx
from onnx import defs

REVIEW_DOMAIN = "ai.qgraph"
RUNNABLE_DOMAIN = "ai.onnx.contrib"
OPSET_VERSION = 1

_Param = defs.OpSchema.FormalParameter
_Attr = defs.OpSchema.Attribute
_Type = defs.OpSchema.AttrType
_Optional = defs.OpSchema.FormalParameterOption.Optional

#: attributes every quantum node carries, with their ONNX type and meaning (one per line)
COMMON_ATTRIBUTES: dict[str, tuple[Any, str]] = {
    "site": (_Type.STRING, "the op's site label '<compile id>:<site key>' (set by export)"),
    "kernel": (_Type.STRING, "qaap or qrce"),
    "qubits": (_Type.INT, "qubits of one circuit instance at the example shapes"),
    "shots": (_Type.INT, "shots per forward on the decision device (0: exact evaluation)"),
    "precision": (_Type.FLOAT, "target standard error of each estimated value"),
    "qasm": (_Type.STRING, "the circuit template as OpenQASM 3, data as input parameters"),
    "device": (_Type.STRING, "the quantum device the cost model decided for ('' if none)"),
    "backend": (_Type.STRING, "the qgraph backend the compiled module was bound to"),
    "gradient": (_Type.STRING, "the backward method used in training"),
    "path": (_Type.STRING, "module path of the replaced region"),
    "site_key": (_Type.STRING, "the site's stable key in the compile report"),
    "partition": (_Type.STRING, "id of the quantum partition in manifest.json"),
}
#: attributes of QAAP only
QAAP_ATTRIBUTES: dict[str, tuple[Any, str]] = {
    "is_causal": (_Type.INT, "1: causal masking on top of the mask input"),
    "form": (_Type.STRING, "exact backends' closed form: 'auto', 'quadratic' or 'linear'"),
}
#: attributes of QRCE only
QRCE_ATTRIBUTES: dict[str, tuple[Any, str]] = {
    "seed": (_Type.INT, "seed of the random circuit structure"),
}

_FLOATS = ["tensor(float)", "tensor(double)", "tensor(float16)", "tensor(bfloat16)"]


def _attributes(extra: dict[str, tuple[Any, str]]) -> list[Any]:
    return [
        _Attr(name, kind, doc, required=False)
        for name, (kind, doc) in {**COMMON_ATTRIBUTES, **extra}.items()
    ]


def _schemas() -> list[defs.OpSchema]:
    qaap = defs.OpSchema(
        "QAAP",
        REVIEW_DOMAIN,
        OPSET_VERSION,
        "Quantum Amplitude Attention Pooling with SDPA's q/k/v/mask convention (docs/kernels.md).",
        inputs=[
            _Param("q", "T", "queries (B, H, Sq, D)"),
            _Param("k", "T", "keys (B, Hkv, Sk, D)"),
            _Param("v", "T", "values (B, Hkv, Sk, Dv)"),
            _Param(
                "attn_mask", "M", "bool keep-mask or additive float mask", param_option=_Optional
            ),
        ],
        outputs=[_Param("out", "T", "pooled values (B, H, Sq, Dv)")],
        type_constraints=[
            ("T", _FLOATS, "floating-point activations"),
            ("M", ["tensor(bool)", *_FLOATS], "boolean or additive mask"),
        ],
        attributes=_attributes(QAAP_ATTRIBUTES),
    )
    qrce = defs.OpSchema(
        "QRCE",
        REVIEW_DOMAIN,
        OPSET_VERSION,
        "Quantum Random Circuit Embedding read-out features (docs/kernels.md).",
        inputs=[
            _Param("token_ids", "I", "token ids, any shape"),
            _Param("angle_table", "T", "re-upload angles per token (V, q)"),
            _Param("weights", "T", "trainable rotations (L, q)"),
        ],
        outputs=[_Param("features", "T", "(*token_ids.shape, 2q) Pauli-Z and ZZ read-outs")],
        type_constraints=[
            ("T", _FLOATS, "floating-point parameters"),
            ("I", ["tensor(int64)", "tensor(int32)"], "integer ids"),
        ],
        attributes=_attributes(QRCE_ATTRIBUTES),
    )
    return [qaap, qrce]


def register_schemas() -> None:
    """Register the ``ai.qgraph`` schemas with onnx (process-wide, once)."""
    for schema in _schemas():
        if not defs.has(schema.name, schema.domain):
            defs.register_schema(schema)


def translation_table() -> dict[Any, Any]:
    """The exporter's translations of ``qgraph::qaap`` / ``qgraph::qrce`` to ``ai.qgraph`` nodes.

    Only the site label is attached here; ``qgraph.onnx.export`` adds the review attributes
    afterwards, from the compile report.
    """
    import onnxscript
    import torch

    register_schemas()
    opset = onnxscript.values.Opset(REVIEW_DOMAIN, OPSET_VERSION)

    def qaap(
        q, k, v, attn_mask, dropout_keep, is_causal, dropout_p, backend, gradient, site, form="auto"
    ):  # type: ignore[no-untyped-def]
        if dropout_keep is not None:
            raise ValueError("export the eval-mode graph: attention dropout cannot be exported.")
        return opset.QAAP(q, k, v, attn_mask, site=site, is_causal=int(is_causal), form=form)

    def qrce(token_ids, angle_table, weights, seed, backend, gradient, site):  # type: ignore[no-untyped-def]
        return opset.QRCE(token_ids, angle_table, weights, site=site, seed=int(seed))

    return {torch.ops.qgraph.qaap.default: qaap, torch.ops.qgraph.qrce.default: qrce}


def is_quantum_node(node: onnx.NodeProto) -> bool:
    """Whether an ONNX node is one of qgraph's quantum ops (either domain)."""
    return node.domain in (REVIEW_DOMAIN, RUNNABLE_DOMAIN) and node.op_type.startswith(
        ("QAAP", "QRCE")
    )


def attributes_of(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as plain Python values (strings decoded)."""
    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}
