"""``CompiledModule``: the rewritten model, a drop-in replacement for the original.

Call it like the original (calls are bound by the original forward's signature, see
``qgraph.calls``), read the original's attributes through it (``config``, ``device``,
``generation_config``, ...), move it (``to``, ``half``), train it, use it from many threads,
save it (``qgraph.save``) and generate with it. Graphs are captured lazily, one per
(train/eval mode, call structure, shape range), like torch.compile's recompiles, and bounded
by ``max_captures``.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch import nn

from qgraph.backends import KernelCounters, get_backend, resolve
from qgraph.calls import BoundCall, CallBinder, blaming_mismatched_inputs, why_new_capture
from qgraph.capture import (
    CALL_INPUTS,
    EXAMPLE_INPUTS,
    Captured,
    capture,
    raise_if_model_fails,
)
from qgraph.costing import SiteCosts
from qgraph.errors import CaptureError
from qgraph.generation import generate
from qgraph.gradients import resolve_gradients
from qgraph.graph_capture import GraphCapture, shape_guard
from qgraph.layers import QRCEEmbedding, QRCEOptions
from qgraph.passes.analysis.decide_offload import decided_sites
from qgraph.passes.base import PropertySet
from qgraph.passes.lower.bind_backend import BindBackend
from qgraph.passes.rewrite.replace_attention import site_label
from qgraph.pipelines import analysis_pipeline, decision_pipeline, rewrite_pipeline
from qgraph.policy import PolicyLike
from qgraph.records import load_layer_states, module_record, rebuild_options
from qgraph.report import Report
from qgraph.settings import DEFAULT_MAX_CAPTURES, CompileSettings, compile_settings
from qgraph.sharding import refuse_sharded
from qgraph.site import Site

if TYPE_CHECKING:
    from qgraph.scheduler.timeline import Timeline

_compile_ids = itertools.count()


def _tensors(module: nn.Module) -> Iterator[torch.Tensor]:
    yield from module.parameters()
    yield from module.buffers()


def _placement(modules: list[nn.Module]) -> list[tuple[torch.dtype, torch.device]]:
    """(dtype, device) of every parameter and buffer, to tell whether a move changed one."""
    return [(t.dtype, t.device) for m in modules for t in _tensors(m)]


class CompiledModule(nn.Module):
    """The rewritten model: call it like the original; it trains like the original.

    It holds one rewritten graph per (train/eval mode, call structure, shape range), captured
    on first use as torch.compile recompiles; all share the model's parameters and the
    quantum layers. Attributes it does not define resolve on the original model.
    """

    _model: nn.Module

    def __new__(cls, model: nn.Module, *args: Any, **kwargs: Any) -> CompiledModule:
        # Each compiled module is an instance of a subclass whose forward has the model's
        # signature: tools read it from the instance (HF Trainer's column filter,
        # sentence-transformers) or from the class (Trainer's label names).
        if cls is CompiledModule:
            cls = _compiled_class(model)
        instance: CompiledModule = super().__new__(cls)
        return instance

    def __init__(
        self,
        model: nn.Module,
        example_args: tuple[Any, ...],
        example_kwargs: dict[str, Any],
        settings: CompileSettings,
        compile_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # The user's model is not registered as a child: the graphs hold its parameters, and
        # a replaced embedding table stays out of parameters() and the optimizer.
        object.__setattr__(self, "_model", model)
        self._id = next(_compile_ids)
        self.settings = settings
        #: the keyword arguments ``qgraph.compile`` was called with (qgraph.save stores them)
        self.compile_options: dict[str, Any] = dict(compile_options or {})
        self._backend = settings.backend
        self._backend_ref = get_backend(self._backend)  # keeps a configured instance registered
        self.site_costs: dict[str, SiteCosts] = {}
        self.precision = settings.precision  # target standard error of each estimated value
        self._captures: list[GraphCapture] = []
        self._capture_lock = threading.RLock()  # torch.export swaps the model's parameters
        self.quantum_layers: dict[str, QRCEEmbedding] = {}
        self.training = model.training
        self._binder = CallBinder(model)
        self._example = self._binder.bind(tuple(example_args), dict(example_kwargs))
        self.report: Report = Report(
            type(model).__name__, "", settings.backend, _policy_name(settings.policy)
        )
        self.report.job_counters = self._job_counters
        self.report.notes.append(
            "gradients: " + ", ".join(f"{k} by {m}" for k, m in settings.gradients.items()) + "."
        )
        self.graph_module = self._build(self._example, first=True).graph_module

    # -- building -------------------------------------------------------------------------
    def _capture(self, call: BoundCall, first: bool) -> Captured:
        model = self._model
        was_training = model.training
        model.train(self.training)
        inputs = EXAMPLE_INPUTS if first else CALL_INPUTS
        try:
            with blaming_mismatched_inputs(self._example, call):
                return capture(model, call.args, call.kwargs, self.settings.frontend, inputs)
        finally:
            model.train(was_training)

    def _build(self, call: BoundCall, first: bool = False) -> GraphCapture:
        if len(self._captures) >= self.settings.max_captures:
            raise CaptureError(
                f"this compiled {type(self._model).__name__} has captured "
                f"{len(self._captures)} graphs, its limit (max_captures="
                f"{self.settings.max_captures}), and this call needs another: "
                f"{self._why_new(call)}. Pad inputs to a few fixed lengths, keep the call's "
                "form (mask dtype, optional arguments) the same, or compile with a larger "
                "max_captures."
            )
        captured = self._capture(call, first)
        gm = captured.graph_module
        # Every input of the three pipelines, written once here (passes/README.md).
        props = PropertySet(
            example_inputs=captured.flatten_inputs(call.args, call.kwargs),
            cost_options=self.settings.costs,
            # Later captures decide on the first capture's estimates, as the report shows.
            known_site_costs=None if first else self.site_costs,
            policy=self.settings.policy,
            embedding_tables=self.settings.embedding_tables,
            kept_classical={},
            site_label_prefix=str(self._id),
            quantum_layers=self.quantum_layers,  # ReplaceEmbedding adds the new sites' layers
            qrce_options=self.settings.qrce,
            seed=self.settings.seed,
            backend=self._backend,
            gradients=self.settings.gradients,
            qaap_form=self.settings.qaap_form,
        )
        try:
            analysis_pipeline().run(gm, props)
        except Exception:
            # Fake-tensor capture misses value errors (an id beyond the vocabulary); the
            # first real run finds them. Blame the inputs when the model fails on them too.
            raise_if_model_fails(
                self._model, call.args, call.kwargs, EXAMPLE_INPUTS if first else CALL_INPUTS
            )
            raise
        decision_pipeline().run(gm, props)
        if first:
            self.site_costs = props["site_costs"]
        rewrite_pipeline().run(gm, props)
        sites = decided_sites(props)
        entry = GraphCapture(
            gm,
            captured,
            shape_guard(gm, captured.range_constraints),
            self.training,
            call.structure,
        )
        if first:
            self.report.frontend = captured.frontend
            if self.settings.costs is not None:
                self.report.device = self.settings.costs.device
            self.report.sites = sites
            self.report.graph_module = gm
            if call.kwargs.get("use_cache", None) is False:
                self.report.notes.append("captured with use_cache=False (no KV cache output).")
            for path, layer in self.quantum_layers.items():
                if layer.fit_r2 is not None:
                    self.report.notes.append(
                        f"QRCE {path}: distilled from the original table, R² = "
                        f"{layer.fit_r2:.3f} (a rank-{2 * layer.structure.n_qubits} linear map "
                        f"reaches at most {layer.best_rank_r2:.3f})."
                    )
        else:
            self.report.notes.append(
                f"capture {len(self._captures) + 1} ({'train' if self.training else 'eval'} "
                f"mode): {self._why_new(call)}."
            )
            self._note_different_decisions(sites)
        self._captures.append(entry)
        return entry

    def _why_new(self, call: BoundCall) -> str:
        """Why no existing capture serves ``call``, in words."""
        same_mode = [c.structure for c in self._captures if c.training == self.training]
        return why_new_capture(same_mode, call, self._binder, self._example)

    # -- running --------------------------------------------------------------------------
    def _lookup(self, call: BoundCall) -> GraphCapture | None:
        for entry in list(self._captures):  # a snapshot: another thread may be appending
            if (
                entry.training == self.training
                and entry.structure == call.structure
                and entry.fits(entry.flatten(call))
            ):
                return entry
        return None

    def _capture_for(self, call: BoundCall) -> GraphCapture:
        """The capture that serves ``call``, captured now when none does."""
        entry = self._lookup(call)
        if entry is not None:
            return entry
        # One capture at a time: torch.export swaps the model's parameters for fake tensors
        # while it traces, and two traces at once restore each other's fakes.
        with self._capture_lock:
            return self._lookup(call) or self._build(call)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> BoundCall:
        """The canonical form of a call (see ``qgraph.calls``)."""
        return self._binder.bind(tuple(args), dict(kwargs))

    def capture_for(self, *args: Any, **kwargs: Any) -> GraphCapture:
        """The capture this module runs for these inputs in its current train/eval mode
        (captured now if needed)."""
        return self._capture_for(self.bind(args, kwargs))

    def graph_for(self, *args: Any, **kwargs: Any) -> tuple[fx.GraphModule, list[Any]]:
        """The rewritten graph this module runs for these inputs in its current train/eval
        mode (captured now if needed), and the inputs flattened to its placeholders."""
        call = self.bind(args, kwargs)
        entry = self._capture_for(call)
        return entry.graph_module, entry.flatten(call)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the rewritten graph for these inputs (the signature is the model's forward's).

        With nothing offloaded the original module runs itself: its eager kernels (e.g. the
        fused nn.TransformerEncoder fast path) can differ from the captured graph's in the
        last bit, and "no rewrite" must mean bit-identical outputs.
        """
        return self._call(args, kwargs)

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        refuse_sharded(self)  # FSDP would train stale copies of the parameters
        if not self.report.quantum_sites:
            return self.run_original(*args, **kwargs)
        call = self.bind(args, kwargs)
        entry = self._capture_for(call)
        gm = entry.graph_module
        if gm is not self.graph_module:
            self._modules["graph_module"] = gm
        with blaming_mismatched_inputs(self._example, call):
            if self.report.frontend == "symbolic_trace":
                # fx graphs call the user's own submodules (dropout, batch norm), which follow
                # the user's model's mode, not this module's.
                with self.model_in_mode():
                    return entry.run(call)
            return entry.run(call)

    @contextlib.contextmanager
    def model_in_mode(self) -> Iterator[None]:
        """The user's model in this module's train/eval mode, restored afterwards."""
        was_training = self._model.training
        self._model.train(self.training)
        try:
            yield
        finally:
            self._model.train(was_training)

    def run_original(self, *args: Any, **kwargs: Any) -> Any:
        """Call the original model (in this module's train/eval mode) on these inputs."""
        with self.model_in_mode():
            return self._model(*args, **kwargs)

    # -- for runners that execute the graphs themselves (HybridScheduler) ----------------
    def use_capture(self, entry: GraphCapture) -> None:
        """Make ``entry``'s graph this module's ``graph_module``, as a call that runs it does.

        ``entry`` is one of this module's captures (from ``capture_for``); a runner that
        executes the graph itself calls this so that ``graph_module`` is the graph it ran.
        Raises ValueError for a capture of another module, or one dropped by a move.
        """
        if not any(c is entry for c in list(self._captures)):
            raise ValueError(
                "use_capture takes one of this module's captures (capture_for(...)); this one "
                "is not (another module's, or dropped when the module moved)."
            )
        if entry.graph_module is not self.graph_module:
            self._modules["graph_module"] = entry.graph_module

    def graph_context(self) -> contextlib.AbstractContextManager[None]:
        """The context to run this module's graphs in, as ``forward`` does.

        fx graphs (frontend ``symbolic_trace``) call the user's own submodules (dropout,
        batch norm), which follow the user's model's mode: they run within
        ``model_in_mode()``. Exported graphs need nothing.
        """
        if self.report.frontend == "symbolic_trace":
            return self.model_in_mode()
        return contextlib.nullcontext()

    def _job_counters(self) -> dict[str, KernelCounters]:
        """The backend's counters of each quantum site of this module (``Report.jobs``)."""
        per_site = self.backend.stats.per_site
        labels = {s.key: site_label(str(self._id), s.key) for s in self.report.quantum_sites}
        return {key: per_site[label] for key, label in labels.items() if label in per_site}

    def record_timeline(self, timeline: Timeline) -> None:
        """Keep a scheduler step's timeline as ``report.timeline``, so that the review page
        (``report.to_html``) shows the latest step."""
        self.report.timeline = timeline

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """The model's own ``generate`` (Hugging Face), every step through the rewritten graph.

        Generation runs without a KV cache: each step feeds the whole prefix through the
        compiled graph (one capture serves every length), since a cache object cannot pass
        through a captured graph. Tokens equal the original's ``generate(use_cache=False)``
        under policy "none".
        """
        return generate(self.model, self, *args, **kwargs)

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
        for entry in self._captures:
            if entry.training == mode:
                self._modules["graph_module"] = entry.graph_module
                break
        return self

    # -- moves ----------------------------------------------------------------------------
    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Any:
        """Moves and casts (``to``, ``half``, ``cuda``, ...) reach the model, the quantum
        layers and every graph; after a dtype or device change the graphs are captured anew,
        since a capture bakes dtypes and devices into its constants and casts."""
        modules: list[nn.Module] = [self._model, *self.quantum_layers.values()]
        before = _placement(modules)
        super()._apply(fn, recurse)
        for module in modules:
            module._apply(fn, recurse)
        for entry in self._captures:
            entry.graph_module._apply(fn, recurse)
        if _placement(modules) != before:
            with self._capture_lock:
                self._example = self._binder.bind(
                    *pytree.tree_map_only(
                        torch.Tensor, fn, (self._example.args, self._example.kwargs)
                    )
                )
                self._captures.clear()
                self._modules["graph_module"] = self._build(self._example).graph_module
        return self

    # -- the original model's attributes --------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            pass
        model = self.__dict__.get("_model")
        if model is None or name.startswith("__"):
            raise AttributeError(f"'{type(self).__name__}' object has no attribute {name!r}")
        try:
            return getattr(model, name)
        except AttributeError:
            raise AttributeError(
                f"neither the CompiledModule nor its {type(model).__name__} has an attribute "
                f"{name!r}"
            ) from None

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Pickling (``torch.save(cm)``, ``copy.deepcopy``) stores the model and how it was
        compiled (``qgraph.records``), and compiles again when loaded (``qgraph.save``
        writes only the state)."""
        record = module_record(self)
        record["model"] = self.model
        if record["options"]["backend"] is None:
            record["options"]["backend"] = self.backend
        return _restore_pickled, (record,)

    @property
    def model(self) -> nn.Module:
        """The user's model (the graphs share its parameters; it is not a child module)."""
        return self._model

    @property
    def captures(self) -> list[GraphCapture]:
        """The graphs captured so far, in order."""
        return list(self._captures)

    @property
    def example(self) -> BoundCall:
        """The example call the module was compiled with, in canonical form."""
        return self._example

    @property
    def gradients(self) -> dict[str, str]:
        """The backward method per kernel, e.g. ``{"qaap": "autograd", "qrce": "autograd"}``."""
        return dict(self.settings.gradients)

    @property
    def backend(self) -> Any:
        """The backend instance the quantum ops run on."""
        return get_backend(self._backend)

    def use_backend(self, backend: Any, gradient: str | dict[str, str] = "auto") -> None:
        """Run the quantum ops on another backend from now on, keeping every parameter.

        ``backend`` and ``gradient`` are what ``qgraph.compile`` takes. Typical use: train on
        the exact backend, then evaluate the same weights with ``ShotsBackend(shots=...)`` or a
        noisy ``AerBackend`` to see what sampling or noise does to them. Every captured graph
        is rebound (``BindBackend``); graphs captured later use the new backend too.
        """
        key = resolve(backend)
        gradients = resolve_gradients(gradient, key, get_backend(key).capabilities)
        with self._capture_lock:
            self.settings = replace(self.settings, backend=key, gradients=gradients)
            self._backend, self._backend_ref = key, get_backend(key)
            self.report.backend = key
            self.compile_options.update(backend=backend, gradient=gradient)
            props = PropertySet(backend=key, gradients=gradients)
            for entry in self._captures:
                BindBackend().run(entry.graph_module, props)

    def __repr__(self) -> str:
        return (
            f"CompiledModule({type(self._model).__name__}, backend={self._backend!r}, "
            f"policy={_policy_name(self.settings.policy)!r}, quantum_sites="
            f"{len(self.report.quantum_sites)})"
        )


