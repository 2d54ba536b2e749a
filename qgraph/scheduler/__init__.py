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

Modules: ``executor`` (HybridScheduler), ``step`` (one forward step), ``jobs`` (a quantum
call in a worker thread), ``records`` (backends' records attributed to jobs),
``qrce_cache`` (QRCE rows shared and cached), ``backward`` (the concurrent backward),
``batching`` (split and merge along dim 0), ``plan`` (per-graph precomputation),
``partition`` (the partition DAG), ``timeline`` (events and totals), ``quantum`` (which
nodes are quantum calls). The executor depends on the others, none on it; no module here
imports ``qgraph.api``, ``qgraph.compiled``, ``qgraph.report`` or ``qgraph.review`` at run time.
"""

from __future__ import annotations

from qgraph.scheduler.executor import HybridScheduler
from qgraph.scheduler.partition import PartitionDAG, partition_dag
from qgraph.scheduler.quantum import QUANTUM_OPS, qaap_qubits
from qgraph.scheduler.quantum import is_quantum as is_quantum
from qgraph.scheduler.timeline import StepSummary, Timeline, TimelineEvent

# its name before the split, which tests import
_qaap_qubits = qaap_qubits

__all__ = [
    "QUANTUM_OPS",
    "HybridScheduler",
    "PartitionDAG",
    "StepSummary",
    "Timeline",
    "TimelineEvent",
    "partition_dag",
]
