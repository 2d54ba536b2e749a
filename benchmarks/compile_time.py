"""qgraph.compile on a 12-layer BERT-base config against torch.export.export alone.

Same process, same model, alternating runs, medians of the repeats. Target (foundation
issue): compile_over_export ≤ 1.5. ``qgraph.compile`` here is the full pipeline: export,
analysis passes (including one real forward on the example for shapes and mask values),
policy, QRCE layer creation, rewrite and lowering.

    python benchmarks/compile_time.py [--quick] [--json PATH]
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))

import torch
from common import median_seconds, parse_args, write_result
from torch.export import Dim

import qgraph
from qgraph.models import example_ids


def bert_base(layers: int) -> torch.nn.Module:
    import transformers

    config = transformers.BertConfig(num_hidden_layers=layers)  # BERT-base widths
    return transformers.BertModel(config).eval()


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    layers, repeats = (2, 3) if args.quick else (12, 5)
    torch.manual_seed(0)
    model = bert_base(layers)
    ids, mask = example_ids(model.config.vocab_size, batch=2, seq_len=16)
    kwargs = {"attention_mask": mask, "use_cache": False}
    auto = {0: Dim.AUTO, 1: Dim.AUTO}
    shapes = {"input_ids": auto, "attention_mask": auto, "use_cache": None}

    def export_only() -> None:
        torch.export.export(model, (ids,), kwargs, strict=False, dynamic_shapes=shapes).module()

    def compile_default() -> None:  # QRCE distilled from the table (the default)
        qgraph.compile(model, (ids,), {"attention_mask": mask}, policy="all")

    def compile_random_init() -> None:
        qgraph.compile(model, (ids,), {"attention_mask": mask}, policy="all", qrce_init="random")

    export_only()  # warm-up: first-call imports and op registration
    compile_default()
    export_times, compile_times, random_init_times = [], [], []
    for _ in range(repeats):  # interleaved so drift on a shared machine hits all alike
        export_times += median_seconds(export_only, 1)[1]
        compile_times += median_seconds(compile_default, 1)[1]
        random_init_times += median_seconds(compile_random_init, 1)[1]
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    results = {
        "model": f"BertModel, {layers} layers, hidden 768, 12 heads, vocab 30522",
        "example": "batch 2 × 16 tokens",
        "repeats": repeats,
        "export_s": export_times,
        "compile_s": compile_times,
        "compile_random_init_s": random_init_times,
        "export_median_s": med(export_times),
        "compile_median_s": med(compile_times),
        "compile_random_init_median_s": med(random_init_times),
    }
    ratios = {
        "compile_over_export": med(compile_times) / med(export_times),
        "compile_random_init_over_export": med(random_init_times) / med(export_times),
    }
    write_result(args.json, "compile_time", results, ratios)
    print(f"torch.export.export:            {results['export_median_s']:.3f} s (median, {repeats})")
    print(f"qgraph.compile (default):       {results['compile_median_s']:.3f} s")
    print(f"qgraph.compile (random QRCE):   {results['compile_random_init_median_s']:.3f} s")
    print(
        f"compile_over_export = {ratios['compile_over_export']:.2f} (target ≤ 1.5); "
        f"random QRCE init {ratios['compile_random_init_over_export']:.2f}"
    )


if __name__ == "__main__":
    main()
