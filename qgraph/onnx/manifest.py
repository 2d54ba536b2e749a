"""``manifest.json`` of a partitioned export: what it holds, how it is written and checked.

The manifest is the contract between ``qgraph.onnx.export_onnx`` and ``qgraph.onnx.run`` (or a
reviewer's own runner): the partition DAG, every tensor crossing a boundary with its shape
and dtype, the backend and device of each quantum partition, the versions that produced it
and a SHA-256 per file. ``load_manifest`` checks all of it before anything runs: a missing
file, a changed file, a cycle, a dangling tensor, a shape that disagrees with the ONNX file,
partition files that do not add up to the whole model each raise :class:`ManifestError`
naming the problem. The hashes find files that changed or got mixed up; they are not a
signature: whoever can edit the folder can also rewrite the manifest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import onnx

from qgraph.errors import QGraphError
from qgraph.onnx.schemas import REVIEW_DOMAIN, attributes_of

FORMAT = "qgraph.partitioned-onnx"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


class ManifestError(QGraphError, ValueError):
    """A partitioned export that cannot be trusted or run as it is."""


@dataclass
class TensorSpec:
    """A tensor at a boundary: graph input/output or between two partitions."""

    name: str
    dtype: str  # numpy dtype name, e.g. "float32", "int64", "bool"
    shape: list[int | str]  # ints for static sizes, names for symbolic ones


@dataclass
class PartitionSpec:
    """One partition file and its place in the DAG."""

    id: str
    kind: str  # "classical" or "quantum"
    file: str  # relative to the export folder
    sha256: str
    inputs: list[str]
    outputs: list[str]
    nodes: int
    # quantum partitions only
    kernel: str | None = None
    site: str | None = None  # the site key in the compile report
    path: str | None = None  # the replaced module's path
    backend: str | None = None  # the backend the compiled module was bound to
    device: str | None = None  # the device the cost model decided for (None: not costed)
    qubits: int | None = None
    shots: int | None = None


@dataclass
class Manifest:
    """The parsed ``manifest.json`` of an export folder."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    boundary: list[TensorSpec]  # tensors between partitions
    partitions: list[PartitionSpec]
    edges: list[tuple[str, str, list[str]]]  # (producer, consumer, tensors)
    versions: dict[str, str]
    model: dict[str, str]  # the whole model: file and sha256
    notes: list[str] = field(default_factory=list)
    verification: dict[str, Any] | None = None
    directory: Path | None = None

    def tensor(self, name: str) -> TensorSpec:
        """The spec of a graph input, output or boundary tensor."""
        for spec in [*self.inputs, *self.boundary, *self.outputs]:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def partition(self, pid: str) -> PartitionSpec:
        """The partition with this id."""
        for spec in self.partitions:
            if spec.id == pid:
                return spec
        raise KeyError(pid)

    def dag(self) -> nx.DiGraph:
        """The partition DAG as networkx (edges labelled with their tensors)."""
        graph = nx.DiGraph()
        for spec in self.partitions:
            graph.add_node(spec.id, kind=spec.kind)
        for source, target, tensors in self.edges:
            graph.add_edge(source, target, tensors=list(tensors))
        return graph

    def order(self) -> list[PartitionSpec]:
        """The partitions in a topological order of the DAG."""
        return [self.partition(pid) for pid in nx.topological_sort(self.dag())]

    def to_json(self) -> dict[str, Any]:
        """The manifest as the JSON object written to ``manifest.json``."""
        data = asdict(self)
        data.pop("directory")
        data["edges"] = [
            {"from": s, "to": t, "tensors": list(tensors)} for s, t, tensors in self.edges
        ]
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **data}

    def write(self, directory: Path) -> Path:
        """Write ``manifest.json`` into ``directory``."""
        path = directory / MANIFEST_NAME
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path


def sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse(data: Any, where: Path) -> Manifest:
    def fail(problem: str) -> ManifestError:
        return ManifestError(f"{where}: {problem}; re-export with qgraph.onnx.export_onnx.")

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise fail(f"not a qgraph manifest (format is not {FORMAT!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise fail(
            f"format_version {data.get('format_version')!r}; this qgraph reads {FORMAT_VERSION}"
        )
    try:
        return Manifest(
            inputs=[TensorSpec(**t) for t in data["inputs"]],
            outputs=[TensorSpec(**t) for t in data["outputs"]],
            boundary=[TensorSpec(**t) for t in data["boundary"]],
            partitions=[PartitionSpec(**p) for p in data["partitions"]],
            edges=[(e["from"], e["to"], list(e["tensors"])) for e in data["edges"]],
            versions=dict(data["versions"]),
            model=dict(data["model"]),
            notes=list(data.get("notes", [])),
            verification=data.get("verification"),
            directory=where.parent,
        )
    except (KeyError, TypeError) as exc:
        raise fail(f"malformed entry ({type(exc).__name__}: {exc})") from None


