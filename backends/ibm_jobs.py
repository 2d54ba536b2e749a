"""The IBM backend's jobs: which devices, how one op call's chunks are submitted over them,
and how their results come back.

Several devices (``IBMBackend(device=("fake_fez", "fake_torino"))``, or several real QPUs):
one ``RuntimeSession`` (its own Batch/Session) and one transpilation per device (ISA circuits
are device-specific). A call's rows are split into chunks of at most
``max_circuits_per_job``, and evenly over the devices when that gives more chunks (a call of
R rows on D devices: chunks of ⌈R/D⌉ rows). Each chunk goes to the device with the fewest
circuits outstanding (submitted by any call and not yet collected; ties: device order) — one
queue per device (``running_jobs.DeviceQueues``). All chunks are submitted before any result
is awaited, results are reassembled in row order, and every ExecutionRecord names its device.
In local testing mode each chunk draws its simulator seed from the backend's generator in
chunk order, so a seeded run whose calls do not overlap is reproducible, and a chunk's rows
get exactly the counts that device alone gives them with that seed.

Cancellation: every job submitted and not yet collected is tracked per site, with its device
(under a lock, from submission until its result came back or the call ended for any reason).
``IBMBackend.cancel_running(site)`` calls ``cancel()`` on the tracked jobs of a site (every
site: None) through its device's ``_call``: a ``RuntimeJobV2`` tells IBM Quantum to stop it
and raises ``RuntimeInvalidStateError`` when it is past cancelling; a local testing mode job
(``LocalRuntimeJob``, a qiskit ``PrimitiveJob``) returns False once it runs or is done. Those
are skipped (logged at debug level); the count says how many cancels went through. The job
policy calls it on a timeout and on Ctrl-C, and when anything interrupts a call (a failed job,
Ctrl-C while it waits for a result), ``DeviceJobs.sample`` cancels that call's uncollected
jobs before it re-raises. A thread abandoned on a timeout then ends with its cancelled job's
error.

The submission and "waiting for" debug lines are logged under this module's name
(``qgraph.backends.ibm_jobs``), cancellations under ``qgraph.backends.running_jobs``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Protocol, TypeVar

import numpy as np
from qiskit import QuantumCircuit

from qgraph.backends.base import ExecutionRecord
from qgraph.backends.ibm_session import FAKE_PREFIX
from qgraph.backends.qiskit_shared import RowRange, bit_array_bits
from qgraph.backends.running_jobs import DeviceQueues, RunningJobs, cancel_jobs

__all__ = ["DeviceJobs", "Pub", "device_names", "queue_seconds"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
#: a pub: an ISA circuit and its (N, P) parameter values (None: a circuit without parameters)
Pub = tuple[QuantumCircuit, np.ndarray | None]


class DeviceCall(Protocol):
    """The backend's scrubbing wrapper: runs ``function`` for ``device`` (``IBMBackend._call``)."""

    def __call__(self, what: str, function: Callable[[], _T], device: str | None = None) -> _T: ...


def queue_seconds(job: Any) -> float | None:
    """Queue time from the job's metrics (``timestamps.created`` → ``running``), if any."""
    try:
        stamps = job.metrics().get("timestamps") or {}
        created, running = stamps.get("created"), stamps.get("running")
        if not created or not running:
            return None
        start = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
        run = datetime.fromisoformat(str(running).replace("Z", "+00:00"))
        return max(0.0, (run - start).total_seconds())
    except Exception:  # metrics are optional (local jobs, older runtimes): no queue time
        return None


def device_names(device: object) -> tuple[str, ...]:
    """The device names of ``IBMBackend(device=...)``: one name, or a sequence of them.

    Raises ValueError for an empty or repeated name, a non-str, or fakes mixed with real
    devices (local testing mode is all or nothing).
    """
    if isinstance(device, str):
        if not device:
            raise ValueError("IBMBackend: device must be a device name; got ''.")
        return (device,)
    if not isinstance(device, Sequence):
        raise ValueError(
            f"IBMBackend: device must be a device name or a sequence of them, e.g. "
            f"'fake_santiago' or ('fake_lima', 'fake_quito'); got {device!r}."
        )
    names = tuple(device)
    if not names:
        raise ValueError(
            "IBMBackend: device is an empty sequence; name at least one device, e.g. "
            "'fake_santiago' or ('fake_lima', 'fake_quito')."
        )
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"IBMBackend: every device must be a device name (a non-empty str); got "
                f"{name!r} in {names!r}."
            )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(
            f"IBMBackend: device {', '.join(map(repr, repeated))} is listed more than once in "
            f"{names!r}; name each device once (one device already runs a call's chunks "
            "together in batch mode)."
        )
    fakes = [name for name in names if name.startswith(FAKE_PREFIX)]
    if fakes and len(fakes) < len(names):
        real = [name for name in names if not name.startswith(FAKE_PREFIX)]
        raise ValueError(
            f"IBMBackend: devices mix fake backends ({', '.join(fakes)}: local testing mode) "
            f"and real devices ({', '.join(real)}); use only fake_* names to test offline, or "
            "only real device names."
        )
    return names


