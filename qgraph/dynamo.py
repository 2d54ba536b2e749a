"""``torch.compile(model, backend="qgraph")``: qgraph's passes as a TorchDynamo backend.

Users already on ``torch.compile`` switch with one word::

    compiled = torch.compile(model, backend="qgraph", options={"policy": "all"})

Dynamo hands over one torch-IR FX graph per captured region (parameters and buffers arrive
as graph inputs; a graph break splits a model into several graphs). Each graph gets a
``QGraphCompiledGraph``: on its first call with real tensors it runs qgraph's analysis passes
on the graph itself (ShapePropagation needs one real run for shapes and mask values; dynamo's
example inputs may hold SymInts), decides per site under the policy, rewrites the chosen
attention cores into ``qgraph::qaap`` and runs the rewritten graph from then on. Dynamic
dimensions stay dynamic: the rewrite keeps the graph's SymInt inputs, and dynamo's guards,
not qgraph, decide which later calls reuse the graph.

Embedding sites stay classical here: QRCE brings trainable parameters, and a dynamo backend
has no way to register them on the user's model, so the user's optimizer would never see
them. Every site, offloaded or not, appears in the graph's report (``reports()``), and
``summary()`` lists the graphs with their sites and the graph breaks dynamo recorded.
"""

from __future__ import annotations

import copy
import itertools
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from qgraph.backends import get_backend, resolve
from qgraph.compiled import analysis_pipeline, decision_pipeline
from qgraph.costing import DEFAULT_DEVICE, CostOptions
from qgraph.costmodel.qaap_form import FORM_SETTINGS
from qgraph.errors import InputError, UnsupportedGraphError
from qgraph.gradients import resolve_gradients
from qgraph.passes.analysis.decide_offload import decided_sites
from qgraph.passes.analysis.patterns import SDPA_TARGETS, SOFTMAX_TARGETS
from qgraph.passes.base import PassManager, PropertySet
from qgraph.passes.lower.bind_backend import BindBackend
from qgraph.passes.rewrite.replace_attention import ReplaceAttention
from qgraph.policy import PolicyLike, validate_policy
from qgraph.report import Report

#: the name to pass as ``torch.compile(..., backend=BACKEND_NAME)``
BACKEND_NAME = "qgraph"

#: every option ``options={...}`` accepts, with its default
OPTION_DEFAULTS: dict[str, Any] = {
    "policy": "auto",  # "auto" | "all" | "none" | callable Site -> bool
    "backend": "exact",  # a qgraph backend name or a configured instance
    "gradient": "auto",  # as qgraph.compile(gradient=...)
    "device": None,  # the quantum device "auto" decides for (default ibm_heron_r2)
    "precision": 0.03,  # target standard error of each estimated value (cost model)
    "min_fidelity": 0.5,  # the lowest expected circuit fidelity "auto" accepts
    "qaap_form": "auto",  # as qgraph.compile(qaap_form=...)
}

#: the reason every supported embedding site gives under this backend
EMBEDDING_REASON = (
    "torch.compile backend: QRCE's parameters would be invisible to the optimizer; use "
    "qgraph.compile to offload embeddings."
)


@dataclass(frozen=True)
class BackendSettings:
    """The validated options of one ``torch.compile(backend="qgraph", options=...)``."""

    policy: PolicyLike
    backend: str  # the backend's registry key (a configured instance gets its own key)
    gradients: dict[str, str]  # kernel -> gradient method
    costs: CostOptions | None  # None: the sites are not costed
    qaap_form: str = "auto"  # "auto" | "quadratic" | "linear"
    # the backend itself: a configured instance stays registered while a graph runs on it
    instance: Any = field(default=None, repr=False, compare=False)


