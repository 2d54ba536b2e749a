"""The step timeline: one event per node execution and per job, with per-step totals.

A ``Timeline`` is what ``HybridScheduler.run`` (and ``backward``) record: events with times
from the start of the step, exportable as Chrome-trace JSON (``to_chrome_trace``, opens in
Perfetto) and summed by ``summary()``. It holds plain data and imports nothing else of the
scheduler, so the report and the review page can use it alone.

A job whose backend names the device each of its records ran on (``ExecutionRecord.device``:
an IBM backend over several QPUs) carries per-device counts of jobs and circuits; the trace
labels it with its devices ("qrce_1 @ fake_lima+fake_quito") and ``summary()`` sums the
counts per device, which shows how the step's work spread over the devices' queues.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["StepSummary", "Timeline", "TimelineEvent"]


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
    raw_shot_bytes: int = 0  # one bitstring per shot (the backend's figure, else shots·qubits/8)
    tokens: int = 0  # QRCE: token ids in the call
    unique_tokens: int = 0  # QRCE: distinct ids in the call
    computed_tokens: int = 0  # QRCE: ids whose circuits ran (not shared or cached)
    retries: int = 0  # attempts that failed transiently and ran again (JobPolicy)
    timeouts: int = 0  # attempts that outlived the policy's timeout_s
    fallbacks: int = 0  # calls the policy's fallback computed instead
    # device -> jobs / circuits that ran there, from records that name a device (else empty)
    device_jobs: dict[str, int] = field(default_factory=dict)
    device_circuits: dict[str, int] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        """End minus start, in seconds."""
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
    raw_shot_bytes: int  # one bitstring per shot would have taken (see TimelineEvent)
    bytes_saved: int  # raw_shot_bytes - bytes_received of sampled jobs (< 0: raw is smaller)
    qrce_tokens: int  # token ids fed to QRCE nodes
    qrce_unique_tokens: int  # distinct per call (what the backend's own dedup runs)
    qrce_computed_tokens: int  # circuits actually run after sharing/caching
    backward_s: float = 0.0
    retries: int = 0  # job attempts that failed transiently and ran again
    timeouts: int = 0  # job attempts that timed out
    fallbacks: int = 0  # quantum calls computed by the job policy's fallback
    # device -> jobs / circuits of the step that ran there (backends that name devices only;
    # one queue per device: how the step's work spread over the QPUs)
    device_jobs: dict[str, int] = field(default_factory=dict)
    device_circuits: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The totals by field name; the per-device counts only when a job named a device."""
        totals = dict(self.__dict__)
        for key in ("device_jobs", "device_circuits"):
            if not totals[key]:
                del totals[key]
        return totals


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
        """Append ``event``."""
        self.events.append(event)

    def of_kind(self, kind: str) -> list[TimelineEvent]:
        """The events of this kind, in the order they were added."""
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
            retries=sum(e.retries for e in jobs),
            timeouts=sum(e.timeouts for e in jobs),
            fallbacks=sum(e.fallbacks for e in jobs),
            device_jobs=_per_device(e.device_jobs for e in jobs),
            device_circuits=_per_device(e.device_circuits for e in jobs),
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
                if key not in ("name", "kind", "start_s", "end_s", "thread")
                and value is not None
                and value != {}
            }
            tid = tids[event.thread]
            # a job that ran on named devices says where: "qrce_1 @ ibm_fez+ibm_torino"
            label = event.name + (f" @ {'+'.join(event.device_jobs)}" if event.device_jobs else "")
            trace.append(
                {
                    "name": label,
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


def _per_device(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    """Per-device counts summed over events, devices in order of first appearance."""
    total: dict[str, int] = {}
    for count in counts:
        for device, n in count.items():
            total[device] = total.get(device, 0) + n
    return total
