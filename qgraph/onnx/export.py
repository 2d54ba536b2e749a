"""``export_onnx``: the compiled model as ONNX, whole and partitioned, for review.

Writes into ``out_dir``:

* ``model.onnx``: the whole rewritten graph, classical ops as standard ONNX and each quantum
  op as one ``ai.qgraph`` node with its review attributes (``qgraph.onnx.schemas``);
* ``c<k>.onnx``: one file per maximal classical partition, runnable by onnxruntime alone;
* ``q<k>.onnx``: one single-node file per quantum partition (its QRCE parameters included);
* ``manifest.json``: the partition DAG, boundary tensors, backend and device per quantum
  partition, versions and SHA-256 hashes (``qgraph.onnx.manifest``).

The eval-mode graph is exported (dropout off); inputs keep their dynamic sizes where the
exporter can keep them, and the manifest says when it could not.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx
import onnxscript
import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from qiskit import qasm3
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from torch.export import Dim

from qgraph.circuits.qaap import qaap_registers
from qgraph.circuits.templates import qaap_template, qrce_layer_template
from qgraph.compiled import CompiledModule
from qgraph.errors import InputError, QGraphError
from qgraph.onnx.folders import check_writable, make_folder, remove_all_but
from qgraph.onnx.manifest import (
    MANIFEST_NAME,
    Manifest,
    PartitionSpec,
    TensorSpec,
    sha256,
    tensor_spec,
)
from qgraph.onnx.partition import Partition, split
from qgraph.onnx.runtime import run
from qgraph.onnx.schemas import attributes_of, is_quantum_node, translation_table
from qgraph.scheduler import is_quantum
from qgraph.version import __version__

if TYPE_CHECKING:
    from qgraph.site import Site

MODEL_NAME = "model.onnx"


# ---------------------------------------------------------------------------------------------
# from the compiled module to a flat graph
# ---------------------------------------------------------------------------------------------


def _identifier(text: str) -> str:
    name = re.sub(r"\W+", "_", text).strip("_")
    return name or "output"


def _output_names(gm: fx.GraphModule, count: int) -> list[str]:
    """Names of the flat outputs from the model's output structure (last_hidden_state, …)."""
    spec = getattr(gm, "_out_spec", None)
    if spec is None or spec.num_leaves != count:
        return [f"output_{i}" for i in range(count)]
    leaves = pytree.tree_flatten_with_path(pytree.tree_unflatten(list(range(count)), spec))[0]
    names = [_identifier(pytree.keystr(path)) for path, _ in leaves]
    return names if len(set(names)) == count else [f"output_{i}" for i in range(count)]


