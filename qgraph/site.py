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

    @classmethod
    def attention_of_shape(
        cls,
        batch: int,
        heads: int,
        seq_len: int,
        head_dim: int,
        *,
        path: str = "attention",
        **fields: Any,
    ) -> Site:
        """A hypothetical self-attention site with q, k, v of shape (batch, heads, seq_len,
        head_dim): what to cost a shape with (``qgraph.costmodel.estimate``) without a model."""
        shape = (batch, heads, seq_len, head_dim)
        values: dict[str, Any] = {
            "index": 0,
            "key": path,
            "shapes": {"q": shape, "k": shape, "v": shape, "out": shape},
            "heads": heads,
            "kv_heads": heads,
            "head_dim": head_dim,
            "seq_len": seq_len,
            "kv_len": seq_len,
            "dtype": "float32",
            **fields,
        }
        return cls(kind="attention", path=path, pattern="sdpa", anchor="sdpa", **values)

    @classmethod
    def embedding_of_shape(
        cls,
        batch: int,
        seq_len: int,
        vocab_size: int,
        embed_dim: int,
        *,
        path: str = "embedding",
        **fields: Any,
    ) -> Site:
        """A hypothetical word-embedding site: a (vocab_size, embed_dim) table read at
        (batch, seq_len) token ids, for costing a shape without a model."""
        values: dict[str, Any] = {
            "index": 0,
            "key": path,
            "shapes": {
                "table": (vocab_size, embed_dim),
                "ids": (batch, seq_len),
                "out": (batch, seq_len, embed_dim),
            },
            "vocab_size": vocab_size,
            "embed_dim": embed_dim,
            "table": "word",
            "dtype": "float32",
            **fields,
        }
        return cls(kind="embedding", path=path, pattern="embedding", anchor="embedding", **values)

    @property
    def quantum_op_for_kind(self) -> Literal["qaap", "qrce"]:
        """The quantum op this kind of site would become."""
        return "qaap" if self.kind == "attention" else "qrce"

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON-friendly) of every field."""
        return asdict(self)
