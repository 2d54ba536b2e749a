"""A candidate region of the graph: one attention core or one embedding lookup.

Three records, each written once by one stage (``passes/README.md``):

- ``SiteRecord`` (frozen): what the analysis found at a site (``BuildSites``).
- ``SiteDecision`` (frozen): what the policy decided for it (``DecideOffload``).
- ``Site``: the report's row, the record joined with its cost summaries and its decision
  (``decided_sites``, built after the analysis), and what a policy callable is shown.

The field names of ``Site`` are public API: the cost model, the command line and the ONNX
export build on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from qgraph.costing import SiteCosts

SiteKind = Literal["attention", "embedding"]
Decision = Literal["quantum", "classical"]
QuantumOp = Literal["qaap", "qrce"]


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
    op: QuantumOp | None = None  # the quantum op it became, when it did
    decision: Decision = "classical"
    reason: str = ""
    costs: dict[str, dict[str, Any]] = field(default_factory=dict)  # device -> estimate summary
    classical_s: float | None = None  # predicted classical time of the region (roofline)
    qaap_form: str | None = None  # exact form of an offloaded attention site at these shapes
    qaap_form_reason: str = ""  # why that form (qgraph.costmodel.qaap_form)
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
    def quantum_op_for_kind(self) -> QuantumOp:
        """The quantum op this kind of site would become."""
        return "qaap" if self.kind == "attention" else "qrce"

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON-friendly) of every field."""
        return asdict(self)


@dataclass(frozen=True)
class SiteRecord:
    """What the analysis found at one site, at the example inputs; never changed afterwards.

    The fields are ``Site``'s, less what later stages add (costs, decision); ``shapes`` is a
    read-only mapping. Later stages key their own results by ``index`` or ``key``.
    """

    index: int
    kind: SiteKind
    path: str  # module path from nn_module_stack, e.g. "encoder.layer.0.attention.self"
    pattern: str  # name of the pattern that matched (see passes/analysis/patterns.py)
    anchor: str  # name of the graph node the pattern is anchored on
    key: str  # unique per model and stable across captures: path, "#n" for repeats
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    dtype: str = ""
    supported: bool = True
    support_reason: str = ""  # why it cannot be offloaded, when not supported
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

    def __post_init__(self) -> None:
        # A frozen dataclass still hands out its dict; a read-only copy keeps the record whole.
        object.__setattr__(self, "shapes", MappingProxyType(dict(self.shapes)))

    @property
    def quantum_op_for_kind(self) -> QuantumOp:
        """The quantum op this kind of site would become."""
        return "qaap" if self.kind == "attention" else "qrce"

    def as_site(self, costs: SiteCosts | None = None, decision: SiteDecision | None = None) -> Site:
        """A new ``Site`` with this record's fields, the cost summaries of ``costs`` (none when
        ``None``) and ``decision`` (undecided, i.e. classical without a reason, when ``None``)."""
        found = {f.name: getattr(self, f.name) for f in fields(self)}
        found["shapes"] = dict(self.shapes)
        decided = decision or SiteDecision()
        return Site(
            **found,
            op=decided.op,
            decision=decided.decision,
            reason=decided.reason,
            costs=costs.summaries() if costs is not None else {},
            classical_s=costs.classical_s if costs is not None else None,
        )


@dataclass(frozen=True)
class SiteDecision:
    """The policy's verdict on one site and why; ``op`` is set when it becomes quantum."""

    decision: Decision = "classical"
    op: QuantumOp | None = None
    reason: str = ""
