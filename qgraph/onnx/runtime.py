"""Running an export: the partitioned form on onnxruntime + a qgraph backend, or the whole model.

``run(out_dir, inputs, backend)`` checks the manifest (``load_manifest``), then runs the
partitions in a topological order of their DAG: classical ones in onnxruntime, quantum ones
on the named qgraph backend. ``run_model(path, inputs, backend)`` runs a whole ``model.onnx``
in one onnxruntime session, its quantum nodes as onnxruntime-extensions Python custom ops
(``runnable_model`` moves them into the ``ai.onnx.contrib`` domain those require).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from qgraph.backends import get_backend, resolve
from qgraph.errors import InputError, MissingDependencyError
from qgraph.kernels.qrce import QRCEStructure
from qgraph.onnx.manifest import Manifest, PartitionSpec, TensorSpec, load_manifest
from qgraph.onnx.schemas import (
    REVIEW_DOMAIN,
    RUNNABLE_DOMAIN,
    attributes_of,
    is_quantum_node,
)

Inputs = Mapping[str, Any] | Sequence[Any]


def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _bind_inputs(specs: list[TensorSpec], inputs: Inputs) -> dict[str, np.ndarray]:
    """Inputs by name, checked against the manifest's names, dtypes and sizes."""
    names = [s.name for s in specs]
    if isinstance(inputs, (np.ndarray, torch.Tensor)):
        raise InputError(
            f"inputs must be a dict by name or a list in the order {names}; got one "
            f"{type(inputs).__name__}. Wrap it: [{names[0] if names else 'x'}]."
        )
    if isinstance(inputs, Mapping):
        missing = [n for n in names if n not in inputs]
        unknown = [n for n in inputs if n not in names]
        if missing or unknown:
            raise InputError(
                f"the export takes inputs {names}; missing {missing}, unknown {unknown}."
            )
        values = {n: _as_numpy(inputs[n]) for n in names}
    else:
        if len(inputs) != len(names):
            raise InputError(
                f"the export takes {len(names)} input(s) {names}; got {len(inputs)}. Pass them "
                "in that order, or as a dict by name."
            )
        values = {n: _as_numpy(v) for n, v in zip(names, inputs, strict=True)}
    sizes: dict[str, int] = {}
    for spec in specs:
        value = values[spec.name]
        if value.dtype.name != spec.dtype or value.ndim != len(spec.shape):
            raise InputError(
                f"input {spec.name!r} must be {spec.dtype} with shape {spec.shape}; got "
                f"{value.dtype.name} with shape {list(value.shape)}."
            )
        for dim, size in zip(spec.shape, value.shape, strict=True):
            if isinstance(dim, int) and dim != size:
                raise InputError(
                    f"input {spec.name!r} has shape {list(value.shape)}; the export was made "
                    f"with static shape {spec.shape}. Re-export at the shape you need."
                )
            if isinstance(dim, str) and dim and sizes.setdefault(dim, size) != size:
                raise InputError(
                    f"input {spec.name!r}: size {dim} is {size} here but {sizes[dim]} in "
                    "another input; sizes with the same name must agree."
                )
    return values


def _qaap(
    backend: Any,
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None,
    is_causal: int,
    site: str,
    form: str = "auto",
) -> np.ndarray:
    """QAAP of arrays on a backend (a registered name or an instance), without autograd.
    The runnable model's ops carry no ``form`` (their attribute lists are fixed): "auto"."""
    with torch.no_grad():
        out = _backend(backend).qaap(
            _tensor(q),
            _tensor(k),
            _tensor(v),
            None if mask is None else _tensor(mask),
            bool(is_causal),
            None,
            0.0,
            site,
            form=form,
        )
    return out.numpy()


def _qrce(
    backend: Any,
    token_ids: np.ndarray,
    angle_table: np.ndarray,
    weights: np.ndarray,
    seed: int,
    site: str,
) -> np.ndarray:
    """QRCE features of arrays on a backend, without autograd."""
    structure = QRCEStructure.from_seed(angle_table.shape[-1], weights.shape[0], int(seed))
    with torch.no_grad():
        out = _backend(backend).qrce(
            _tensor(token_ids), _tensor(angle_table), _tensor(weights), structure, site
        )
    return out.numpy()


def _run_quantum_node(
    node: onnx.NodeProto, values: dict[str, np.ndarray], backend: Any
) -> list[np.ndarray]:
    """One ``ai.qgraph`` QAAP/QRCE node on a qgraph backend."""
    attributes = attributes_of(node)
    site = attributes.get("site_key") or attributes.get("site", node.name)
    args: list[Any] = [values[n] if n else None for n in node.input]
    if node.op_type == "QAAP":
        q, k, v, *rest = args
        mask = rest[0] if rest else None
        causal, form = attributes.get("is_causal", 0), attributes.get("form", "auto")
        return [_qaap(backend, q, k, v, mask, causal, site, form)]
    token_ids, angle_table, weights = args
    return [_qrce(backend, token_ids, angle_table, weights, attributes["seed"], site)]


