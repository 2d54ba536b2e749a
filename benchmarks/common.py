"""What every benchmark shares: the machine description, argument parsing, JSON output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def machine() -> dict[str, Any]:
    """The machine a result was measured on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def parse_args(description: str) -> argparse.Namespace:
    """``--quick`` (the same comparison, smaller) and ``--json PATH``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under a minute")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    return parser.parse_args()


def median_seconds(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    """Median and all wall times of ``repeats`` calls of fn, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def write_result(
    path: Path | None, name: str, results: dict[str, Any], ratios: dict[str, float]
) -> dict[str, Any]:
    """The benchmark's JSON document; written to ``path`` when given."""
    document = {"name": name, "machine": machine(), "results": results, "ratios": ratios}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2))
    return document
