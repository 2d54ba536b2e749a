"""The partition DAG: maximal classical partitions and quantum nodes of a rewritten graph.

Its classical and quantum critical paths bound what overlapping the two can gain; the review
page draws it and ``qgraph.onnx`` exports by the same grouping.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import torch.fx as fx

from qgraph.scheduler.quantum import is_quantum
from qgraph.scheduler.timeline import Timeline

__all__ = ["PartitionDAG", "partition_dag"]


@dataclass
class PartitionDAG:
    """Maximal classical partitions and quantum nodes of a graph, as a networkx DiGraph.

    Node attributes: ``kind`` ("classical"/"quantum"), ``nodes`` (fx node names, in graph
    order), ``weight_s`` (measured time, 0 without a timeline).
    """

    graph: nx.DiGraph

    def critical_path(self, kind: str | None = None) -> tuple[float, list[str]]:
        """The heaviest path counting only ``kind``'s weights (None: both); (seconds, path)."""
        best: dict[str, tuple[float, str | None]] = {}
        for name in nx.topological_sort(self.graph):
            data = self.graph.nodes[name]
            own = data["weight_s"] if kind in (None, data["kind"]) else 0.0
            pred = max(
                ((best[p][0], p) for p in self.graph.predecessors(name)),
                default=(0.0, None),
            )
            best[name] = (pred[0] + own, pred[1])
        if not best:
            return 0.0, []
        end = max(best, key=lambda n: best[n][0])
        length, path = best[end][0], [end]
        while (prev := best[path[-1]][1]) is not None:
            path.append(prev)
        return length, path[::-1]

    @property
    def classical_critical_path_s(self) -> float:
        """The heaviest path's classical time: the main thread's work, in seconds."""
        return self.critical_path("classical")[0]

    @property
    def quantum_critical_path_s(self) -> float:
        """The heaviest path's quantum time: jobs that must run one after another."""
        return self.critical_path("quantum")[0]

    @property
    def ideal_bound_s(self) -> float:
        """max(classical, quantum critical path): no schedule of this work can beat it."""
        return max(self.classical_critical_path_s, self.quantum_critical_path_s)

    def partitions(self, kind: str | None = None) -> list[str]:
        """The DAG's node names of this kind (None: all), in insertion (graph) order."""
        return [n for n, d in self.graph.nodes(data=True) if kind in (None, d["kind"])]


def partition_dag(gm: fx.GraphModule, timeline: Timeline | None = None) -> PartitionDAG:
    """The partition DAG of ``gm``, weighted by ``timeline``'s measurements when given.

    Grouping (cycle-safe): a node's level is the largest number of quantum nodes on a path
    from the inputs to it; the classical nodes of one level form a partition (all the
    classical work between two waves of quantum calls). Every edge goes from a level to the
    same or a higher one, and only through a quantum node to a higher one, so ordering
    partitions by (level, classical before quantum) is topological: the contraction is
    acyclic. Merging a partition with anything else on a path through a quantum node would
    make a cycle, so each partition is maximal per level; partitions of different levels
    with no path between them could still be merged (it is not the fewest possible).
    Placeholders, attribute reads and the output are not work and join no partition.

    Weights from a timeline: a classical partition weighs the sum of its nodes' times over
    all micro-batches (one main thread runs them all); a quantum node weighs the mean time of
    its jobs (the micro-batches' jobs run concurrently).
    """
    classical_w: dict[str, float] = {}
    quantum_w: dict[str, list[float]] = {}
    if timeline is not None:
        for event in timeline.events:
            if event.node is None or event.phase != "forward":
                continue
            if event.kind == "classical":
                classical_w[event.node] = classical_w.get(event.node, 0.0) + event.duration_s
            elif event.kind in ("quantum", "cache"):
                quantum_w.setdefault(event.node, []).append(event.duration_s)
    work = [n for n in gm.graph.nodes if n.op in ("call_function", "call_method", "call_module")]
    work_set = set(work)
    level: dict[fx.Node, int] = {}
    for node in gm.graph.nodes:
        level[node] = max(
            (level[p] + (1 if is_quantum(p) else 0) for p in node.all_input_nodes), default=0
        )
    label: dict[fx.Node, str] = {}
    groups: dict[int, str] = {}
    dag = nx.DiGraph()
    for node in work:
        if is_quantum(node):
            name = f"q:{node.name}"
            times = quantum_w.get(node.name, [])
            dag.add_node(
                name,
                kind="quantum",
                nodes=[node.name],
                level=level[node],
                weight_s=sum(times) / len(times) if times else 0.0,
            )
        else:
            root = level[node]
            if root not in groups:
                groups[root] = f"c{len(groups)}"
                dag.add_node(
                    groups[root], kind="classical", nodes=[], level=level[node], weight_s=0.0
                )
            name = groups[root]
            dag.nodes[name]["nodes"].append(node.name)
            dag.nodes[name]["weight_s"] += classical_w.get(node.name, 0.0)
        label[node] = name
    for node in work:
        for p in node.all_input_nodes:
            if p in work_set and label[p] != label[node]:
                dag.add_edge(label[p], label[node])
    if not nx.is_directed_acyclic_graph(dag):  # the grouping above makes this unreachable
        raise RuntimeError("qgraph: the partition grouping produced a cycle (a bug).")
    return PartitionDAG(dag)
