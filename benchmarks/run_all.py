"""Run every benchmark (one process each) and write benchmarks/RESULTS.md.

python benchmarks/run_all.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
#: the benchmark scripts, in the order RESULTS.md lists them
BENCHMARKS = [
    "compile_time",
    "kernels",
    "overlap",
    "costmodel_accuracy",
    "onnx_runtime",
    "arm_steps",
    "faults",
    "hybrid_step",
    "compression",
    "qaap_forms",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    documents = []
    for name in BENCHMARKS:
        target = out_dir / f"{name}.json"
        command = [sys.executable, str(HERE / f"{name}.py"), "--json", str(target)]
        if args.quick:
            command.append("--quick")
        print(f"== {name}", flush=True)
        subprocess.run(command, check=True)
        documents.append(json.loads(target.read_text()))
    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`benchmarks/run_all.py`); every number below was measured",
        "by the script named in its row, on the machine described under it.",
        "",
        "| benchmark | ratio | value |",
        "|---|---|---|",
    ]
    for doc in documents:
        for key, value in doc["ratios"].items():
            lines.append(f"| {doc['name']} | {key} | {value:.3f} |")
    lines.append("")
    for doc in documents:
        lines.append(f"## {doc['name']}")
        lines.append("")
        lines.append(f"Machine: `{json.dumps(doc['machine'])}`")
        lines.append("")
        for key, value in doc["results"].items():
            if not isinstance(value, list):
                shown = f"{value:.3f}" if isinstance(value, float) else value
                lines.append(f"- {key}: {shown}")
        lines.append("")
    (HERE / "RESULTS.md").write_text("\n".join(lines))
    print(f"wrote {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
