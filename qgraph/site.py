"""A candidate region of the graph: one attention core or one embedding lookup.

Sites are what the analysis passes find, what the policy decides on, what the rewrite
passes replace and what the report prints. The field names are public API: the cost model,
the command line and the ONNX export build on them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

SiteKind = Literal["attention", "embedding"]
Decision = Literal["quantum", "classical"]


@dataclass
class Site:
    """One candidate region, with its shapes at the example inputs and the decision on it."""

    index: int
    kind: SiteKind
    path: str  # module path from nn_module_stack, e.g. "encoder.layer.0.attention.self"
    pattern: str  # name of the pattern that matched (see passes/analysis/patterns.py)
    anchor: str  # name of the graph node the pattern is anchored on
    key: str = ""  # unique per model and stable across captures: path, "#n" for repeats
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dtype: str = ""
    supported: bool = True
    support_reason: str = ""  # why it cannot be offloaded, when not supported
    op: Literal["qaap", "qrce"] | None = None  # the quantum op it became, when it did
    decision: Decision = "classical"
    reason: str = ""
    costs: dict[str, dict[str, Any]] = field(default_factory=dict)  # device -> estimate summary
    classical_s: float | None = None  # predicted classical time of the region (roofline)
    flops: int = 0  # classical FLOPs of the region at the example shapes
    bytes: int = 0  # bytes read and written by the region at the example shapes
    # attention
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    seq_len: int | None = None
    kv_len: int | None = None
    mask_kind: str | None = None  # none | padding | causal | causal+padding | arbitrary | additive
    gqa_group: int | None = None  # query heads per key/value head
    dropout_p: float | None = None
    # embedding
    table: str | None = None  # word | position | token_type | other
    vocab_size: int | None = None
    embed_dim: int | None = None

    @property
    def quantum_op_for_kind(self) -> Literal["qaap", "qrce"]:
        """The quantum op this kind of site would become."""
        return "qaap" if self.kind == "attention" else "qrce"

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON-friendly) of every field."""
        return asdict(self)