def _check_files(manifest: Manifest, directory: Path) -> None:
    files = [(p.id, p.file, p.sha256) for p in manifest.partitions]
    files.append(("model", manifest.model["file"], manifest.model["sha256"]))
    names = [name for _, name, _ in files]
    if len(set(names)) != len(names):
        raise ManifestError(f"a file is listed twice in the manifest: {sorted(names)}.")
    root = directory.resolve()
    for owner, name, expected in files:
        path = directory / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ManifestError(f"{owner}: file {name!r} points outside {directory}.")
        if path.is_symlink() or not path.resolve().is_relative_to(root):
            raise ManifestError(
                f"{owner}: {name} is a link or leads outside {directory}; an export keeps "
                "its files in its own folder."
            )
        if not path.is_file():
            raise ManifestError(f"{owner}: file {name} is missing from {directory}.")
        actual = sha256(path)
        if actual != expected:
            raise ManifestError(
                f"{owner}: {name} has SHA-256 {actual[:12]}… but the manifest records "
                f"{expected[:12]}…: the file changed after export. Re-export, or restore it."
            )


def _check_dag(manifest: Manifest) -> None:
    ids = [p.id for p in manifest.partitions]
    if len(set(ids)) != len(ids):
        raise ManifestError(f"duplicate partition ids in the manifest: {ids}.")
    input_names = [t.name for t in manifest.inputs]
    if len(set(input_names)) != len(input_names):
        raise ManifestError(f"a model input is listed twice: {input_names}.")
    producer: dict[str, str] = dict.fromkeys(input_names, "input")
    for spec in manifest.partitions:
        if spec.kind not in ("classical", "quantum"):
            raise ManifestError(f"partition {spec.id} has kind {spec.kind!r}.")
        if not spec.outputs:
            raise ManifestError(f"partition {spec.id} produces nothing; no export has one.")
        for name in spec.outputs:
            if name in producer:
                raise ManifestError(
                    f"tensor {name!r} is produced twice ({producer[name]} and {spec.id})."
                )
            producer[name] = spec.id
    known = {t.name for t in [*manifest.inputs, *manifest.outputs, *manifest.boundary]}
    derived: dict[tuple[str, str], list[str]] = {}
    for spec in manifest.partitions:
        for name in spec.inputs:
            if name not in producer:
                raise ManifestError(
                    f"partition {spec.id} reads {name!r}, which no partition produces and "
                    "is not a model input."
                )
            if producer[name] != "input":
                derived.setdefault((producer[name], spec.id), []).append(name)
        for name in [*spec.inputs, *spec.outputs]:
            if name not in known:
                raise ManifestError(
                    f"tensor {name!r} (of partition {spec.id}) has no shape and dtype in the "
                    "manifest's inputs, outputs or boundary."
                )
    for output in manifest.outputs:
        if output.name not in producer:
            raise ManifestError(f"model output {output.name!r} is produced by no partition.")
    listed: dict[tuple[str, str], list[str]] = {}
    for source, target, tensors in manifest.edges:
        if (source, target) in listed:
            raise ManifestError(f"the edge {source} → {target} is listed twice.")
        listed[(source, target)] = sorted(tensors)
    implied = {edge: sorted(tensors) for edge, tensors in derived.items()}
    wrong = [e for e in sorted(set(listed) | set(implied)) if listed.get(e) != implied.get(e)]
    if wrong:
        source, target = wrong[0]
        raise ManifestError(
            f"the manifest's edges disagree with the partitions' inputs and outputs: edge "
            f"{source} → {target} lists {listed.get(wrong[0])}, the partitions imply "
            f"{implied.get(wrong[0])}."
        )
    graph = manifest.dag()
    if not nx.is_directed_acyclic_graph(graph):
        cycle = " → ".join(s for s, _ in nx.find_cycle(graph))
        raise ManifestError(f"the partition graph has a cycle ({cycle}); it cannot run.")


def tensor_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    """The name, numpy dtype name and shape (ints, or symbol names) of an ONNX value."""
    tensor = value.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    shape: list[int | str] = [
        d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor.shape.dim
    ]
    return TensorSpec(value.name, dtype, shape)


