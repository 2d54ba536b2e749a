"""HybridScheduler: run a compiled graph with quantum jobs in flight while PyTorch works.

``HybridScheduler(cm, microbatches=k)`` executes the rewritten ``fx.GraphModule`` of a
``CompiledModule`` node by node with a ``torch.fx.Interpreter``:

* classical nodes run in PyTorch on the calling (main) thread;
* every ``qgraph::qaap`` / ``qgraph::qrce`` node is submitted to a thread pool as soon as its
  inputs exist, as one job per op call (the backend puts every instance of the call in it,
  chunked to its limits), so classical work that does not depend on it goes on meanwhile;
* with ``microbatches=k`` the batch (dim 0 of every batch-major input) is split into k
  slices run as k interleaved copies of the graph: while one slice waits for a job, the main
  thread does another's classical work. Outputs are concatenated along dim 0.

The ops are ordinary differentiable torch ops; the worker runs them under the caller's grad
mode (and inference mode), so autograd records them and ``loss.backward()`` works through
``run()``'s outputs as through ``cm(...)``. ``backward(loss)`` additionally runs the
micro-batches' backward passes concurrently, so backward quantum jobs (QRCE parameter shift,
QAAP SPSA) overlap too.

QRCE results, outside autograd (``torch.no_grad()`` / inference mode), are shared between
the micro-batches of a step (a token computed for one slice is not run again for the next)
and kept across steps in a cache keyed by (site, token ids, parameter version): the version
counters of the site's angle table and weights, which every in-place update (each optimizer
step) increments, checked against a snapshot of their values so that edits through ``.data``
(which bypass the counters) invalidate it too. With autograd on, every QRCE call runs as is
(the backend still runs each distinct token of the call once): sharing rows between slices
would join their backward graphs, which ``backward()`` runs concurrently.

Every run records a ``Timeline`` (``scheduler.timeline``): one event per node execution and
per job (kind, start, end, thread, micro-batch; for jobs the backend's records: queue/run
split where the backend reports queue time, circuits, shots, bytes), exportable as
Chrome-trace JSON (``timeline.to_chrome_trace(path)``, opens in Perfetto), with a per-step
``summary()``. ``partition_dag(gm)`` builds the DAG of maximal classical partitions and
quantum nodes (networkx), whose classical and quantum critical paths bound the overlap.

Limits: one main thread does all classical forward work, so its Python overhead per node
(~10-30 µs) is paid k times with k micro-batches; PyTorch releases the GIL inside kernels
but Python-level work in the worker threads (backend bookkeeping) competes with it. Sampled
backends draw from one random stream, so with concurrent jobs the assignment of samples to
micro-batches depends on completion order (statistically equivalent, not bitwise
reproducible). Train-mode randomness in the graph (dropout) is drawn per slice, so it
differs from an unsplit run.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import heapq
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import torch
import torch.fx as fx
import torch.utils._pytree as pytree

import qgraph.ops  # noqa: F401  (registers torch.ops.qgraph.*)
from qgraph.backends import Backend, ExecutionRecord, get_backend
from qgraph.kernels.qaap import qaap_register_sizes

if TYPE_CHECKING:
    from qgraph.api import CompiledModule

__all__ = [
    "QUANTUM_OPS",
    "HybridScheduler",
    "PartitionDAG",
    "StepSummary",
    "Timeline",
    "TimelineEvent",
    "partition_dag",
]

#: the fx targets that run on a quantum backend
QUANTUM_OPS = frozenset({torch.ops.qgraph.qaap.default, torch.ops.qgraph.qrce.default})


def is_quantum(node: fx.Node) -> bool:
    """Whether ``node`` is a quantum op call."""
    return node.op == "call_function" and node.target in QUANTUM_OPS


def _bound_args(node_target: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The op's arguments by schema name."""
    names = [a.name for a in node_target._schema.arguments]
    bound = dict(zip(names, args, strict=False))
    bound.update(kwargs)
    return bound


# ---------------------------------------------------------------------------------------------
# backend records, attributed to the job (thread) that produced them
# ---------------------------------------------------------------------------------------------


class _RecordTap(list):  # type: ignore[type-arg]
    """A backend's ``stats.records`` list that also tells listeners about each new record."""

    def __init__(self, records: Sequence[ExecutionRecord]) -> None:
        super().__init__(records)
        self.listeners: list[Callable[[ExecutionRecord], None]] = []

    def append(self, record: ExecutionRecord) -> None:
        super().append(record)
        for listener in list(self.listeners):
            listener(record)

    def extend(self, records: Any) -> None:
        for record in records:
            self.append(record)


def _tap(backend: Backend) -> _RecordTap:
    """Install (once) the tap on ``backend.stats.records``; the records themselves are kept."""
    records = backend.stats.records
    if not isinstance(records, _RecordTap):
        records = _RecordTap(records)
        backend.stats.records = records
    return records


