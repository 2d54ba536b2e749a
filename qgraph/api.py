"""``qgraph.compile``: capture → analyse → decide → rewrite → lower, behind one call."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from qgraph.backends import Backend, get_backend, resolve
from qgraph.capture import (
    Captured,
    Frontend,
    capture,
    check_example_inputs,
    raise_if_model_fails,
    with_cache_disabled,
)
from qgraph.costing import (
    DEFAULT_CLASSICAL_DEVICE,
    DEFAULT_DEVICE,
    CostOptions,
    SiteCosts,
    cost_sites,
    explain_site,
)
from qgraph.errors import InputError
from qgraph.gradients import resolve_gradients
from qgraph.layers import QRCEEmbedding
from qgraph.passes.analysis.build_sites import BuildSites
from qgraph.passes.analysis.find_sites import FindCandidates
from qgraph.passes.analysis.flops import CountFlopsBytes
from qgraph.passes.analysis.mask_kind import ClassifyMasks
from qgraph.passes.analysis.shape_prop import ShapePropagation
from qgraph.passes.base import PassManager, PropertySet
from qgraph.passes.lower.bind_backend import BindBackend
from qgraph.passes.rewrite.replace_attention import ReplaceAttention
from qgraph.passes.rewrite.replace_embedding import ReplaceEmbedding
from qgraph.policy import PolicyLike, decide, validate_policy
from qgraph.report import Report
from qgraph.site import Site

_compile_ids = itertools.count()


def analysis_pipeline() -> PassManager:
    """The analysis passes, in dependency order."""
    return PassManager(
        [
            FindCandidates(),
            ShapePropagation(),
            ClassifyMasks(),
            CountFlopsBytes(),
            BuildSites(),
        ]
    )


def rewrite_pipeline() -> PassManager:
    """The rewrite and lowering passes, in order."""
    return PassManager([ReplaceAttention(), ReplaceEmbedding(), BindBackend()])


def _shape_guard(gm: fx.GraphModule, range_constraints: dict[Any, Any]) -> Any:
    """A predicate: do these flat inputs fit the shapes the graph was captured for?"""
    specs = []
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            value = node.meta.get("val")
            specs.append(tuple(value.shape) if isinstance(value, torch.Tensor) else None)

    def fits(flat: list[Any]) -> bool:
        bindings: dict[Any, int] = {}
        for spec, x in zip(specs, flat, strict=True):
            if spec is None:
                continue
            if not isinstance(x, torch.Tensor) or x.dim() != len(spec):
                return False
            for dim, size in zip(spec, x.shape, strict=True):
                if isinstance(dim, int):
                    if dim != size:
                        return False
                    continue
                expr = dim.node.expr
                if not expr.is_Symbol:
                    continue  # derived sizes are checked by the graph's own guards
                if bindings.setdefault(expr, size) != size:
                    return False
                bounds = range_constraints.get(expr)
                if bounds is not None and not (bounds.lower <= size <= bounds.upper):
                    return False
        return True

    return fits


@dataclass(frozen=True)
class QRCEOptions:
    """Size and initialisation of the QRCE circuits that replace embedding tables."""

    qubits: int
    layers: int
    init: str


class CompiledModule(nn.Module):
    """The rewritten model: call it like the original; it trains like the original.

    It holds one rewritten graph per (train/eval mode, shape bucket), captured lazily: a mode
    or a shape the current graph cannot take is captured and rewritten on first use, as
    torch.compile recompiles. All graphs share the model's parameters and the quantum layers.
    """

    _model: nn.Module

    def __init__(
        self,
        model: nn.Module,
        example_args: tuple[Any, ...],
        example_kwargs: dict[str, Any],
        *,
        backend: str,
        gradients: dict[str, str],
        costs: CostOptions | None,
        policy: PolicyLike,
        embedding_tables: Sequence[str],
        qrce_qubits: int,
        qrce_layers: int,
        qrce_init: str,
        seed: int,
        frontend: Frontend,
        precision: float = 0.03,
    ) -> None:
        super().__init__()
        # The user's model is not registered as a child: the graphs hold its parameters.
        object.__setattr__(self, "_model", model)
        self._id = next(_compile_ids)
        self._backend = backend
        self._gradients = gradients
        self._costs = costs
        self.site_costs: dict[str, SiteCosts] = {}
        self._policy = policy
        self._embedding_tables = tuple(embedding_tables)
        self._qrce = QRCEOptions(qrce_qubits, qrce_layers, qrce_init)
        self._seed = seed
        self.precision = precision  # target standard error of each estimated value
        self._frontend = frontend
        self._graphs: dict[tuple[bool, Any], tuple[fx.GraphModule, Any, Any]] = {}
        self.quantum_layers: dict[str, QRCEEmbedding] = {}
        self.training = model.training
        self.report: Report = Report(type(model).__name__, "", backend, _policy_name(policy))
        self.report.notes.append(
            "gradients: " + ", ".join(f"{k} by {m}" for k, m in gradients.items()) + "."
        )
        gm = self._build(example_args, example_kwargs, shape_key=None, first=True)
        self.graph_module = gm

    # -- building -------------------------------------------------------------------------
    def _capture(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Captured:
        model = self._model
        was_training = model.training
        model.train(self.training)
        try:
            return capture(model, args, kwargs, frontend=self._frontend)
        finally:
            model.train(was_training)

    def _build(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], shape_key: Any, first: bool = False
    ) -> fx.GraphModule:
        kwargs = with_cache_disabled(self._model, kwargs)
        captured = self._capture(args, kwargs)
        gm = captured.graph_module
        props = PropertySet(example_inputs=captured.flatten_inputs(tuple(args), kwargs))
        try:
            analysis_pipeline().run(gm, props)
        except Exception:
            # Fake-tensor capture misses value errors (an id beyond the vocabulary); the
            # first real run finds them. Blame the inputs when the model fails on them too.
            raise_if_model_fails(self._model, tuple(args), kwargs)
            raise
        sites: list[Site] = props["sites"]
        if self._costs is not None and first:
            self.site_costs = cost_sites(sites, self._costs)
            self.report.device = self._costs.device
        for site in sites:
            costs = self.site_costs.get(site.key)
            if costs is not None and not first:  # later captures reuse the report's estimates
                site.costs = self.report_site(site.key).costs
                site.classical_s = self.report_site(site.key).classical_s
            decide(
                site,
                self._policy,
                self._embedding_tables,
                costs.verdict if costs is not None else None,
            )
        self._make_layers(gm, sites, props)
        props["site_labels"] = {s.index: f"{self._id}:{s.key}" for s in sites}
        props["quantum_layers"] = self.quantum_layers
        props["backend"] = self._backend
        props["gradients"] = self._gradients
        rewrite_pipeline().run(gm, props)
        if first:
            self.report.frontend = captured.frontend
            self.report.sites = sites
            self.report.graph_module = gm
            if "use_cache" in kwargs and kwargs["use_cache"] is False:
                self.report.notes.append("captured with use_cache=False (no KV cache output).")
            for path, layer in self.quantum_layers.items():
                if layer.fit_r2 is not None:
                    self.report.notes.append(
                        f"QRCE {path}: distilled from the original table, R² = "
                        f"{layer.fit_r2:.3f} (a rank-{2 * layer.structure.n_qubits} linear map "
                        f"reaches at most {layer.best_rank_r2:.3f})."
                    )
        else:
            self._note_different_decisions(sites)
        self._graphs[(self.training, shape_key)] = (
            gm,
            captured,
            _shape_guard(gm, captured.range_constraints),
        )
        return gm

    def _make_layers(self, gm: fx.GraphModule, sites: list[Site], props: PropertySet) -> None:
        for site in sites:
            if site.op != "qrce" or site.key in self.quantum_layers:
                continue
            table_ref = props["site_matches"][site.index].roles["table"]
            target = table_ref if isinstance(table_ref, str) else str(table_ref.target)
            table = gm.get_parameter(target) if "." in target or hasattr(gm, target) else None
            assert table is not None and site.vocab_size and site.embed_dim
            layer = QRCEEmbedding(
                site.vocab_size,
                site.embed_dim,
                self._qrce.qubits,
                self._qrce.layers,
                seed=self._seed + site.index,
                dtype=table.dtype,
                device=table.device,
            )
            if self._qrce.init == "distill":
                layer.distill_from(table)
            self.quantum_layers[site.key] = layer

    # -- running --------------------------------------------------------------------------
    def _graph_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> fx.GraphModule:
        for (training, _), (gm, captured, fits) in self._graphs.items():
            if training == self.training and fits(captured.flatten_inputs(args, kwargs)):
                return gm
        shape_key = tuple(
            tuple(x.shape) for x in pytree_leaves(args, kwargs) if isinstance(x, torch.Tensor)
        )
        return self._build(args, kwargs, shape_key=shape_key)

    def graph_for(self, *args: Any, **kwargs: Any) -> tuple[fx.GraphModule, list[Any]]:
        """The rewritten graph this module runs for these inputs in its current train/eval
        mode (captured now if needed), and the inputs flattened to its placeholders."""
        kwargs = with_cache_disabled(self._model, kwargs)
        gm = self._graph_for(args, kwargs)
        for graph, captured, _fits in self._graphs.values():
            if graph is gm:
                return gm, captured.flatten_inputs(args, kwargs)
        raise AssertionError("a graph that _graph_for returned is always registered")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the rewritten graph for these inputs (same signature as the model's forward).

        With nothing offloaded the original module runs itself: its eager kernels (e.g. the
        fused nn.TransformerEncoder fast path) can differ from the captured graph's in the
        last bit, and "no rewrite" must mean bit-identical outputs.
        """
        if not self.report.quantum_sites:
            return self._run_original(*args, **kwargs)
        kwargs = with_cache_disabled(self._model, kwargs)
        gm = self._graph_for(args, kwargs)
        if gm is not self.graph_module:
            self._modules["graph_module"] = gm
        if self.report.frontend == "symbolic_trace":
            # fx graphs call the user's own submodules (dropout, batch norm), which follow
            # the user's model's mode, not this module's.
            with self._model_in_mode():
                return gm(*args, **kwargs)
        return gm(*args, **kwargs)

    @contextlib.contextmanager
    def _model_in_mode(self) -> Iterator[None]:
        """The user's model in this module's train/eval mode, restored afterwards."""
        was_training = self._model.training
        self._model.train(self.training)
        try:
            yield
        finally:
            self._model.train(was_training)

    def _run_original(self, *args: Any, **kwargs: Any) -> Any:
        with self._model_in_mode():
            return self._model(*args, **kwargs)

    def report_site(self, key: str) -> Site:
        """The report's site with this key."""
        for site in self.report.sites:
            if site.key == key:
                return site
        raise KeyError(f"no site {key!r}; sites: {[s.key for s in self.report.sites]}")

    def _note_different_decisions(self, sites: list[Site]) -> None:
        """Say so in the report when a later capture (mode, shape) decided differently."""
        reported = {s.key: s.decision for s in self.report.sites}
        for site in sites:
            if reported.get(site.key) != site.decision:
                self.report.notes.append(
                    f"{'train' if self.training else 'eval'}-mode capture decided "
                    f"{site.decision} for {site.key} (report: {reported.get(site.key)}): "
                    f"{site.reason}"
                )

    def train(self, mode: bool = True) -> CompiledModule:
        """Switch train/eval like the original model (a graph per mode; see the class doc)."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.training = mode
        for layer in self.quantum_layers.values():
            layer.train(mode)
        for (training, _), (gm, _captured, _fits) in self._graphs.items():
            if training == mode:
                self._modules["graph_module"] = gm
                break
        return self

    @property
    def model(self) -> nn.Module:
        """The user's model (the graphs share its parameters; it is not a child module)."""
        return self._model

    @property
    def gradients(self) -> dict[str, str]:
        """The backward method per kernel, e.g. ``{"qaap": "autograd", "qrce": "autograd"}``."""
        return dict(self._gradients)

    @property
    def backend(self) -> Any:
        """The backend instance the quantum ops run on."""
        return get_backend(self._backend)

    def __repr__(self) -> str:
        return (
            f"CompiledModule({type(self._model).__name__}, backend={self._backend!r}, "
            f"policy={_policy_name(self._policy)!r}, quantum_sites="
            f"{len(self.report.quantum_sites)})"
        )


