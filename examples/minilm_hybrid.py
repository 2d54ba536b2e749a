"""Demo: all-MiniLM-L6-v2 (real weights) with every attention layer and the word embedding
offloaded to quantum kernels on the exact backend.

It compiles the model with policy "all" (costed on IBM Heron r2 for the report), prints the
report, embeds sentence pairs with the original and the hybrid model and prints their cosine
similarities and timings; then writes the HTML review report and the partitioned ONNX export
into demo_out/ and runs the export in onnxruntime. Every number printed is computed here, in
this run.

    make demo          # or: HF_HUB_OFFLINE=1 .venv/bin/python examples/minilm_hybrid.py
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from rich.console import Console
from rich.table import Table

import qgraph
import qgraph.onnx
from qgraph.models import minilm, minilm_tokenizer

PAIRS = [
    ("A man is playing a guitar.", "Someone is playing an instrument."),
    ("The cat sits on the mat.", "A dog runs through the park."),
    ("The stock market fell sharply today.", "Shares dropped steeply this afternoon."),
    ("I love this movie.", "This film is terrible."),
    ("How do I bake bread at home?", "What is a good recipe for homemade bread?"),
]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean pooling over real tokens, then L2 normalisation (the all-MiniLM-L6-v2 recipe)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def sentence_embeddings(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sentence embeddings of a tokenized batch from a model (original or compiled)."""
    hidden = model(batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return pool(hidden, batch["attention_mask"])


def timed(fn, repeats: int = 5) -> tuple[torch.Tensor, float]:
    """The result of fn() and its median wall time over ``repeats`` runs, in ms."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1e3)
    assert result is not None
    return result, statistics.median(times)


def main() -> None:
    console = Console()
    torch.manual_seed(0)
    case = minilm()
    tokenizer = minilm_tokenizer()
    sentences = [s for pair in PAIRS for s in pair]
    batch = dict(tokenizer(sentences, padding=True, return_tensors="pt"))

    start = time.perf_counter()
    cm = qgraph.compile(
        case.model,
        (batch["input_ids"],),
        {"attention_mask": batch["attention_mask"]},
        policy="all",
        device="ibm_heron_r2",  # costs every site for the report; "all" still offloads them
    )
    compile_s = time.perf_counter() - start
    print(cm.report)
    console.print(f"compiled in {compile_s:.2f} s")

    with torch.no_grad():
        original, original_ms = timed(lambda: sentence_embeddings(case.model, batch))
        hybrid, hybrid_ms = timed(lambda: sentence_embeddings(cm, batch))

    table = Table(title="cosine similarity of sentence pairs (all-MiniLM-L6-v2)")
    for column in ("sentence A", "sentence B", "original", "hybrid (QAAP+QRCE)"):
        table.add_column(column)
    for i, (a, b) in enumerate(PAIRS):
        table.add_row(
            a,
            b,
            f"{float(original[2 * i] @ original[2 * i + 1]):.3f}",
            f"{float(hybrid[2 * i] @ hybrid[2 * i + 1]):.3f}",
        )
    console.print(table)
    agreement = torch.nn.functional.cosine_similarity(original, hybrid, dim=-1)
    console.print(
        f"per-sentence cosine(original, hybrid) embedding: mean {agreement.mean():.3f}, "
        f"min {agreement.min():.3f} (the hybrid is untrained: QAAP replaces softmax attention)"
    )
    console.print(
        f"forward of {len(sentences)} sentences (median of 5, this machine): original "
        f"{original_ms:.1f} ms, hybrid on the exact simulator {hybrid_ms:.1f} ms"
    )

    out = Path("demo_out")
    out.mkdir(exist_ok=True)
    page = cm.report.to_html(out / "review.html")
    console.print(f"review report: {page} (open it in a browser; no network needed)")
    start = time.perf_counter()
    manifest = qgraph.export_onnx(
        cm, (batch["input_ids"],), out / "onnx", {"attention_mask": batch["attention_mask"]}
    )
    export_s = time.perf_counter() - start
    kinds = [p.kind for p in manifest.partitions]
    console.print(
        f"ONNX export in {export_s:.1f} s: {out / 'onnx'} holds model.onnx, "
        f"{kinds.count('classical')} classical and {kinds.count('quantum')} quantum partitions"
    )
    feeds = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    outputs = qgraph.onnx.run(out / "onnx", feeds, backend="exact")
    onnx_embeddings = pool(torch.from_numpy(outputs["last_hidden_state"]), batch["attention_mask"])
    console.print(
        "partitioned ONNX (onnxruntime + exact backend) vs PyTorch hybrid: largest embedding "
        f"difference {float((onnx_embeddings - hybrid).abs().max()):.2e}"
    )


if __name__ == "__main__":
    main()
