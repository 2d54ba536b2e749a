"""Quantum fan-out over Dask: throughput of one large op call on 1 worker against 2.

One sampled QRCE call (``AerBackend(shots=1024).qrce``: 8 qubits, 2 layers, one circuit per
distinct token) is split into chunks of ``max_job_size`` circuits, each about half a second
of Aer work on one core, and the chunks run on a ``LocalCluster`` of single-thread worker
processes (``backends/aer.py``, issue 14 item 2). Measured, with the same chunking and seed:

* ``in_process``: ``executor=None``, Aer on one thread (the reference numbers);
* ``workers_2`` / ``workers_1``: a LocalCluster of 2 workers, 1 thread each, then the same
  cluster scaled down to 1 (one startup for both); warmed up (qgraph imported, the
  simulators built) before the timed calls.

Throughput is circuits per second of the whole call (median of the repeats). Ratios:
``fanout_2_workers_over_1`` (throughput, 2 workers / 1; 2.0 is perfect scaling, which a
2-core machine cannot reach while the client process also works) and
``fanout_1_worker_over_in_process`` (what shipping the chunks costs). Every run's features
are checked to equal the in-process ones exactly (``identical_results``).

On a real cluster, start the scheduler and single-thread workers (Aer runs one job at a time
per process, so scale with processes, not threads) and pass the scheduler's address::

    dask scheduler                                    # on the head node: tcp://HOST:8786
    dask worker tcp://HOST:8786 --nworkers 8 --nthreads 1   # on each worker node
    python benchmarks/fanout.py --scheduler tcp://HOST:8786 [--json PATH]

Every worker needs the same environment (``pip install 'qgraph[aer,dask]'``). The same call
then runs on one of its workers (every chunk pinned there) and on all of them:
``fanout_N_workers_over_1`` and ``fanout_cluster_over_in_process`` (against this machine's
single thread). There the backend keeps Aer's default threads, which is one per worker:
Dask starts workers with ``OMP_NUM_THREADS=1`` (``distributed.nanny.pre-spawn-environ``).

    python benchmarks/fanout.py [--quick] [--json PATH] [--scheduler ADDRESS]

--quick: 384 circuits in chunks of 48, 2 repeats (under a minute); default: 1,536 circuits
in chunks of 96, 3 repeats.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

import torch
from common import median_seconds, write_result

from qgraph.backends.aer import AerBackend
from qgraph.costmodel.calibration_timing import single_threaded_aer
from qgraph.kernels.qrce import QRCEStructure

QUBITS, LAYERS, SHOTS, SEED = 8, 2, 1024, 0


def parse_args() -> argparse.Namespace:
    """``--quick`` and ``--json PATH`` as every benchmark has, and ``--scheduler ADDRESS``."""
    parser = argparse.ArgumentParser(description="quantum fan-out over Dask: 1 vs 2 workers")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under a minute")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="a running Dask scheduler (tcp://host:8786) instead of local clusters",
    )
    return parser.parse_args()


class _Call:
    """The one op call every configuration times: QRCE features of ``tokens`` tokens."""

    def __init__(self, tokens: int) -> None:
        self.structure = QRCEStructure.from_seed(QUBITS, LAYERS, seed=SEED)
        gen = torch.Generator().manual_seed(SEED)
        self.table = torch.randn(tokens, QUBITS, generator=gen, dtype=torch.float64)
        self.weights = torch.randn(LAYERS, QUBITS, generator=gen, dtype=torch.float64)
        self.ids = torch.arange(tokens)

    def __call__(self, backend: AerBackend) -> torch.Tensor:
        return backend.qrce(self.ids, self.table, self.weights, self.structure, site="bench")


class _OneWorker:
    """An executor that runs every task on one worker of a Dask cluster."""

    def __init__(self, client: Any, address: str) -> None:
        self.client = client
        self.address = address

    def submit(self, fn: Any, *args: Any) -> Any:
        """``client.submit`` pinned to the worker (a unique key per task)."""
        return self.client.submit(fn, *args, workers=[self.address], pure=False)


def _backend(chunk: int, executor: Any, one_thread: bool) -> AerBackend:
    backend = AerBackend(shots=SHOTS, seed=SEED, max_job_size=chunk, executor=executor)
    return single_threaded_aer(backend, 1) if one_thread else backend


def _measure(
    call: _Call,
    chunk: int,
    executor: Any,
    repeats: int,
    reference: torch.Tensor | None,
    one_thread: bool = True,
) -> tuple[dict[str, Any], torch.Tensor]:
    """Time ``repeats`` calls on a fresh backend each (the same seed: the same numbers)."""
    outputs: list[torch.Tensor] = []
    backends: list[AerBackend] = []

    def run() -> None:
        backend = _backend(chunk, executor, one_thread)
        backends.append(backend)
        outputs.append(call(backend))

    run()  # warm-up: transpilation here, the module and simulators on the workers
    seconds, times = median_seconds(run, repeats)
    first = outputs[0]
    identical = all(torch.equal(out, first) for out in outputs)
    if reference is not None:
        identical = identical and torch.equal(first, reference)
    devices = Counter(str(r.device) for r in backends[-1].stats.records if r.outcome == "done")
    circuits = int(call.ids.numel())
    result = {
        "seconds": seconds,
        "times": times,
        "circuits_per_s": circuits / seconds,
        "chunks": sum(devices.values()),
        "chunks_per_worker": sorted(devices.values(), reverse=True),
        "identical_results": identical,
    }
    return result, first


def _local_cluster(n_workers: int) -> tuple[Any, Any]:
    """A LocalCluster of single-thread worker processes that have imported the backend."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    client.run(importlib.import_module, "qgraph.backends.aer")
    return cluster, client