def parse_options(options: Mapping[str, Any] | None) -> BackendSettings:
    """Validate ``options`` and resolve them into settings.

    Raises InputError for an unknown key (naming the known ones) or a bad value, PolicyError
    for an unknown policy and UnknownBackendError for an unknown backend.
    """
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise InputError(
            f"options must be a dict, e.g. {{'policy': 'all'}}; got {type(options).__name__}."
        )
    unknown = sorted(str(k) for k in options if k not in OPTION_DEFAULTS)
    if unknown:
        raise InputError(
            f"unknown option(s) {unknown} for torch.compile(backend={BACKEND_NAME!r}); known "
            f"options: {', '.join(OPTION_DEFAULTS)}."
        )
    chosen = {**OPTION_DEFAULTS, **options}
    policy: PolicyLike = chosen["policy"]
    validate_policy(policy, ())
    backend_key = resolve(chosen["backend"])
    gradients = resolve_gradients(
        chosen["gradient"], backend_key, get_backend(backend_key).capabilities
    )
    for name in ("precision", "min_fidelity"):
        value = chosen[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"option {name!r} must be a number; got {value!r}.")
    if chosen["qaap_form"] not in FORM_SETTINGS:
        raise InputError(
            f"option 'qaap_form' must be one of {', '.join(map(repr, FORM_SETTINGS))}; "
            f"got {chosen['qaap_form']!r}."
        )
    device = chosen["device"]
    if device is not None and not isinstance(device, str):
        raise InputError(f"option 'device' must be a device name; got {device!r}.")
    costs = None
    # As qgraph.compile: "auto" needs the cost model; naming a device costs for the report.
    if policy == "auto" or device is not None:
        costs = CostOptions(
            device=device or DEFAULT_DEVICE,
            precision=float(chosen["precision"]),
            min_fidelity=float(chosen["min_fidelity"]),
            gradients=gradients,
        )
        costs.validate()
    return BackendSettings(
        policy, backend_key, gradients, costs, chosen["qaap_form"], get_backend(backend_key)
    )


