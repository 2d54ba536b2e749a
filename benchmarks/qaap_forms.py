"""QAAP's two exact forms against torch's scaled_dot_product_attention, forward + backward.

At batch 1, 12 heads (--quick: 2), head dim 64, float32, for sequence lengths 1024, 4096 and
16384 (--quick: 256, 1024, 2048) and two masks:
- ``padding``: the last n/8 keys masked (SDPA and the closed form get a (1, 1, 1, n) bool
  mask, the linear form the same keys as ``key_keep``);
- ``causal``: ``is_causal=True``.
Three implementations on the same q, k, v and cotangent C, timing ``out = f(q, k, v)`` then
``(out·C).sum().backward()``:
- ``quadratic``: the O(n²) closed form (``qgraph/kernels/qaap_quadratic.py``), and
- ``linear``: the O(n·d²) form (``qgraph/kernels/qaap_linear.py``), each as the exact backend
  runs it: ``torch.ops.qgraph.qaap(..., "exact", "autograd", ..., form)``, whose backward is
  the op's (hand-written for the quadratic form, the linear form's VJP);
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (softmax attention: not the
  same function, the yardstick for what attention costs on this machine).
Before timing, the linear form's output and gradients are checked against the closed form at
the shortest length (max |difference| / max(1, max |closed form|) ≤ 1e-4). The timed rounds
interleave the implementations (the machine may be shared); medians of all timed calls.

Everything runs on ONE torch thread (recorded as torch_threads): on the shared 2-core machine
these figures come from, two threads made the linear form's many small matmuls swing by up
to 30x with the other workers' load (fwd+bwd at n = 256, 4 heads, after a warm-up: 0.12 and
0.15 s on one thread, 1.3 to 4.4 s on two), while one thread gave repeatable times.

Peak memory is the growth of the peak resident set size (VmHWM, reset through
/proc/self/clear_refs) over the resident size before the call, in a fresh subprocess per
(implementation, length, mask) that makes the inputs and runs one forward + backward (the
three implementations' subprocesses run side by side): torch CPU allocations are invisible
to tracemalloc. Each subprocess first runs the same call at n = 128 (RSS also counts library
code paged in on first use) and allocates every block over 128 KiB as its own mapping
(MALLOC_MMAP_THRESHOLD_), so that RSS follows the live tensors. The growth includes the
inputs' gradients. --quick measures memory at its longest length only. The closed form is
skipped where its memory, extrapolated ∝ n² from the longest length measured, would exceed
half of the memory available; the results say so.

Ratios: ``linear_over_sdpa_<n>_<mask>`` (and ``quadratic_over_sdpa_...``,
``linear_over_quadratic_...``) are time ratios, < 1 when the first is faster. The crossover
length where the linear form starts beating SDPA is interpolated in log-log between the two
measured lengths around it, or reported as outside the measured range.

    python benchmarks/qaap_forms.py [--quick] [--json PATH]
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

import itertools

import psutil
import torch
import torch.nn.functional as F
from common import parse_args, write_result

import qgraph.ops  # noqa: F401  (registers torch.ops.qgraph.qaap)
from qgraph.kernels.qaap_linear import (
    linear_form_flops,
    quadratic_form_flops,
)

HEAD_DIM, BATCH = 64, 1
FORMS = ("quadratic", "linear", "sdpa")
MASKS = ("padding", "causal")
#: linear vs closed form before timing: max |difference| / max(1, max |closed form|)
AGREEMENT_TOL = 1e-4
#: the closed form runs only where its extrapolated peak is under this share of free memory
MEMORY_SHARE = 0.5
#: torch threads for every timing and memory run (see the module docstring)
THREADS = 1
_MIB = float(1 << 20)

Step = Callable[[], torch.Tensor]


def make_inputs(n: int, heads: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """q, k, v (requiring grad), the cotangent and both masks, the same for every form."""
    gen = torch.Generator().manual_seed(seed)
    shape = (BATCH, heads, n, HEAD_DIM)
    tensors = {name: torch.randn(shape, generator=gen) for name in ("q", "k", "v", "cotangent")}
    for name in ("q", "k", "v"):
        tensors[name].requires_grad_()
    key_keep = torch.arange(n) < n - n // 8  # the last n/8 keys are padding
    tensors["key_keep"] = key_keep.reshape(1, 1, n)
    tensors["mask"] = key_keep.reshape(1, 1, 1, n)
    return tensors


def forward(form: str, mask: str, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """One form's output on the inputs ``t`` under ``mask``."""
    causal = mask == "causal"
    attn_mask = None if causal else t["mask"]
    if form in ("quadratic", "linear"):  # as the exact backend runs it, backward included
        return torch.ops.qgraph.qaap(
            t["q"], t["k"], t["v"], attn_mask, None, causal, 0.0, "exact", "autograd", "bench", form
        )
    return F.scaled_dot_product_attention(
        t["q"], t["k"], t["v"], attn_mask=attn_mask, is_causal=causal
    )


