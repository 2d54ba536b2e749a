"""The patterns that find candidate sites: data, one entry per pattern, best first.

A pattern has a name, the site kind it finds, a structural ``extract`` (anchor node -> the
roles of the region's parts, or None), a ``check`` run once shapes are known (None when the
site can be offloaded, else the reason it cannot), a priority (higher wins when two patterns
claim one anchor) and a one-line comment.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F

from qgraph.passes.analysis.graph_utils import arg, module_path

aten = torch.ops.aten

SDPA_TARGETS: set[Any] = {aten.scaled_dot_product_attention.default, F.scaled_dot_product_attention}
SOFTMAX_TARGETS: set[Any] = {aten.softmax.int, aten._softmax.default, torch.softmax, F.softmax}
MATMUL_TARGETS: set[Any] = {aten.matmul.default, torch.matmul, operator.matmul}
SCALE_TARGETS: set[Any] = {aten.mul.Tensor, aten.div.Tensor, operator.mul, operator.truediv}
#: `scores += bias` stays aten.add_ under torch.export and is operator.iadd under symbolic_trace
ADD_TARGETS: set[Any] = {aten.add.Tensor, aten.add_.Tensor, operator.add, operator.iadd}
DROPOUT_TARGETS: set[Any] = {aten.dropout.default, F.dropout}
TRANSPOSE_TARGETS: set[Any] = {aten.transpose.int, torch.transpose}
EMBEDDING_TARGETS: set[Any] = {aten.embedding.default}
#: dtype casts of the weights after the softmax (HF's `softmax(..., dtype=float32).to(q.dtype)`)
CAST_TARGETS: set[Any] = {aten.to.dtype, aten._to_copy.default, aten.type_as.default}
#: checks torch.export leaves beside a cast; they compute nothing
ASSERT_TARGETS: set[Any] = {aten._assert_tensor_metadata.default}


@dataclass
class Match:
    """One region a pattern found: its anchor, its nodes and the roles of its parts."""

    pattern: Pattern
    anchor: fx.Node
    nodes: list[fx.Node]
    roles: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return module_path(self.anchor)[0]


@dataclass(frozen=True)
class Pattern:
    """A declarative site pattern (see the module docstring)."""

    name: str
    kind: str
    extract: Callable[[fx.GraphModule, fx.Node], dict[str, Any] | None]
    check: Callable[[dict[str, Any], dict[str, tuple[int, ...]]], str | None]
    priority: int
    comment: str


def _first_user(node: fx.Node, targets: set[Any]) -> fx.Node | None:
    return next((u for u in node.users if _is_call(u, targets)), None)


def _is_call(node: Any, targets: set[Any]) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target in targets


def _extract_sdpa(gm: fx.GraphModule, node: fx.Node) -> dict[str, Any] | None:
    if not _is_call(node, SDPA_TARGETS):
        return None
    return {
        "q": node.args[0],
        "k": node.args[1],
        "v": node.args[2],
        "mask": arg(node, 3, "attn_mask"),
        "dropout_p": float(arg(node, 4, "dropout_p", 0.0)),
        "is_causal": bool(arg(node, 5, "is_causal", False)),
        "output": node,
        "nodes": [node],
    }


def _extract_mha_sdpa(gm: fx.GraphModule, node: fx.Node) -> dict[str, Any] | None:
    if module_path(node)[1] != "MultiheadAttention":
        return None
    return _extract_sdpa(gm, node)


def _is_softmax(node: Any) -> bool:
    if not isinstance(node, fx.Node):
        return False
    return _is_call(node, SOFTMAX_TARGETS) or (
        node.op == "call_method" and node.target == "softmax"
    )


#: python arithmetic symbolic_trace records on sizes, e.g. the scale (w // heads) ** -0.5
SIZE_ARITHMETIC: set[Any] = {
    operator.getitem,
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.floordiv,
    operator.pow,
    math.sqrt,
}


def _is_size_arithmetic(node: Any) -> bool:
    """Whether ``node`` is a number, not a tensor: a constant, or arithmetic on tensor sizes.

    symbolic_trace keeps ``x.shape`` and what is computed from it as graph nodes, so a scale
    such as ``head_dim ** -0.5`` arrives as a node; a tensor operand is a mask or a bias.
    """
    if not isinstance(node, fx.Node):
        return True
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] == "shape"
    if node.op == "call_method" and node.target == "size":
        return True
    if node.op == "call_function" and node.target in SIZE_ARITHMETIC:
        operands = [*node.args, *node.kwargs.values()]
        return all(_is_size_arithmetic(a) for a in operands if isinstance(a, fx.Node))
    return node.op == "call_function" and node.target is aten.sym_size.int


def _computing_users(node: fx.Node) -> list[fx.Node]:
    """The users of ``node`` that compute something (torch.export's metadata asserts do not)."""
    return [u for u in node.users if not _is_call(u, ASSERT_TARGETS)]


def _cast_user(node: fx.Node) -> fx.Node | None:
    """The dtype cast of ``node`` when that is its only computing user, else None."""
    users = _computing_users(node)
    if len(users) != 1:
        return None
    (user,) = users
    is_method_cast = user.op == "call_method" and user.target in ("to", "type_as", "float")
    return user if _is_call(user, CAST_TARGETS) or is_method_cast else None


def _extract_eager_chain(gm: fx.GraphModule, node: fx.Node) -> dict[str, Any] | None:
    """matmul(q, kᵀ) → [scale] → [+ terms] → softmax(-1) → [cast] → [dropout] → matmul(·, v).

    The outermost added term is the mask; any further one (a relative-position bias added
    before the mask, as T5-style models do) is counted in ``score_bias_terms``.
    """
    if not _is_softmax(node) or arg(node, 1, "dim") not in (-1, 3):
        return None
    nodes = [node]
    producer: Any = node.args[0]  # fx types args as a wide union; checked by _is_call
    added: list[Any] = []
    while _is_call(producer, ADD_TARGETS):
        added.append(producer.args[1])
        nodes.append(producer)
        producer = producer.args[0]
    mask = added[0] if added else None
    if _is_call(producer, SCALE_TARGETS) and _is_size_arithmetic(producer.args[1]):
        nodes.append(producer)
        producer = producer.args[0]
    if not _is_call(producer, MATMUL_TARGETS):
        return None
    nodes.append(producer)
    q, k_transposed = producer.args[0], producer.args[1]
    # After softmax: optionally a dtype cast and one dropout, then the pooling matmul with v.
    # Extra users of the weights (output_attentions) are matched but make the site unsupported.
    weights = node
    cast = _cast_user(weights)
    if cast is not None:
        nodes.append(cast)
        weights = cast
    escape = len(_computing_users(node)) > 1 or len(_computing_users(weights)) > 1
    consumer = _first_user(weights, DROPOUT_TARGETS | MATMUL_TARGETS)
    dropout_p, dropout_train = 0.0, False
    if consumer is not None and _is_call(consumer, DROPOUT_TARGETS):
        dropout_p = float(arg(consumer, 1, "p", 0.5))
        dropout_train = bool(
            arg(consumer, 2, "train" if consumer.target is not F.dropout else "training", True)
        )
        nodes.append(consumer)
        escape = escape or len(_computing_users(consumer)) > 1
        consumer = _first_user(consumer, MATMUL_TARGETS)
    if (
        consumer is None
        or not _is_call(consumer, MATMUL_TARGETS)
        or consumer.args[0] is not nodes[-1]
    ):
        return None
    nodes.append(consumer)
    return {
        "q": q,
        "k_transposed": k_transposed,
        "v": consumer.args[1],
        "mask": mask,
        "dropout_p": dropout_p if dropout_train else 0.0,
        "is_causal": False,
        "output": consumer,
        "nodes": nodes,
        "weights_escape": escape,
        "score_bias_terms": len(added) - 1 if added else 0,
    }


def _extract_embedding(gm: fx.GraphModule, node: fx.Node) -> dict[str, Any] | None:
    if _is_call(node, EMBEDDING_TARGETS):
        table, ids = node.args[0], node.args[1]
    elif _is_call(node, {F.embedding}):
        ids, table = node.args[0], arg(node, 1, "weight")
    elif node.op == "call_module" and isinstance(
        gm.get_submodule(str(node.target)), torch.nn.Embedding
    ):
        table, ids = f"{node.target}.weight", node.args[0]
    else:
        return None
    return {"table": table, "ids": ids, "output": node, "nodes": [node]}


def _check_attention(roles: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> str | None:
    q_shape = shapes.get("q", ())
    if len(q_shape) != 4:
        return (
            f"QAAP takes 4-D (batch, heads, seq, head_dim) q/k/v; this site's q is "
            f"{len(q_shape)}-D {q_shape}."
        )
    if roles.get("mask_kind") == "additive":
        return (
            "the mask adds a learned or positional bias to the scores; QAAP can drop keys "
            "but has no amplitude analogue of an additive bias."
        )
    if roles.get("score_bias_terms"):
        return (
            f"the scores get {roles['score_bias_terms'] + 1} additive terms before the softmax "
            "(a bias, e.g. a relative-position bias, besides the mask); QAAP can drop keys "
            "but has no amplitude analogue of an additive bias."
        )
    if roles.get("weights_escape"):
        return "the attention weights are used outside the pooling (e.g. output_attentions)."
    return None


def _check_mha_module(roles: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> str | None:
    return (
        "symbolic_trace keeps nn.MultiheadAttention as one opaque module call; capture "
        "with torch.export (frontend='export') to reach its attention core."
    )


def _extract_mha_module(gm: fx.GraphModule, node: fx.Node) -> dict[str, Any] | None:
    if node.op != "call_module" or not isinstance(
        gm.get_submodule(str(node.target)), torch.nn.MultiheadAttention
    ):
        return None
    return {"output": node, "nodes": [node], "mask": None, "dropout_p": 0.0, "is_causal": False}


#: one opaque call that holds a whole multi-head attention: torch.compile (dynamo) keeps
#: nn.MultiheadAttention as F.multi_head_attention_forward and, under no_grad in eval mode,
#: nn.TransformerEncoderLayer's fast path as one fused op
FUSED_MHA_TARGETS: set[Any] = {
    F.multi_head_attention_forward,
    torch._native_multi_head_attention,
    torch._transformer_encoder_layer_fwd,
}


def _extract_fused_mha(gm: fx.GraphModule, node: fx.Node) -> dict[str, Any] | None:
    if not _is_call(node, FUSED_MHA_TARGETS):
        return None
    return {
        "call": getattr(node.target, "__name__", str(node.target)),
        "output": node,
        "nodes": [node],
        "mask": None,
        "dropout_p": 0.0,
        "is_causal": False,
    }


def _check_fused_mha(roles: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> str | None:
    return (
        f"the attention is one opaque {roles['call']} call (how torch.compile keeps "
        "nn.MultiheadAttention and the fused TransformerEncoderLayer); qgraph.compile's "
        "torch.export capture reaches its attention core."
    )


def _check_embedding(roles: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> str | None:
    if len(shapes.get("table", ())) != 2:
        return "the embedding table is not a 2-D (vocab, dim) matrix."
    return None


ATTENTION_PATTERNS: tuple[Pattern, ...] = (
    Pattern(
        "mha_sdpa",
        "attention",
        _extract_mha_sdpa,
        _check_attention,
        30,
        "nn.MultiheadAttention after torch.export: an SDPA node inside the MHA module",
    ),
    Pattern(
        "sdpa",
        "attention",
        _extract_sdpa,
        _check_attention,
        20,
        "aten.scaled_dot_product_attention: HF 'sdpa' attention and F.sdpa calls",
    ),
    Pattern(
        "eager_softmax_chain",
        "attention",
        _extract_eager_chain,
        _check_attention,
        10,
        "matmul(q, kᵀ) → scale → (+mask) → softmax → (cast) → (dropout) → matmul(·, v): eager",
    ),
    Pattern(
        "mha_module",
        "attention",
        _extract_mha_module,
        _check_mha_module,
        5,
        "an opaque nn.MultiheadAttention call left by symbolic_trace: found, not rewritable",
    ),
    Pattern(
        "fused_mha",
        "attention",
        _extract_fused_mha,
        _check_fused_mha,
        5,
        "F.multi_head_attention_forward or a fused MHA op in a dynamo graph: found, not rewritable",
    ),
)

EMBEDDING_PATTERNS: tuple[Pattern, ...] = (
    Pattern(
        "embedding",
        "embedding",
        _extract_embedding,
        _check_embedding,
        10,
        "aten.embedding / F.embedding / nn.Embedding: a table lookup by integer ids",
    ),
)

ALL_PATTERNS: tuple[Pattern, ...] = tuple(
    sorted(ATTENTION_PATTERNS + EMBEDDING_PATTERNS, key=lambda p: -p.priority)
)
