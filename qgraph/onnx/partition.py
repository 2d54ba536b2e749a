"""Split an exported ONNX model into maximal classical partitions and one partition per quantum op.

The split works on the ONNX graph, not on the fx graph: in ONNX, shape arithmetic is made of
tensors (``Shape`` → ``Gather`` …), so everything that crosses a partition boundary is a
typed tensor with a name, which a standalone ONNX file can take as an input. (Splitting
the fx graph would put symbolic sizes on the boundaries, which an ONNX file cannot take.)

Grouping is the one of ``qgraph.scheduler.partition_dag``: a node's level is the largest
number of quantum nodes on a path from the graph inputs to it; the classical nodes of one
level form one partition (all the classical work between two waves of quantum calls).
Levels never decrease along an edge and increase only through a quantum node, so the
partitions ordered by (level, classical first) are topologically ordered, and no classical
node can join a partition of another level without a path through a quantum node leading
out of and back into it. Two classical partitions with no path between them at all (e.g.
side branches after different quantum calls) could be merged and are not: the grouping is
maximal per level, not the fewest partitions possible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
from onnx import helper

from qgraph.errors import UnsupportedGraphError
from qgraph.onnx.schemas import REVIEW_DOMAIN, is_quantum_node


@dataclass
class Partition:
    """One partition of the model: its nodes as a standalone ONNX model and its boundary."""

    id: str  # "c<k>" (classical) or "q<k>" (quantum)
    kind: str  # "classical" or "quantum"
    level: int
    model: onnx.ModelProto
    inputs: list[str] = field(default_factory=list)  # tensors it reads from outside
    outputs: list[str] = field(default_factory=list)  # tensors read outside it (or graph outputs)


def _levels(graph: onnx.GraphProto) -> list[int]:
    producer = {name: i for i, node in enumerate(graph.node) for name in node.output}
    levels: list[int] = []
    for node in graph.node:
        level = 0
        for name in node.input:
            if name in producer:
                source = graph.node[producer[name]]
                level = max(level, levels[producer[name]] + int(is_quantum_node(source)))
        levels.append(level)
    return levels


def _check_flat(graph: onnx.GraphProto) -> None:
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                raise UnsupportedGraphError(
                    f"node {node.name or node.op_type} has a subgraph ({node.op_type}); "
                    "qgraph does not partition control flow yet. Remove the data-dependent "
                    "branch from the model (torch.where instead of if/else on tensor values)."
                )


def split(model: onnx.ModelProto) -> list[Partition]:
    """The partitions of ``model`` in a topological order, each a checked standalone model.

    Quantum partitions are numbered in graph order and their nodes' ``partition`` attribute
    is set on ``model`` itself, so the whole model and the partition files agree.
    """
    graph = model.graph
    _check_flat(graph)
    levels = _levels(graph)
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, node in enumerate(graph.node):
        key = (levels[i], 1, i) if is_quantum_node(node) else (levels[i], 0, 0)
        groups.setdefault(key, []).append(i)

    consumers: dict[str, set[tuple[int, int, int]]] = {}
    for key, members in groups.items():
        for i in members:
            for name in graph.node[i].input:
                consumers.setdefault(name, set()).add(key)
    graph_outputs = {o.name for o in graph.output}
    initializers = {t.name: t for t in graph.initializer}
    value_info = {v.name: v for v in [*graph.input, *graph.value_info, *graph.output]}

    partitions: list[Partition] = []
    counts = {"classical": 0, "quantum": 0}
    for key in sorted(groups):
        members = groups[key]
        kind = "quantum" if key[1] else "classical"
        pid = f"{kind[0]}{counts[kind]}"
        counts[kind] += 1
        nodes = [graph.node[i] for i in members]
        produced = [name for node in nodes for name in node.output if name]
        inside = set(produced)
        reads = [name for node in nodes for name in node.input if name]
        inputs = list(dict.fromkeys(n for n in reads if n not in inside and n not in initializers))
        outputs = [
            name for name in produced if name in graph_outputs or consumers.get(name, set()) - {key}
        ]
        if kind == "quantum":
            for attribute in nodes[0].attribute:
                if attribute.name == "partition":
                    nodes[0].attribute.remove(attribute)
                    break
            nodes[0].attribute.append(helper.make_attribute("partition", pid))
        sub = helper.make_graph(
            [_copy(node) for node in nodes],
            f"{graph.name or 'qgraph'}_{pid}",
            [_typed(value_info, n) for n in inputs],
            [_typed(value_info, n) for n in outputs],
            initializer=[initializers[n] for n in dict.fromkeys(reads) if n in initializers],
            value_info=[value_info[n] for n in produced if n in value_info and n not in outputs],
        )
        opsets = [o for o in model.opset_import if kind == "quantum" or o.domain != REVIEW_DOMAIN]
        sub_model = helper.make_model(
            sub, opset_imports=opsets, ir_version=model.ir_version, producer_name="qgraph"
        )
        partitions.append(Partition(pid, kind, key[0], sub_model, inputs, outputs))
    return partitions


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy


def _typed(value_info: dict[str, onnx.ValueInfoProto], name: str) -> onnx.ValueInfoProto:
    if name not in value_info:
        raise ValueError(
            f"tensor {name!r} crosses a partition boundary but the exported model has no type "
            "for it; this is a qgraph bug (the exporter records a type for every value)."
        )
    return value_info[name]
