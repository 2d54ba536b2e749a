"""The IBM backend over several devices: one call's rows spread over two fake devices in local
testing mode (``fake_lima`` and ``fake_quito``: 5 qubits each, ~0.5 s per 2-circuit job of 64
shots here), one queue per device, and the scheduler's per-device counts.

Network blocked (``no_network``, autouse) as in ``test_ibm_backend.py``. Tiny sizes keep the
file fast: 2-qubit, 1-layer QRCE, 4 rows, 64 shots.
"""

from __future__ import annotations

import logging
import math
import pickle
import socket
from collections.abc import Callable, Iterator

import pytest
import torch

pytest.importorskip("qiskit_ibm_runtime")

import qgraph
from qgraph.backends.ibm import IBMBackend, IBMRuntimeError
from qgraph.backends.running_jobs import DeviceQueues
from qgraph.kernels.qrce import QRCEStructure, qrce_token_features
from qgraph.models import encoder_model
from qgraph.scheduler import HybridScheduler

DEVICES = ("fake_lima", "fake_quito")
F64 = torch.float64
STRUCTURE = QRCEStructure.from_seed(2, 1, seed=0)
#: four tokens whose ideal features differ by ~2 in some component pairwise (Z = ±1), so a
#: row put in the wrong place is off by far more than the noise
TABLE = torch.tensor([[0, 0], [math.pi, math.pi], [0, math.pi], [math.pi, 0]], dtype=F64)
WEIGHTS = torch.tensor([[0.3, 0.2]], dtype=F64)
IDS = torch.arange(4)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def _qrce(backend: IBMBackend, site: str = "emb", ids: torch.Tensor = IDS) -> torch.Tensor:
    return backend.qrce(ids, TABLE, WEIGHTS, STRUCTURE, site)


class _OnWaiting(logging.Handler):
    """Runs ``action`` once, in the calling thread, when a call has submitted all its jobs
    and is about to wait for them (the backend's "waiting for" debug line)."""

    def __init__(self, action: Callable[[], None]) -> None:
        super().__init__(logging.DEBUG)
        self.action: Callable[[], None] | None = action

    def emit(self, record: logging.LogRecord) -> None:
        if self.action is not None and "waiting for" in record.getMessage():
            action, self.action = self.action, None
            action()


OnWaiting = Callable[[Callable[[], None]], _OnWaiting]


@pytest.fixture
def on_waiting() -> Iterator[OnWaiting]:
    """Install an ``_OnWaiting`` handler: ``on_waiting(action)``; removed after the test."""
    logger = logging.getLogger("qgraph.backends.ibm_jobs")
    level, handlers = logger.level, list[_OnWaiting]()

    def install(action: Callable[[], None]) -> _OnWaiting:
        handler = _OnWaiting(action)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        handlers.append(handler)
        return handler

    yield install
    for handler in handlers:
        logger.removeHandler(handler)
    logger.setLevel(level)


# --------------------------------------------------------------------------- spreading rows


def test_one_call_spreads_over_two_devices_as_each_device_alone_would() -> None:
    backend = IBMBackend(DEVICES, shots=64, seed=7)
    twin = pickle.loads(pickle.dumps(backend))  # same seed state: must give the same output
    queued: list[dict[str, int]] = []  # each device's queue as each job's record arrives
    backend.stats.records.listeners.append(lambda _: queued.append(backend._queues.outstanding()))
    features = _qrce(backend)

    # 4 rows over 2 devices: a chunk of 2 each, in device order (both queues were empty)
    assert [(r.device, r.circuits, r.shots) for r in backend.stats.records] == [
        ("fake_lima", 2, 128),
        ("fake_quito", 2, 128),
    ]
    # a collected chunk leaves its device's queue at once, not when the call ends
    assert queued == [{"fake_lima": 0, "fake_quito": 2}, {"fake_lima": 0, "fake_quito": 0}]
    assert {key[-1] for key in backend._isa_cache} == set(DEVICES)  # transpiled per device

    # rows come back in row order: each within noise of its own ideal features, which lie ~2
    # apart between rows
    ideal = qrce_token_features(IDS, TABLE, WEIGHTS, STRUCTURE)
    assert features.shape == (4, 4)
    assert (features - ideal).abs().max() < 0.5

    # each chunk equals what its device alone gives those rows with the same seed: chunk i
    # draws the i-th simulator seed, so a lone device chunked the same way matches it (lima:
    # chunk 0 = rows 0-1; quito: chunk 1 = rows 2-3, after a chunk 0 that draws seed 0)
    lima = IBMBackend("fake_lima", shots=64, seed=7, max_circuits_per_job=2)
    torch.testing.assert_close(_qrce(lima, ids=IDS[:2]), features[:2], rtol=0, atol=0)
    quito = IBMBackend("fake_quito", shots=64, seed=7, max_circuits_per_job=2)
    torch.testing.assert_close(_qrce(quito)[2:], features[2:], rtol=0, atol=0)
    assert [r.device for r in (*lima.stats.records, *quito.stats.records)] == [
        "fake_lima",
        "fake_quito",
        "fake_quito",
    ]
    # and not what quito gives rows 2-3 as its first chunk (seed 0): seeds go by chunk
    first_chunk = IBMBackend("fake_quito", shots=64, seed=7, max_circuits_per_job=2)
    assert not torch.equal(_qrce(first_chunk, ids=IDS[2:]), features[2:])

    # a seeded run is reproducible
    torch.testing.assert_close(_qrce(twin), features, rtol=0, atol=0)