def _tensor(value: np.ndarray) -> torch.Tensor:
    """A tensor of an array (copied when read-only: torch tensors are always writable)."""
    value = np.ascontiguousarray(value)
    return torch.from_numpy(value if value.flags.writeable else value.copy())


def _backend(name: Any) -> Any:
    return get_backend(resolve(name))


@functools.lru_cache(maxsize=64)
def _session(path: str, digest: str) -> Any:
    """An onnxruntime session per (file, content), reused across runs."""
    import onnxruntime as ort

    return ort.InferenceSession(path, _session_options(), providers=["CPUExecutionProvider"])


def _session_options() -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # onnxruntime's idle workers spin by default; between partitions that steals the cores
    # PyTorch and the quantum backend need (measured: the original MiniLM forward 8× slower).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


@functools.lru_cache(maxsize=64)
def _quantum_partition(path: str, digest: str) -> tuple[onnx.NodeProto, dict[str, np.ndarray]]:
    """A quantum partition's node and initializers, read once per (file, content)."""
    graph = onnx.load(path).graph
    return graph.node[0], {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}


def _run_partition(
    spec: PartitionSpec, folder: Path, values: dict[str, np.ndarray], backend: Any
) -> None:
    path = folder / spec.file
    if spec.kind == "classical":
        session = _session(str(path), spec.sha256)
        results = session.run(spec.outputs, {n: values[n] for n in spec.inputs})
    else:
        node, initializers = _quantum_partition(str(path), spec.sha256)
        feeds = {**initializers, **{n: values[n] for n in spec.inputs}}
        results = _run_quantum_node(node, feeds, backend)
    for name, value in zip(spec.outputs, results, strict=True):
        values[name] = np.asarray(value)


def run(
    out_dir: str | Path | Manifest,
    inputs: Inputs,
    backend: Any = "exact",
) -> dict[str, np.ndarray]:
    """Run a partitioned export on ``inputs``; returns its outputs by name (manifest order).

    ``inputs`` is a dict by input name or a sequence in the manifest's order (numpy arrays
    or tensors). Classical partitions run in onnxruntime, quantum ones on ``backend`` (a
    registered name or a backend instance). The manifest is checked first: a missing or
    changed file, a cycle or a shape disagreement raises ManifestError before anything runs.
    That check hashes every file; to run many times, check once with ``load_manifest`` and
    pass the Manifest it returns (sessions are cached per file and content either way).
    """
    manifest = out_dir if isinstance(out_dir, Manifest) else load_manifest(out_dir)
    assert manifest.directory is not None
    runner = _backend(backend)
    values = _bind_inputs(manifest.inputs, inputs)
    for spec in manifest.order():
        _run_partition(spec, manifest.directory, values, runner)
    return {spec.name: values[spec.name] for spec in manifest.outputs}


# ---------------------------------------------------------------------------------------------
# the whole model in one onnxruntime session (onnxruntime-extensions)
# ---------------------------------------------------------------------------------------------

#: runnable op type per (kernel, mask input): a Python custom op has a fixed input list
_RUNNABLE_OP_TYPES = {
    ("QAAP", None): "QAAP",
    ("QAAP", "bool"): "QAAPMask",
    ("QAAP", "float"): "QAAPBias",
    ("QRCE", None): "QRCE",
}
#: the attributes the runnable ops read (the others stay in the reviewable model)
_RUNNABLE_ATTRIBUTES = {
    "QAAP": ("backend", "site", "is_causal"),
    "QRCE": ("backend", "site", "seed"),
}


def runnable_model(model: onnx.ModelProto | str | Path, backend: Any = "exact") -> onnx.ModelProto:
    """A copy of a reviewable model whose quantum nodes run as onnxruntime-extensions ops.

    The nodes move from ``ai.qgraph`` to ``ai.onnx.contrib`` (the only domain in which
    onnxruntime-extensions runs Python ops), keep only the attributes the ops read, and name
    the qgraph backend (a registered name) they run on. The registry holds a configured
    instance only while something else does: keep a reference to it while the model runs.
    """
    backend_key = resolve(backend)  # a registered name, or an instance (registered now)
    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    runnable = onnx.ModelProto()
    runnable.CopyFrom(proto)
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in [*runnable.graph.input, *runnable.graph.value_info, *runnable.graph.output]
    }
    types.update({t.name: t.data_type for t in runnable.graph.initializer})
    for node in runnable.graph.node:
        if not (node.domain == REVIEW_DOMAIN and is_quantum_node(node)):
            continue
        kernel, mask = node.op_type, None
        floats = node.input[:3] if kernel == "QAAP" else node.input[1:3]
        if any(types.get(name) != onnx.TensorProto.FLOAT for name in floats):
            found = [onnx.TensorProto.DataType.Name(types.get(n, 0)) for n in floats]
            raise InputError(
                f"{kernel} node {node.name}: the runnable model's Python ops take float32 "
                f"tensors; this one has {found}. Run the partitioned form (qgraph.onnx.run), "
                "or export a float32 model."
            )
        if kernel == "QAAP" and len(node.input) > 3 and node.input[3]:
            mask_type = types.get(node.input[3])
            if mask_type not in (onnx.TensorProto.BOOL, onnx.TensorProto.FLOAT):
                raise InputError(
                    f"QAAP node {node.name}: its mask {node.input[3]!r} must be bool or float32 "
                    f"for the runnable model; its type is {mask_type}."
                )
            mask = "bool" if mask_type == onnx.TensorProto.BOOL else "float"
        attributes = attributes_of(node)
        attributes["backend"] = backend_key
        attributes["site"] = attributes.get("site_key") or attributes.get("site", node.name)
        attributes.setdefault("is_causal", 0)
        attributes.setdefault("seed", 0)
        kept = {k: attributes[k] for k in _RUNNABLE_ATTRIBUTES[kernel]}
        del node.input[4 if mask else 3 :]
        node.op_type = _RUNNABLE_OP_TYPES[(kernel, mask)]
        node.domain = RUNNABLE_DOMAIN
        del node.attribute[:]
        node.attribute.extend(onnx.helper.make_attribute(k, v) for k, v in kept.items())
    imports = [o for o in runnable.opset_import if o.domain not in (REVIEW_DOMAIN, RUNNABLE_DOMAIN)]
    del runnable.opset_import[:]
    runnable.opset_import.extend([*imports, onnx.helper.make_opsetid(RUNNABLE_DOMAIN, 1)])
    return runnable


