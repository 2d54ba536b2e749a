"""``qgraph.compile``'s options, checked and resolved into the settings a compiled module uses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from qgraph.backends import get_backend, resolve
from qgraph.backends.frontend import QuantumFrontEnd
from qgraph.backends.job_policy import JobPolicy
from qgraph.capture import Frontend, check_example_inputs
from qgraph.costing import DEFAULT_DEVICE, CostOptions
from qgraph.costmodel.qaap_form import FORM_SETTINGS
from qgraph.costmodel.resources import precision_error
from qgraph.errors import InputError
from qgraph.gradients import resolve_gradients
from qgraph.kernels.memory import qrce_memory_error
from qgraph.layers import QRCEOptions
from qgraph.policy import PolicyLike, validate_policy

__all__ = [
    "DEFAULT_MAX_CAPTURES",
    "OPTION_NAMES",
    "CompileSettings",
    "apply_job_policy",
    "compile_settings",
]

#: graphs a compiled module may capture before it refuses (torch.compile's recompile limit
#: is 8 per frame; a module here has two modes and often a batch-1 specialisation)
DEFAULT_MAX_CAPTURES = 16


@dataclass(frozen=True)
class CompileSettings:
    """Everything ``qgraph.compile`` resolved and validated, as the module uses it."""

    backend: str  # registry key (qgraph.backends)
    gradients: dict[str, str]  # kernel -> backward method
    costs: CostOptions | None  # None: the cost model does not run
    policy: PolicyLike
    embedding_tables: tuple[str, ...]
    qrce: QRCEOptions
    seed: int
    frontend: Frontend
    precision: float
    max_captures: int
    qaap_form: str = "auto"  # "auto" | "quadratic" | "linear" (qgraph.costmodel.qaap_form)


#: the keyword options of ``qgraph.compile`` (its signature holds their defaults)
OPTION_NAMES = (
    "backend",
    "gradient",
    "policy",
    "device",
    "precision",
    "min_fidelity",
    "classical_device",
    "report_devices",
    "embedding_tables",
    "qrce_qubits",
    "qrce_layers",
    "qrce_init",
    "seed",
    "frontend",
    "max_captures",
    "job_policy",
    "qaap_form",
)


def compile_settings(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    example_kwargs: dict[str, Any] | None,
    options: Mapping[str, Any],
) -> tuple[CompileSettings, dict[str, Any]]:
    """Check ``qgraph.compile``'s arguments and resolve them: the settings the module runs
    with, and the options as given, sequences as tuples (what ``qgraph.save`` stores).
    ``options`` holds every name of ``OPTION_NAMES`` (``qgraph.compile`` documents them).
    """
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise InputError(
            f"unknown compile option(s) {unknown}; qgraph.compile takes {list(OPTION_NAMES)}."
        )
    missing = [name for name in OPTION_NAMES if name not in options]
    if missing:
        raise InputError(f"compile options {missing} are missing; pass every one of them.")
    backend, gradient, policy = options["backend"], options["gradient"], options["policy"]
    device, precision = options["device"], options["precision"]
    min_fidelity, classical_device = options["min_fidelity"], options["classical_device"]
    report_devices, embedding_tables = options["report_devices"], options["embedding_tables"]
    qrce_qubits, qrce_layers = options["qrce_qubits"], options["qrce_layers"]
    qrce_init, seed = options["qrce_init"], options["seed"]
    frontend, max_captures = options["frontend"], options["max_captures"]
    example_kwargs = {} if example_kwargs is None else example_kwargs
    check_example_inputs(model, example_inputs, example_kwargs)
    backend_key = resolve(backend)
    gradients = resolve_gradients(gradient, backend_key, get_backend(backend_key).capabilities)
    apply_job_policy(get_backend(backend_key), options["job_policy"])
    validate_policy(policy, embedding_tables)
    problem = precision_error(precision)  # also sets the shots of sampled sites, any policy
    if problem is not None:
        raise InputError(problem)
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
            gradients=gradients,
        )
        costs.validate()
    if not isinstance(qrce_qubits, int) or qrce_qubits < 2:
        raise InputError(f"qrce_qubits must be an integer ≥ 2; got {qrce_qubits!r}.")
    if not isinstance(qrce_layers, int) or qrce_layers < 1:
        raise InputError(f"qrce_layers must be an integer ≥ 1; got {qrce_layers!r}.")
    # one token's circuit must fit now; distillation and each call check their own tokens
    problem = qrce_memory_error(1, qrce_qubits, qrce_layers, "qgraph.compile(qrce_qubits=...)")
    if problem is not None:
        raise InputError(problem)
    if qrce_init not in ("distill", "random"):
        raise InputError(f"qrce_init must be 'distill' or 'random'; got {qrce_init!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be an int (it seeds the QRCE circuits); got {seed!r}.")
    if options["qaap_form"] not in FORM_SETTINGS:
        raise InputError(
            f"qaap_form must be one of {', '.join(map(repr, FORM_SETTINGS))}; "
            f"got {options['qaap_form']!r}."
        )
    if not isinstance(max_captures, int) or max_captures < 1:
        raise InputError(f"max_captures must be an integer ≥ 1; got {max_captures!r}.")
    settings = CompileSettings(
        backend=backend_key,
        gradients=gradients,
        costs=costs,
        policy=policy,
        embedding_tables=tuple(embedding_tables),
        qrce=QRCEOptions(qrce_qubits, qrce_layers, qrce_init),
        seed=seed,
        frontend=frontend,
        precision=precision,
        max_captures=max_captures,
        qaap_form=options["qaap_form"],
    )
    given = {
        **options,
        "report_devices": tuple(report_devices),
        "embedding_tables": tuple(embedding_tables),
    }
    return settings, given


def apply_job_policy(backend: Any, job_policy: JobPolicy | None) -> None:
    """Give ``backend`` (or the backend a wrapper runs on) ``job_policy``; None leaves it.

    The policy lives on the backend instance; a different one set by an earlier compile is
    refused rather than silently replaced under the other module."""
    if job_policy is None:
        return
    if not isinstance(job_policy, JobPolicy):
        raise InputError(
            f"job_policy must be a JobPolicy (qgraph.JobPolicy(timeout_s=..., retries=..., "
            f"fallback=...)) or None; got {type(job_policy).__name__}."
        )
    target = backend
    while not isinstance(target, QuantumFrontEnd) and hasattr(target, "inner"):
        target = target.inner  # a wrapper (LatencyBackend) runs its jobs on the inner backend
    if not isinstance(target, QuantumFrontEnd):
        raise InputError(
            f"backend {backend.name!r} ({type(backend).__name__}) does not run its jobs under a "
            "JobPolicy (only backends built on QuantumFrontEnd do); drop job_policy."
        )
    current = target.job_policy
    if current != job_policy and current != type(target).job_policy:
        raise InputError(
            f"backend {target.name!r} already runs under {current} (set by an earlier "
            f"compile or by hand), not {job_policy}: pass each module its own backend "
            "instance, or set backend.job_policy yourself."
        )
    target.job_policy = job_policy
