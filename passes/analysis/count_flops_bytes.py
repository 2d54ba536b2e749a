"""CountFlopsBytes: classical work per node at the example shapes (XLA-cost-analysis style).

FLOPs follow the usual convention (a multiply-add is 2 FLOPs); bytes are what the node reads
and writes if nothing stays in cache, the roofline's pessimistic memory traffic.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
import torch.utils._pytree as pytree

from qgraph.flops import SOFTMAX_FLOPS_PER_ELEMENT, attention_flops
from qgraph.passes.base import AnalysisPass, PropertySet

aten = torch.ops.aten
Shape = tuple[int, ...]


def _contraction_flops(inputs: list[Shape], out: Shape) -> int:
    # x (..., k) contracted with a (k, n) operand: 2·k FLOPs per output element
    return 2 * inputs[0][-1] * math.prod(out)


def _sdpa_flops(inputs: list[Shape], out: Shape) -> int:
    q, k, v = inputs[:3]
    return attention_flops(math.prod(q[:-1]), k[-2], q[-1], v[-1])


def _softmax_flops(inputs: list[Shape], out: Shape) -> int:
    return SOFTMAX_FLOPS_PER_ELEMENT * math.prod(out)


#: target -> FLOPs from the shapes of the node's tensor inputs (in order) and its output
FLOP_RULES: dict[Any, Callable[[list[Shape], Shape], int]] = {
    aten.matmul.default: _contraction_flops,  # batched matmul
    aten.mm.default: _contraction_flops,  # 2-D matmul
    aten.bmm.default: _contraction_flops,  # batched 3-D matmul
    torch.matmul: _contraction_flops,  # fx-traced matmul
    operator.matmul: _contraction_flops,  # the @ operator
    aten.linear.default: _contraction_flops,  # x @ wᵀ (+ b: negligible)
    F.linear: _contraction_flops,  # fx-traced linear
    aten.scaled_dot_product_attention.default: _sdpa_flops,  # fused attention
    F.scaled_dot_product_attention: _sdpa_flops,  # fx-traced fused attention
    aten.softmax.int: _softmax_flops,  # softmax
    aten._softmax.default: _softmax_flops,  # softmax (decomposed name)
    aten.embedding.default: lambda inputs, out: 0,  # a gather: memory only
}

#: element-wise ops cost one FLOP per output element
ELEMENTWISE_FLOPS_PER_ELEMENT = 1


class CountFlopsBytes(AnalysisPass):
    """Writes ``node_flops`` and ``node_bytes`` (per node name) for call nodes."""

    requires = ("shapes", "dtypes")
    provides = ("node_flops", "node_bytes")

    def run(self, gm: fx.GraphModule, props: PropertySet) -> None:
        shapes: dict[str, Shape] = props["shapes"]
        dtypes: dict[str, torch.dtype] = props["dtypes"]
        flops: dict[str, int] = {}
        nbytes: dict[str, int] = {}
        for node in gm.graph.nodes:
            if node.op not in ("call_function", "call_method", "call_module"):
                continue
            if node.name not in shapes:
                continue
            # In argument order, repeats kept: sdpa(x, x, x) has three tensor inputs.
            inputs = [
                a.name
                for a in pytree.tree_leaves((node.args, node.kwargs))
                if isinstance(a, fx.Node) and a.name in shapes
            ]
            out = shapes[node.name]
            rule = FLOP_RULES.get(node.target)
            if rule is not None:
                flops[node.name] = int(rule([shapes[i] for i in inputs], out))
            else:
                flops[node.name] = ELEMENTWISE_FLOPS_PER_ELEMENT * math.prod(out)
            nbytes[node.name] = sum(
                math.prod(shapes[name]) * dtypes[name].itemsize for name in [*inputs, node.name]
            )
        props["node_flops"] = flops
        props["node_bytes"] = nbytes