@functools.cache
def _register_runnable_ops() -> None:
    """Define the Python custom ops once per process (onnxruntime-extensions keeps them)."""
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    f32, i64, boolean = PyCustomOpDef.dt_float, PyCustomOpDef.dt_int64, PyCustomOpDef.dt_bool
    qaap_attrs = {
        "backend": PyCustomOpDef.dt_string,
        "site": PyCustomOpDef.dt_string,
        "is_causal": PyCustomOpDef.dt_int64,
    }

    onnx_op(op_type="QAAP", inputs=[f32] * 3, outputs=[f32], attrs=qaap_attrs)(
        lambda q, k, v, backend, site, is_causal: _qaap(backend, q, k, v, None, is_causal, site)
    )
    onnx_op(op_type="QAAPMask", inputs=[f32, f32, f32, boolean], outputs=[f32], attrs=qaap_attrs)(
        lambda q, k, v, m, backend, site, is_causal: _qaap(backend, q, k, v, m, is_causal, site)
    )
    onnx_op(op_type="QAAPBias", inputs=[f32] * 4, outputs=[f32], attrs=qaap_attrs)(
        lambda q, k, v, m, backend, site, is_causal: _qaap(backend, q, k, v, m, is_causal, site)
    )

    onnx_op(
        op_type="QRCE",
        inputs=[i64, f32, f32],
        outputs=[f32],
        attrs={
            "backend": PyCustomOpDef.dt_string,
            "site": PyCustomOpDef.dt_string,
            "seed": PyCustomOpDef.dt_int64,
        },
    )(
        lambda ids, table, weights, backend, site, seed: _qrce(
            backend, ids, table, weights, seed, site
        )
    )


def runnable_session(model: onnx.ModelProto | str | Path, backend: Any = "exact") -> Any:
    """An onnxruntime session of the whole model, quantum nodes on ``backend`` (a registered
    name or a backend instance) through onnxruntime-extensions. The session keeps the
    backend alive (``session.qgraph_backend``)."""
    import onnxruntime as ort

    try:
        from onnxruntime_extensions import get_library_path
    except ImportError:
        raise MissingDependencyError(
            "running the whole model needs onnxruntime-extensions: pip install 'qgraph[onnx]' "
            "(or run the partitioned form with qgraph.onnx.run)."
        ) from None

    _register_runnable_ops()
    options = _session_options()
    options.register_custom_ops_library(get_library_path())
    proto = runnable_model(model, backend)
    session = ort.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    # the model names the backend by registry key, which holds instances weakly
    session.qgraph_backend = get_backend(resolve(backend))
    return session


def run_model(
    model: onnx.ModelProto | str | Path, inputs: Inputs, backend: Any = "exact"
) -> dict[str, np.ndarray]:
    """Run a whole exported ``model.onnx`` in one onnxruntime session; outputs by name."""
    session = runnable_session(model, backend)
    specs = [TensorSpec(i.name, _numpy_dtype(i), _dims(i)) for i in session.get_inputs()]
    values = _bind_inputs(specs, inputs)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, values), strict=True))


def _numpy_dtype(value: Any) -> str:
    """The numpy dtype name of an onnxruntime input ("tensor(float)" → "float32")."""
    name = value.type.removeprefix("tensor(").removesuffix(")")
    name = {"float": "float32", "double": "float64"}.get(name, name)
    try:
        return np.dtype(name).name
    except TypeError:
        raise InputError(
            f"input {value.name} has type {value.type}, which qgraph cannot feed."
        ) from None


def _dims(value: Any) -> list[int | str]:
    return [d if isinstance(d, int) else (str(d) if d else "") for d in value.shape]
