"""The IBM Quantum backend: QAAP and QRCE as gate-level circuits on qiskit-ibm-runtime.

API used (qiskit-ibm-runtime 0.51, read from the installed package):

* primitive: ``qiskit_ibm_runtime.executor_sampler.Sampler`` — the client-side Sampler built
  on the Executor program. 0.50 deprecated ``qiskit_ibm_runtime.SamplerV2``/``EstimatorV2``
  (``sampler.py``/``estimator.py`` call ``issue_deprecation_msg`` and name this class as the
  replacement). Its ``run(pubs, shots=...)`` takes ``(isa_circuit, parameter_values)`` pubs
  and returns one job; results are ``PrimitiveResult`` of pubs whose ``data.meas`` is a
  ``BitArray``. All read-outs here are Z-diagonal, so no Estimator is needed.
* execution modes: ``Sampler(mode=...)`` takes a backend (job mode), a
  ``qiskit_ibm_runtime.Batch`` or a ``qiskit_ibm_runtime.Session``
  (``base_primitive.get_mode_service_backend``).
* local testing mode: a ``qiskit_ibm_runtime.fake_provider`` backend (a ``BackendV2`` that is
  not a runtime ``IBMBackend``) as the mode selects ``QiskitRuntimeLocalService``, and
  ``Executor.run`` simulates it with Aer and the fake's noise model
  (``fake_provider/executor/run_quantum_program.py``); ``Batch``/``Session`` around a fake
  backend are accepted and ignored there. ``options.simulator.seed_simulator`` seeds it.
* ISA circuits: ``qiskit.transpiler.generate_preset_pass_manager(backend=...,
  optimization_level=1)`` (the form in ``qiskit_ibm_runtime``'s own module docstring).
* credentials: ``qiskit_ibm_runtime.QiskitRuntimeService(channel=, instance=, name=)``
  reads ``QISKIT_IBM_TOKEN`` / ``QISKIT_IBM_INSTANCE`` / ``QISKIT_IBM_URL`` from the
  environment before the saved account (``accounts/management.py``
  ``AccountManager.get``/``_from_env_variables``). This module never takes a token argument.

How kernels run: each op call is one primitive run (one job; more only when the call exceeds
``max_circuits_per_job``, then the chunks are submitted together and collected after).

* QRCE: ``qgraph.circuits.qrce.qrce_template`` + ``measure_all``, transpiled once per
  structure and cached; every unique token of the call is one row of the parameter array of
  a single pub. ⟨Z_i⟩ and ⟨Z_i Z_{i+1}⟩ are shot averages of ±1 bit values.
* QRCE gradient ("parameter-shift"): a per-layer template (α of qubit i in layer l is its own
  parameter, so shifted circuits can move one layer's α), driven by
  ``qgraph.kernels.parameter_shift.token_parameter_shift``; all shifted circuits of a call
  in one job.
* QAAP: ``qgraph.circuits.templates.qaap_template(a, b)`` + ``measure_all``, transpiled once
  per register shape and cached (the data enter as rotation-tree angles); every
  (batch, head, query) instance of the call is one row of the parameter array of a single
  pub (``qaap_parameters``). Post-selection keeps shots with feature register (low b bits)
  = 0 and an index that is an unmasked key; noise outcomes on padded or masked keys are
  discarded, so QAAP never attends to a masked key. Rows with no kept shot fall back to
  uniform weights over the unmasked keys (counted), like the closed form does for rows that
  cannot post-select.

Secrets: the token lives only inside ``QiskitRuntimeService``. Every call into the service or
a primitive runs through ``IBMBackend._call``: exception text is scrubbed (token → ``***``)
and re-raised as ``IBMRuntimeError`` without the original exception chained, and log records
created meanwhile (any logger) are scrubbed too. ``repr`` shows device, mode and shots only, and
pickling drops the service.

Cancellation: every job submitted and not yet collected is tracked per site (under a lock,
from submission until its result came back or the call ended for any reason).
``cancel_running(site)`` calls ``cancel()`` on the tracked jobs of a site (every site: None)
through ``_call``: a ``RuntimeJobV2`` tells IBM Quantum to stop it and raises
``RuntimeInvalidStateError`` when it is past cancelling; a local testing mode job
(``LocalRuntimeJob``, a qiskit ``PrimitiveJob``) returns False once it runs or is done. Those
are skipped (logged at debug level); the count says how many cancels went through. The job
policy calls it on a timeout and on Ctrl-C, and when anything interrupts a call (a failed
job, Ctrl-C while it waits for a result), ``_sample`` cancels that call's uncollected jobs
before it re-raises. A thread abandoned on a timeout then ends with its cancelled job's error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_ibm_runtime.executor_sampler import Sampler

from qgraph.backends.base import BackendStats, Capabilities, ExecutionRecord
from qgraph.backends.frontend import QAAPRows, QuantumFrontEnd
from qgraph.backends.ibm_secrets import TOKEN_ENV
from qgraph.backends.ibm_session import FAKE_PREFIX, IBMRuntimeError, RuntimeSession
from qgraph.backends.qiskit_shared import (
    bit_array_bits,
    fake_backend,
    fake_backend_names,
    job_chunks,
    z_features,
)
from qgraph.backends.running_jobs import RunningJobs, cancel_jobs
from qgraph.circuits.qaap import qaap_registers
from qgraph.circuits.qrce import qrce_template
from qgraph.circuits.templates import qaap_parameters, qaap_template, qrce_layer_template
from qgraph.kernels.qrce import QRCEStructure

__all__ = [
    "MAX_EXECUTIONS_PER_JOB",
    "MODES",
    "TOKEN_ENV",
    "IBMBackend",
    "IBMRuntimeError",
    "fake_backend_names",
]

logger = logging.getLogger(__name__)

Mode = Literal["job", "batch", "session"]
#: execution modes of IBM Quantum (job: one job at a time; batch: independent jobs
#: scheduled together; session: dedicated QPU between jobs — not on the Open plan)
MODES: tuple[str, ...] = ("job", "batch", "session")
#: IBM's per-job limit: at most 10M executions (circuits × shots) per job
#: (/work/shared/research/hardware-and-costs.md, "Limits per job", IBM Quantum docs).
#: ``max_circuits_per_job`` defaults to MAX_EXECUTIONS_PER_JOB // shots.
MAX_EXECUTIONS_PER_JOB = 10_000_000

_T = TypeVar("_T")


# --------------------------------------------------------------------------- circuits


def _queue_seconds(job: Any) -> float | None:
    """Queue time from the job's metrics (``timestamps.created`` → ``running``), if any."""
    try:
        stamps = job.metrics().get("timestamps") or {}
        created, running = stamps.get("created"), stamps.get("running")
        if not created or not running:
            return None
        start = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
        run = datetime.fromisoformat(str(running).replace("Z", "+00:00"))
        return max(0.0, (run - start).total_seconds())
    except Exception:
        return None


