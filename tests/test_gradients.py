"""Gradient methods: resolution per kernel and backend, SPSA, backend instances."""

from __future__ import annotations

import pytest
import torch

import qgraph
from panel import PANEL
from qgraph.backends import Capabilities, get_backend, register
from qgraph.backends.exact import ExactBackend
from qgraph.gradients import resolve_gradients
from qgraph.kernels.qaap import qaap_attention
from qgraph.kernels.spsa import spsa_vjp

EXACT = ExactBackend.capabilities
SAMPLED = Capabilities(
    exact=False,
    max_qubits=None,
    max_circuits_per_job=None,
    gradient_methods=("parameter-shift", "straight-through", "spsa"),
    needs_transpilation=False,
)


def test_auto_picks_autograd_on_exact_and_design_defaults_on_sampled() -> None:
    assert resolve_gradients("auto", "exact", EXACT) == {"qaap": "autograd", "qrce": "autograd"}
    assert resolve_gradients("auto", "shots", SAMPLED) == {
        "qaap": "straight-through",
        "qrce": "parameter-shift",
    }


def test_a_method_applies_to_the_kernels_it_is_defined_for() -> None:
    assert resolve_gradients("spsa", "shots", SAMPLED) == {
        "qaap": "spsa",
        "qrce": "parameter-shift",
    }
    assert resolve_gradients("parameter-shift", "exact", EXACT) == {
        "qaap": "autograd",
        "qrce": "parameter-shift",
    }
    assert resolve_gradients({"qaap": "straight-through"}, "exact", EXACT)["qaap"] == (
        "straight-through"
    )


@pytest.mark.parametrize(
    ("gradient", "capabilities", "message"),
    [
        ("finite-differences", EXACT, "unknown gradient method 'finite-differences'"),
        ({"qrce": "spsa"}, SAMPLED, "gradient 'spsa' does not apply to qrce"),
        ({"mlp": "autograd"}, EXACT, "gradient keys must be 'qaap' and/or 'qrce'"),
        ("autograd", SAMPLED, "backend 'b' cannot compute gradients by 'autograd'"),
        ("spsa", EXACT, "backend 'b' cannot compute gradients by 'spsa'"),
    ],
)
def test_bad_gradient_requests(gradient, capabilities, message: str) -> None:
    with pytest.raises(qgraph.InputError, match=message):
        resolve_gradients(gradient, "b", capabilities)


def test_compile_rejects_a_gradient_the_backend_cannot_give() -> None:
    case = PANEL["bert"]()
    with pytest.raises(qgraph.InputError, match="cannot compute gradients by 'spsa'"):
        qgraph.compile(case.model, case.args, case.kwargs, gradient="spsa", policy="all")


def test_spsa_estimate_is_unbiased_for_qaap() -> None:
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 3, 4, dtype=torch.float64, generator=generator) for _ in range(3))
    grad_out = torch.randn(1, 1, 3, 4, dtype=torch.float64, generator=generator)

    def f(q_, k_, v_):
        return qaap_attention(q_, k_, v_)[0]

    exact = torch.func.vjp(f, q, k, v)[1](grad_out)

    def pair(plus, minus):
        return f(*plus), f(*minus)

    estimates = [spsa_vjp(pair, (q, k, v), grad_out, generator=generator) for _ in range(4000)]
    for index in range(3):
        mean = torch.stack([e[index] for e in estimates]).mean(dim=0)
        # 4000 draws: the Monte-Carlo error of the mean is ~‖∇‖·√(dim/4000) ≈ 0.2‖∇‖ per entry
        # at worst; compare the direction (cosine), which is far tighter than entrywise.
        cosine = torch.nn.functional.cosine_similarity(
            mean.flatten(), exact[index].flatten(), dim=0
        )
        assert cosine > 0.9, (index, float(cosine))


def test_configured_backend_instances_get_their_own_key() -> None:
    backend = ExactBackend()
    key = register(backend)
    assert key.startswith("exact#") and get_backend(key) is backend
    assert register(backend) == key
    case = PANEL["bert"]()
    cm = qgraph.compile(case.model, case.args, case.kwargs, backend=backend, policy="all")
    cm(*case.args, **case.kwargs)
    assert sum(c.calls for c in backend.stats.per_site.values()) == 3  # 2 qaap + 1 qrce
    with pytest.raises(qgraph.UnknownBackendError, match="is not a qgraph backend"):
        register(object())  # type: ignore[arg-type]
