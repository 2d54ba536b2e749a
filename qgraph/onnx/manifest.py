"""``manifest.json`` of a partitioned export: what it holds, how it is written and checked.

The manifest is the contract between ``qgraph.onnx.export_onnx`` and ``qgraph.onnx.run`` (or a
reviewer's own runner): the partition DAG, every tensor crossing a boundary with its shape
and dtype, the backend and device of each quantum partition, the versions that produced it
and a SHA-256 per file. ``load_manifest`` checks all of it before anything runs: a missing
file, a changed file, a cycle, a dangling tensor or a shape that disagrees with the ONNX
file each raise :class:`ManifestError` naming the problem.
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
    for owner, name, expected in files:
        path = directory / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ManifestError(f"{owner}: file {name!r} points outside {directory}.")
        if not path.is_file():
            raise ManifestError(f"{owner}: file {name} is missing from {directory}.")
        actual = sha256(path)
        if actual != expected:
            raise ManifestError(
                f"{owner}: {name} has SHA-256 {actual[:12]}… but the manifest records "
                f"{expected[:12]}…: the file changed after export. Re-export, or restore it."
            )


def _check_dag(manifest: Manifest) -> None:
    producer: dict[str, str] = {t.name: "input" for t in manifest.inputs}
    ids = [p.id for p in manifest.partitions]
    if len(set(ids)) != len(ids):
        raise ManifestError(f"duplicate partition ids in the manifest: {ids}.")
    for spec in manifest.partitions:
        for name in spec.outputs:
            if name in producer:
                raise ManifestError(
                    f"tensor {name!r} is produced twice ({producer[name]} and {spec.id})."
                )
            producer[name] = spec.id
    known = {t.name for t in [*manifest.inputs, *manifest.outputs, *manifest.boundary]}
    derived: set[tuple[str, str]] = set()
    for spec in manifest.partitions:
        for name in spec.inputs:
            if name not in producer:
                raise ManifestError(
                    f"partition {spec.id} reads {name!r}, which no partition produces and "
                    "is not a model input."
                )
            if name not in known:
                raise ManifestError(f"tensor {name!r} (read by {spec.id}) has no shape/dtype.")
            if producer[name] != "input":
                derived.add((producer[name], spec.id))
    for output in manifest.outputs:
        if output.name not in producer:
            raise ManifestError(f"model output {output.name!r} is produced by no partition.")
    listed = {(s, t) for s, t, _ in manifest.edges}
    if listed != derived:
        extra, missing = sorted(listed - derived), sorted(derived - listed)
        raise ManifestError(
            f"the manifest's edges disagree with the partitions' inputs and outputs "
            f"(listed but not derived: {extra}; derived but not listed: {missing})."
        )
    graph = manifest.dag()
    if not nx.is_directed_acyclic_graph(graph):
        cycle = " → ".join(s for s, _ in nx.find_cycle(graph))
        raise ManifestError(f"the partition graph has a cycle ({cycle}); it cannot run.")


def _shape_of(value: onnx.ValueInfoProto) -> tuple[str, list[int | str]]:
    tensor = value.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    shape: list[int | str] = [
        d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor.shape.dim
    ]
    return dtype, shape


def _check_shapes(manifest: Manifest, directory: Path) -> None:
    for spec in manifest.partitions:
        graph = onnx.load(str(directory / spec.file), load_external_data=False).graph
        declared = {v.name: v for v in [*graph.input, *graph.output]}
        for name in [*spec.inputs, *spec.outputs]:
            if name not in declared:
                raise ManifestError(
                    f"partition {spec.id}: the manifest lists tensor {name!r} but {spec.file} "
                    "has no such input or output."
                )
            dtype, shape = _shape_of(declared[name])
            expected = manifest.tensor(name)
            if (dtype, shape) != (expected.dtype, expected.shape):
                raise ManifestError(
                    f"tensor {name!r}: the manifest says {expected.dtype}{expected.shape} but "
                    f"{spec.file} declares {dtype}{shape}."
                )


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
    _check_shapes(manifest, folder)
    return manifest