def _check_quantum_file(spec: PartitionSpec, graph: onnx.GraphProto) -> None:
    """A quantum partition file holds exactly its one node, and the manifest describes it."""
    if len(graph.node) != 1 or graph.node[0].domain != REVIEW_DOMAIN:
        raise ManifestError(
            f"partition {spec.id} is listed as quantum but {spec.file} does not hold exactly "
            f"one {REVIEW_DOMAIN} node."
        )
    node = graph.node[0]
    initializers = {t.name for t in graph.initializer}
    reads = [n for n in node.input if n and n not in initializers]
    if reads != spec.inputs or list(node.output) != spec.outputs:
        raise ManifestError(
            f"partition {spec.id}: its node reads {reads} and writes {list(node.output)}, but "
            f"the manifest lists {spec.inputs} and {spec.outputs}."
        )
    attributes = attributes_of(node)
    described = {
        "kernel": spec.kernel,
        "site_key": spec.site,
        "qubits": spec.qubits,
        "shots": spec.shots,
        "partition": spec.id,
    }
    for name, value in described.items():
        if attributes.get(name) != value:
            raise ManifestError(
                f"partition {spec.id}: the manifest says {name} = {value!r} but {spec.file}'s "
                f"node has {attributes.get(name)!r}."
            )


def _check_contents(manifest: Manifest, directory: Path) -> None:
    """Each file agrees with the manifest, and the partitions are the whole model's nodes."""
    model = onnx.load(str(directory / manifest.model["file"]), load_external_data=False).graph
    for kind, declared, listed in (
        ("inputs", model.input, manifest.inputs),
        ("outputs", model.output, manifest.outputs),
    ):
        if [v.name for v in declared] != [t.name for t in listed]:
            raise ManifestError(
                f"the manifest lists model {kind} {[t.name for t in listed]} but "
                f"{manifest.model['file']} has {[v.name for v in declared]} (order matters)."
            )
    model_nodes = {_signature(node) for node in model.node}
    counted = 0
    for spec in manifest.partitions:
        graph = onnx.load(str(directory / spec.file), load_external_data=False).graph
        if [v.name for v in graph.input] != spec.inputs:
            raise ManifestError(
                f"partition {spec.id}: {spec.file} takes {[v.name for v in graph.input]}, the "
                f"manifest lists {spec.inputs}."
            )
        if [v.name for v in graph.output] != spec.outputs:
            raise ManifestError(
                f"partition {spec.id}: {spec.file} gives {[v.name for v in graph.output]}, the "
                f"manifest lists {spec.outputs}."
            )
        if spec.kind == "quantum":
            _check_quantum_file(spec, graph)
        elif any(node.domain == REVIEW_DOMAIN for node in graph.node):
            raise ManifestError(
                f"partition {spec.id} is listed as classical but {spec.file} has a quantum node."
            )
        if len(graph.node) != spec.nodes:
            raise ManifestError(
                f"partition {spec.id}: the manifest counts {spec.nodes} nodes, {spec.file} has "
                f"{len(graph.node)}."
            )
        for node in graph.node:
            if _signature(node) not in model_nodes:
                raise ManifestError(
                    f"partition {spec.id}: node {node.name or node.op_type} of {spec.file} is "
                    f"not in {manifest.model['file']}; the files come from different exports."
                )
        counted += len(graph.node)
        declared = {v.name: v for v in [*graph.input, *graph.output]}
        for name in [*spec.inputs, *spec.outputs]:
            found, expected = tensor_spec(declared[name]), manifest.tensor(name)
            if (found.dtype, found.shape) != (expected.dtype, expected.shape):
                raise ManifestError(
                    f"tensor {name!r}: the manifest says {expected.dtype}{expected.shape} but "
                    f"{spec.file} declares {found.dtype}{found.shape}."
                )
    if counted != len(model.node):
        raise ManifestError(
            f"the partitions hold {counted} nodes but {manifest.model['file']} has "
            f"{len(model.node)}; a partition is missing or listed twice."
        )


def _signature(node: onnx.NodeProto) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
    """What identifies a node across the whole model and a partition file (the partition id
    attribute aside, a quantum node is the same node in both)."""
    return (node.domain, node.op_type, tuple(node.input), tuple(node.output))


def load_manifest(directory: str | Path) -> Manifest:
    """Read and check the manifest of an export folder; raise ManifestError on any problem."""
    folder = Path(directory)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(
            f"{folder} has no {MANIFEST_NAME}; pass the folder qgraph.onnx.export_onnx wrote."
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON ({exc}).") from None
    manifest = _parse(data, path)
    _check_files(manifest, folder)
    _check_dag(manifest)
    _check_contents(manifest, folder)
    return manifest