# --------------------------------------------------------------------------- the backend


class IBMBackend(QuantumFrontEnd):
    """QAAP and QRCE on IBM Quantum hardware, or on a fake backend in local testing mode.

    Args:
        device: an IBM device name ("ibm_fez", …; needs an account) or a fake backend name
            ("fake_fez", "fake_santiago", …: local testing mode, no account, no network).
        mode: "job", "batch" (default) or "session" (sessions are not on the Open plan).
        shots: shots per circuit.
        seed: seeds the transpiler and, in local testing mode, the simulator (each job draws
            its simulator seed from ``numpy.random.default_rng(seed)``).
        channel, instance, account_name: passed to ``QiskitRuntimeService`` (channel, CRN,
            saved-account name); the token comes from ``QISKIT_IBM_TOKEN`` or the saved
            account. Nothing connects before the first kernel call.
        optimization_level: of ``generate_preset_pass_manager`` (1 by default).
        max_circuits_per_job: chunk size of a call; default IBM's 10M executions / shots.
    """

    name = "ibm"

    def __init__(
        self,
        device: str = "ibm_fez",
        mode: Mode = "batch",
        shots: int = 1024,
        seed: int | None = None,
        *,
        channel: str | None = None,
        instance: str | None = None,
        account_name: str | None = None,
        optimization_level: int = 1,
        max_circuits_per_job: int | None = None,
    ) -> None:
        if not isinstance(device, str) or not device:
            raise ValueError(f"IBMBackend: device must be a device name; got {device!r}.")
        if mode not in MODES:
            raise ValueError(
                f"IBMBackend: unknown execution mode {mode!r}; use one of {list(MODES)}."
            )
        if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots <= 0:
            raise ValueError(f"IBMBackend: shots must be a positive int; got {shots!r}.")
        if shots > MAX_EXECUTIONS_PER_JOB:
            raise ValueError(
                f"IBMBackend: {shots} shots exceed IBM's {MAX_EXECUTIONS_PER_JOB:,} executions "
                "per job even for a single circuit."
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"IBMBackend: seed must be an int or None; got {seed!r}.")
        if optimization_level not in (0, 1, 2, 3):
            raise ValueError(
                f"IBMBackend: optimization_level must be 0-3; got {optimization_level!r}."
            )
        per_job = MAX_EXECUTIONS_PER_JOB // int(shots)
        if max_circuits_per_job is not None:
            if (
                isinstance(max_circuits_per_job, bool)
                or not isinstance(max_circuits_per_job, int)
                or not 1 <= max_circuits_per_job <= per_job
            ):
                raise ValueError(
                    f"IBMBackend: max_circuits_per_job must be an int in [1, {per_job}] "
                    f"(10M executions / {shots} shots); got {max_circuits_per_job!r}."
                )
            per_job = max_circuits_per_job

        self.device = device
        self.mode: Mode = mode
        self.shots = int(shots)
        self.seed = seed
        self.optimization_level = optimization_level
        self.local = device.startswith(FAKE_PREFIX)
        self._max_circuits_per_job = per_job
        self._rng = np.random.default_rng(seed)
        self.stats = BackendStats()
        self._session = RuntimeSession(device, mode, channel, instance, account_name)
        self._pass_manager: Any = None
        self._isa_cache: dict[tuple[Any, ...], tuple[QuantumCircuit, Any, Any]] = {}
        self._capabilities: Capabilities | None = None
        self._running = RunningJobs()  # jobs submitted and not yet collected, per site

    # ------------------------------------------------------------------ description

    def __repr__(self) -> str:
        return f"IBMBackend(device={self.device!r}, mode={self.mode!r}, shots={self.shots})"

    __str__ = __repr__

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pass_manager"] = None  # the session drops its own connection state
        return state

    @property
    def capabilities(self) -> Capabilities:
        """What this backend can do; ``max_qubits`` is the device's qubit count.

        Before a real device is connected, its count comes from the fake snapshot of the
        same name in qiskit-ibm-runtime ("ibm_fez" → "fake_fez") when there is one, else None.
        """
        if self._capabilities is None:
            self._capabilities = Capabilities(
                exact=False,
                max_qubits=self._known_qubits(),
                max_circuits_per_job=self._max_circuits_per_job,
                gradient_methods=("parameter-shift", "straight-through", "spsa"),
                needs_transpilation=True,
            )
        return self._capabilities

    @capabilities.setter
    def capabilities(self, value: Capabilities) -> None:
        self._capabilities = value

    def _known_qubits(self) -> int | None:
        if self._session.connected is not None:
            return int(self._session.connected.num_qubits)
        snapshot = FAKE_PREFIX + self.device.removeprefix("ibm_")
        if snapshot in fake_backend_names():
            return int(fake_backend(snapshot).num_qubits)
        return None

    # ------------------------------------------------------------------ connection

    def _call(self, what: str, function: Callable[[], _T]) -> _T:
        """A qiskit-ibm-runtime call with scrubbed logs (``RuntimeSession.call``)."""
        return self._session.call(what, function)

    def _backend(self) -> Any:
        """The qiskit backend to run on; connects to IBM Quantum on first use (real devices)."""
        connected = self._session.connected
        backend = self._session.backend()
        if connected is None:
            self._capabilities = replace(self.capabilities, max_qubits=int(backend.num_qubits))
        return backend

    def _mode(self) -> Any:
        """What the primitive gets as ``mode``: the backend, or the open Batch/Session."""
        self._backend()
        return self._session.primitive_mode()

    def close(self) -> None:
        """Close the batch or session, if one is open (running jobs still finish)."""
        self._session.close()

    def __enter__(self) -> IBMBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ jobs in flight

    def cancel_running(self, site: str | None = None) -> int:
        """Cancel the jobs submitted for ``site`` (every site: None) whose results have not
        been collected; returns how many ``cancel()`` calls went through.

        A job that cannot be cancelled (already finished: ``cancel()`` raises, or a local job
        returns False) is skipped. Either way the jobs are no longer tracked."""
        taken = self._running.take(site)
        return sum(cancel_jobs(s, jobs, self._call) for s, jobs in taken)

    # ------------------------------------------------------------------ transpile and run

    def _pm(self) -> Any:
        if self._pass_manager is None:
            backend = self._backend()
            self._pass_manager = self._call(
                "reading the device target",
                lambda: generate_preset_pass_manager(
                    backend=backend,
                    optimization_level=self.optimization_level,
                    seed_transpiler=self.seed,
                ),
            )
        return self._pass_manager

    def _isa(
        self,
        key: tuple[Any, ...],
        build: Callable[[], tuple[QuantumCircuit, ParameterVector, ParameterVector]],
    ) -> tuple[QuantumCircuit, ParameterVector, ParameterVector]:
        """A template's ISA circuit (with ``measure_all``) and its (alpha, theta) vectors,
        transpiled once per key and cached."""
        if key not in self._isa_cache:
            template, alpha, theta = build()
            circuit = template.copy()  # templates are cached and shared: never mutate one
            circuit.measure_all()
            self._isa_cache[key] = (self._pm().run(circuit), alpha, theta)
        return self._isa_cache[key]

    def _check_width(self, n_qubits: int, what: str) -> None:
        limit = self.capabilities.max_qubits
        if limit is not None and n_qubits > limit:
            raise ValueError(
                f"IBMBackend: {what} needs {n_qubits} qubits but {self.device} has {limit}."
            )

    def _sample(
        self,
        kernel: str,
        site: str,
        pubs: Sequence[tuple[QuantumCircuit, np.ndarray | None]],
    ) -> list[np.ndarray]:
        """Run pubs (circuit, (N, P) values or None) and return each pub's bits (N, shots, c).

        Rows are chunked to ``max_circuits_per_job``; all chunks are submitted before any
        result is awaited (in batch/session mode they run as one batch). One
        ExecutionRecord per job.
        """
        rows = [1 if values is None else int(values.shape[0]) for _, values in pubs]
        chunks = job_chunks(rows, self._max_circuits_per_job)

        mode = self._mode()
        submitted: list[tuple[Any, Any, float, int]] = []
        jobs: list[Any] = []  # submitted by this call (tracked until collected)
        try:
            for chunk in chunks:
                chunk_pubs: list[Any] = []
                for index, start, stop in chunk:
                    circuit, values = pubs[index]
                    chunk_pubs.append(circuit if values is None else (circuit, values[start:stop]))
                sampler = self._call("creating the sampler", lambda: Sampler(mode=mode))
                sampler.options.default_shots = self.shots
                if self.local and self.seed is not None:
                    seed = int(self._rng.integers(0, 2**31 - 1))
                    sampler.options.simulator.seed_simulator = seed
                circuits = sum(stop - start for _, start, stop in chunk)
                logger.debug(
                    "IBMBackend: %s (%s) submitting %d circuits × %d shots to %s",
                    kernel,
                    site,
                    circuits,
                    self.shots,
                    self.device,
                )
                began = time.perf_counter()
                job = self._call(
                    f"submitting the {kernel} job",
                    partial(sampler.run, chunk_pubs, shots=self.shots),
                )
                self._running.track(site, job)
                jobs.append(job)
                submitted.append((chunk, job, began, circuits))

            pieces: list[list[np.ndarray]] = [[] for _ in pubs]
            for chunk, job, began, circuits in submitted:
                result = self._call(f"waiting for the {kernel} job", job.result)
                self._running.untrack(site, [job])
                wall = time.perf_counter() - began
                received = 0
                for (index, _, _), pub_result in zip(chunk, result, strict=True):
                    bit_array = pub_result.data.meas
                    received += int(np.asarray(bit_array.array).nbytes)
                    bits = bit_array_bits(bit_array)
                    pieces[index].append(bits.reshape(-1, *bits.shape[-2:]))
                self.stats.records.append(
                    ExecutionRecord(
                        kernel=kernel,
                        site=site,
                        circuits=circuits,
                        shots=circuits * self.shots,
                        wall_s=wall,
                        queue_s=_queue_seconds(job),
                        bytes_received=received,
                    )
                )
        except BaseException:
            # Ctrl-C while waiting, a failed job, a failed submission: the jobs of this call
            # not yet collected (nor cancelled by ``cancel_running`` meanwhile) are cancelled.
            cancel_jobs(site, self._running.untrack(site, jobs), self._call)
            raise
        finally:
            self._running.untrack(site, jobs)
        return [np.concatenate(parts, axis=0) for parts in pieces]

    def _run_qrce(
        self,
        kernel: str,
        site: str,
        layer_angles: np.ndarray,
        layer_weights: np.ndarray,
        structure: QRCEStructure,
        per_layer: bool,
    ) -> np.ndarray:
        """(N, 2q) features of QRCE circuits with angles (N, L, q) and weights (N, L, q)."""
        q, n_layers = structure.n_qubits, structure.n_layers
        self._check_width(q, "QRCE")
        if per_layer:
            key, build = ("qrce-layers", structure), lambda: qrce_layer_template(structure)
            alpha_values = layer_angles.reshape(-1, n_layers * q)
        else:
            key, build = ("qrce", structure), lambda: qrce_template(structure)
            alpha_values = layer_angles[:, 0, :]
        isa, alpha, theta = self._isa(key, build)
        theta_values = layer_weights.reshape(-1, n_layers * q)
        # Transpilation keeps the template's Parameter objects; values go in the order of
        # isa.parameters (a parameter the transpiler removed is simply not asked for).
        columns = {p: alpha_values[:, i] for i, p in enumerate(alpha)}
        columns.update({p: theta_values[:, i] for i, p in enumerate(theta)})
        values = np.stack([columns[p] for p in isa.parameters], axis=-1)
        (bits,) = self._sample(kernel, site, [(isa, values)])
        return z_features(bits, q)

    # ------------------------------------------------------------------ rows

    def qrce_rows(
        self, angles: torch.Tensor, weights: torch.Tensor, structure: QRCEStructure, site: str
    ) -> torch.Tensor:
        """Z and ZZ means over the shots of each distinct token's circuit."""
        angles_np = _numpy(angles)
        n_tokens, n_layers = angles_np.shape[0], structure.n_layers
        layer_angles = np.broadcast_to(
            angles_np[:, None, :], (n_tokens, n_layers, angles_np.shape[1])
        )
        layer_weights = np.broadcast_to(_numpy(weights), (n_tokens, *weights.shape))
        features = self._run_qrce("qrce", site, layer_angles, layer_weights, structure, False)
        return torch.from_numpy(features)

    def qrce_layer_rows(
        self,
        layer_angles: torch.Tensor,
        layer_weights: torch.Tensor,
        structure: QRCEStructure,
        site: str,
    ) -> torch.Tensor:
        """Features of the parameter-shifted circuits from the per-layer template, all
        submitted before any result is awaited (kernel "qrce-gradient")."""
        features = self._run_qrce(
            "qrce-gradient", site, _numpy(layer_angles), _numpy(layer_weights), structure, True
        )
        return torch.from_numpy(features)

    def qaap_rows(
        self, keys: torch.Tensor, queries: torch.Tensor, keep: torch.Tensor, site: str
    ) -> QAAPRows:
        """Post-selected counts per key of each query row's circuit (feature = 0, index an
        unmasked key); rows with P(feature = 0) = 0 exactly run no circuit."""
        *lead, n_queries, head_dim = queries.shape
        n_keys = keys.shape[-2]
        regs = qaap_registers(n_keys, head_dim)
        self._check_width(regs.n_qubits, f"QAAP ({n_keys} keys × {head_dim} dims)")
        keys_np = _numpy(keys).reshape(-1, n_keys, head_dim)
        queries_np = _numpy(queries).reshape(-1, head_dim)
        keep_np = keep.expand(*lead, n_queries, n_keys).reshape(-1, n_keys).cpu().numpy()
        n_rows = queries_np.shape[0]
        counts = np.zeros((n_rows, n_keys))
        # Nothing to encode (zero query or keys), or P(feature = 0) = ‖K q̂‖²/‖K‖² = 0: the
        # circuit could only post-select on noise.
        projections = np.einsum("rkd,rd->rk", keys_np[np.arange(n_rows) // n_queries], queries_np)
        circuit_rows = np.flatnonzero(np.any((projections != 0) & keep_np, axis=1))
        if circuit_rows.size:
            isa, key_params, query_params = self._isa(
                ("qaap", regs.index_qubits, regs.feature_qubits),
                lambda: qaap_template(regs.index_qubits, regs.feature_qubits, measure=False),
            )
            values = qaap_parameters(
                torch.from_numpy(keys_np[circuit_rows // n_queries]),
                torch.from_numpy(queries_np[circuit_rows]),
                torch.from_numpy(keep_np[circuit_rows]),
            )
            # values go in the order of isa.parameters, as for QRCE
            columns = dict(zip((*key_params, *query_params), values.T, strict=True))
            bound = np.stack([columns[p] for p in isa.parameters], axis=-1)
            (bits,) = self._sample("qaap", site, [(isa, bound)])
            powers = 1 << np.arange(regs.n_qubits, dtype=np.int64)
            feature_mask = (1 << regs.feature_qubits) - 1
            for row_index, row_bits in zip(circuit_rows, bits, strict=True):
                outcome = row_bits.astype(np.int64) @ powers  # (shots,)
                index = outcome >> regs.feature_qubits
                kept = ((outcome & feature_mask) == 0) & (index < n_keys)
                found = np.bincount(index[kept], minlength=n_keys)[:n_keys]
                counts[row_index] = found * keep_np[row_index]
        scores = torch.from_numpy(counts).reshape(*lead, n_queries, n_keys)
        return QAAPRows(scores, float(self.shots), scores.sum(-1).round().to(torch.int64))


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A float64 numpy copy of a tensor (detached, on the CPU)."""
    return tensor.detach().to("cpu", torch.float64).numpy()