def _compiled_class(model: nn.Module) -> type[CompiledModule]:
    """A subclass of CompiledModule named after the model, whose forward has its signature."""
    signature = inspect.signature(model.forward)

    def forward(self: CompiledModule, *args: Any, **kwargs: Any) -> Any:
        return self._call(args, kwargs)

    this = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    forward.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[this, *signature.parameters.values()]
    )
    forward.__doc__ = CompiledModule.forward.__doc__
    name = f"Compiled{type(model).__name__}"
    forward.__qualname__ = f"{name}.forward"
    return type(name, (CompiledModule,), {"forward": forward, "__module__": __name__})


def compile_module(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    example_kwargs: dict[str, Any] | None,
    options: Mapping[str, Any],
) -> CompiledModule:
    """``qgraph.compile`` with its options as a mapping (every name of ``OPTION_NAMES``):
    check and resolve them, then capture and rewrite."""
    settings, given = compile_settings(model, example_inputs, example_kwargs, options)
    kwargs = {} if example_kwargs is None else example_kwargs
    return CompiledModule(model, tuple(example_inputs), dict(kwargs), settings, given)


def _restore_pickled(record: dict[str, Any]) -> CompiledModule:
    """Compile the pickled model again with the pickled record (``__reduce_ex__``)."""
    example = record["example"]
    options = rebuild_options(record, {})
    cm = compile_module(record["model"], tuple(example["args"]), dict(example["kwargs"]), options)
    load_layer_states(cm, record)
    return cm


def _policy_name(policy: PolicyLike) -> str:
    return policy if isinstance(policy, str) else getattr(policy, "__name__", "callable")


__all__ = [
    "DEFAULT_MAX_CAPTURES",
    "CompileSettings",
    "CompiledModule",
    "GraphCapture",
    "QRCEOptions",
    "analysis_pipeline",
    "compile_module",
    "decision_pipeline",
    "rewrite_pipeline",
]
