"""ShapePropagation: run the graph once on the example inputs and record what flows."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

from qgraph.passes.base import AnalysisPass, PropertySet


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, observe: set[str]) -> None:
        super().__init__(gm)
        self.observe = observe
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        self.values: dict[str, torch.Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if isinstance(result, torch.Tensor):
            self.shapes[n.name] = tuple(result.shape)
            self.dtypes[n.name] = result.dtype
            if n.name in self.observe:
                self.values[n.name] = result.detach()
        return result


class ShapePropagation(AnalysisPass):
    """Writes ``shapes`` and ``dtypes`` (per node name, at the example inputs) and ``values``
    (the concrete tensors of the nodes named in ``observe``).

    It runs the real graph, not fake tensors, so it also serves the analyses that need a
    value (mask kinds); it runs under ``torch.no_grad`` and keeps only what was asked for.
    """

    requires = ("example_inputs", "observe")
    provides = ("shapes", "dtypes", "values")

    def run(self, gm: fx.GraphModule, props: PropertySet) -> None:
        recorder = _Recorder(gm, set(props["observe"]))
        # The run must leave no trace: a graph captured in training mode updates buffers it
        # shares with the user's model (BatchNorm statistics) and draws dropout masks.
        saved = {name: b.clone() for name, b in gm.named_buffers()}
        cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.no_grad(), torch.random.fork_rng(devices=cuda_devices):
            try:
                recorder.run(*props["example_inputs"])
            finally:
                for name, value in saved.items():
                    gm.get_buffer(name).copy_(value)
        props["shapes"] = recorder.shapes
        props["dtypes"] = recorder.dtypes
        props["values"] = recorder.values