def _qaap_qubits(q: torch.Tensor, k: torch.Tensor) -> int:
    """Qubits of one QAAP circuit: index register ⌈log2 Sk⌉ + feature register ⌈log2 D⌉."""
    return sum(qaap_register_sizes(k.shape[-2], q.shape[-1]))


# ---------------------------------------------------------------------------------------------
# the timeline
# ---------------------------------------------------------------------------------------------


@dataclass
class TimelineEvent:
    """One node execution or job; times in seconds from the start of the step."""

    name: str
    kind: str  # "classical", "quantum" (a job), "cache" (QRCE served without a job), "backward"
    start_s: float
    end_s: float
    thread: str
    microbatch: int | None = None
    node: str | None = None  # the fx node
    site: str | None = None
    phase: str = "forward"
    submitted_s: float | None = None  # jobs: when the main thread submitted it
    queue_s: float | None = None  # from the backend's records, where it reports queue time
    run_s: float | None = None  # the job's time minus its queue time (where that is known)
    transfer_s: float | None = None  # no backend reports transfer time separately yet
    jobs: int = 0
    circuits: int = 0
    shots: int = 0
    bytes_received: int = 0
    raw_shot_bytes: int = 0  # what raw shots would have been: shots × qubits bits / 8
    tokens: int = 0  # QRCE: token ids in the call
    unique_tokens: int = 0  # QRCE: distinct ids in the call
    computed_tokens: int = 0  # QRCE: ids whose circuits ran (not shared or cached)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class StepSummary:
    """Totals of one step (a ``run()``, plus ``backward()`` when used)."""

    microbatches: int
    wall_s: float  # run() (+ backward()) wall time
    classical_s: float  # classical node time on the main thread (summed)
    quantum_s: float  # job time, summed over jobs (overlapping jobs count each)
    quantum_calls: int  # quantum op calls (forward nodes × micro-batches, + backward jobs)
    jobs: int  # backend records (jobs) in the step
    circuits: int
    shots: int
    bytes_received: int  # compact results (counts / expectation values) that came back
    raw_shot_bytes: int  # raw shot records would have been: shots × qubits bits
    bytes_saved: int  # raw_shot_bytes - bytes_received of sampled jobs (< 0: raw is smaller)
    qrce_tokens: int  # token ids fed to QRCE nodes
    qrce_unique_tokens: int  # distinct per call (what the backend's own dedup runs)
    qrce_computed_tokens: int  # circuits actually run after sharing/caching
    backward_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Timeline:
    """The events of one step, and what the backends reported."""

    microbatches: int = 1
    events: list[TimelineEvent] = field(default_factory=list)
    wall_s: float = 0.0
    backward_s: float = 0.0
    origin: float = field(default_factory=time.perf_counter)  # perf_counter at t = 0
    main_thread: str = field(default_factory=lambda: threading.current_thread().name)

    def add(self, event: TimelineEvent) -> None:
        self.events.append(event)

    def of_kind(self, kind: str) -> list[TimelineEvent]:
        return [e for e in self.events if e.kind == kind]

    def summary(self) -> StepSummary:
        """The step's totals (see StepSummary)."""
        classical = [e for e in self.events if e.kind == "classical" and e.phase == "forward"]
        jobs = [e for e in self.events if e.kind == "quantum"]
        calls = [e for e in self.events if e.kind in ("quantum", "cache") and e.phase == "forward"]
        raw = sum(e.raw_shot_bytes for e in jobs)
        sampled_received = sum(e.bytes_received for e in jobs if e.shots > 0)
        return StepSummary(
            microbatches=self.microbatches,
            wall_s=self.wall_s + self.backward_s,
            classical_s=sum(e.duration_s for e in classical),
            quantum_s=sum(e.duration_s for e in jobs),
            quantum_calls=len(calls) + len([e for e in jobs if e.phase == "backward"]),
            jobs=sum(e.jobs for e in jobs),
            circuits=sum(e.circuits for e in jobs),
            shots=sum(e.shots for e in jobs),
            bytes_received=sum(e.bytes_received for e in jobs),
            raw_shot_bytes=raw,
            bytes_saved=raw - sampled_received,
            qrce_tokens=sum(e.tokens for e in calls),
            qrce_unique_tokens=sum(e.unique_tokens for e in calls),
            qrce_computed_tokens=sum(e.computed_tokens for e in calls),
            backward_s=self.backward_s,
        )

    def chrome_trace(self) -> dict[str, Any]:
        """The Chrome-trace document (``traceEvents``, complete "X" events, µs)."""
        pid = os.getpid()
        tids: dict[str, int] = {self.main_thread: 0}  # the classical work: tid 0
        for event in self.events:
            tids.setdefault(event.thread, len(tids))
        trace: list[dict[str, Any]] = [
            {"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": "qgraph"}}
        ]
        for thread, tid in tids.items():
            trace.append(
                {"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": thread}}
            )
        for event in self.events:
            args = {
                key: value
                for key, value in event.__dict__.items()
                if key not in ("name", "kind", "start_s", "end_s", "thread") and value is not None
            }
            tid = tids[event.thread]
            trace.append(
                {
                    "name": event.name,
                    "cat": event.kind,
                    "ph": "X",
                    "ts": event.start_s * 1e6,
                    "dur": max(event.duration_s, 0.0) * 1e6,
                    "pid": pid,
                    "tid": tid,
                    "args": args,
                }
            )
            if event.kind == "quantum" and event.queue_s:  # the split, nested under the job
                queue_end = min(event.start_s + event.queue_s, event.end_s)
                for name, start, end in (
                    ("queue", event.start_s, queue_end),
                    ("run", queue_end, event.end_s),
                ):
                    trace.append(
                        {
                            "name": name,
                            "cat": "quantum.phase",
                            "ph": "X",
                            "ts": start * 1e6,
                            "dur": max(end - start, 0.0) * 1e6,
                            "pid": pid,
                            "tid": tid,
                        }
                    )
        return {"traceEvents": trace, "displayTimeUnit": "ms"}

    def to_chrome_trace(self, path: str | Path) -> Path:
        """Write the Chrome-trace JSON to ``path`` (open it in https://ui.perfetto.dev)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.chrome_trace()))
        return path


# ---------------------------------------------------------------------------------------------
# the partition DAG
# ---------------------------------------------------------------------------------------------


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
        return self.critical_path("classical")[0]

    @property
    def quantum_critical_path_s(self) -> float:
        return self.critical_path("quantum")[0]

    @property
    def ideal_bound_s(self) -> float:
        """max(classical, quantum critical path): no schedule of this work can beat it."""
        return max(self.classical_critical_path_s, self.quantum_critical_path_s)

    def partitions(self, kind: str | None = None) -> list[str]:
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


# ---------------------------------------------------------------------------------------------
# execution plan and state
# ---------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """What the scheduler precomputes once per graph."""

    order: dict[fx.Node, int]
    placeholders: list[fx.Node]
    inputs: dict[fx.Node, list[fx.Node]]
    users: dict[fx.Node, list[fx.Node]]
    priority: dict[fx.Node, tuple[int, int]]  # (quantum nodes ahead, nodes ahead), larger first
    output: fx.Node


def _make_plan(gm: fx.GraphModule) -> _Plan:
    nodes = list(gm.graph.nodes)
    order = {n: i for i, n in enumerate(nodes)}
    inputs = {n: list(n.all_input_nodes) for n in nodes}
    users = {n: list(n.users) for n in nodes}
    priority: dict[fx.Node, tuple[int, int]] = {}
    for node in reversed(nodes):
        ahead = max((priority[u] for u in users[node]), default=(0, 0))
        priority[node] = (ahead[0] + (1 if is_quantum(node) else 0), ahead[1] + 1)
    (output,) = [n for n in nodes if n.op == "output"]
    return _Plan(
        order, [n for n in nodes if n.op == "placeholder"], inputs, users, priority, output
    )


@dataclass
class _Job:
    """One submitted quantum op call."""

    microbatch: int
    node: fx.Node
    site: str
    qubits: int
    submitted: float
    chunk: _Chunk | None = None  # QRCE: the token rows this job produces
    started: float = 0.0
    ended: float = 0.0
    thread: str = ""
    records: list[ExecutionRecord] = field(default_factory=list)
    tokens: tuple[int, int, int] = (0, 0, 0)  # QRCE: total, unique, computed


@dataclass
class _Chunk:
    """QRCE rows for a set of token ids: ready, or being computed by a job."""

    ids: torch.Tensor  # sorted distinct ids
    rows: torch.Tensor | None = None
    waiters: list[_Waiter] = field(default_factory=list)


@dataclass
class _Waiter:
    """A QRCE node waiting for chunks computed by jobs."""

    microbatch: int
    node: fx.Node
    token_ids: torch.Tensor
    chunks: list[_Chunk]
    tokens: tuple[int, int, int] = (0, 0, 0)  # total, unique, computed
    own_job: bool = False


@dataclass
class _StepSite:
    """A QRCE site's parameters and rows within one step."""

    angles: torch.Tensor
    weights: torch.Tensor
    chunks: list[_Chunk] = field(default_factory=list)


