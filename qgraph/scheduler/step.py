"""One forward step: k micro-batches' graphs interleaved, quantum calls run as jobs.

The main thread runs every classical node, highest priority first (see ``make_plan``), and
submits each quantum node to the worker pool as soon as its inputs exist; a finished job
makes its users ready. Between two classical nodes it collects the finished jobs without
waiting, and waits only when nothing is ready to run.
"""

from __future__ import annotations

import concurrent.futures as cf
import heapq
import queue
import threading
import time
from typing import Any

import torch
import torch.fx as fx

from qgraph.scheduler.jobs import Job, JobRunner, job_event
from qgraph.scheduler.plan import Plan
from qgraph.scheduler.qrce_cache import QRCECache, StepRows, Waiter, assemble
from qgraph.scheduler.quantum import bound_args, is_quantum, qaap_qubits
from qgraph.scheduler.timeline import Timeline, TimelineEvent

__all__ = ["ForwardStep", "Microbatch"]


class Microbatch:
    """One slice's interpreter state."""

    def __init__(self, index: int, gm: fx.GraphModule, plan: Plan, flat: list[Any]) -> None:
        self.index = index
        # the step frees values itself (release), once all of a node's users have run
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


class ForwardStep:
    """Runs ``gm`` once per micro-batch input (``flats``), recording into ``timeline``.

    Args:
        gm, plan: the graph and its plan.
        flats: each micro-batch's inputs, flattened to the graph's placeholders.
        timeline: the step's timeline; gains one event per node execution and per job.
        pool: the worker threads that run the jobs.
        runner: runs a job in a worker and collects its backend records.
        cache: QRCE rows across steps; None: every QRCE call runs as is. Used outside
            autograd only: sharing rows would join the micro-batches' backward graphs,
            which the scheduler's backward runs concurrently.
        site_qubits: filled with each quantum site's circuit width (for byte counts).
    """

    def __init__(
        self,
        gm: fx.GraphModule,
        plan: Plan,
        flats: list[list[Any]],
        timeline: Timeline,
        *,
        pool: cf.Executor,
        runner: JobRunner,
        cache: QRCECache | None,
        site_qubits: dict[str, int],
    ) -> None:
        self.plan = plan
        self.flats = flats
        self.timeline = timeline
        self.origin = timeline.origin
        self.main = threading.current_thread().name
        self.pool = pool
        self.runner = runner
        self.site_qubits = site_qubits
        # the workers run the ops under the modes of the thread that called run()
        self.grad = torch.is_grad_enabled()
        self.inference = torch.is_inference_mode_enabled()
        self.rows = StepRows(cache) if cache is not None and not self.grad else None
        self.batches = [Microbatch(i, gm, plan, flat) for i, flat in enumerate(flats)]
        self.ready: list[tuple[Any, ...]] = []  # heap of classical nodes ready to run
        self.inflight: dict[cf.Future[Any], Job] = {}
        self.finished: queue.SimpleQueue[cf.Future[Any]] = queue.SimpleQueue()

    def run(self) -> list[Any]:
        """Each micro-batch's output-node value, in order."""
        try:
            for mb in self.batches:
                self._start(mb)
            while not all(mb.done for mb in self.batches):
                self._drain(block=False)
                if self.ready:
                    self._run_next()
                elif self.inflight:
                    self._drain(block=True)
                else:
                    raise RuntimeError("qgraph scheduler: nothing ready and nothing in flight.")
        except Exception:
            # an error: drop jobs not started, and let running ones end before unwinding
            for future in self.inflight:
                future.cancel()
            cf.wait(list(self.inflight))
            raise
        except BaseException:
            # Ctrl-C (or exit): return at once; a hung job is abandoned on its daemon thread
            for future in self.inflight:
                future.cancel()
            raise
        if self.rows is not None:
            self.rows.keep()
        return [mb.result for mb in self.batches]

    # -- the dataflow ------------------------------------------------------------------
    def _start(self, mb: Microbatch) -> None:
        plan = self.plan
        for node, value in zip(plan.placeholders, self.flats[mb.index], strict=True):
            mb.interp.env[node] = value
        for node in plan.order:
            if node.op != "placeholder" and mb.missing[node] == 0:
                self._schedule(mb, node)
        for node in plan.placeholders:
            for user in plan.users[node]:
                mb.missing[user] -= 1
                if mb.missing[user] == 0:
                    self._schedule(mb, user)

    def _schedule(self, mb: Microbatch, node: fx.Node) -> None:
        """``node``'s inputs exist: submit it (quantum) or queue it for the main thread."""
        if is_quantum(node):
            self._submit(mb, node)
        else:
            p = self.plan.priority[node]
            # the micro-batch index breaks ties between slices: the earliest finishes first
            heapq.heappush(self.ready, (-p[0], mb.index, -p[1], self.plan.order[node], node))

    def _run_next(self) -> None:
        """Run the highest-priority ready classical node on this (the main) thread."""
        _, m, _, _, node = heapq.heappop(self.ready)
        mb = self.batches[m]
        start = time.perf_counter()
        try:
            value = mb.interp.run_node(node)
        except BaseException as exc:
            _note(exc, f"in {node.format_node()} (micro-batch {m})")
            raise
        end = time.perf_counter()
        self._release(mb, node)
        if node.op == "output":
            mb.result, mb.done = value, True
            return
        if node.op != "get_attr":
            self.timeline.add(
                TimelineEvent(
                    node.name,
                    "classical",
                    start - self.origin,
                    end - self.origin,
                    self.main,
                    m,
                    node.name,
                )
            )
        self._complete(mb, node, value)

    def _complete(self, mb: Microbatch, node: fx.Node, value: Any) -> None:
        """``node``'s value exists: schedule the users that were waiting only for it."""
        mb.interp.env[node] = value
        for user in self.plan.users[node]:
            mb.missing[user] -= 1
            if mb.missing[user] == 0:
                self._schedule(mb, user)

    def _release(self, mb: Microbatch, node: fx.Node) -> None:
        """``node`` has consumed its inputs: drop values nobody else needs."""
        for p in self.plan.inputs[node]:
            mb.refs[p] -= 1
            if mb.refs[p] == 0 and p is not self.plan.output:
                mb.interp.env.pop(p, None)

    # -- quantum calls -----------------------------------------------------------------
    def _submit(self, mb: Microbatch, node: fx.Node) -> None:
        """Start the quantum call ``node``: a job; for QRCE with shared rows, a job for the
        tokens no call has computed yet, or none when every token is shared or cached."""
        args, kwargs = mb.interp.fetch_args_kwargs_from_env(node)
        self._release(mb, node)
        bound = bound_args(node.target, args, kwargs)
        site = bound["site"]
        now = time.perf_counter()
        if node.target is torch.ops.qgraph.qaap.default:
            qubits = qaap_qubits(bound["q"], bound["k"])
            self.site_qubits[site] = qubits
            self._launch(Job(mb.index, node, site, qubits, now), node.target, args, kwargs)
            return
        token_ids, angles, weights = bound["token_ids"], bound["angle_table"], bound["weights"]
        qubits = int(angles.shape[-1])
        self.site_qubits[site] = qubits
        unique = torch.unique(token_ids.reshape(-1))
        if self.rows is None:
            job = Job(mb.index, node, site, qubits, now)
            job.tokens = (token_ids.numel(), int(unique.numel()), int(unique.numel()))
            self._launch(job, node.target, args, kwargs)
            return
        waiter, chunk = self.rows.request(mb.index, node, site, token_ids, unique, angles, weights)
        if chunk is not None:  # the tokens no other call computes: a job for them alone
            job = Job(mb.index, node, site, qubits, now, chunk=chunk, tokens=waiter.tokens)
            call_args = list(args)
            call_args[0] = chunk.ids
            self._launch(job, node.target, tuple(call_args), kwargs)
        pending = [c for c in waiter.chunks if c.rows is None]
        for pending_chunk in pending:
            pending_chunk.waiters.append(waiter)
        if not pending:  # every token shared or cached: no job at all
            self._serve(waiter, submitted=now)

    def _launch(self, job: Job, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        future = self.pool.submit(
            self.runner.run, job, target, args, kwargs, self.grad, self.inference
        )
        self.inflight[future] = job
        # a queue, not the callback itself: the main thread owns the interpreters' state
        future.add_done_callback(self.finished.put)

    def _drain(self, block: bool) -> None:
        """Handle the finished jobs; with ``block``, wait for one first."""
        try:
            future = self.finished.get(block=block)
        except queue.Empty:
            return
        self._finish(future)
        while True:
            try:
                future = self.finished.get_nowait()
            except queue.Empty:
                return
            self._finish(future)

    def _finish(self, future: cf.Future[Any]) -> None:
        job = self.inflight.pop(future)
        try:
            value = future.result()
        except BaseException as exc:
            _note(exc, f"in quantum op {job.node.name} (micro-batch {job.microbatch})")
            raise
        self.timeline.add(job_event(job, self.origin))
        if job.chunk is None:
            self._complete(self.batches[job.microbatch], job.node, value)
            return
        job.chunk.rows = value
        for waiter in list(job.chunk.waiters):
            if waiter.ready:
                job.chunk.waiters.remove(waiter)
                self._serve(waiter, job.submitted)

    def _serve(self, waiter: Waiter, submitted: float) -> None:
        """Assemble a QRCE node's output from ready chunks (main thread)."""
        start = time.perf_counter()
        value = assemble(waiter.token_ids, waiter.chunks)
        end = time.perf_counter()
        if not waiter.own_job:  # a call served without a job of its own
            total, unique, computed = waiter.tokens
            self.timeline.add(
                TimelineEvent(
                    waiter.node.name,
                    "cache",
                    start - self.origin,
                    end - self.origin,
                    self.main,
                    waiter.microbatch,
                    waiter.node.name,
                    submitted_s=submitted - self.origin,
                    tokens=total,
                    unique_tokens=unique,
                    computed_tokens=computed,
                )
            )
        self._complete(self.batches[waiter.microbatch], waiter.node, value)


def _note(exc: BaseException, text: str) -> None:
    """Add ``text`` to the exception's notes (Python ≥ 3.11; older ones skip it)."""
    add_note = getattr(exc, "add_note", None)
    if add_note is not None:
        add_note(text)
