"""The exported ONNX model against PyTorch: forward time and agreement, all-MiniLM-L6-v2.

Same process, same inputs, alternating runs, medians. Compared per forward:

* PyTorch: the original model, and the compiled hybrid (every site offloaded, exact backend);
* the partitioned export run by ``qgraph.onnx.run``: classical partitions in onnxruntime,
  quantum ones on the exact backend, manifest checked once (``load_manifest``) and, as a
  separate row, checked on every call (hashes every file);
* the whole ``model.onnx`` in one onnxruntime session, quantum nodes as
  onnxruntime-extensions Python ops on the exact backend;
* the classical-only export (policy "none", one partition) in onnxruntime, against the
  original model in PyTorch: what onnxruntime itself does on this machine.

    python benchmarks/onnx_runtime.py [--quick] [--json PATH]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np
import torch
from common import median_seconds, parse_args, write_result

import qgraph
import qgraph.onnx as qonnx
from qgraph.models import example_ids, minilm


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    batch, seq_len, repeats = (2, 16, 5) if args.quick else (8, 64, 15)
    torch.manual_seed(0)
    case = minilm()
    model = case.model
    ids, mask = example_ids(case.vocab_size, batch, seq_len, seed=1)
    feeds = {"input_ids": ids, "attention_mask": mask}
    folder = Path(tempfile.mkdtemp(prefix="qgraph_onnx_bench_"))

    hybrid = qgraph.compile(model, (ids,), {"attention_mask": mask}, policy="all")
    classical = qgraph.compile(model, (ids,), {"attention_mask": mask}, policy="none")
    start = time.perf_counter()
    qonnx.export_onnx(hybrid, (ids,), folder / "hybrid", {"attention_mask": mask}, progress=False)
    export_s = time.perf_counter() - start
    qonnx.export_onnx(
        classical, (ids,), folder / "classical", {"attention_mask": mask}, progress=False
    )
    manifest = qonnx.load_manifest(folder / "hybrid")
    classical_manifest = qonnx.load_manifest(folder / "classical")
    whole = qonnx.runnable_session(folder / "hybrid" / "model.onnx", backend="exact")
    whole_feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}

    runs = {
        "pytorch_original": lambda: model(ids, attention_mask=mask).last_hidden_state,
        "pytorch_hybrid": lambda: hybrid(ids, attention_mask=mask).last_hidden_state,
        "onnx_partitioned": lambda: qonnx.run(manifest, feeds)["last_hidden_state"],
        "onnx_partitioned_checked_each_call": lambda: qonnx.run(folder / "hybrid", feeds)[
            "last_hidden_state"
        ],
        "onnx_whole_session": lambda: whole.run(["last_hidden_state"], whole_feeds)[0],
        "onnx_classical_only": lambda: qonnx.run(classical_manifest, feeds)["last_hidden_state"],
    }
    outputs = {}
    with torch.no_grad():
        for name, run in runs.items():  # warm-up, and the outputs for the agreement check
            value = run()
            outputs[name] = value.numpy() if isinstance(value, torch.Tensor) else value
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(repeats):  # interleaved so drift on a shared machine hits all alike
            for name, run in runs.items():
                times[name] += median_seconds(run, 1)[1]
    medians = {name: float(np.median(t)) for name, t in times.items()}

    def difference(a: str, b: str) -> float:
        return float(np.abs(outputs[a] - outputs[b]).max())

    results = {
        "model": "all-MiniLM-L6-v2 (real weights), every site offloaded, exact backend",
        "example": f"batch {batch} × {seq_len} tokens",
        "repeats": repeats,
        "export_s": export_s,
        "partitions": {
            "classical": sum(p.kind == "classical" for p in manifest.partitions),
            "quantum": sum(p.kind == "quantum" for p in manifest.partitions),
        },
        "forward_s": times,
        "forward_median_s": medians,
        "max_abs_diff": {
            "onnx_partitioned_vs_pytorch_hybrid": difference("onnx_partitioned", "pytorch_hybrid"),
            "onnx_whole_vs_pytorch_hybrid": difference("onnx_whole_session", "pytorch_hybrid"),
            "onnx_classical_vs_pytorch_original": difference(
                "onnx_classical_only", "pytorch_original"
            ),
        },
    }
    hybrid_s, original_s = medians["pytorch_hybrid"], medians["pytorch_original"]
    ratios = {
        "partitioned_over_pytorch_hybrid": medians["onnx_partitioned"] / hybrid_s,
        "checked_each_call_over_pytorch_hybrid": (
            medians["onnx_partitioned_checked_each_call"] / hybrid_s
        ),
        "whole_session_over_pytorch_hybrid": medians["onnx_whole_session"] / hybrid_s,
        "onnx_classical_over_pytorch_original": medians["onnx_classical_only"] / original_s,
    }
    write_result(args.json, "onnx_runtime", results, ratios)
    print(f"{results['model']}, {results['example']}; export {export_s:.1f} s")
    for name, seconds in medians.items():
        print(f"  {name:36s} {seconds * 1e3:8.2f} ms (median of {repeats})")
    for name, value in results["max_abs_diff"].items():
        print(f"  max |diff| {name}: {value:.2e}")
    for name, value in ratios.items():
        print(f"  {name} = {value:.2f}")


if __name__ == "__main__":
    main()