@dataclass
class _CacheEntry:
    """QRCE rows kept across steps while the site's parameters are unchanged."""

    versions: tuple[int, int, int, int]
    angles: torch.Tensor
    weights: torch.Tensor
    chunk: _Chunk


def _versions(angles: torch.Tensor, weights: torch.Tensor) -> tuple[int, int, int, int]:
    return (angles._version, weights._version, angles.data_ptr(), weights.data_ptr())


class _Microbatch:
    """One slice's interpreter state."""

    def __init__(self, index: int, gm: fx.GraphModule, plan: _Plan, flat: list[Any]) -> None:
        self.index = index
        self.interp = fx.Interpreter(gm, garbage_collect_values=False)
        self.interp.env = {}
        self.missing = {n: len(plan.inputs[n]) for n in plan.inputs}
        self.refs = {n: len(plan.users[n]) for n in plan.users}
        self.result: Any = None
        self.done = False
        if len(flat) != len(plan.placeholders):
            raise ValueError(
                f"the graph takes {len(plan.placeholders)} inputs; got {len(flat)} after "
                "flattening the arguments."
            )


# ---------------------------------------------------------------------------------------------
# the scheduler
# ---------------------------------------------------------------------------------------------


class HybridScheduler:
    """Runs a CompiledModule's graph with asynchronous quantum jobs and micro-batch pipelining.

    Args:
        cm: the compiled module (``qgraph.compile(...)``); its current mode and parameters.
        microbatches: slices of the batch (dim 0 of each input whose first dimension is the
            batch size, i.e. that of the first tensor input); must divide the batch.
        max_workers: threads that wait on jobs (default: max(4, 2 × microbatches), ≤ 32).
        cache: outside autograd, share QRCE rows between micro-batches and keep them across
            steps while the parameters are unchanged (False: every QRCE node calls the op as
            is, one job per call).
    """

    def __init__(
        self,
        cm: CompiledModule,
        microbatches: int = 1,
        max_workers: int | None = None,
        *,
        cache: bool = True,
    ) -> None:
        from qgraph.api import CompiledModule

        if not isinstance(cm, CompiledModule):
            raise TypeError(
                f"HybridScheduler runs a qgraph CompiledModule (qgraph.compile(...)); got "
                f"{type(cm).__name__}."
            )
        if isinstance(microbatches, bool) or not isinstance(microbatches, int) or microbatches < 1:
            raise ValueError(f"microbatches must be an integer ≥ 1; got {microbatches!r}.")
        if max_workers is not None and (
            isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1
        ):
            raise ValueError(f"max_workers must be an integer ≥ 1 or None; got {max_workers!r}.")
        self.cm = cm
        self.microbatches = microbatches
        self.max_workers = max_workers or min(32, max(4, 2 * microbatches))
        self.cache = bool(cache)
        self.timeline = Timeline(microbatches)
        self._pool: cf.ThreadPoolExecutor | None = None
        self._plans: dict[int, tuple[fx.GraphModule, _Plan]] = {}
        self._cache: dict[str, _CacheEntry] = {}
        self._jobs_by_thread: dict[int, _Job] = {}
        self._site_qubits: dict[str, int] = {}
        self._last: _LastRun | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def _executor(self) -> cf.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = cf.ThreadPoolExecutor(self.max_workers, thread_name_prefix="qgraph-job")
        return self._pool

    def close(self) -> None:
        """Stop the worker threads (a later run() starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> HybridScheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(*args, **kwargs)

    def clear_cache(self) -> None:
        """Forget the cached QRCE rows."""
        self._cache.clear()

    # -- public results ------------------------------------------------------------------
    def summary(self) -> StepSummary:
        """The last step's totals (``timeline.summary()``)."""
        return self.timeline.summary()

    def partition_dag(self) -> PartitionDAG:
        """The partition DAG of the graph the last run used, weighted by its timeline."""
        if self._last is None:
            return partition_dag(self.cm.graph_module)
        return partition_dag(self._last.gm, self.timeline)

    # -- splitting and merging -----------------------------------------------------------
    def _split(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        k = self.microbatches
        if k == 1:
            return [(args, kwargs)]
        leaves, spec = pytree.tree_flatten((args, kwargs))
        batched = [x for x in leaves if isinstance(x, torch.Tensor) and x.dim() >= 1]
        if not batched:
            raise ValueError(
                f"microbatches={k} splits the inputs along dim 0, but no input is a tensor with "
                "a batch dimension."
            )
        batch = batched[0].shape[0]
        if batch % k:
            divisors = [d for d in range(1, batch + 1) if batch % d == 0]
            raise ValueError(
                f"microbatches={k} does not divide the batch size {batch} (dim 0 of the first "
                f"tensor input, shape {tuple(batched[0].shape)}); use one of {divisors}."
            )
        size = batch // k
        pieces = []
        for m in range(k):
            sliced = [
                x[m * size : (m + 1) * size]
                if isinstance(x, torch.Tensor) and x.dim() >= 1 and x.shape[0] == batch
                else x
                for x in leaves
            ]
            sub_args, sub_kwargs = pytree.tree_unflatten(sliced, spec)
            pieces.append((tuple(sub_args), dict(sub_kwargs)))
        return pieces

    @staticmethod
    def _merge(results: list[Any]) -> Any:
        if len(results) == 1:
            return results[0]
        flats = [pytree.tree_flatten(r) for r in results]
        spec = flats[0][1]
        merged = []
        for position, leaves in enumerate(zip(*(f[0] for f in flats), strict=True)):
            first = leaves[0]
            if isinstance(first, torch.Tensor):
                if first.dim() == 0:
                    raise ValueError(
                        f"output {position} is a 0-d tensor per micro-batch (a reduction over "
                        "the batch?); micro-batched outputs must be batch-major. Reduce after "
                        "run(), or use microbatches=1."
                    )
                merged.append(torch.cat(leaves, dim=0))
            else:
                merged.append(first)
        return pytree.tree_unflatten(merged, spec)

    # -- the graph -----------------------------------------------------------------------
    def _graph(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[fx.GraphModule, Callable[[tuple[Any, ...], dict[str, Any]], list[Any]]]:
        cm = self.cm
        entry = cm.capture_for(*args, **kwargs)
        if entry.graph_module is not cm.graph_module:
            cm._modules["graph_module"] = entry.graph_module

        def flatten(call_args: tuple[Any, ...], call_kwargs: dict[str, Any]) -> list[Any]:
            return entry.flatten(cm.bind(call_args, call_kwargs))

        return entry.graph_module, flatten

    def _plan(self, gm: fx.GraphModule) -> _Plan:
        cached = self._plans.get(id(gm))
        if cached is None or cached[0] is not gm:
            cached = (gm, _make_plan(gm))
            self._plans[id(gm)] = cached
        return cached[1]

    # -- running -------------------------------------------------------------------------
    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Run the compiled module on these inputs (the model's signature); returns its output.

        The result equals ``cm(*args, **kwargs)`` up to floating-point reassociation in
        kernels that see a smaller batch; ``self.timeline`` holds the step's events.
        """
        cm = self.cm
        pieces = self._split(tuple(args), kwargs)
        timeline = Timeline(self.microbatches)
        self.timeline = timeline
        cm.report.timeline = timeline  # the review page (report.to_html) shows the latest step
        main = threading.current_thread().name
        if not cm.report.quantum_sites:  # nothing offloaded: the original model, as cm does
            results = []
            for m, (a, kw) in enumerate(pieces):
                start = time.perf_counter()
                results.append(cm.run_original(*a, **kw))
                timeline.add(
                    TimelineEvent(
                        "original model",
                        "classical",
                        start - timeline.origin,
                        time.perf_counter() - timeline.origin,
                        main,
                        m,
                    )
                )
            timeline.wall_s = time.perf_counter() - timeline.origin
            self._last = None
            return self._merge(results)
        gm, flatten = self._graph(*pieces[0])
        plan = self._plan(gm)
        flats = [flatten(a, kw) for a, kw in pieces]
        mode = cm.model_in_mode() if cm.report.frontend == "symbolic_trace" else _nothing()
        with mode, self._listening(gm):
            raw = self._execute(gm, plan, flats, timeline)
        outputs = self._merge(raw)
        timeline.wall_s = time.perf_counter() - timeline.origin
        self._last = _LastRun(gm, raw, outputs)
        return gm.graph.process_outputs(outputs)

    @contextlib.contextmanager
    def _listening(self, gm: fx.GraphModule) -> Iterator[None]:
        """Route every record the graph's backends append to the job (thread) that ran it."""
        taps = self._backend_taps(gm)

        def listener(record: ExecutionRecord) -> None:
            job = self._jobs_by_thread.get(threading.get_ident())
            if job is not None:
                job.records.append(record)

        for tap in taps:
            tap.listeners.append(listener)
        try:
            yield
        finally:
            for tap in taps:
                tap.listeners.remove(listener)

    def _execute(
        self, gm: fx.GraphModule, plan: _Plan, flats: list[list[Any]], timeline: Timeline
    ) -> list[Any]:
        origin = timeline.origin
        main = threading.current_thread().name
        grad = torch.is_grad_enabled()
        inference = torch.is_inference_mode_enabled()
        share = self.cache and not grad  # QRCE rows shared across slices and steps
        batches = [_Microbatch(i, gm, plan, flat) for i, flat in enumerate(flats)]
        ready: list[tuple[Any, ...]] = []
        inflight: dict[cf.Future[Any], _Job] = {}
        finished: queue.SimpleQueue[cf.Future[Any]] = queue.SimpleQueue()
        step_sites: dict[str, _StepSite] = {}  # QRCE rows of this step, per site

        def release(mb: _Microbatch, node: fx.Node) -> None:
            """``node`` has consumed its inputs: drop values nobody else needs."""
            for p in plan.inputs[node]:
                mb.refs[p] -= 1
                if mb.refs[p] == 0 and p is not plan.output:
                    mb.interp.env.pop(p, None)

        def complete(mb: _Microbatch, node: fx.Node, value: Any) -> None:
            mb.interp.env[node] = value
            for user in plan.users[node]:
                mb.missing[user] -= 1
                if mb.missing[user] == 0:
                    schedule(mb, user)

        def schedule(mb: _Microbatch, node: fx.Node) -> None:
            if is_quantum(node):
                submit(mb, node)
            else:
                p = plan.priority[node]
                heapq.heappush(ready, (-p[0], mb.index, -p[1], plan.order[node], node))

        def submit(mb: _Microbatch, node: fx.Node) -> None:
            args, kwargs = mb.interp.fetch_args_kwargs_from_env(node)
            release(mb, node)
            bound = _bound_args(node.target, args, kwargs)
            site = bound["site"]
            now = time.perf_counter()
            if node.target is torch.ops.qgraph.qaap.default:
                qubits = _qaap_qubits(bound["q"], bound["k"])
                self._site_qubits[site] = qubits
                launch(_Job(mb.index, node, site, qubits, now), node.target, args, kwargs)
                return
            token_ids, angles, weights = bound["token_ids"], bound["angle_table"], bound["weights"]
            qubits = int(angles.shape[-1])
            self._site_qubits[site] = qubits
            unique = torch.unique(token_ids.reshape(-1))
            if not share:  # autograd on: each call runs as is (see the class doc)
                job = _Job(mb.index, node, site, qubits, now)
                job.tokens = (token_ids.numel(), int(unique.numel()), int(unique.numel()))
                launch(job, node.target, args, kwargs)
                return
            if site not in step_sites:
                step_sites[site] = _StepSite(angles, weights)
                entry = self._cache.get(site)
                if entry is not None and self._valid(entry, angles, weights):
                    step_sites[site].chunks.append(entry.chunk)
                elif entry is not None:
                    del self._cache[site]
            chunks = step_sites[site].chunks
            waiter = _Waiter(mb.index, node, token_ids, [])
            covered = torch.zeros_like(unique, dtype=torch.bool)
            for chunk in chunks:
                hits = torch.isin(unique, chunk.ids.to(unique.device))
                if bool(hits.any()):
                    waiter.chunks.append(chunk)
                    covered |= hits
            missing = unique[~covered]
            waiter.tokens = (token_ids.numel(), int(unique.numel()), int(missing.numel()))
            if missing.numel():
                chunk = _Chunk(missing)
                chunks.append(chunk)
                waiter.chunks.append(chunk)
                waiter.own_job = True
                job = _Job(mb.index, node, site, qubits, now, chunk=chunk, tokens=waiter.tokens)
                call_args = list(args)
                call_args[0] = missing
                launch(job, node.target, tuple(call_args), kwargs)
            pending = [c for c in waiter.chunks if c.rows is None]
            for chunk in pending:
                chunk.waiters.append(waiter)
            if not pending:  # every token shared or cached: no job at all
                serve(waiter, submitted=now)

        def serve(waiter: _Waiter, submitted: float) -> None:
            """Assemble a QRCE node's output from ready chunks (main thread)."""
            start = time.perf_counter()
            value = _assemble(waiter.token_ids, waiter.chunks)
            end = time.perf_counter()
            if not waiter.own_job:  # a call served without a job of its own
                total, unique, computed = waiter.tokens
                timeline.add(
                    TimelineEvent(
                        waiter.node.name,
                        "cache",
                        start - origin,
                        end - origin,
                        main,
                        waiter.microbatch,
                        waiter.node.name,
                        submitted_s=submitted - origin,
                        tokens=total,
                        unique_tokens=unique,
                        computed_tokens=computed,
                    )
                )
            complete(batches[waiter.microbatch], waiter.node, value)

        def launch(job: _Job, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            future = self._executor().submit(self._work, job, target, args, kwargs, grad, inference)
            inflight[future] = job
            future.add_done_callback(finished.put)

        def finish(future: cf.Future[Any]) -> None:
            job = inflight.pop(future)
            try:
                value = future.result()
            except BaseException as exc:
                _note(exc, f"in quantum op {job.node.name} (micro-batch {job.microbatch})")
                raise
            timeline.add(self._job_event(job, origin))
            if job.chunk is None:
                complete(batches[job.microbatch], job.node, value)
                return
            job.chunk.rows = value
            for waiter in list(job.chunk.waiters):
                if all(c.rows is not None for c in waiter.chunks):
                    job.chunk.waiters.remove(waiter)
                    serve(waiter, job.submitted)

        def drain(block: bool) -> None:
            try:
                future = finished.get(block=block)
            except queue.Empty:
                return
            finish(future)
            while True:
                try:
                    future = finished.get_nowait()
                except queue.Empty:
                    return
                finish(future)

        try:
            for mb in batches:
                for node, value in zip(plan.placeholders, flats[mb.index], strict=True):
                    mb.interp.env[node] = value
                for node in plan.order:
                    if node.op != "placeholder" and mb.missing[node] == 0:
                        schedule(mb, node)
                for node in plan.placeholders:
                    for user in plan.users[node]:
                        mb.missing[user] -= 1
                        if mb.missing[user] == 0:
                            schedule(mb, user)
            while not all(mb.done for mb in batches):
                drain(block=False)
                if ready:
                    _, m, _, _, node = heapq.heappop(ready)
                    mb = batches[m]
                    start = time.perf_counter()
                    try:
                        value = mb.interp.run_node(node)
                    except BaseException as exc:
                        _note(exc, f"in {node.format_node()} (micro-batch {m})")
                        raise
                    end = time.perf_counter()
                    release(mb, node)
                    if node.op == "output":
                        mb.result, mb.done = value, True
                        continue
                    if node.op != "get_attr":
                        timeline.add(
                            TimelineEvent(
                                node.name,
                                "classical",
                                start - origin,
                                end - origin,
                                main,
                                m,
                                node.name,
                            )
                        )
                    complete(mb, node, value)
                elif inflight:
                    drain(block=True)
                else:
                    raise RuntimeError("qgraph scheduler: nothing ready and nothing in flight.")
        finally:
            if inflight:  # an error: let running jobs end before unwinding
                cf.wait(list(inflight))
        for site, step_site in step_sites.items():
            self._store(site, step_site)
        return [mb.result for mb in batches]

    def _work(
        self,
        job: _Job,
        target: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        grad: bool,
        inference: bool,
    ) -> Any:
        """A worker thread: run one quantum op call under the caller's autograd modes."""
        ident = threading.get_ident()
        job.thread = threading.current_thread().name
        self._jobs_by_thread[ident] = job
        job.started = time.perf_counter()
        try:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return target(*args, **kwargs)
        finally:
            job.ended = time.perf_counter()
            self._jobs_by_thread.pop(ident, None)

    def _job_event(self, job: _Job, origin: float) -> TimelineEvent:
        records = job.records
        queues = [r.queue_s for r in records if r.queue_s is not None]
        queue_s = sum(queues) if queues else None
        duration = job.ended - job.started
        shots = sum(r.shots for r in records)
        return TimelineEvent(
            job.node.name,
            "quantum",
            job.started - origin,
            job.ended - origin,
            job.thread,
            job.microbatch,
            job.node.name,
            site=job.site,
            submitted_s=job.submitted - origin,
            queue_s=queue_s,
            run_s=None if queue_s is None else max(duration - queue_s, 0.0),
            jobs=len(records),
            circuits=sum(r.circuits for r in records),
            shots=shots,
            bytes_received=sum(r.bytes_received for r in records),
            raw_shot_bytes=shots * job.qubits // 8,
            tokens=job.tokens[0],
            unique_tokens=job.tokens[1],
            computed_tokens=job.tokens[2],
        )

    # -- the QRCE cache --------------------------------------------------------------------
    @staticmethod
    def _valid(entry: _CacheEntry, angles: torch.Tensor, weights: torch.Tensor) -> bool:
        if entry.versions != _versions(angles, weights):
            return False
        # .data edits bypass the version counter: compare with the snapshot too
        return torch.equal(entry.angles, angles.detach()) and torch.equal(
            entry.weights, weights.detach()
        )

    def _store(self, site: str, step_site: _StepSite) -> None:
        ready = [c for c in step_site.chunks if c.rows is not None]
        if not ready:
            return
        ids = torch.cat([c.ids.to(ready[0].ids.device) for c in ready])
        rows = torch.cat([c.rows.detach() for c in ready if c.rows is not None])
        order = torch.argsort(ids)
        angles, weights = step_site.angles, step_site.weights
        self._cache[site] = _CacheEntry(
            _versions(angles, weights),
            angles.detach().clone(),
            weights.detach().clone(),
            _Chunk(ids[order], rows[order]),
        )

    # -- backward ------------------------------------------------------------------------
    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, with the micro-batches' backward passes run concurrently.

        The gradient reaching the last run's outputs (and any parameter the loss uses
        directly, e.g. a head on top) is computed first; then each micro-batch's graph runs
        backward in its own worker thread, so backward quantum jobs (QRCE parameter shift,
        QAAP SPSA) of different micro-batches overlap. Gradients accumulate into ``.grad`` as
        with ``loss.backward()`` (summation order may differ in the last bits). With one
        micro-batch, or when the outputs are not those of the last run, it is
        ``loss.backward()``. The step's timeline gains the backward jobs.
        """
        timeline = self.timeline
        start = time.perf_counter()
        last = self._last
        collected: list[tuple[ExecutionRecord, str, float]] = []
        taps = [] if last is None else self._backend_taps(last.gm)

        def listener(record: ExecutionRecord) -> None:
            collected.append((record, threading.current_thread().name, time.perf_counter()))

        for tap in taps:
            tap.listeners.append(listener)
        try:
            merged = [] if last is None else _grad_leaves(last.outputs)
            if last is None or len(last.raw) == 1 or not merged:
                loss.backward()
            else:
                self._parallel_backward(loss, last, merged)
        finally:
            for tap in taps:
                tap.listeners.remove(listener)
        end = time.perf_counter()
        origin = timeline.origin
        timeline.add(
            TimelineEvent(
                "backward",
                "backward",
                start - origin,
                end - origin,
                threading.current_thread().name,
                phase="backward",
            )
        )
        for record, thread, at in collected:
            shots = record.shots
            timeline.add(
                TimelineEvent(
                    f"{record.kernel}:{record.site}",
                    "quantum",
                    at - record.wall_s - origin,
                    at - origin,
                    thread,
                    site=record.site,
                    phase="backward",
                    queue_s=record.queue_s,
                    run_s=None if record.queue_s is None else record.wall_s - record.queue_s,
                    jobs=1,
                    circuits=record.circuits,
                    shots=shots,
                    bytes_received=record.bytes_received,
                    raw_shot_bytes=shots * self._site_qubits.get(record.site, 0) // 8,
                )
            )
        timeline.backward_s += end - start
        self._last = None  # release the outputs (and what their graph still holds)

    def _backend_taps(self, gm: fx.GraphModule) -> list[_RecordTap]:
        taps: list[_RecordTap] = []
        for node in gm.graph.nodes:
            if is_quantum(node):
                key = _bound_args(node.target, node.args, dict(node.kwargs))["backend"]
                tap = _tap(get_backend(key))
                if tap not in taps:
                    taps.append(tap)
        return taps

    def _parallel_backward(
        self, loss: torch.Tensor, last: _LastRun, merged: list[torch.Tensor]
    ) -> None:
        stops = {t.grad_fn for t in merged}
        head = _head_leaves(loss, stops)
        for t in merged:
            t.retain_grad()
        torch.autograd.backward(loss, inputs=[*head, *merged])
        per_batch: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = [
            ([], []) for _ in last.raw
        ]
        raw_leaves = [pytree.tree_flatten(r)[0] for r in last.raw]
        merged_leaves = pytree.tree_flatten(last.outputs)[0]
        for position, whole in enumerate(merged_leaves):
            if not any(whole is t for t in merged) or whole.grad is None:
                continue
            sizes = [leaves[position].shape[0] for leaves in raw_leaves]
            for m, piece in enumerate(whole.grad.split(sizes)):
                per_batch[m][0].append(raw_leaves[m][position])
                per_batch[m][1].append(piece)
            whole.grad = None
        futures = [
            self._executor().submit(_backward_worker, tensors, grads)
            for tensors, grads in per_batch
            if tensors
        ]
        for future in futures:
            future.result()


@dataclass
class _LastRun:
    gm: fx.GraphModule
    raw: list[Any]  # each micro-batch's output-node value
    outputs: Any  # merged (before process_outputs)


def _backward_worker(tensors: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    with torch.set_grad_enabled(True):
        torch.autograd.backward(tensors, grads)


def _grad_leaves(outputs: Any) -> list[torch.Tensor]:
    return [
        t
        for t in pytree.tree_flatten(outputs)[0]
        if isinstance(t, torch.Tensor) and t.grad_fn is not None
    ]


def _head_leaves(loss: torch.Tensor, stops: set[Any]) -> list[torch.Tensor]:
    """Leaf tensors requiring grad that ``loss`` reaches without passing through ``stops``."""
    leaves: list[torch.Tensor] = []
    seen: set[Any] = set()
    stack = [loss.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen or fn in stops:
            continue
        seen.add(fn)
        variable = getattr(fn, "variable", None)
        if isinstance(variable, torch.Tensor):
            leaves.append(variable)
            continue
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return leaves


def _assemble(token_ids: torch.Tensor, chunks: list[_Chunk]) -> torch.Tensor:
    """Rows for ``token_ids`` gathered from disjoint chunks of sorted ids."""
    device = token_ids.device
    ids = torch.cat([c.ids.to(device) for c in chunks])
    rows = torch.cat([c.rows for c in chunks if c.rows is not None])
    order = torch.argsort(ids)
    flat = token_ids.reshape(-1)
    position = torch.searchsorted(ids[order], flat)
    return rows[order.to(rows.device)[position.to(rows.device)]].reshape(
        *token_ids.shape, rows.shape[-1]
    )


def _note(exc: BaseException, text: str) -> None:
    add_note = getattr(exc, "add_note", None)
    if add_note is not None:
        add_note(text)


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield
