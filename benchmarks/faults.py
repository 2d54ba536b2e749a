"""Training through failing jobs: steps lost, retries and time overhead, side by side.

A small hybrid encoder (QAAP + QRCE on the shots backend, seeded) trains the same steps
twice in one process: once on a clean backend, once with a seeded 10 % of its jobs failing
transiently (``FaultyBackend``) and retried by the shared front end's job policy (no
backoff wait, so the overhead is the re-run work itself). It reports steps lost, injected
faults, retries, whether the final parameters are bit-identical, and the time ratio.

    python benchmarks/faults.py [--quick] [--json PATH]

On real hardware a retry also waits for the queue again; set ``JobPolicy(backoff_s=...)``
to what the provider asks for.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))

import time

import torch
from common import parse_args, write_result

import qgraph
from qgraph.backends.faults import FaultyBackend
from qgraph.backends.job_policy import JobFailedError, JobPolicy
from qgraph.backends.shots import ShotsBackend
from qgraph.models import encoder_model

FAILURE_RATE = 0.1


def train(backend: ShotsBackend | FaultyBackend, steps: int) -> tuple[dict, float, int]:
    """Final parameters, wall time and steps lost (a step whose job failed for good)."""
    torch.manual_seed(0)
    case = encoder_model(layers=2, d_model=32, heads=4, vocab=200, batch=4, seq_len=16)
    cm = qgraph.compile(
        case.model, case.args, case.kwargs, backend=backend, policy="all", qrce_qubits=4
    )
    cm.train()
    optimizer = torch.optim.SGD(cm.parameters(), lr=0.02)
    lost = 0
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        try:
            cm(*case.args, **case.kwargs).square().mean().backward()
        except JobFailedError:
            lost += 1
            continue
        optimizer.step()
    elapsed = time.perf_counter() - start
    return {n: p.detach().clone() for n, p in cm.named_parameters()}, elapsed, lost


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    steps = 40 if args.quick else 200
    clean = ShotsBackend(shots=256, seed=3)
    faulty = FaultyBackend(ShotsBackend(shots=256, seed=3), FAILURE_RATE, seed=11)
    faulty.job_policy = JobPolicy(retries=6, backoff_s=0.0)
    clean_params, clean_s, clean_lost = train(clean, steps)
    faulty_params, faulty_s, faulty_lost = train(faulty, steps)
    jobs = faulty.inner.stats.jobs
    retries = sum(c.retries for c in faulty.stats.per_site.values())
    identical = all(torch.equal(clean_params[n], faulty_params[n]) for n in clean_params)
    results = {
        "steps": steps,
        "failure_rate": FAILURE_RATE,
        "jobs_run": jobs,
        "faults_injected": faulty.injected,
        "retries": retries,
        "steps_lost": {"clean": clean_lost, "faulty": faulty_lost},
        "bit_identical": identical,
        "seconds": {"clean": clean_s, "faulty": faulty_s},
    }
    ratios = {"faulty_over_clean_time": faulty_s / clean_s}
    write_result(args.json, "faults", results, ratios)
    print(
        f"{steps} steps, {FAILURE_RATE:.0%} of jobs failing: {faulty.injected} faults in "
        f"{jobs + faulty.injected} job attempts, {retries} retries, {faulty_lost} steps lost, "
        f"parameters bit-identical: {identical}"
    )
    print(f"  time {clean_s:.2f} s clean, {faulty_s:.2f} s with faults ({faulty_s / clean_s:.2f}×)")


if __name__ == "__main__":
    main()