# -- the registry of graphs this backend received ------------------------------------------
@dataclass
class GraphRecord:
    """One graph dynamo handed to this backend, and what became of it."""

    id: int  # unique in the process; site labels in backend stats are "dynamo<id>:<key>"
    compile_id: str  # dynamo's "frame/recompile" id, e.g. "0/0", "1/0", "0/1"
    frame: str  # the function dynamo compiled, e.g. "forward"
    report: Report
    #: why dynamo ended this graph at a graph break (first line), None if it did not
    graph_break: str | None = None
    break_location: str = ""  # "file:line" of that graph break
    analysed: bool = False  # the first real call ran the passes
    #: higher-order-op subgraphs (checkpointing, ...) holding attention the passes cannot reach
    unreached: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary of the graph and its sites."""
        sites = self.report.sites
        return {
            "id": self.id,
            "compile_id": self.compile_id,
            "frame": self.frame,
            "analysed": self.analysed,
            "sites": len(sites),
            "attention_sites": sum(s.kind == "attention" for s in sites),
            "embedding_sites": sum(s.kind == "embedding" for s in sites),
            "quantum": len(self.report.quantum_sites),
            "qaap": sum(s.op == "qaap" for s in sites),
            "graph_break": self.graph_break,
            "break_location": self.break_location,
            "unreached": list(self.unreached),
        }


_lock = threading.Lock()
_graphs: list[GraphRecord] = []
_graph_ids = itertools.count()
# dynamo's graph-break counter is process-wide and survives torch._dynamo.reset(); reset()
# remembers where it stood so summary() counts only what came after.
_break_baseline: Counter[str] = Counter()


def reports() -> list[Report]:
    """The report of every graph received since the last ``reset()``, in the order dynamo
    compiled them. A graph's sites appear after its first call (the analysis needs one real
    run); before that its report holds only notes."""
    with _lock:
        return [g.report for g in _graphs]


def graphs() -> list[GraphRecord]:
    """The record of every graph received since the last ``reset()``, in order."""
    with _lock:
        return list(_graphs)


def graph_breaks() -> dict[str, int]:
    """Graph-break reason -> count, as dynamo recorded them since the last ``reset()``
    (``torch._dynamo.utils.counters["graph_break"]``; counts every backend's frames)."""
    from torch._dynamo.utils import counters

    now = counters["graph_break"]
    with _lock:
        baseline = dict(_break_baseline)
    found = {}
    for reason, count in now.items():
        # Someone cleared dynamo's counters after our reset: count from zero again.
        base = baseline.get(reason, 0)
        delta = count - base if count >= base else count
        if delta > 0:
            found[reason] = delta
    return found


def reset() -> None:
    """Forget the reports and start counting graph breaks afresh.

    This does not reset dynamo: frames it compiled before keep running their rewritten
    graphs and are not handed over again. Call ``torch._dynamo.reset()`` too to recompile.
    """
    from torch._dynamo.utils import counters

    with _lock:
        _graphs.clear()
        _break_baseline.clear()
        _break_baseline.update(counters["graph_break"])


@dataclass
class Summary:
    """What the backend received and did: per graph, and the graph breaks."""

    graphs: list[dict[str, Any]] = field(default_factory=list)
    graph_breaks: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-friendly)."""
        return {"graphs": self.graphs, "graph_breaks": self.graph_breaks}

    def __str__(self) -> str:
        breaks = sum(self.graph_breaks.values())
        lines = [
            f"qgraph torch.compile backend: {len(self.graphs)} graph(s), {breaks} graph break(s)"
        ]
        for g in self.graphs:
            if g["analysed"]:
                found = (
                    f"{g['sites']} site(s) ({g['attention_sites']} attention, "
                    f"{g['embedding_sites']} embedding), {g['quantum']} offloaded "
                    f"({g['qaap']} qaap)"
                )
            else:
                found = "not run yet (sites are found on the first call)"
            line = f"  graph #{g['id']} [{g['compile_id']}] {g['frame']}: {found}"
            if g["unreached"]:
                line += f"; not reached inside higher-order ops: {', '.join(g['unreached'])}"
            if g["graph_break"]:
                line += f"; ended by a graph break at {g['break_location']}: {g['graph_break']}"
            lines.append(line)
        if self.graph_breaks:
            lines.append("graph breaks (dynamo's counters since the last reset):")
            lines += [f"  {n}× {_first_line(r)}" for r, n in self.graph_breaks.items()]
        return "\n".join(lines)


def summary() -> Summary:
    """Graphs received, sites found and offloaded per graph, and graph breaks with reasons.

    ``print(qgraph.dynamo.summary())`` for text, ``.to_dict()`` for data.
    """
    return Summary([g.to_dict() for g in graphs()], graph_breaks())


# -- the backend --------------------------------------------------------------------------
def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def normalize_module_path(path: str) -> str:
    """A dynamo module path as qgraph.compile spells it.

    Dynamo records ``L['self'].encoder.layer[0]._modules['attention']``; qgraph.compile's
    export front end records ``encoder.layer.0.attention``. The frame's root (``L['self']``,
    ``L['model']``) is dropped, so paths are relative to the compiled module or argument.
    """
    path = re.sub(r"^[LG]\[['\"][^'\"]*['\"]\]", "", path)
    path = re.sub(r"\._modules\[['\"]([^'\"]*)['\"]\]", r".\1", path)
    path = re.sub(r"\[['\"]?([^\]'\"]*)['\"]?\]", r".\1", path)
    return path.lstrip(".")


def _nested_graphs(gm: fx.GraphModule) -> list[str]:
    """Subgraphs of higher-order ops (checkpointing, torch.cond, ...) that hold attention.

    The passes read only the top-level graph; these are named in the report so that an
    attention the backend cannot reach is not left unmentioned.
    """
    found = []
    attention_like = SDPA_TARGETS | SOFTMAX_TARGETS
    for name, module in gm.named_modules():
        if not name or not isinstance(module, fx.GraphModule):
            continue
        count = sum(
            1 for n in module.graph.nodes if n.op == "call_function" and n.target in attention_like
        )
        if count:
            found.append(f"{name} ({count} attention-like op(s))")
    return found


def _is_real(value: Any) -> bool:
    from torch._subclasses.fake_tensor import is_fake

    if isinstance(value, torch.SymInt | torch.SymFloat | torch.SymBool):
        return False
    return not (isinstance(value, torch.Tensor) and is_fake(value))


def attention_rewrite_pipeline() -> PassManager:
    """``rewrite_pipeline`` less ``ReplaceEmbedding``: embeddings stay classical here (see the
    module docstring), so there are no QRCE layers to make."""
    return PassManager([ReplaceAttention(), BindBackend()])


class QGraphCompiledGraph:
    """The callable this backend gives dynamo for one graph.

    The first call with real tensors analyses the graph, decides, rewrites a copy of it and
    keeps that; every call runs it on dynamo's flat inputs and returns what the graph returns.
    """

    def __init__(self, gm: fx.GraphModule, settings: BackendSettings, record: GraphRecord):
        self._original = gm
        self._settings = settings
        self.record = record
        self._run: Callable[..., Any] | None = None
        self._prepare_lock = threading.Lock()

    @property
    def graph_module(self) -> fx.GraphModule | None:
        """The rewritten graph (None before the first call)."""
        return self.record.report.graph_module

    def __call__(self, *args: Any) -> Any:
        run = self._run
        if run is None:
            with self._prepare_lock:
                if self._run is None:
                    self._run = self._prepare(list(args))
                run = self._run
        return run(*args)

    def _prepare(self, args: list[Any]) -> Callable[..., Any]:
        if not all(_is_real(a) for a in args):
            raise UnsupportedGraphError(
                "qgraph's torch.compile backend analyses each graph on its first call with real "
                "tensors; this call passed fake tensors or symbolic sizes (a trace of a "
                "compiled model). Run the compiled model once on real inputs first, or use "
                "qgraph.compile."
            )
        # The passes and the rewrite work on a copy of the graph: if they fail, dynamo's graph
        # is untouched. The copy shares the root's attributes, so parameters stay the user's.
        gm = fx.GraphModule(self._original, copy.deepcopy(self._original.graph))
        # Buffers arrive as inputs: the analysis run must not update the user's (BatchNorm
        # statistics in training mode), so it gets copies of every tensor but parameters.
        example = [
            a.detach().clone()
            if isinstance(a, torch.Tensor) and not isinstance(a, nn.Parameter)
            else a
            for a in args
        ]
        settings = self._settings
        props = PropertySet(
            example_inputs=example,
            cost_options=settings.costs,
            known_site_costs=None,
            policy=settings.policy,
            # The policy sees attention sites only: no embedding site can be offloaded here.
            embedding_tables=(),
            kept_classical={"embedding": EMBEDDING_REASON},
            site_label_prefix=f"dynamo{self.record.id}",
            backend=settings.backend,
            gradients=settings.gradients,
            qaap_form=settings.qaap_form,
        )
        analysis_pipeline(normalize_path=normalize_module_path).run(gm, props)
        report = self.record.report
        if settings.costs is not None:
            report.device = settings.costs.device
        decision_pipeline().run(gm, props)
        sites = decided_sites(props)
        report.sites = sites
        report.notes.append(
            "analysed at the graph's first call (shapes and mask kinds are that call's); "
            "dynamo's guards decide which later calls reuse the rewritten graph."
        )
        if any(s.decision == "quantum" for s in sites):
            attention_rewrite_pipeline().run(gm, props)
        else:
            gm = self._original  # nothing to rewrite: dynamo's own graph, bit for bit
        report.graph_module = gm
        self.record.analysed = True
        return gm


def _policy_name(policy: PolicyLike) -> str:
    return policy if isinstance(policy, str) else getattr(policy, "__name__", "callable")


def _describe(gm: fx.GraphModule) -> tuple[str, str, str | None, str]:
    """(compile id, frame name, graph-break reason or None, "file:line" of the break)."""
    compile_id = str(gm.meta.get("dynamo_compile_id", "") or "")
    if not compile_id:
        from torch._guards import CompileContext

        compile_id = str(CompileContext.current_compile_id() or "?")
    reason = getattr(gm, "compile_subgraph_reason", None)
    stack = list(getattr(reason, "user_stack", None) or [])
    frame = stack[0].name if stack else "<unknown frame>"
    if reason is None or not getattr(reason, "graph_break", False):
        return compile_id, frame, None, ""
    where = f"{stack[-1].filename}:{stack[-1].lineno}" if stack else "an unknown line"
    return compile_id, frame, _first_line(str(reason.reason)), where


def qgraph_backend(
    gm: fx.GraphModule,
    example_inputs: Sequence[Any],
    options: Mapping[str, Any] | None = None,
    *,
    mode: str | None = None,
) -> Callable[..., Any]:
    """The ``torch.compile`` backend ``"qgraph"``.

    Args:
        gm: the torch-IR graph dynamo captured (parameters and buffers are inputs).
        example_inputs: dynamo's example inputs (unused: real shapes and mask values come
            from the first call, since these may hold SymInts).
        options: ``torch.compile(..., options={...})``: ``policy`` ("auto", "all", "none" or
            a callable ``Site -> bool``, asked about attention sites), ``backend`` (a name or
            a configured instance), ``gradient``, ``device``, ``precision``, ``min_fidelity``,
            as for ``qgraph.compile``.
        mode: torch.compile's ``mode``; the backend has none, so only "default" is accepted.

    Returns:
        A callable dynamo runs in place of the graph; its report is in ``reports()``.
    """
    if mode not in (None, "default"):
        raise InputError(
            f"torch.compile(backend={BACKEND_NAME!r}) has no mode {mode!r}; configure it with "
            f"options={{...}} (known options: {', '.join(OPTION_DEFAULTS)})."
        )
    settings = parse_options(options)
    compile_id, frame, break_reason, where = _describe(gm)
    with _lock:
        graph_id = next(_graph_ids)
    report = Report(
        f"torch.compile graph #{graph_id} ({frame})",
        "dynamo",
        settings.backend,
        _policy_name(settings.policy),
    )
    report.notes.append(
        f"torch.compile graph (dynamo compile id {compile_id}, frame {frame}); qaap gradients "
        f"by {settings.gradients['qaap']}."
    )
    if break_reason is not None:
        report.notes.append(f"dynamo ended this graph at a graph break at {where}: {break_reason}")
    nested = _nested_graphs(gm)
    if nested:
        report.notes.append(
            "not analysed: attention inside higher-order-op subgraphs stays classical: "
            + ", ".join(nested)
            + "."
        )
    record = GraphRecord(graph_id, compile_id, frame, report, break_reason, where, False, nested)
    with _lock:
        _graphs.append(record)
    return QGraphCompiledGraph(gm, settings, record)


def _register() -> None:
    """Register the backend under ``BACKEND_NAME`` unless torch already knows the name.

    When torch finds the ``torch_dynamo_backends`` entry point first, it imports this module
    (registering here) and then registers the loaded function itself, which fails on a
    duplicate name; so registration is skipped when the entry point is already known.
    """
    from torch._dynamo.backends import registry

    known = getattr(registry, "_BACKENDS", {})
    if BACKEND_NAME in known or BACKEND_NAME in getattr(registry, "_COMPILER_FNS", {}):
        return
    torch._dynamo.register_backend(qgraph_backend, name=BACKEND_NAME)


_register()

__all__ = [
    "BACKEND_NAME",
    "OPTION_DEFAULTS",
    "BackendSettings",
    "GraphRecord",
    "QGraphCompiledGraph",
    "Summary",
    "graph_breaks",
    "graphs",
    "normalize_module_path",
    "parse_options",
    "qgraph_backend",
    "reports",
    "reset",
    "summary",
]
