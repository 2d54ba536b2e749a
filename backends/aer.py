"""The Aer backend: QAAP and QRCE as real gate-level circuits on qiskit-aer.

Every op call is one job per ``max_circuits_per_job`` instances: the kernel's template
(``qgraph.circuits.templates``) is transpiled once per (kernel, shape, target) and bound to a
parameter array of shape (N, n_params) in a single primitive call (SamplerV2 for shots,
EstimatorV2 with precision 0 or saved probabilities for the exact mode).

* ``shots=None``: exact, noiseless. QAAP reads the probabilities Aer saves for each
  instance; QRCE asks EstimatorV2 (precision 0) for the 2q expectation values. Used to
  cross-check the gate-level circuits against the closed forms.
* ``shots=S``: SamplerV2 with S shots per circuit, seeded (each job draws its own seed from
  a generator seeded with ``seed``, so calls are reproducible but not identical).
  QAAP post-selects feature = 0 (and, under noise, an unmasked key index: outcomes of
  zero ideal amplitude carry no information); QRCE averages ±1 eigenvalues of Z_i and
  Z_iZ_{i+1} over the shots.
* ``noise="fake_<name>"``: a NoiseModel from qiskit-ibm-runtime's fake backend of that
  name, and the templates are transpiled to that backend's target (its basis gates and
  coupling map). Needs ``pip install 'qgraph[ibm]'``.

Degenerate QAAP rows (zero-norm query or all-zero unmasked keys: not encodable; no
unmasked key: empty) never go to the simulator: they fall back to uniform weights over the
unmasked keys or output zero, as the closed form does, and are counted per site.

Fan-out over an executor (``executor=``, ``max_job_size=``)
------------------------------------------------------------
``AerBackend(executor=client, max_job_size=N)`` splits one op call's circuits into chunks
of at most N (and at most ``max_circuits_per_job``) and runs the chunks on the executor: a
``dask.distributed.Client`` (``pip install 'qgraph[dask]'``) or any
``concurrent.futures.Executor``. qiskit-aer's options of the same names do nothing in the
installed release, so the chunks (``self._chunks``: ``job_chunks`` at
``min(max_circuits_per_job, max_job_size)`` rows) go out through qgraph's own path,
``backends/aer_fanout.py`` (why, and how: its docstring). A worker runs the same chunk
function (``qaap_chunk`` / ``qrce_chunk``) that this process runs without an executor.

Reproducibility: each sampled chunk's seed is drawn from ``self._rng`` in chunk order before
anything is submitted and results are put back in chunk order, so a call's numbers depend on
the chunking (``max_job_size``) and ``seed`` only, never on the number of workers or the
order in which chunks finish: ``AerBackend(executor=None, max_job_size=N)`` gives exactly
what any executor does with the same N (exact mode bit for bit). ``reseed(seed)`` restarts
the generator as if the backend were made with ``seed`` (data-parallel ranks:
``qgraph.distributed.seed_for_rank``); transpilation keeps the constructor's seed.

Failures: Dask re-runs the tasks of a worker that died (the scheduler's
``distributed.scheduler.allowed-failures``, 3 by default); each such re-run is logged as a
``"retried"`` ExecutionRecord and counted in the site's ``retries``. A chunk that still fails
with ``KilledWorker``, a closed connection (``CommClosedError``), a cancelled future or a
broken pool (``concurrent.futures.BrokenExecutor``) raises ``TransientJobError``: the job
policy (``backends/job_policy.py``) retries the call, with the generator's state put back so
the retry draws the same seeds. Every chunk's record carries the Dask worker address that
ran it in ``device`` (a process pool's: ``"pid <n>"``; None in this process).

Throughput: one process runs one Aer job at a time (every ``AerSimulator.run`` goes through
qiskit-aer's single-thread ``DEFAULT_EXECUTOR``), so scale with worker processes
(``threads_per_worker=1``), not threads. Dask's nanny starts workers with
``OMP_NUM_THREADS=1`` (``distributed.nanny.pre-spawn-environ``), so each runs Aer on one
core unless the backend's simulator sets ``max_parallel_threads``, which travels with the
task. An executor does not pickle: a pickled backend drops it, and using the copy raises
until ``backend.executor`` is set again.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from qgraph.backends.aer_fanout import (
    SimulatorSpec,
    build_simulator,
    check_executor,
    exact_estimator,
    executor_kind,
    fan_out,
    qaap_chunk,
    qrce_chunk,
)
from qgraph.backends.base import BackendStats, Capabilities, ExecutionRecord
from qgraph.backends.frontend import QAAPRows, QuantumFrontEnd
from qgraph.backends.qiskit_shared import fake_backend, fake_backend_names, job_chunks
from qgraph.backends.running_jobs import RunningJobs, cancel_jobs
from qgraph.circuits.qrce import qrce_observables
from qgraph.circuits.templates import (
    qaap_parameters,
    qaap_template,
    qrce_layer_parameters,
    qrce_layer_template,
    transpiled,
)
from qgraph.kernels.qaap import qaap_register_sizes
from qgraph.kernels.qrce import QRCEStructure

__all__ = ["METHODS", "AerBackend", "fake_backend", "fake_backend_names"]  # lookup re-exported

#: simulation methods the backend accepts (Aer's names)
METHODS: tuple[str, ...] = ("statevector", "density_matrix", "matrix_product_state")


class AerBackend(QuantumFrontEnd):
    """Gate-level QAAP and QRCE on qiskit-aer, one job per op call (chunked); with an
    ``executor``, the chunks run on its workers (see the module docstring)."""

    name = "aer"

    def __init__(
        self,
        method: str = "statevector",
        shots: int | None = 1024,
        noise: str | None = None,
        seed: int = 0,
        max_circuits_per_job: int = 4096,
        executor: Any = None,
        max_job_size: int | None = None,
    ) -> None:
        """Args beyond the simulation's own:
        executor: a ``dask.distributed.Client`` or ``concurrent.futures.Executor``
            that runs the chunks of every op call; None runs them here, in order.
        max_job_size: circuits per chunk (at most ``max_circuits_per_job``); None:
            ``max_circuits_per_job``. Results depend on it (each sampled chunk has its
            own seed), not on the executor.
        """
        if method not in METHODS:
            raise ValueError(f"unknown Aer method {method!r}; use one of {list(METHODS)}.")
        if shots is not None and (
            isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1
        ):
            raise ValueError(f"shots must be a positive int or None (exact); got {shots!r}.")
        if (
            isinstance(max_circuits_per_job, bool)
            or not isinstance(max_circuits_per_job, (int, np.integer))
            or max_circuits_per_job < 1
        ):
            raise ValueError(
                f"max_circuits_per_job must be a positive int; got {max_circuits_per_job!r}."
            )
        if max_job_size is not None and (
            isinstance(max_job_size, bool)
            or not isinstance(max_job_size, (int, np.integer))
            or max_job_size < 1
        ):
            raise ValueError(
                f"max_job_size must be a positive int (circuits per chunk on the executor) "
                f"or None (chunks of max_circuits_per_job); got {max_job_size!r}."
            )
        check_executor(executor)
        if shots is None and noise is not None:
            raise ValueError(
                "shots=None is the exact, noiseless mode; a noise model needs shots "
                f"(got noise={noise!r}). Pass shots=1024, for example."
            )
        self.method = method
        self.shots = None if shots is None else int(shots)
        self.noise = noise
        self.seed = int(seed)
        # the transpiler's seed stays the constructor's: reseed() changes the shots only
        self._transpile_seed = self.seed
        self.max_circuits_per_job = int(max_circuits_per_job)
        self.max_job_size = None if max_job_size is None else int(max_job_size)
        self._job_rows = min(
            self.max_circuits_per_job, self.max_job_size or self.max_circuits_per_job
        )
        self._executor: Any = executor
        self._dropped_executor: str | None = None  # the kind a pickled copy left behind
        self._running = RunningJobs()  # per site, the chunks' futures not yet collected
        self._rng = np.random.default_rng(self.seed)
        self.stats = BackendStats()

        try:
            self._simulator, self._target, max_qubits = build_simulator(method, noise)
        except ValueError as exc:
            raise ValueError(f"AerBackend(noise={noise!r}): {exc}") from None
        self.capabilities = Capabilities(
            exact=self.shots is None,
            max_qubits=max_qubits,
            max_circuits_per_job=self._job_rows,
            gradient_methods=("parameter-shift", "straight-through", "spsa"),
            needs_transpilation=True,
        )

    # ------------------------------------------------------------------ executor

    @property
    def executor(self) -> Any:
        """The executor the chunks run on (None: this process)."""
        return self._executor

    @executor.setter
    def executor(self, executor: Any) -> None:
        check_executor(executor)
        self._executor = executor
        self._dropped_executor = None

    def _active_executor(self) -> Any:
        if self._executor is None and self._dropped_executor is not None:
            raise RuntimeError(
                f"this AerBackend was pickled with an executor ({self._dropped_executor}), "
                "which does not travel with it; set backend.executor = <a dask.distributed."
                "Client or concurrent.futures.Executor> on the copy, or backend.executor = "
                "None to run its chunks in this process."
            )
        return self._executor

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self._executor is not None:  # a client or pool does not pickle; say so on use
            state["_dropped_executor"] = executor_kind(self._executor)
        state["_executor"] = None
        return state  # _running pickles empty: futures stay with the original

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_dropped_executor", None)  # pickles of older versions
        state.setdefault("_executor", None)
        state.setdefault("max_job_size", None)
        state.setdefault("_job_rows", state.get("max_circuits_per_job", 4096))
        state.setdefault("_running", RunningJobs())
        state.setdefault("_transpile_seed", state.get("seed", 0))
        self.__dict__.update(state)

    def cancel_running(self, site: str | None = None) -> int:
        """Cancel the chunks still pending on the executor for ``site`` (every site: None)."""
        return sum(
            cancel_jobs(s, futures, lambda _what, cancel: cancel(), device)
            for s, device, futures in self._running.take(site)
        )

    # ------------------------------------------------------------------ seeds

    def reseed(self, seed: int | None = None) -> None:
        """Restart the shot seeds from ``seed`` (default: the current one), as if the backend
        were made with it: the next sampled call draws the chunk seeds that a fresh
        ``AerBackend(seed=seed)`` draws. ``qgraph.distributed.seed_for_rank`` calls it to give
        each data-parallel rank its own stream.

        Transpilation keeps the constructor's seed (``seed_transpiler``): every rank runs the
        same transpiled circuits (on a noisy target, the same layout, so the same noise), and
        none is transpiled again. The noiseless target has no coupling map, so there the
        transpiled circuits do not depend on the seed and a reseeded backend gives exactly
        what a fresh one with that seed gives; with ``noise=``, a fresh backend may lay its
        circuits out differently. Exact mode (``shots=None``) draws no seeds.
        """
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
                raise ValueError(
                    f"AerBackend.reseed: seed must be a non-negative int (None: restart from "
                    f"the current seed {self.seed}); got {seed!r}."
                )
            self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)

    def _job_seed(self) -> int:
        return int(self._rng.integers(2**31 - 1))

    # ------------------------------------------------------------------ plumbing

    def _chunks(self, n_rows: int) -> list[slice]:
        return [slice(start, stop) for ((_, start, stop),) in job_chunks([n_rows], self._job_rows)]

    def _record(
        self,
        kernel: str,
        site: str,
        circuits: int,
        wall_s: float,
        received: int,
        device: str | None = None,
    ) -> None:
        self.stats.records.append(
            ExecutionRecord(
                kernel=kernel,
                site=site,
                circuits=circuits,
                shots=0 if self.shots is None else circuits * self.shots,
                wall_s=wall_s,
                bytes_received=received,
                device=device,
            )
        )

    def _check_qubits(self, needed: int, what: str) -> None:
        available = self.capabilities.max_qubits
        if available is not None and needed > available:
            target = self.noise or f"aer {self.method}"
            raise ValueError(
                f"{what} needs {needed} qubits but {target} has {available} available; "
                "use smaller shapes, method='matrix_product_state', or another backend."
            )

    def _fan_out(
        self,
        executor: Any,
        kernel: str,
        site: str,
        kind: str,
        isa: Any,
        params: tuple[Any, ...],
        values: np.ndarray,
        extra: tuple[Any, ...],
    ) -> list[np.ndarray]:
        """Run the chunks of ``values`` on ``executor``; their values in chunk order.

        Seeds are drawn in chunk order before anything is submitted, so the numbers do not
        depend on the workers; on failure the generator is put back (a retried call draws the
        same seeds) and executor failures become TransientJobError (``aer_fanout.fan_out``)."""
        chunks = self._chunks(values.shape[0])
        if not chunks:
            return []
        rng_before = self._rng.bit_generator.state
        seeds: list[int | None] = [None if self.shots is None else self._job_seed() for _ in chunks]
        rng_after = self._rng.bit_generator.state
        spec = SimulatorSpec.of(self.method, self.noise, self._simulator)
        try:
            outcomes = fan_out(
                executor,
                self._running,
                spec,
                kernel,
                site,
                kind,
                isa,
                params,
                values,
                chunks,
                seeds,
                self.shots,
                extra,
            )
        except BaseException:
            if self._rng.bit_generator.state == rng_after:  # nobody drew since: put back
                self._rng.bit_generator.state = rng_before
            raise
        counters = self.stats.site(site)
        for chunk, outcome in zip(chunks, outcomes, strict=True):
            for _ in range(outcome.retries):  # Dask ran it again after its worker died
                counters.retries += 1
                self.stats.records.append(
                    ExecutionRecord(kernel, site, 0, 0, 0.0, outcome="retried")
                )
            circuits = chunk.stop - chunk.start
            self._record(kernel, site, circuits, outcome.wall_s, outcome.received, outcome.device)
        return [outcome.values for outcome in outcomes]

    # ------------------------------------------------------------------ QAAP

    def _qaap_joint(
        self, a: int, b: int, values: np.ndarray, keep_padded: np.ndarray, site: str
    ) -> np.ndarray:
        """P(index = j, feature = 0) (exact) or its counts, (N, 2^a); one job per chunk."""
        exact = self.shots is None
        circuit, key_params, query_params = qaap_template(a, b, measure=not exact)
        params = (*key_params, *query_params)
        isa = transpiled(
            ("qaap", a, b, not exact), circuit, self._target, seed=self._transpile_seed
        )
        out = np.zeros((values.shape[0], 1 << a))
        executor = self._active_executor()
        if executor is not None:
            joints = self._fan_out(executor, "qaap", site, "qaap", isa, params, values, (a, b))
            for chunk, joint in zip(self._chunks(values.shape[0]), joints, strict=True):
                out[chunk] = joint * keep_padded[chunk]
            return out
        for chunk in self._chunks(values.shape[0]):
            start = time.perf_counter()
            rows = values[chunk]
            seed = None if exact else self._job_seed()
            joint, received = qaap_chunk(self._simulator, isa, params, rows, a, b, self.shots, seed)
            out[chunk] = joint * keep_padded[chunk]
            self._record("qaap", site, rows.shape[0], time.perf_counter() - start, received)
        return out

    def qaap_rows(
        self, keys: torch.Tensor, queries: torch.Tensor, keep: torch.Tensor, site: str
    ) -> QAAPRows:
        """P(index = j, feature = 0) of every query row's circuit (exact mode), or its
        post-selected counts; rows with nothing to encode run no circuit."""
        *lead, n_queries, head_dim = queries.shape
        n_keys = keys.shape[-2]
        keys = keys.reshape(-1, n_keys, head_dim)
        n_groups = keys.shape[0]
        keep = keep.expand(*lead, n_queries, n_keys)
        a, b = qaap_register_sizes(n_keys, head_dim)
        self._check_qubits(a + b, f"QAAP with {n_keys} keys of width {head_dim}")
        n_rows = n_groups * n_queries
        keep_rows = keep.reshape(n_rows, n_keys).cpu()
        q_rows = queries.reshape(n_rows, head_dim).to("cpu", torch.float64)
        k_rows = (
            keys.to("cpu", torch.float64)[:, None]
            .expand(n_groups, n_queries, n_keys, head_dim)
            .reshape(n_rows, n_keys, head_dim)
        ) * keep_rows[:, :, None]
        runnable = (q_rows.norm(dim=1) > 0) & (k_rows.flatten(1).norm(dim=1) > 0)

        scores = torch.zeros(n_rows, n_keys, dtype=torch.float64)
        rows = runnable.nonzero().flatten()
        if rows.numel() > 0:
            values = qaap_parameters(k_rows[rows], q_rows[rows])
            keep_padded = np.zeros((rows.numel(), 1 << a))
            keep_padded[:, :n_keys] = keep_rows[rows].numpy()
            joint = torch.from_numpy(self._qaap_joint(a, b, values, keep_padded, site))
            scores[rows] = joint[:, :n_keys]
        scores = scores.reshape(*lead, n_queries, n_keys)
        if self.shots is None:
            return QAAPRows(scores, 1.0)
        kept = scores.sum(-1).round().to(torch.int64)
        return QAAPRows(scores, float(self.shots), kept)

    # ------------------------------------------------------------------ QRCE

    def _qrce_evaluate(
        self,
        layer_angles: torch.Tensor,
        layer_weights: torch.Tensor,
        structure: QRCEStructure,
        site: str,
        kernel: str,
    ) -> torch.Tensor:
        """Features (N, 2q) float64 of N circuits with per-layer angles, one job per chunk."""
        q = structure.n_qubits
        self._check_qubits(q, f"QRCE with {q} qubits")
        exact = self.shots is None
        circuit, alpha, theta = qrce_layer_template(structure, measure=not exact)
        params = (*alpha, *theta)
        isa = transpiled(
            ("qrce", structure, not exact), circuit, self._target, seed=self._transpile_seed
        )
        values = qrce_layer_parameters(layer_angles, layer_weights)
        out = np.zeros((values.shape[0], 2 * q))
        observables = (
            [obs.apply_layout(isa.layout) for obs in qrce_observables(structure)] if exact else []
        )
        executor = self._active_executor()
        if executor is not None:
            extra = (q, observables)
            features = self._fan_out(executor, kernel, site, "qrce", isa, params, values, extra)
            for chunk, chunk_features in zip(self._chunks(values.shape[0]), features, strict=True):
                out[chunk] = chunk_features
            return torch.from_numpy(out)
        estimator = exact_estimator(self._simulator) if exact else None
        for chunk in self._chunks(values.shape[0]):
            start = time.perf_counter()
            rows = values[chunk]
            seed = None if exact else self._job_seed()
            out[chunk], received = qrce_chunk(
                self._simulator, estimator, isa, params, rows, q, self.shots, seed, observables
            )
            self._record(kernel, site, rows.shape[0], time.perf_counter() - start, received)
        return torch.from_numpy(out)

    def qrce_rows(
        self, angles: torch.Tensor, weights: torch.Tensor, structure: QRCEStructure, site: str
    ) -> torch.Tensor:
        """Features of each distinct token's circuit, one job per chunk."""
        n_tokens, (n_layers, q) = angles.shape[0], weights.shape
        layer_angles = angles[:, None, :].expand(n_tokens, n_layers, q)
        layer_weights = weights[None].expand(n_tokens, n_layers, q)
        return self._qrce_evaluate(layer_angles, layer_weights, structure, site, "qrce")

    def qrce_layer_rows(
        self,
        layer_angles: torch.Tensor,
        layer_weights: torch.Tensor,
        structure: QRCEStructure,
        site: str,
    ) -> torch.Tensor:
        """Features of the parameter-shifted circuits (kernel "qrce-gradient")."""
        return self._qrce_evaluate(layer_angles, layer_weights, structure, site, "qrce-gradient")

    def __repr__(self) -> str:
        fan_out = ""
        if self._executor is not None:  # its kind, never its address
            fan_out += f", executor={executor_kind(self._executor)!r}"
        if self.max_job_size is not None:
            fan_out += f", max_job_size={self.max_job_size}"
        return (
            f"AerBackend(method={self.method!r}, shots={self.shots!r}, noise={self.noise!r}, "
            f"seed={self.seed}, max_circuits_per_job={self.max_circuits_per_job}{fan_out})"
        )