def test_chunks_split_rows_evenly_over_the_devices() -> None:
    backend = IBMBackend(DEVICES, shots=64, max_circuits_per_job=3)

    def sizes(rows: list[int]) -> list[int]:
        return [sum(stop - start for _, start, stop in chunk) for chunk in backend._chunks(rows)]

    assert sizes([5]) == [3, 2]  # ⌈5/2⌉ per device
    assert sizes([4]) == [2, 2]
    assert sizes([1]) == [1]  # too small to split: one device gets it
    assert sizes([8]) == [3, 3, 2]  # more than the job limit per device: chunks of 3
    assert sizes([2, 1]) == [2, 1]  # several pubs count together
    alone = IBMBackend(DEVICES[0], shots=64, max_circuits_per_job=3)
    assert [len(c) for c in alone._chunks([8])] == [1, 1, 1]  # one device: as before
    assert [c[0][2] - c[0][1] for c in alone._chunks([8])] == [3, 3, 2]


# --------------------------------------------------------------------------- the queues


def test_the_least_loaded_device_gets_the_next_chunk() -> None:
    queues = DeviceQueues(DEVICES)
    assert queues.assign(2) == "fake_lima"  # tie: device order
    assert queues.assign(2) == "fake_quito"
    assert queues.assign(100) == "fake_lima"  # tie again
    assert [queues.assign(2) for _ in range(3)] == ["fake_quito"] * 3  # lima is loaded
    queues.release("fake_lima", 102)
    assert queues.outstanding() == {"fake_lima": 0, "fake_quito": 8}
    assert queues.assign(1) == "fake_lima"
    copy = pickle.loads(pickle.dumps(queues))  # work in flight stays with the original
    assert copy.outstanding() == {"fake_lima": 0, "fake_quito": 0}


def test_a_call_while_another_is_in_flight_goes_to_the_idler_device(
    on_waiting: OnWaiting,
) -> None:
    backend = IBMBackend(DEVICES, shots=64, seed=1)
    seen: dict[str, object] = {}

    def second_call() -> None:
        # the first call has submitted 2 circuits to lima and 1 to quito and not collected
        seen["outstanding"] = backend._queues.outstanding()
        seen["features"] = _qrce(backend, site="second", ids=torch.tensor([3]))

    on_waiting(second_call)
    first = _qrce(backend, site="first", ids=torch.tensor([0, 1, 2]))

    assert seen["outstanding"] == {"fake_lima": 2, "fake_quito": 1}
    records = [(r.site, r.device, r.circuits) for r in backend.stats.records]
    # the second call's chunk went to quito (1 outstanding < 2) and finished first
    assert records == [
        ("second", "fake_quito", 1),
        ("first", "fake_lima", 2),
        ("first", "fake_quito", 1),
    ]
    ideal = qrce_token_features(IDS, TABLE, WEIGHTS, STRUCTURE)
    assert (first - ideal[:3]).abs().max() < 0.5
    assert (seen["features"] - ideal[3:]).abs().max() < 0.5  # type: ignore[operator]
    assert backend._queues.outstanding() == {"fake_lima": 0, "fake_quito": 0}


# --------------------------------------------------------------------------- cancellation


