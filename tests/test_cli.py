"""The qgraph command line, run as a subprocess like a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
        (("compile", "hf:bert:layers=1", "--html", "/no/such/dir/r.html"), "does not exist"),
        (("export", "hf:bert:layers=1", "-o", "/etc/hostname"), "is a file; name a folder"),
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


def test_export_writes_the_partitioned_model(tmp_path: Path) -> None:
    out = tmp_path / "bert_onnx"
    result = qgraph("export", "hf:bert:layers=1,hidden=32", "--policy", "all", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "verified on the exact backend" in result.stdout
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "c0.onnx",
        "c1.onnx",
        "c2.onnx",
        "manifest.json",
        "model.onnx",
        "q0.onnx",
        "q1.onnx",
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [p["kernel"] for p in manifest["partitions"] if p["kind"] == "quantum"] == [
        "qrce",
        "qaap",
    ]
    assert manifest["verification"]["max_abs_diff"] < 1e-4


def test_export_json_is_the_manifest_and_needs_an_output_folder(tmp_path: Path) -> None:
    result = qgraph(
        "export",
        "encoder:1x16",
        "--policy",
        "all",
        "--seq-len",
        "4",
        "-o",
        str(tmp_path),
        "--no-verify",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["format"] == "qgraph.partitioned-onnx" and manifest["verification"] is None
    missing = qgraph("export", "encoder:1x16")
    assert missing.returncode == 2 and "-o/--out" in missing.stderr


def test_compile_writes_the_html_review_report(tmp_path: Path) -> None:
    page = tmp_path / "review.html"
    result = qgraph("compile", "hf:bert:layers=1,hidden=32", "--html", str(page), "--json")
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)  # the report still goes to stdout, undisturbed
    text = page.read_text()
    assert text.lstrip().lower().startswith("<!doctype html")
    assert "encoder.layer.0.attention.self" in text