def flat_module(
    gm: fx.GraphModule, flat_inputs: list[Any]
) -> tuple[fx.GraphModule, list[torch.Tensor], list[str]]:
    """A copy of ``gm`` taking only its tensor inputs, positionally, and returning a flat tuple.

    torch.export's pytree calling convention, its guard call and non-tensor inputs (e.g.
    ``use_cache=False``) have no ONNX form; they are dropped here. A non-tensor input that
    the graph actually computes with cannot be dropped, and is an error.
    """
    graph = fx.Graph()  # default codegen: positional inputs, plain outputs
    graph.output(graph.graph_copy(gm.graph, {}))
    for node in list(graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            graph.erase_node(node)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(flat_inputs):
        raise AssertionError("flattened inputs do not match the graph's placeholders")
    tensors: list[torch.Tensor] = []
    names: list[str] = []
    for node, value in zip(placeholders, flat_inputs, strict=True):
        if isinstance(value, torch.Tensor):
            tensors.append(value)
            names.append(node.name)
        elif node.users:
            raise InputError(
                f"input {node.name!r} is a {type(value).__name__} that the graph computes "
                "with; ONNX takes tensors only. Pass it as a tensor, or fix it in the model."
            )
        else:
            graph.erase_node(node)
    output = next(n for n in graph.nodes if n.op == "output")
    flat_out = pytree.tree_leaves(output.args[0])
    output.args = (tuple(flat_out),)
    flat = fx.GraphModule(gm, graph)
    flat.recompile()
    return flat, tensors, names


def _with_exact_backend(flat: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``flat`` whose quantum ops run on the exact backend (the verification's
    reference: the export is checked, not the sampling noise or a remote device)."""
    graph = fx.Graph()
    graph.output(graph.graph_copy(flat.graph, {}))
    for node in graph.nodes:
        if is_quantum(node):
            position = [a.name for a in node.target._schema.arguments].index("backend")
            if len(node.args) > position:
                node.args = (*node.args[:position], "exact", *node.args[position + 1 :])
            else:
                node.kwargs = {**node.kwargs, "backend": "exact"}
    exact = fx.GraphModule(flat, graph)
    exact.recompile()
    return exact


@contextlib.contextmanager
def _modes_restored(*roots: torch.nn.Module) -> Iterator[None]:
    """Restore every module's train/eval flag on exit (graphs share the user's submodules)."""
    saved = {module: module.training for root in roots for module in root.modules()}
    try:
        yield
    finally:
        for module, mode in saved.items():
            module.training = mode


def _pin_specialised_sizes(
    model: onnx.ModelProto, gm: fx.GraphModule, input_names: list[str], notes: list[str]
) -> None:
    """Make the ONNX inputs static where the captured graph itself is.

    torch.export specialises a size of 0 or 1 in the example to a constant (its "0/1
    specialisation"); the compiled graph then only works at that size even though a
    re-export of it would name the dimension symbolically. Say so in the inputs' shapes.
    """
    captured = {
        n.name: n.meta["val"]
        for n in gm.graph.nodes
        if n.op == "placeholder" and isinstance(n.meta.get("val"), torch.Tensor)
    }
    for value in model.graph.input:
        example = captured.get(value.name)
        if example is None or value.name not in input_names:
            continue
        for axis, (dim, size) in enumerate(
            zip(value.type.tensor_type.shape.dim, example.shape, strict=True)
        ):
            if isinstance(size, int) and not dim.HasField("dim_value"):
                dim.dim_value = size
                notes.append(
                    f"input {value.name!r} axis {axis} is fixed at {size}: the captured graph "
                    f"specialised it (torch.export fixes example sizes 0 and 1). Compile with "
                    f"an example of size ≥ 2 there to keep it dynamic."
                )


# ---------------------------------------------------------------------------------------------
# torch → ONNX
# ---------------------------------------------------------------------------------------------


def _to_onnx(
    flat: fx.GraphModule,
    tensors: list[torch.Tensor],
    input_names: list[str],
    output_names: list[str],
    notes: list[str],
) -> onnx.ModelProto:
    """torch.onnx (dynamo) with every input size dynamic; static sizes when that fails."""
    options: dict[str, Any] = {
        "dynamo": True,
        "input_names": input_names,
        "output_names": output_names,
        "custom_translation_table": translation_table(),
        "verbose": False,
    }
    dynamic = tuple({d: Dim.AUTO for d in range(x.dim())} for x in tensors)
    try:
        with _quiet():
            program = torch.onnx.export(flat, tuple(tensors), dynamic_shapes=dynamic, **options)
    except Exception as dynamic_failure:
        try:
            with _quiet():
                program = torch.onnx.export(flat, tuple(tensors), **options)
        except Exception as static_failure:
            raise static_failure from dynamic_failure
        notes.append(
            "exported with static shapes: a dynamic-shape export failed "
            f"({type(dynamic_failure).__name__}: {str(dynamic_failure).splitlines()[0][:200]})."
        )
    assert program is not None
    return program.model_proto


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's per-op progress prints (the caller shows its own progress)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # torch's own pytree deprecation, raised inside the exporter: not the user's to fix
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        logger.setLevel(level)


# ---------------------------------------------------------------------------------------------
# review attributes
# ---------------------------------------------------------------------------------------------


def _circuit(site: Site, cm: CompiledModule) -> tuple[int, Any]:
    """(qubits, template circuit) of a site's quantum op at the compile example's shapes
    (the report's: the same shapes its shots and costs are for)."""
    if site.op == "qaap":
        assert site.kv_len is not None and site.head_dim is not None
        registers = qaap_registers(site.kv_len, site.head_dim)
        circuit, _, _ = qaap_template(registers.index_qubits, registers.feature_qubits)
        return registers.n_qubits, circuit
    layer = cm.quantum_layers[site.key]
    circuit, _, _ = qrce_layer_template(layer.structure, measure=True)
    return layer.structure.n_qubits, circuit


def _shots(site: Site, cm: CompiledModule) -> int:
    """Shots per forward on the decision device, or the backend's own setting, or 0 (exact)."""
    device = cm.report.device
    if device and site.costs.get(device, {}).get("shots") is not None:
        return int(site.costs[device]["shots"])
    backend = cm.backend
    if backend.capabilities.exact:
        return 0
    return int(getattr(backend, "shots", 0) or 0)


def annotate(model: onnx.ModelProto, cm: CompiledModule) -> dict[str, Site]:
    """Add the review attributes to every quantum node of ``model``; node name → its Site."""
    found: dict[str, Site] = {}
    for node in model.graph.node:
        if not is_quantum_node(node):
            continue
        label = attributes_of(node).get("site", "")
        key = label.split(":", 1)[1] if ":" in label else label
        site = cm.report_site(key)
        qubits, circuit = _circuit(site, cm)
        assert site.op is not None
        values: dict[str, Any] = {
            "kernel": site.op,
            "qubits": qubits,
            "shots": _shots(site, cm),
            "precision": float(cm.precision),
            "qasm": qasm3.dumps(circuit),
            "device": cm.report.device or "",
            "backend": cm.report.backend,
            "gradient": cm.gradients.get(site.op, ""),
            "path": site.path,
            "site_key": site.key,
        }
        kept = [a for a in node.attribute if a.name not in values]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.attribute.extend(onnx.helper.make_attribute(k, v) for k, v in values.items())
        found[node.name] = site
    return found


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def _spec(value_info: dict[str, onnx.ValueInfoProto], name: str) -> TensorSpec:
    return tensor_spec(value_info[name])


def _partition_spec(
    partition: Partition, file: str, digest: str, sites: dict[str, Site], cm: CompiledModule
) -> PartitionSpec:
    spec = PartitionSpec(
        id=partition.id,
        kind=partition.kind,
        file=file,
        sha256=digest,
        inputs=partition.inputs,
        outputs=partition.outputs,
        nodes=len(partition.model.graph.node),
    )
    if partition.kind == "quantum":
        node = partition.model.graph.node[0]
        attributes = attributes_of(node)
        site = sites[node.name]
        spec.kernel = site.op
        spec.site = site.key
        spec.path = site.path
        spec.backend = cm.report.backend
        spec.device = cm.report.device
        spec.qubits = int(attributes["qubits"])
        spec.shots = int(attributes["shots"])
    return spec


def _versions() -> dict[str, str]:

    return {
        "qgraph": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
    }


def _write_partitions(
    model: onnx.ModelProto,
    partitions: list[Partition],
    folder: Path,
    sites: dict[str, Site],
    cm: CompiledModule,
    input_names: list[str],
    output_names: list[str],
    notes: list[str],
) -> Manifest:
    """Check and write every partition file, then ``manifest.json``; returns the manifest."""
    value_info = {
        v.name: v for v in [*model.graph.input, *model.graph.value_info, *model.graph.output]
    }
    specs = []
    for partition in partitions:
        onnx.checker.check_model(partition.model, full_check=True)
        path = folder / f"{partition.id}.onnx"
        onnx.save(partition.model, str(path))
        specs.append(_partition_spec(partition, path.name, sha256(path), sites, cm))
    produced = {name: p.id for p in partitions for name in p.outputs}
    edges: dict[tuple[str, str], list[str]] = {}
    for partition in partitions:
        for name in partition.inputs:
            if name in produced:
                edges.setdefault((produced[name], partition.id), []).append(name)
    graph_io = set(input_names) | set(output_names)
    boundary = sorted({n for p in partitions for n in p.outputs} - graph_io)
    manifest = Manifest(
        inputs=[_spec(value_info, n) for n in input_names],
        outputs=[_spec(value_info, n) for n in output_names],
        boundary=[_spec(value_info, n) for n in boundary],
        partitions=specs,
        edges=[(s, t, names) for (s, t), names in edges.items()],
        versions=_versions(),
        model={"file": MODEL_NAME, "sha256": sha256(folder / MODEL_NAME)},
        notes=notes,
        directory=folder,
    )
    manifest.write(folder)
    return manifest


def _verify(manifest: Manifest, reference_module: fx.GraphModule, tensors: list[Any]) -> None:
    """Run the partitioned form on the exact backend against the PyTorch graph (also on the
    exact backend) and record the largest difference in the manifest."""
    assert manifest.directory is not None
    try:
        with torch.no_grad():
            reference = reference_module(*tensors)
        outputs = run(manifest.directory, list(tensors), backend="exact")
    except Exception as exc:
        message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        manifest.verification = {"backend": "exact", "error": message}
        manifest.write(manifest.directory)
        raise QGraphError(
            f"the export in {manifest.directory} was written, but running it failed: {message}. "
            "Re-export with verify=False (--no-verify) to skip the check run."
        ) from exc
    largest, non_finite, compared = 0.0, False, 0
    for spec, expected in zip(manifest.outputs, reference, strict=True):
        if not (expected.is_floating_point() and expected.numel()):
            continue
        difference = (torch.as_tensor(outputs[spec.name]) - expected.detach()).abs()
        non_finite |= not bool(torch.isfinite(difference).all())
        largest = max(largest, float(torch.nan_to_num(difference, nan=0.0, posinf=0.0).max()))
        compared += 1
    manifest.verification = {
        "backend": "exact",
        "max_abs_diff": None if non_finite else largest,
        "non_finite": non_finite,
        "outputs_compared": compared,
    }
    manifest.write(manifest.directory)


def export_onnx(
    cm: CompiledModule,
    example_inputs: tuple[Any, ...],
    out_dir: str | Path,
    example_kwargs: dict[str, Any] | None = None,
    *,
    verify: bool = True,
    progress: bool = True,
    overwrite: bool = False,
) -> Manifest:
    """Export ``cm`` (its eval-mode graph at these example inputs) to ``out_dir``.

    Writes ``model.onnx``, one file per partition and ``manifest.json`` (module docstring).
    With ``verify`` the partitioned form is run once on the exact backend and its largest
    absolute difference from the rewritten PyTorch graph (its quantum ops also on the exact
    backend, whatever the module is bound to) is recorded in the manifest. A folder that
    is not empty is refused unless ``overwrite``; then whatever the export does not write is
    removed after it, so no stale partition stays beside the new manifest.
    Returns the manifest.
    """
    if not isinstance(cm, CompiledModule):
        raise InputError(
            f"export_onnx takes the CompiledModule that qgraph.compile returned; got "
            f"{type(cm).__name__}."
        )
    if not isinstance(example_inputs, (tuple, list)):
        raise InputError(
            "example_inputs must be a tuple of positional arguments, e.g. (input_ids,); got "
            f"{type(example_inputs).__name__}."
        )
    kwargs = dict(example_kwargs or {})
    folder = Path(out_dir)
    make_folder(folder)
    existing = sorted(p.name for p in folder.iterdir())
    if existing and not overwrite:
        raise InputError(
            f"out_dir {folder} is not empty ({len(existing)} entries, e.g. {existing[0]!r}); "
            "pick an empty folder, or pass overwrite=True (qgraph export --overwrite) to "
            "replace its contents: what the export does not write is then removed."
        )
    check_writable(folder)

    notes: list[str] = []
    steps = ["capture the eval graph", "export to ONNX", "annotate and check", "partition"]
    if verify:
        steps.append("verify against PyTorch")
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]qgraph export[/] {task.description}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),  # stdout stays clean for --json and pipes
        disable=not progress,
        transient=True,
    ) as bar:
        task = bar.add_task(steps[0], total=len(steps))

        def advance() -> None:
            bar.advance(task)
            done = int(bar.tasks[0].completed)
            if done < len(steps):
                bar.update(task, description=steps[done])

        was_training = cm.training
        try:
            with _modes_restored(cm, cm.model):
                cm.eval()
                gm, flat_inputs = cm.graph_for(*example_inputs, **kwargs)
                flat, tensors, input_names = flat_module(gm, flat_inputs)
                with _modes_restored(flat):
                    flat.eval()  # the eval-mode capture; fx graphs call the user's submodules
                    output = next(n for n in flat.graph.nodes if n.op == "output")
                    output_names = _output_names(gm, len(output.args[0]))
                    advance()
                    model = _to_onnx(flat, tensors, input_names, output_names, notes)
                    _pin_specialised_sizes(model, gm, input_names, notes)
                    advance()
                    sites = annotate(model, cm)
                    partitions = split(model)  # sets each quantum node's "partition" attribute
                    onnx.checker.check_model(model, full_check=True)
                    onnx.save(model, str(folder / MODEL_NAME))
                    advance()
                    manifest = _write_partitions(
                        model, partitions, folder, sites, cm, input_names, output_names, notes
                    )
                    advance()
                    if verify:
                        _verify(manifest, _with_exact_backend(flat), tensors)
                        advance()
                    if existing:
                        written = {
                            MODEL_NAME,
                            MANIFEST_NAME,
                            *(p.file for p in manifest.partitions),
                        }
                        remove_all_but(folder, written)
        finally:
            cm.train(was_training)  # also selects the mode's graph again
    return manifest