def test_cancel_running_cancels_on_both_devices(
    on_waiting: OnWaiting, caplog: pytest.LogCaptureFixture
) -> None:
    backend = IBMBackend(DEVICES, shots=64, seed=2)
    caplog.set_level(logging.DEBUG, logger="qgraph.backends.running_jobs")
    seen: dict[str, object] = {}

    def cancel() -> None:
        seen["tracked"] = backend._running.tracked()
        seen["cancelled"] = backend.cancel_running()
        seen["after"] = backend._running.tracked()

    on_waiting(cancel)
    try:
        # local jobs start at once, so cancel() usually returns False and results still come
        # back; a job cancelled before it started fails its call instead
        outcome: object = _qrce(backend, site="c")
    except IBMRuntimeError as exc:
        outcome = exc

    assert seen["tracked"] == {"c": list(DEVICES)}  # one job per device, both in flight
    assert seen["after"] == {}  # every job handed out for cancelling, on both devices
    lines = [r.getMessage() for r in caplog.records if "a job of site 'c'" in r.getMessage()]
    assert len(lines) == 2 and [d for d in DEVICES if any(f"on {d}" in s for s in lines)] == list(
        DEVICES
    )
    cancelled = sum(line.endswith("was cancelled") for line in lines)
    assert seen["cancelled"] == cancelled
    if cancelled:
        assert isinstance(outcome, IBMRuntimeError)
    else:
        assert isinstance(outcome, torch.Tensor) and outcome.shape == (4, 4)
    assert backend.cancel_running() == 0  # nothing tracked any more
    assert backend._queues.outstanding() == {"fake_lima": 0, "fake_quito": 0}


def test_ctrl_c_after_submitting_cancels_on_both_devices_and_frees_the_queues(
    on_waiting: OnWaiting, caplog: pytest.LogCaptureFixture
) -> None:
    backend = IBMBackend(DEVICES, shots=64, seed=4)
    caplog.set_level(logging.DEBUG, logger="qgraph.backends.running_jobs")
    seen: dict[str, object] = {}

    def interrupt() -> None:
        seen["tracked"] = backend._running.tracked()
        seen["outstanding"] = backend._queues.outstanding()
        raise KeyboardInterrupt  # Ctrl-C just before the call waits for its results

    on_waiting(interrupt)
    with pytest.raises(KeyboardInterrupt):
        _qrce(backend, site="k")

    assert seen["tracked"] == {"k": list(DEVICES)}
    assert seen["outstanding"] == {"fake_lima": 2, "fake_quito": 2}
    lines = [r.getMessage() for r in caplog.records if "a job of site 'k'" in r.getMessage()]
    assert sorted(line.split(" on ")[1].split(" ")[0] for line in lines) == list(DEVICES)
    assert backend._running.tracked() == {} and backend.cancel_running() == 0
    assert backend._queues.outstanding() == {"fake_lima": 0, "fake_quito": 0}
    assert backend.stats.records == []  # nothing was collected


# --------------------------------------------------------------------------- the scheduler


def test_compiled_model_step_counts_jobs_per_device() -> None:
    case = encoder_model(layers=1, d_model=4, heads=2, vocab=12, batch=1, seq_len=2)
    backend = IBMBackend(DEVICES, shots=64, seed=0)
    cm = qgraph.compile(
        case.model,
        case.args,
        case.kwargs,
        backend=backend,
        qrce_qubits=2,
        qrce_layers=1,
        policy="all",
    )
    with torch.no_grad(), HybridScheduler(cm, microbatches=1) as scheduler:
        out = scheduler.run(*case.args, **case.kwargs)
    assert out.shape == (1, 2, 4) and torch.isfinite(out).all()

    records = list(backend.stats.records)
    summary = scheduler.summary()
    assert set(summary.device_jobs) == set(DEVICES)
    for device in DEVICES:
        mine = [r for r in records if r.device == device]
        assert summary.device_jobs[device] == len(mine) > 0
        assert summary.device_circuits[device] == sum(r.circuits for r in mine)
    assert sum(summary.device_jobs.values()) == summary.jobs == len(records)
    assert summary.as_dict()["device_circuits"] == summary.device_circuits

    # the trace labels each job with the devices it ran on
    trace = scheduler.timeline.chrome_trace()["traceEvents"]
    labels = [e["name"] for e in trace if e.get("cat") == "quantum"]
    assert labels and all(" @ " in label for label in labels)
    assert any(label.endswith(" @ fake_lima+fake_quito") for label in labels)


def test_a_step_without_devices_keeps_its_summary() -> None:
    from qgraph.scheduler import Timeline, TimelineEvent

    timeline = Timeline()
    timeline.add(TimelineEvent("q", "quantum", 0.0, 1.0, "w", jobs=1, circuits=3))
    summary = timeline.summary()
    assert summary.device_jobs == {} and "device_jobs" not in summary.as_dict()
    (event,) = [e for e in timeline.chrome_trace()["traceEvents"] if e.get("cat") == "quantum"]
    assert event["name"] == "q" and "device_jobs" not in event["args"]