@dataclass(frozen=True)
class DeviceJobs:
    """What one call's jobs go through: the backend's devices with their queues, its jobs in
    flight, and its sampler factory, scrubbing wrapper and job records.

    Made per call by ``IBMBackend._sample`` from the backend's own objects, so the queues and
    the tracked jobs are shared by every call (and seen by ``cancel_running``).
    """

    devices: tuple[str, ...]
    shots: int
    queues: DeviceQueues
    running: RunningJobs
    #: ``sampler(device)``: a Sampler on that device's mode, shots and (local) seed set
    sampler: Callable[[str], Any]
    call: DeviceCall
    #: called with each job's record as its result arrives
    record: Callable[[ExecutionRecord], None]

    def sample(
        self,
        kernel: str,
        site: str,
        rows: list[int],
        chunks: list[list[RowRange]],
        pubs_on: Callable[[str], Sequence[Pub]],
    ) -> list[np.ndarray]:
        """Run pubs of ``rows`` circuits each and return each pub's bits (N, shots, c).

        ``chunks`` are the call's row ranges per job (``IBMBackend._chunks``);
        ``pubs_on(device)`` gives the pubs (ISA circuit, (N, P) values or None) for one
        device and is asked once per device that gets a chunk. Each chunk goes to the device
        with the least outstanding work (``DeviceQueues``), and all chunks are submitted
        before any result is awaited (in batch/session mode each device's run as one batch).
        One ExecutionRecord per job, naming its device; the bits come back in row order
        whichever device ran them.
        """
        on_device: dict[str, Sequence[Pub]] = {}
        assigned: list[tuple[list[RowRange], str, int]] = []  # (chunk, device, circuits)
        released: set[int] = set()  # indices in ``assigned`` taken off their device's queue
        submitted: list[tuple[int, Any, float]] = []  # (index in ``assigned``, job, began)
        jobs: list[tuple[Any, str]] = []  # submitted by this call (tracked until collected)
        try:
            for chunk in chunks:
                circuits = sum(stop - start for _, start, stop in chunk)
                assigned.append((chunk, self.queues.assign(circuits), circuits))
            for number, (chunk, device, circuits) in enumerate(assigned):
                if device not in on_device:
                    on_device[device] = pubs_on(device)
                pubs = on_device[device]
                chunk_pubs: list[Any] = []
                for index, start, stop in chunk:
                    circuit, values = pubs[index]
                    chunk_pubs.append(circuit if values is None else (circuit, values[start:stop]))
                sampler = self.sampler(device)
                logger.debug(
                    "IBMBackend: %s (%s) submitting %d circuits × %d shots to %s",
                    kernel,
                    site,
                    circuits,
                    self.shots,
                    device,
                )
                began = time.perf_counter()
                job = self.call(
                    f"submitting the {kernel} job",
                    partial(sampler.run, chunk_pubs, shots=self.shots),
                    device,
                )
                self.running.track(site, job, device)
                jobs.append((job, device))
                submitted.append((number, job, began))
            logger.debug(
                "IBMBackend: %s (%s) waiting for %d jobs on %s",
                kernel,
                site,
                len(submitted),
                ", ".join(dict.fromkeys(device for _, device, _ in assigned)),
            )
            pieces: list[list[np.ndarray]] = [[] for _ in rows]
            for number, job, began in submitted:
                chunk, device, circuits = assigned[number]
                result = self.call(f"waiting for the {kernel} job", job.result, device)
                self.running.untrack(site, [job])
                # off its device's queue at once, not when the call ends: other calls see it
                self.queues.release(device, circuits)
                released.add(number)
                wall = time.perf_counter() - began
                received = _unpack(chunk, result, pieces)
                self.record(
                    ExecutionRecord(
                        kernel=kernel,
                        site=site,
                        circuits=circuits,
                        shots=circuits * self.shots,
                        wall_s=wall,
                        queue_s=queue_seconds(job),
                        bytes_received=received,
                        device=device,
                    )
                )
        except BaseException:
            # Ctrl-C while waiting, a failed job, a failed submission: the jobs of this call
            # not yet collected (nor cancelled by ``cancel_running`` meanwhile) are cancelled.
            for device in self.devices:
                mine = [job for job, d in jobs if d == device]
                untracked = self.running.untrack(site, mine)
                cancel_jobs(site, untracked, partial(self.call, device=device), device)
            raise
        finally:
            self.running.untrack(site, [job for job, _ in jobs])
            # what was not collected leaves its device's queue too (cancelled, failed, or
            # never submitted)
            for number, (_, device, circuits) in enumerate(assigned):
                if number not in released:
                    self.queues.release(device, circuits)
        return [np.concatenate(parts, axis=0) for parts in pieces]


def _unpack(chunk: list[RowRange], result: Any, pieces: list[list[np.ndarray]]) -> int:
    """Append each pub result's bits (N, shots, c) of a chunk's job to ``pieces`` (per pub of
    the call); returns the bytes of bit arrays received."""
    received = 0
    for (index, _, _), pub_result in zip(chunk, result, strict=True):
        bit_array = pub_result.data.meas
        received += int(np.asarray(bit_array.array).nbytes)
        bits = bit_array_bits(bit_array)
        pieces[index].append(bits.reshape(-1, *bits.shape[-2:]))
    return received
