"""``HybridScheduler``: runs a compiled module's graph with quantum jobs in flight.

The scheduler's own state lives here (worker pool, plans, QRCE cache, the last step for
backward); a step's execution is ``ForwardStep``, the backward pass ``concurrent_backward``.
It uses the compiled module only through its public methods.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
from torch import nn

from qgraph.atomic import grads_restored_on_error
from qgraph.backends import ExecutionRecord, get_backend
from qgraph.scheduler.backward import LastRun, concurrent_backward, record_backward
from qgraph.scheduler.batching import Call, merge, split
from qgraph.scheduler.jobs import JobRunner
from qgraph.scheduler.partition import PartitionDAG, partition_dag
from qgraph.scheduler.plan import Plan, make_plan
from qgraph.scheduler.pool import DaemonPool
from qgraph.scheduler.qrce_cache import QRCECache
from qgraph.scheduler.quantum import bound_args, is_quantum
from qgraph.scheduler.records import backend_taps, listening
from qgraph.scheduler.step import ForwardStep
from qgraph.scheduler.timeline import StepSummary, Timeline, TimelineEvent

if TYPE_CHECKING:
    from qgraph.compiled import CompiledModule

__all__ = ["HybridScheduler"]

#: the CompiledModule methods the scheduler calls
_COMPILED_API = (
    "bind",
    "capture_for",
    "graph_context",
    "record_timeline",
    "run_original",
    "use_capture",
)


def _is_compiled(cm: object) -> bool:
    # Checked by its methods, not isinstance: importing qgraph.compiled here would import
    # qgraph.report, whose review page imports the scheduler (an import cycle).
    return isinstance(cm, nn.Module) and all(
        callable(getattr(cm, name, None)) for name in _COMPILED_API
    )


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
        if not _is_compiled(cm):
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
        self._pool: DaemonPool | None = None
        self._plans: dict[int, tuple[fx.GraphModule, Plan]] = {}
        self._cache = QRCECache()
        self._runner = JobRunner()
        self._site_qubits: dict[str, int] = {}
        self._last: LastRun | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def _executor(self) -> DaemonPool:
        if self._pool is None:
            self._pool = DaemonPool(self.max_workers)
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

    # -- the graph -----------------------------------------------------------------------
    def _graph(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[fx.GraphModule, Callable[[tuple[Any, ...], dict[str, Any]], list[Any]]]:
        """The graph for this call, and how to flatten a call (each slice) to its inputs."""
        cm = self.cm
        entry = cm.capture_for(*args, **kwargs)
        cm.use_capture(entry)

        def flatten(call_args: tuple[Any, ...], call_kwargs: dict[str, Any]) -> list[Any]:
            return entry.flatten(cm.bind(call_args, call_kwargs))

        return entry.graph_module, flatten

    def _plan(self, gm: fx.GraphModule) -> Plan:
        cached = self._plans.get(id(gm))
        if cached is None or cached[0] is not gm:  # an id reused by a new graph
            cached = (gm, make_plan(gm))
            self._plans[id(gm)] = cached
        return cached[1]

    # -- running -------------------------------------------------------------------------
    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Run the compiled module on these inputs (the model's signature); returns its output.

        The result equals ``cm(*args, **kwargs)`` up to floating-point reassociation in
        kernels that see a smaller batch; ``self.timeline`` holds the step's events.
        """
        cm = self.cm
        pieces = split(tuple(args), kwargs, self.microbatches)
        timeline = Timeline(self.microbatches)
        self.timeline = timeline
        cm.record_timeline(timeline)
        if not cm.report.quantum_sites:  # nothing offloaded: the original model, as cm does
            return self._run_original(pieces, timeline)
        gm, flatten = self._graph(*pieces[0])
        plan = self._plan(gm)
        flats = [flatten(a, kw) for a, kw in pieces]
        with cm.graph_context(), listening(backend_taps(gm), self._runner.on_record):
            step = ForwardStep(
                gm,
                plan,
                flats,
                timeline,
                pool=self._executor(),
                runner=self._runner,
                cache=self._cache if self.cache else None,
                site_qubits=self._site_qubits,
            )
            try:
                raw = step.run()
            except KeyboardInterrupt:
                cancel_jobs(gm)
                raise
        outputs = merge(raw)
        timeline.wall_s = time.perf_counter() - timeline.origin
        self._last = LastRun(gm, raw, outputs)
        return gm.graph.process_outputs(outputs)

    def _run_original(self, pieces: list[Call], timeline: Timeline) -> Any:
        main = threading.current_thread().name
        results = []
        for m, (a, kw) in enumerate(pieces):
            start = time.perf_counter()
            results.append(self.cm.run_original(*a, **kw))
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
        return merge(results)

    # -- backward ------------------------------------------------------------------------
    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, with the micro-batches' backward passes run concurrently.

        The gradient reaching the last run's outputs (and any parameter the loss uses
        directly, e.g. a head on top) is computed first; then each micro-batch's graph runs
        backward in its own worker thread, so backward quantum jobs (QRCE parameter shift,
        QAAP SPSA) of different micro-batches overlap. Gradients accumulate into ``.grad`` as
        with ``loss.backward()`` (summation order may differ in the last bits). With one
        micro-batch, or when the outputs are not those of the last run, it is
        ``loss.backward()``. The step's timeline gains the backward jobs. A backward that
        fails (a quantum job that fails for good) is atomic: every parameter gets back the
        ``.grad`` it had before, and the error propagates.
        """
        timeline = self.timeline
        start = time.perf_counter()
        last = self._last
        records: list[tuple[ExecutionRecord, str, float]] = []

        def collect(record: ExecutionRecord) -> None:
            # from any thread: the workers here and autograd's own (device) threads
            records.append((record, threading.current_thread().name, time.perf_counter()))

        taps = [] if last is None else backend_taps(last.gm)
        with listening(taps, collect), grads_restored_on_error(self.cm):
            try:
                concurrent_backward(loss, last, self._executor)
            except KeyboardInterrupt:
                if last is not None:
                    cancel_jobs(last.gm)
                raise
        end = time.perf_counter()
        record_backward(
            timeline, start, end, threading.current_thread().name, records, self._site_qubits
        )
        self._last = None  # release the outputs (and what their graph still holds)


def cancel_jobs(gm: fx.GraphModule) -> int:
    """Cancel what the backends of ``gm``'s quantum nodes still run, where they can (Ctrl-C:
    the workers are daemons and are left behind, but a provider's queued jobs need not run
    on). Returns how many jobs were cancelled."""
    keys = {
        bound_args(node.target, node.args, dict(node.kwargs))["backend"]
        for node in gm.graph.nodes
        if is_quantum(node)
    }
    cancelled = 0
    for key in sorted(keys):
        cancel = getattr(get_backend(key), "cancel_running", None)
        if cancel is not None:
            cancelled += int(cancel())
    return cancelled