# --------------------------------------------------------------------------- description, input


def test_repr_capabilities_pickle_and_close() -> None:
    backend = IBMBackend(list(DEVICES), mode="batch", shots=64, seed=3)
    assert backend.devices == DEVICES and backend.device == DEVICES
    assert repr(backend) == "IBMBackend(device=('fake_lima', 'fake_quito'), mode='batch', shots=64)"
    assert repr(IBMBackend(("fake_lima",), shots=8)) == (
        "IBMBackend(device='fake_lima', mode='batch', shots=8)"  # one name: as a str
    )
    assert backend.capabilities.max_qubits == 5

    copy = pickle.loads(pickle.dumps(backend))
    assert repr(copy) == repr(backend) and copy.devices == DEVICES
    assert copy._queues.devices == DEVICES and copy.capabilities.max_qubits == 5

    for device in DEVICES:  # what a call does first on each device: open its Batch
        backend._mode(device)
    assert all(s._mode_object is not None for s in backend._sessions.values())
    backend.close()
    assert all(s._mode_object is None for s in backend._sessions.values())

    # the smallest device bounds the width; real devices count from their snapshots
    mixed = IBMBackend(("fake_lima", "fake_fez"), shots=8)
    assert mixed.capabilities.max_qubits == 5
    wide = QRCEStructure.from_seed(6, 1, seed=0)
    with pytest.raises(ValueError, match="needs 6 qubits but the smallest of fake_lima, fake_fez"):
        mixed.qrce(torch.tensor([0]), torch.zeros(1, 6), torch.zeros(1, 6), wide, "emb")
    real = IBMBackend(("ibm_fez", "ibm_torino"), shots=8)
    assert real.capabilities.max_qubits == 133  # torino's 133 < fez's 156; no connection


def test_bad_device_lists() -> None:
    with pytest.raises(ValueError, match=r"empty sequence; name at least one device"):
        IBMBackend(())
    with pytest.raises(ValueError, match=r"'fake_lima' is listed more than once.*name each"):
        IBMBackend(("fake_lima", "fake_quito", "fake_lima"))
    with pytest.raises(ValueError, match=r"every device must be a device name.*got 3 in"):
        IBMBackend(("fake_lima", 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"got ''"):
        IBMBackend(("fake_lima", ""))
    with pytest.raises(ValueError, match=r"device name or a sequence of them.*got 5"):
        IBMBackend(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"mix fake backends \(fake_lima: local testing mode\) "):
        IBMBackend(("fake_lima", "ibm_fez"))
    with pytest.raises(ValueError, match=r"and real devices \(ibm_fez\); use only fake_\* names"):
        IBMBackend(("ibm_fez", "fake_lima"))
    with pytest.raises(ValueError, match="unknown fake backend 'fake_nowhere'"):
        IBMBackend(("fake_lima", "fake_nowhere"))


# --------------------------------------------------------------------------- reseeding


def test_reseed_gives_what_a_fresh_backend_with_that_seed_gives() -> None:
    """``reseed`` (what ``qgraph.distributed.seed_for_rank`` calls per data-parallel rank)
    restarts the simulator seeds as a fresh backend made with the new seed and keeps the
    constructor's transpilation; 2 rows, 64 shots."""
    ids = IDS[:2]
    backend = IBMBackend("fake_lima", shots=64, seed=3)
    before = _qrce(backend, ids=ids)  # draws from seed 3's stream and transpiles with seed 3
    ((isa_3, *_),) = backend._isa_cache.values()
    backend.reseed(11)
    assert backend.seed == 11
    reseeded = _qrce(backend, ids=ids)
    ((isa_11, *_),) = backend._isa_cache.values()
    assert isa_11 is isa_3  # the transpiler keeps the constructor's seed
    fresh = _qrce(IBMBackend("fake_lima", shots=64, seed=11), ids=ids)
    torch.testing.assert_close(reseeded, fresh, rtol=0, atol=0)
    assert not torch.equal(reseeded, before)  # the seeds give different shots here
    backend.reseed()  # no seed: start the current seed's stream again
    torch.testing.assert_close(_qrce(backend, ids=ids), fresh, rtol=0, atol=0)
    assert next(iter(backend._isa_cache.values()))[0] is isa_11  # same seed: kept

    for bad in (True, 2.0, "7"):
        with pytest.raises(ValueError, match=r"IBMBackend.reseed: seed must be an int .*got"):
            backend.reseed(bad)  # type: ignore[arg-type]
    assert backend.seed == 11  # a refused seed changes nothing
