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
``max_circuits_per_job``, then the chunks are submitted together and collected after). The
templates, pubs and read-out of each kernel are in ``ibm_circuits``.

Several devices (``device=("fake_fez", "fake_torino")``): each call's rows are chunked and
spread over them, one queue per device; how, and how a call's jobs are cancelled, is in
``ibm_jobs`` (which also validates the device names).

Secrets: the token lives only inside ``QiskitRuntimeService``. Every call into the service or
a primitive runs through ``IBMBackend._call``: exception text is scrubbed (token → ``***``)
and re-raised as ``IBMRuntimeError`` without the original exception chained, and log records
created meanwhile (any logger) are scrubbed too. ``repr`` shows device, mode and shots only, and
pickling drops the service.

Cancellation: ``cancel_running(site)`` cancels the jobs of a site not yet collected (see
``ibm_jobs``); a call that is interrupted cancels its own before it re-raises.

Seeds: ``seed`` seeds the transpiler and, in local testing mode, the simulator;
``reseed(seed)`` restarts both as if the backend were made with that seed (data-parallel
ranks: ``qgraph.distributed.seed_for_rank``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, Literal, TypeVar

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_ibm_runtime.executor_sampler import Sampler

from qgraph.backends.base import BackendStats, Capabilities
from qgraph.backends.ibm_circuits import IBMCircuitRows
from qgraph.backends.ibm_jobs import DeviceJobs, Pub, device_names
from qgraph.backends.ibm_secrets import TOKEN_ENV
from qgraph.backends.ibm_session import FAKE_PREFIX, IBMRuntimeError, RuntimeSession
from qgraph.backends.qiskit_shared import RowRange, fake_backend, fake_backend_names, job_chunks
from qgraph.backends.running_jobs import DeviceQueues, RunningJobs, cancel_jobs

__all__ = [
    "MAX_EXECUTIONS_PER_JOB",
    "MODES",
    "TOKEN_ENV",
    "IBMBackend",
    "IBMRuntimeError",
    "fake_backend_names",
]

Mode = Literal["job", "batch", "session"]
#: execution modes of IBM Quantum (job: one job at a time; batch: independent jobs
#: scheduled together; session: dedicated QPU between jobs — not on the Open plan)
MODES: tuple[str, ...] = ("job", "batch", "session")
#: IBM's per-job limit: at most 10M executions (circuits × shots) per job
#: (/work/shared/research/hardware-and-costs.md, "Limits per job", IBM Quantum docs).
#: ``max_circuits_per_job`` defaults to MAX_EXECUTIONS_PER_JOB // shots.
MAX_EXECUTIONS_PER_JOB = 10_000_000

_T = TypeVar("_T")


# --------------------------------------------------------------------------- the backend


class IBMBackend(IBMCircuitRows):
    """QAAP and QRCE on IBM Quantum hardware, or on a fake backend in local testing mode.

    Args:
        device: an IBM device name ("ibm_fez", …; needs an account) or a fake backend name
            ("fake_fez", "fake_santiago", …: local testing mode, no account, no network); or
            a sequence of distinct names, all fake or all real: each call's rows are spread
            over those devices (see ``ibm_jobs``), and ``max_qubits`` is the
            smallest device's.
        mode: "job", "batch" (default) or "session" (sessions are not on the Open plan).
        shots: shots per circuit.
        seed: seeds the transpiler and, in local testing mode, the simulator (each job draws
            its simulator seed from ``numpy.random.default_rng(seed)``, in chunk order).
        channel, instance, account_name: passed to ``QiskitRuntimeService`` (channel, CRN,
            saved-account name); the token comes from ``QISKIT_IBM_TOKEN`` or the saved
            account. Nothing connects before the first kernel call.
        optimization_level: of ``generate_preset_pass_manager`` (1 by default).
        max_circuits_per_job: chunk size of a call; default IBM's 10M executions / shots.
    """

    name = "ibm"

    def __init__(
        self,
        device: str | Sequence[str] = "ibm_fez",
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
        devices = device_names(device)
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

        #: every device, in the order given (ties in the per-device queue go to the first)
        self.devices: tuple[str, ...] = devices
        #: the device name, or the tuple of names when there are several
        self.device: str | tuple[str, ...] = devices[0] if len(devices) == 1 else devices
        self.mode: Mode = mode
        self.shots = int(shots)
        self.seed = seed
        # the transpiler keeps the constructor's seed through ``reseed``: data-parallel ranks
        # then lay their circuits out alike (the same qubits, so the same noise)
        self._transpile_seed = seed
        self.optimization_level = optimization_level
        self.local = devices[0].startswith(FAKE_PREFIX)  # all or none are fakes
        self._max_circuits_per_job = per_job
        self._rng = np.random.default_rng(seed)
        self.stats = BackendStats()
        self._sessions = {
            name: RuntimeSession(name, mode, channel, instance, account_name) for name in devices
        }
        self._pass_managers: dict[str, Any] = {}
        # (*template key, device) -> (ISA circuit, alpha, theta): ISA circuits are per device
        self._isa_cache: dict[tuple[Any, ...], tuple[QuantumCircuit, Any, Any]] = {}
        self._capabilities: Capabilities | None = None
        self._running = RunningJobs()  # jobs submitted and not yet collected, per site
        self._queues = DeviceQueues(devices)  # circuits outstanding per device

    # ------------------------------------------------------------------ description

    def __repr__(self) -> str:
        # one device: its name as before; several: the tuple of every name
        return f"IBMBackend(device={self.device!r}, mode={self.mode!r}, shots={self.shots})"

    __str__ = __repr__

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pass_managers"] = {}  # each session drops its own connection state
        return state

    @property
    def capabilities(self) -> Capabilities:
        """What this backend can do; ``max_qubits`` is the device's qubit count (with several
        devices, the smallest's).

        Before a real device is connected, its count comes from the fake snapshot of the
        same name in qiskit-ibm-runtime ("ibm_fez" → "fake_fez") when there is one; a device
        with neither does not count, and None means no device's count is known.
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
        counts = [n for n in map(self._device_qubits, self.devices) if n is not None]
        return min(counts) if counts else None

    def _device_qubits(self, device: str) -> int | None:
        """``device``'s qubit count: connected, else its fake snapshot's, else None."""
        connected = self._sessions[device].connected
        if connected is not None:
            return int(connected.num_qubits)
        snapshot = FAKE_PREFIX + device.removeprefix("ibm_")
        if snapshot in fake_backend_names():
            return int(fake_backend(snapshot).num_qubits)
        return None

    def reseed(self, seed: int | None = None) -> None:
        """Restart the generator of the simulator seeds (local testing mode) from ``seed``
        (default: the current one), as a backend made with it would draw them.

        The transpiler keeps the constructor's seed, so transpiled circuits are kept and
        every reseeded copy lays its circuits out alike. Jobs already submitted keep their
        seeds. ``qgraph.distributed.seed_for_rank`` calls it to give each data-parallel rank
        its own stream.
        """
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ValueError(
                    f"IBMBackend.reseed: seed must be an int (None: restart from the current "
                    f"seed {self.seed!r}); got {seed!r}."
                )
            self.seed = seed
        self._rng = np.random.default_rng(self.seed)

    # ------------------------------------------------------------------ connection

    def _call(self, what: str, function: Callable[[], _T], device: str | None = None) -> _T:
        """A qiskit-ibm-runtime call for ``device`` (None: the first) with scrubbed logs
        (``RuntimeSession.call``)."""
        return self._sessions[device or self.devices[0]].call(what, function)

    def _backend(self, device: str | None = None) -> Any:
        """The qiskit backend of ``device`` (None: the first); connects to IBM Quantum on
        first use (real devices), and ``max_qubits`` then counts its real width."""
        session = self._sessions[device or self.devices[0]]
        connected = session.connected
        backend = session.backend()
        if connected is None:
            self._capabilities = replace(self.capabilities, max_qubits=self._known_qubits())
        return backend

    def _mode(self, device: str) -> Any:
        """What the primitive gets as ``mode`` on ``device``: the backend, or its open
        Batch/Session."""
        self._backend(device)
        return self._sessions[device].primitive_mode()

    def close(self) -> None:
        """Close every device's batch or session that is open (running jobs still finish).

        Every session is closed even when one fails; the first failure is raised after."""
        failure: BaseException | None = None
        for session in self._sessions.values():
            try:
                session.close()
            except Exception as exc:  # IBMRuntimeError, already scrubbed
                failure = failure or exc
        if failure is not None:
            raise failure

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
        return sum(
            cancel_jobs(s, jobs, partial(self._call, device=device), device)
            for s, device, jobs in taken
        )

    # ------------------------------------------------------------------ transpile and run

    def _pm(self, device: str) -> Any:
        """``device``'s preset pass manager (made once)."""
        if device not in self._pass_managers:
            backend = self._backend(device)
            self._pass_managers[device] = self._call(
                "reading the device target",
                lambda: generate_preset_pass_manager(
                    backend=backend,
                    optimization_level=self.optimization_level,
                    seed_transpiler=getattr(self, "_transpile_seed", self.seed),
                ),
                device,
            )
        return self._pass_managers[device]

    def _isa(
        self,
        key: tuple[Any, ...],
        build: Callable[[], tuple[QuantumCircuit, ParameterVector, ParameterVector]],
        device: str,
    ) -> tuple[QuantumCircuit, ParameterVector, ParameterVector]:
        """A template's ISA circuit for ``device`` (with ``measure_all``) and its (alpha,
        theta) vectors, transpiled once per key and device and cached."""
        cache_key = (*key, device)
        if cache_key not in self._isa_cache:
            template, alpha, theta = build()
            circuit = template.copy()  # templates are cached and shared: never mutate one
            circuit.measure_all()
            self._isa_cache[cache_key] = (self._pm(device).run(circuit), alpha, theta)
        return self._isa_cache[cache_key]

    def _check_width(self, n_qubits: int, what: str) -> None:
        limit = self.capabilities.max_qubits
        if limit is not None and n_qubits > limit:
            if len(self.devices) == 1:
                where = f"{self.devices[0]} has {limit}"
            else:
                where = f"the smallest of {', '.join(self.devices)} has {limit}"
            raise ValueError(f"IBMBackend: {what} needs {n_qubits} qubits but {where}.")

    def _chunks(self, rows: list[int]) -> list[list[RowRange]]:
        """A call's row ranges per job: at most ``max_circuits_per_job`` each, and split
        evenly over the devices when that gives more jobs (so each device gets work)."""
        total = sum(rows)
        per_device = -(-total // len(self.devices))  # ceil
        return job_chunks(rows, max(1, min(self._max_circuits_per_job, per_device)))

    def _sampler(self, device: str) -> Any:
        """A Sampler on ``device``'s mode (connecting and opening its Batch/Session on first
        use) with this backend's shots; in local testing mode with a seed, its simulator seed
        is the generator's next draw (chunks draw in order, whatever the device, so a seeded
        run is reproducible)."""
        mode = self._mode(device)
        sampler = self._call("creating the sampler", partial(Sampler, mode=mode), device)
        sampler.options.default_shots = self.shots
        if self.local and self.seed is not None:
            seed = int(self._rng.integers(0, 2**31 - 1))
            sampler.options.simulator.seed_simulator = seed
        return sampler

    def _sample(
        self,
        kernel: str,
        site: str,
        rows: list[int],
        pubs_on: Callable[[str], Sequence[Pub]],
    ) -> list[np.ndarray]:
        """Run pubs of ``rows`` circuits each and return each pub's bits (N, shots, c):
        chunked (``_chunks``) and spread over the devices by ``ibm_jobs.DeviceJobs.sample``.
        ``pubs_on(device)`` gives the pubs (ISA circuit, (N, P) values or None) for one
        device."""
        jobs = DeviceJobs(
            devices=self.devices,
            shots=self.shots,
            queues=self._queues,
            running=self._running,
            sampler=self._sampler,
            call=self._call,
            record=lambda record: self.stats.records.append(record),
        )
        return jobs.sample(kernel, site, rows, self._chunks(rows), pubs_on)
