"""Demo: all-MiniLM-L6-v2 (real weights) fine-tuned on SST-2, classical against hybrid.

First the paper's experiment in small (``qgraph reproduce``, preset ``finetune`` on the SST-2
sample vendored in the package): the pretrained model with a classification head is
fine-tuned as it is and with QAAP + QRCE (the paper's hybrid: QAAP for every attention
layer, QRCE for the word table), and the dev accuracy of each is printed. Then the hybrid
MiniLM is compiled with policy "all" (costed on IBM Heron r2 for the report), its report
printed, the HTML review report and the partitioned ONNX export written into demo_out/, and
the export run in onnxruntime. Every number printed is computed here, in this run.

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

#: sentences for the compile example, the timing and the ONNX check
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


def fine_tune(console: Console, out: Path) -> None:
    """Fine-tune classical and hybrid MiniLM on the vendored sample; print the table."""
    import shutil

    from qgraph.reproduce import reproduce
    from qgraph.reproduce.presets import get_preset

    preset = get_preset("finetune").with_options(train_rows=None, dev_rows=None)  # the sample
    folder = out / "finetune"
    shutil.rmtree(folder, ignore_errors=True)  # the demo's own output of an earlier run
    console.rule("fine-tuning all-MiniLM-L6-v2 on the vendored SST-2 sample")
    results = reproduce(preset, arms=("classical", "hybrid"), out=folder)
    table = Table(title=f"SST-2 dev accuracy after fine-tuning ({results['data']})")
    for column in ("arm", "dev accuracy", "median step", "step vs classical", "quantum calls"):
        table.add_column(column)
    for row in results["table"]:
        ratio = row["step_time_vs_classical"]
        table.add_row(
            row["arm"],
            f"{100 * row['accuracy_mean']:.1f} %",
            f"{1000 * row['median_step_s']:.0f} ms",
            "" if ratio is None else f"{ratio:.2f}×",
            f"{row['quantum_calls']:,}",
        )
    console.print(table)
    console.print(
        f"{preset.epochs} epochs over the 2,000-row sample, batch {preset.batch_size}, lr "
        f"{preset.lr:g}; the majority class is 50.9 % of dev. Full tables: "
        f"{folder / 'results.md'}"
    )


def main() -> None:
    console = Console()
    out = Path("demo_out")
    out.mkdir(exist_ok=True)
    fine_tune(console, out)
    console.rule("the hybrid MiniLM: report, review page, ONNX export")
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
        _, original_ms = timed(lambda: sentence_embeddings(case.model, batch))
        hybrid, hybrid_ms = timed(lambda: sentence_embeddings(cm, batch))
    console.print(
        f"forward of {len(sentences)} sentences (median of 5, this machine): original "
        f"{original_ms:.1f} ms, hybrid on the exact simulator {hybrid_ms:.1f} ms"
    )

    page = cm.report.to_html(out / "review.html")
    console.print(f"review report: {page} (open it in a browser; no network needed)")
    start = time.perf_counter()
    manifest = qgraph.export_onnx(
        cm,
        (batch["input_ids"],),
        out / "onnx",
        {"attention_mask": batch["attention_mask"]},
        overwrite=True,  # the demo's own folder, rewritten on every run
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