def pytree_leaves(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """The leaves of (args, kwargs) in pytree order."""
    import torch.utils._pytree as pytree

    return list(pytree.tree_leaves((args, kwargs)))


def _policy_name(policy: PolicyLike) -> str:
    return policy if isinstance(policy, str) else getattr(policy, "__name__", "callable")


def compile(
    model: nn.Module,
    example_inputs: tuple[Any, ...] = (),
    example_kwargs: dict[str, Any] | None = None,
    *,
    backend: str | Backend = "exact",
    gradient: str | Mapping[str, str] = "auto",
    policy: PolicyLike = "auto",
    device: str | None = None,
    precision: float = 0.03,
    min_fidelity: float = 0.5,
    classical_device: str = DEFAULT_CLASSICAL_DEVICE,
    report_devices: Sequence[str] = (),
    embedding_tables: Sequence[str] = ("word",),
    qrce_qubits: int = 8,
    qrce_layers: int = 2,
    qrce_init: str = "distill",
    seed: int = 0,
    frontend: Frontend = "auto",
) -> CompiledModule:
    """Capture ``model``, find its attention and embedding sites, and offload the chosen ones.

    Args:
        model: the PyTorch module (a Hugging Face model, nn.TransformerEncoder, your own).
        example_inputs: positional example arguments, e.g. ``(input_ids,)``.
        example_kwargs: keyword example arguments, e.g. ``{"attention_mask": mask}``.
        backend: where quantum ops run: a name (``qgraph.backends.available()`` lists them)
            or a configured instance, e.g. ``ShotsBackend(shots=4096, seed=1)``.
        gradient: ``"auto"`` (autograd on exact backends; straight-through for QAAP and
            parameter shift for QRCE on sampled ones), a method name, or a dict per kernel
            (``{"qaap": "spsa"}``); checked against what the backend supports.
        policy: ``"auto"`` (offload where the cost model predicts the quantum op faster on
            ``device`` with fidelity ≥ ``min_fidelity``), ``"all"`` (every supported site),
            ``"none"`` (no rewrite) or a callable ``Site -> bool``.
        device: the quantum device the cost model decides for (``qgraph.devices()``);
            default ``ibm_heron_r2`` under "auto"; naming one also costs the sites under any
            other policy, for the report.
        precision: target standard error ε of each estimated value (shots ≈ 1/ε²).
        min_fidelity: the lowest expected circuit fidelity "auto" accepts.
        classical_device: the classical baseline (``cpu_local`` is calibrated here).
        report_devices: more quantum devices to cost for the report (not for the decision).
        embedding_tables: which embedding tables are candidates (word, position, token_type).
        qrce_qubits, qrce_layers: QRCE circuit size.
        qrce_init: ``"distill"`` (fit QRCE to the original table) or ``"random"``.
        seed: seeds the QRCE circuit structure and initial parameters.
        frontend: ``"auto"``, ``"export"`` (torch.export) or ``"symbolic_trace"``.

    Returns:
        A CompiledModule; ``.report`` lists every site, ``.graph_module`` is the rewritten graph.
    """
    example_kwargs = {} if example_kwargs is None else example_kwargs
    check_example_inputs(model, example_inputs, example_kwargs)
    backend_key = resolve(backend)
    gradients = resolve_gradients(gradient, backend_key, get_backend(backend_key).capabilities)
    validate_policy(policy, embedding_tables)
    costs = None
    if policy == "auto" or device is not None or report_devices:
        costs = CostOptions(
            device=device or DEFAULT_DEVICE,
            classical_device=classical_device,
            precision=precision,
            min_fidelity=min_fidelity,
            report_devices=tuple(report_devices),
            qrce_qubits=qrce_qubits,
            qrce_layers=qrce_layers,
        )
        costs.validate()
    if not isinstance(qrce_qubits, int) or qrce_qubits < 2:
        raise InputError(f"qrce_qubits must be an integer ≥ 2; got {qrce_qubits!r}.")
    if not isinstance(qrce_layers, int) or qrce_layers < 1:
        raise InputError(f"qrce_layers must be an integer ≥ 1; got {qrce_layers!r}.")
    if qrce_init not in ("distill", "random"):
        raise InputError(f"qrce_init must be 'distill' or 'random'; got {qrce_init!r}.")
    return CompiledModule(
        model,
        tuple(example_inputs),
        dict(example_kwargs),
        backend=backend_key,
        gradients=gradients,
        costs=costs,
        policy=policy,
        embedding_tables=embedding_tables,
        qrce_qubits=qrce_qubits,
        qrce_layers=qrce_layers,
        qrce_init=qrce_init,
        seed=seed,
        frontend=frontend,
        precision=precision,
    )


def explain(cm: CompiledModule, site: int | str | Site, *, file: Any = None) -> str:
    """Print (and return) the full arithmetic of one site's decision.

    ``site`` is a Site, its index in ``cm.report.sites``, or its key/path.
    """
    if isinstance(site, Site):
        chosen = site
    elif isinstance(site, int):
        if not 0 <= site < len(cm.report.sites):
            raise InputError(f"no site {site}; the report has {len(cm.report.sites)} sites.")
        chosen = cm.report.sites[site]
    else:
        matches = [s for s in cm.report.sites if site in (s.key, s.path)]
        if not matches:
            raise InputError(f"no site {site!r}; sites: {[s.key for s in cm.report.sites]}.")
        chosen = matches[0]
    text = explain_site(chosen, cm.site_costs.get(chosen.key))
    print(text, file=file)
    return text


def devices() -> list[Any]:
    """The device profiles the cost model knows (quantum, simulators, classical)."""
    from qgraph.costmodel import devices as all_devices

    return all_devices()