def step(form: str, mask: str, t: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Forward + backward; returns the output and the gradients of q, k, v."""
    for name in ("q", "k", "v"):
        t[name].grad = None
    out = forward(form, mask, t)
    (out * t["cotangent"]).sum().backward()
    grads = [t[name].grad for name in ("q", "k", "v")]
    assert all(g is not None for g in grads)
    return [out.detach(), *grads]  # type: ignore[list-item]


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1]) * 1024 / _MIB
    raise RuntimeError(f"/proc/self/status has no {key}")


def measure_peak(form: str, n: int, heads: int, mask: str) -> dict[str, float]:
    """In this process: peak RSS growth (MiB) of one forward + backward on fresh inputs."""
    torch.set_num_threads(THREADS)
    # A small call first: RSS also counts the library code a kernel pages in on first use.
    step(form, mask, make_inputs(min(n, 128), heads))
    t = make_inputs(n, heads)
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM to the current resident size
    before = _status_mib("VmRSS")
    start = time.perf_counter()
    step(form, mask, t)
    return {
        "peak_growth_mib": _status_mib("VmHWM") - before,
        "seconds": time.perf_counter() - start,
    }


def peaks_in_subprocesses(forms: list[str], n: int, heads: int, mask: str) -> dict[str, Any]:
    """``measure_peak`` of each form in its own fresh interpreter, so that no earlier
    allocation hides a peak. They run side by side: a peak RSS is per process."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import qaap_forms; "
        "print(json.dumps(qaap_forms.measure_peak(sys.argv[2], int(sys.argv[3]), "
        "int(sys.argv[4]), sys.argv[5])))"
    )
    here = os.path.dirname(os.path.abspath(__file__))
    # Every block over 128 KiB gets its own mapping, returned on free: RSS then follows the
    # live tensors (with glibc's adaptive threshold, freed blocks linger and peaks wander by
    # tens of MiB between identical runs).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 << 10)}
    running = {
        form: subprocess.Popen(
            [sys.executable, "-c", code, here, form, str(n), str(heads), mask],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for form in forms
    }
    peaks: dict[str, Any] = {}
    for form, process in running.items():
        stdout, stderr = process.communicate()
        if process.returncode != 0:
            peaks[form] = {"error": (stderr.strip().splitlines() or ["failed"])[-1]}
        else:
            peaks[form] = json.loads(stdout.strip().splitlines()[-1])
    return peaks


def relative_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Largest max |a − b| / max(1, max |b|) over the output and the three gradients."""
    return max(
        float((x - y).abs().max()) / max(1.0, float(y.abs().max()))
        for x, y in zip(a, b, strict=True)
    )


def crossover(lengths: list[int], ratios: list[float]) -> dict[str, Any]:
    """Where linear/sdpa time falls below 1: log-log interpolation between measured lengths."""
    if ratios[0] < 1.0:
        return {
            "length": None,
            "how": f"linear already faster at the shortest length, {lengths[0]}",
        }
    points = list(zip(lengths, ratios, strict=True))
    for (n1, r1), (n2, r2) in itertools.pairwise(points):
        if r1 >= 1.0 > r2:
            fraction = math.log(r1) / (math.log(r1) - math.log(r2))
            length = math.exp(math.log(n1) + fraction * (math.log(n2) - math.log(n1)))
            return {"length": round(length), "how": f"interpolated between {n1} and {n2}"}
    return {"length": None, "how": f"linear slower at every length measured (up to {lengths[-1]})"}


def log(message: str) -> None:
    print(message, flush=True)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    lengths = [256, 1024, 2048] if args.quick else [1024, 4096, 16384]
    heads = 2 if args.quick else 12
    memory_lengths = lengths[-1:] if args.quick else lengths
    torch.set_num_threads(THREADS)

    # Agreement before anything is timed.
    small = make_inputs(lengths[0], heads)
    agreement = {}
    for mask in MASKS:
        diff = relative_difference(step("linear", mask, small), step("quadratic", mask, small))
        agreement[mask] = diff
        log(f"agreement linear vs closed form, {mask}, n={lengths[0]}: {diff:.2e}")
        if diff > AGREEMENT_TOL:
            raise SystemExit(f"linear form disagrees with the closed form: {diff:.3g}")

    results: dict[str, Any] = {
        "config": {"batch": BATCH, "heads": heads, "head_dim": HEAD_DIM, "dtype": "float32"},
        "agreement_at_shortest_length": agreement,
        "memory_method": "peak RSS growth (VmHWM after clear_refs) in a subprocess per cell",
        "memory_lengths": memory_lengths,
        "seconds": {},
        "peak_memory_mib": {},
        "skipped": {},
        "flops": {},
    }
    ratios: dict[str, float] = {}
    quadratic_mib: dict[str, tuple[int, float]] = {}  # mask -> (length, MiB) last measured
    available_mib = psutil.virtual_memory().available / _MIB

    for n in lengths:
        repeats = 2 if args.quick or n > 4096 else 3
        for mask in MASKS:
            key = f"{n}_{mask}"
            forms = list(FORMS)
            if mask in quadratic_mib:
                n0, mib0 = quadratic_mib[mask]
                estimate = mib0 * (n / n0) ** 2
                if estimate > MEMORY_SHARE * available_mib:
                    forms.remove("quadratic")
                    results["skipped"][f"quadratic_{key}"] = (
                        f"estimated {estimate / 1024:.1f} GiB (∝ n² from {mib0:.0f} MiB at "
                        f"n={n0}) > {MEMORY_SHARE:.0%} of {available_mib / 1024:.1f} GiB available"
                    )
                    log(f"skip quadratic {key}: {results['skipped'][f'quadratic_{key}']}")
            t = make_inputs(n, heads)
            if n < 8192:
                for form in forms:  # warm-up
                    step(form, mask, t)
            times: dict[str, list[float]] = {form: [] for form in forms}
            for _ in range(repeats):
                for form in forms:
                    start = time.perf_counter()
                    step(form, mask, t)
                    times[form].append(time.perf_counter() - start)
            del t
            for form in forms:
                median = statistics.median(times[form])
                results["seconds"][f"{form}_{key}"] = {"median": median, "all": times[form]}
                log(f"{form:9s} n={n:6d} {mask:7s}: {median:8.3f} s (fwd+bwd, median of {repeats})")
            sdpa = statistics.median(times["sdpa"])
            ratios[f"linear_over_sdpa_{key}"] = statistics.median(times["linear"]) / sdpa
            if "quadratic" in forms:
                quadratic = statistics.median(times["quadratic"])
                ratios[f"quadratic_over_sdpa_{key}"] = quadratic / sdpa
                ratios[f"linear_over_quadratic_{key}"] = (
                    statistics.median(times["linear"]) / quadratic
                )
            causal = mask == "causal"
            results["flops"][key] = {
                "linear": linear_form_flops(heads, n, n, HEAD_DIM, HEAD_DIM, causal, backward=True),
                "quadratic": quadratic_form_flops(
                    heads, n, n, HEAD_DIM, HEAD_DIM, causal, backward=True
                ),
            }
            if n in memory_lengths:
                for form, peak in peaks_in_subprocesses(forms, n, heads, mask).items():
                    results["peak_memory_mib"][f"{form}_{key}"] = peak
                    log(f"{form:9s} n={n:6d} {mask:7s}: peak memory {peak}")
                    if form == "quadratic" and "peak_growth_mib" in peak:
                        quadratic_mib[mask] = (n, peak["peak_growth_mib"])

    results["crossover_linear_beats_sdpa"] = {
        mask: crossover(lengths, [ratios[f"linear_over_sdpa_{n}_{mask}"] for n in lengths])
        for mask in MASKS
    }
    log(f"crossover: {results['crossover_linear_beats_sdpa']}")
    document = write_result(args.json, "qaap_forms", results, ratios)
    log(json.dumps(document["ratios"], indent=2))


if __name__ == "__main__":
    main()
