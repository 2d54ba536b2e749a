"""The qgraph command line, run as a subprocess like a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def qgraph(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "qgraph.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_devices_lists_every_profile() -> None:
    result = qgraph("devices")
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert {"ibm_heron_r2", "ionq_aria", "ideal_ft", "exact", "cpu_local"} <= set(names)
    profiles = json.loads(qgraph("devices", "--json").stdout)
    heron = next(p for p in profiles if p["name"] == "ibm_heron_r2")
    assert heron["kind"] == "qpu" and heron["numbers"]


def test_compile_prints_the_report_and_json() -> None:
    result = qgraph("compile", "hf:bert:layers=1,hidden=32", "--policy", "all", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == "BertModel"
    assert [s["op"] for s in report["sites"] if s["decision"] == "quantum"] == ["qrce", "qaap"]


def test_inspect_marks_quantum_nodes() -> None:
    result = qgraph("inspect", "encoder:1x16", "--policy", "all", "--seq-len", "4")
    assert result.returncode == 0, result.stderr
    marked = [line for line in result.stdout.splitlines() if line.startswith("[quantum]")]
    assert any("qgraph.qaap" in line for line in marked)
    assert any("qgraph.qrce" in line for line in marked)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("compile", "gpt5"), "unknown model spec 'gpt5'"),
        (("compile", "hf:nope"), "unknown architecture 'nope'"),
        (("compile", "hf:bert:depth=2"), "bad option 'depth=2'"),
        (("compile", "encoder:six"), "encoder spec must look like encoder:6x64"),
        (("compile", "module:no_such_module:f"), "cannot load 'no_such_module:f'"),
        (("compile", "hf:bert:layers=1", "--backend", "qpu"), "unknown backend 'qpu'"),
        (("compile", "hf:bert:layers=1", "--device", "ibm_condor"), "unknown device"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    result = qgraph(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("qgraph: error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_help_has_examples() -> None:
    result = qgraph("--help")
    assert result.returncode == 0 and "examples:" in result.stdout
    assert qgraph().returncode == 2  # no sub-command: argparse's usage error
