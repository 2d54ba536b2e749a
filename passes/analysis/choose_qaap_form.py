"""ChooseQaapForm: the exact form each offloaded attention site runs in at the example shapes."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.fx as fx

from qgraph.costmodel.qaap_form import FormChoice, choose_form
from qgraph.passes.base import AnalysisPass, PropertySet
from qgraph.site import SiteDecision, SiteRecord


class ChooseQaapForm(AnalysisPass):
    """Writes ``qaap_forms``: site index -> ``FormChoice`` for each attention site decided
    quantum, under the ``qaap_form`` setting ("auto", "quadratic" or "linear").

    This is what the report shows; exact backends resolve each call again from its own
    shapes and mask (``qgraph.costmodel.qaap_form.resolve_form``), so a longer sequence
    than the example's can run in the other form.
    """

    requires = ("sites", "decisions", "qaap_form")
    provides = ("qaap_forms",)

    def run(self, gm: fx.GraphModule, props: PropertySet) -> None:
        decisions: Mapping[int, SiteDecision] = props["decisions"]
        setting = props["qaap_form"]
        on_gpu = any(
            isinstance(x, torch.Tensor) and x.device.type != "cpu"
            for x in props.get("example_inputs", ())
        )
        forms: dict[int, FormChoice] = {}
        for record in props["sites"]:
            if record.kind != "attention" or decisions[record.index].decision != "quantum":
                continue
            forms[record.index] = _choice(record, setting, "gpu_h100" if on_gpu else "cpu_local")
        props["qaap_forms"] = forms


def _choice(record: SiteRecord, setting: str, device: str) -> FormChoice:
    q, v = record.shapes["q"], record.shapes.get("v", record.shapes["q"])
    return choose_form(
        setting,
        math.prod(q[:-2]),
        record.seq_len or q[-2],
        record.kv_len or q[-2],
        record.head_dim or q[-1],
        v[-1],
        record.mask_kind,
        (record.dropout_p or 0.0) > 0.0,
        device,
    )