def main() -> None:
    """Run the comparison and print (and optionally write) its JSON document."""
    args = parse_args()
    tokens, chunk, repeats = (384, 48, 2) if args.quick else (1536, 96, 3)
    call = _Call(tokens)
    workload = {
        "kernel": "qrce",
        "qubits": QUBITS,
        "layers": LAYERS,
        "shots": SHOTS,
        "circuits": tokens,
        "max_job_size": chunk,
        "repeats": repeats,
    }
    started = time.perf_counter()
    in_process, reference = _measure(call, chunk, None, repeats, None)
    results: dict[str, Any] = {"workload": workload, "in_process": in_process}
    ratios: dict[str, float] = {}

    if args.scheduler is None:
        cluster, client = _local_cluster(2)
        try:
            results["workers_2"] = _measure(call, chunk, client, repeats, reference)[0]
            # the same cluster scaled down: one startup (and qgraph import) for both sizes
            cluster.scale(1)
            while len(client.scheduler_info()["workers"]) != 1:
                time.sleep(0.1)
            results["workers_1"] = _measure(call, chunk, client, repeats, reference)[0]
        finally:
            client.close()
            cluster.close()
        one, two = results["workers_1"], results["workers_2"]
        ratios["fanout_2_workers_over_1"] = two["circuits_per_s"] / one["circuits_per_s"]
        ratios["fanout_1_worker_over_in_process"] = (
            one["circuits_per_s"] / in_process["circuits_per_s"]
        )
    else:
        from distributed import Client

        client = Client(args.scheduler)
        try:
            workers = client.scheduler_info()["workers"]
            addresses = sorted(workers)
            client.run(importlib.import_module, "qgraph.backends.aer")
            n = len(addresses)
            results["cluster"] = {
                "workers": n,
                "hosts": len({info.get("host") for info in workers.values()}),
                "threads": sum(int(info.get("nthreads", 0)) for info in workers.values()),
            }
            pinned = _OneWorker(client, addresses[0])
            results["workers_1"] = _measure(call, chunk, pinned, repeats, reference, False)[0]
            results[f"workers_{n}"] = _measure(call, chunk, client, repeats, reference, False)[0]
            thr_1 = results["workers_1"]["circuits_per_s"]
            thr_n = results[f"workers_{n}"]["circuits_per_s"]
            ratios[f"fanout_{n}_workers_over_1"] = thr_n / thr_1
            ratios["fanout_cluster_over_in_process"] = thr_n / in_process["circuits_per_s"]
        finally:
            client.close()
    results["total_s"] = time.perf_counter() - started
    document = write_result(args.json, "fanout", results, ratios)
    print(
        {
            key: document["results"][key]
            for key in document["results"]
            if key not in ("workload", "cluster")
        }
    )
    print("ratios:", ratios)


if __name__ == "__main__":
    main()
