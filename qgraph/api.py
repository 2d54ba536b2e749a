"""``qgraph.compile``: capture → analyse → decide → rewrite → lower, behind one call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from qgraph.backends import Backend
from qgraph.backends.job_policy import JobPolicy
from qgraph.capture import Frontend
from qgraph.compiled import CompiledModule, compile_module
from qgraph.costing import (
    DEFAULT_CLASSICAL_DEVICE,
    explain_site,
)
from qgraph.costmodel import devices as all_devices
from qgraph.errors import InputError
from qgraph.pipelines import analysis_pipeline, rewrite_pipeline
from qgraph.policy import PolicyLike
from qgraph.settings import DEFAULT_MAX_CAPTURES
from qgraph.site import Site

__all__ = [
    "CompiledModule",
    "analysis_pipeline",
    "compile",
    "devices",
    "explain",
    "rewrite_pipeline",
]


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
    max_captures: int = DEFAULT_MAX_CAPTURES,
    job_policy: JobPolicy | None = None,
    qaap_form: str = "auto",
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
        max_captures: how many graphs the module may capture (one per train/eval mode,
            call structure and shape range) before a call that needs another is refused.
        job_policy: what the backend does when a job fails or hangs (``JobPolicy``: timeout,
            retries with backoff, fallback "raise", "exact" or "classical"); set on the
            backend instance, so two modules that need different policies need two
            instances. None keeps the backend's own (by default: 2 retries, then raise).
        qaap_form: how exact backends compute QAAP's closed form: ``"quadratic"`` (the
            n × n scores), ``"linear"`` (the degree-2 feature map, linear in the length;
            padding and causal masks, no dropout) or ``"auto"`` (per call, the faster of the
            two by the classical roofline of the shapes; the report shows each site's).

    Returns:
        A CompiledModule; ``.report`` lists every site, ``.graph_module`` is the rewritten graph.
    """
    options = {
        "backend": backend,
        "gradient": gradient,
        "policy": policy,
        "device": device,
        "precision": precision,
        "min_fidelity": min_fidelity,
        "classical_device": classical_device,
        "report_devices": report_devices,
        "embedding_tables": embedding_tables,
        "qrce_qubits": qrce_qubits,
        "qrce_layers": qrce_layers,
        "qrce_init": qrce_init,
        "seed": seed,
        "frontend": frontend,
        "max_captures": max_captures,
        "job_policy": job_policy,
        "qaap_form": qaap_form,
    }
    return compile_module(model, example_inputs, example_kwargs, options)


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
    return all_devices()
