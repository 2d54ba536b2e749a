"""Run every benchmark (one process each) and write benchmarks/RESULTS.md.

python benchmarks/run_all.py [--quick] [--only NAME,NAME]

``--only`` runs the named benchmarks and replaces their rows and sections in the existing
RESULTS.md, keeping every other benchmark's as it was measured (its machine line says where).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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
    "fanout",
    "ddp_step",
]


HEADER = [
    "# Benchmark results",
    "",
    "Written by `make bench` (`benchmarks/run_all.py`); every number below was measured",
    "by the script named in its row, on the machine described under it.",
    "",
    "| benchmark | ratio | value |",
    "|---|---|---|",
]


def rows(document: dict[str, Any]) -> list[str]:
    """The summary table's rows of one benchmark."""
    return [
        f"| {document['name']} | {key} | {value:.3f} |" for key, value in document["ratios"].items()
    ]


def section(document: dict[str, Any]) -> list[str]:
    """One benchmark's section: its machine and every scalar result."""
    lines = [f"## {document['name']}", "", f"Machine: `{json.dumps(document['machine'])}`", ""]
    for key, value in document["results"].items():
        if not isinstance(value, list):
            shown = f"{value:.3f}" if isinstance(value, float) else value
            lines.append(f"- {key}: {shown}")
    return [*lines, ""]


def previous(path: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The rows and sections of each benchmark in an existing RESULTS.md, by name."""
    table: dict[str, list[str]] = {}
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in path.read_text().splitlines() if path.is_file() else []:
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
        if current is not None:
            sections[current].append(line)
        elif line.startswith("| ") and not line.startswith("| benchmark "):
            table.setdefault(line.split("|")[1].strip(), []).append(line)
    return table, sections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=None, help="comma-separated benchmarks to re-run")
    args = parser.parse_args()
    chosen = BENCHMARKS if args.only is None else [n for n in args.only.split(",") if n]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; choose from {BENCHMARKS}")
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    table, sections = previous(HERE / "RESULTS.md") if args.only else ({}, {})
    for name in chosen:
        target = out_dir / f"{name}.json"
        command = [sys.executable, str(HERE / f"{name}.py"), "--json", str(target)]
        if args.quick:
            command.append("--quick")
        print(f"== {name}", flush=True)
        subprocess.run(command, check=True)
        document = json.loads(target.read_text())
        table[name], sections[name] = rows(document), section(document)
    order = [n for n in BENCHMARKS if n in table]
    lines = HEADER + [row for name in order for row in table[name]] + [""]
    for name in order:
        lines += sections.get(name, [])
    (HERE / "RESULTS.md").write_text("\n".join(lines).rstrip("\n") + "\n")
    print(f"wrote {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
