"""End to end on every backend: the compiled model trains, and gradient methods agree."""

from __future__ import annotations

import copy

import pytest
import torch

import qgraph
from qgraph.backends import get_backend
from qgraph.backends.shots import ShotsBackend
from qgraph.errors import UnknownBackendError
from qgraph.models import ModelCase, hf_model


def tiny_bert() -> ModelCase:
    """2 layers, width 16, 2 heads, 4 tokens: QAAP needs 2 + 3 qubits, QRCE 3."""
    return hf_model("bert", layers=2, hidden=16, heads=2, vocab=40, batch=2, seq_len=4)


def train(cm: qgraph.CompiledModule, case: ModelCase, steps: int, lr: float) -> list[float]:
    """Cross-entropy on two fixed labels with a linear head; returns the losses."""
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 2)
    labels = torch.tensor([0, 1])
    optimizer = torch.optim.AdamW([*cm.parameters(), *head.parameters()], lr=lr)
    losses = []
    for _ in range(steps):
        hidden = cm(*case.args, **case.kwargs).last_hidden_state
        loss = torch.nn.functional.cross_entropy(head(hidden.mean(dim=1)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_parameter_shift_through_the_compiled_model_equals_autograd() -> None:
    case = tiny_bert()
    grads = {}
    for method in ("autograd", "parameter-shift"):
        model = copy.deepcopy(case.model).double()
        cm = qgraph.compile(
            model,
            case.args,
            case.kwargs,
            gradient=method,
            qrce_qubits=3,
            qrce_layers=2,
            policy="all",
        )
        cm(*case.args, **case.kwargs).last_hidden_state.square().sum().backward()
        layer = next(iter(cm.quantum_layers.values()))
        grads[method] = (layer.angles.grad.clone(), layer.weights.grad.clone())
    for exact, shifted in zip(grads["autograd"], grads["parameter-shift"], strict=True):
        torch.testing.assert_close(shifted, exact, rtol=1e-5, atol=1e-5)


def test_two_layer_model_trains_on_the_shots_backend() -> None:
    case = tiny_bert()
    backend = ShotsBackend(shots=512, seed=0)
    cm = qgraph.compile(
        case.model, case.args, case.kwargs, backend=backend, qrce_qubits=3, policy="all"
    )
    assert "qaap by straight-through" in str(cm.report) and "qrce by parameter-shift" in str(
        cm.report
    )
    losses = train(cm, case, steps=12, lr=1e-2)
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses
    kinds = [r.kernel for r in backend.stats.records]
    # Per step: one job per QAAP call (2 layers), one for QRCE, one for its gradient.
    assert kinds.count("qaap") == 2 * 12 and kinds.count("qrce") == 12
    assert kinds.count("qrce-gradient") == 12
    assert all(r.shots == r.circuits * 512 for r in backend.stats.records)


def test_spsa_trains_on_the_shots_backend() -> None:
    case = tiny_bert()
    backend = ShotsBackend(shots=512, seed=1)
    cm = qgraph.compile(
        case.model,
        case.args,
        case.kwargs,
        backend=backend,
        gradient="spsa",
        qrce_qubits=3,
        policy="all",
    )
    losses = train(cm, case, steps=12, lr=1e-2)
    assert sum(losses[-3:]) / 3 < losses[0], losses
    # SPSA's two perturbed forwards go out as one extra QAAP job per layer and step.
    assert [r.kernel for r in backend.stats.records].count("qaap") == 2 * 2 * 12


@pytest.mark.parametrize("name", ["exact", "shots"])
def test_available_lists_backends_with_capabilities(name: str) -> None:
    capabilities = qgraph.backends.available()[name]
    assert capabilities.exact == (name == "exact")
    assert get_backend(name).name == name


def test_two_layer_model_trains_on_aer() -> None:
    from qgraph.backends.aer import AerBackend

    case = tiny_bert()
    backend = AerBackend(shots=512, seed=0)
    cm = qgraph.compile(
        case.model, case.args, case.kwargs, backend=backend, qrce_qubits=3, policy="all"
    )
    losses = train(cm, case, steps=12, lr=1e-2)
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses
    kinds = [r.kernel for r in backend.stats.records]
    assert kinds.count("qaap") == 2 * 12 and kinds.count("qrce") == 12


def test_exact_aer_matches_the_exact_backend_through_a_compiled_model() -> None:
    from qgraph.backends.aer import AerBackend

    case = tiny_bert()
    reference = qgraph.compile(case.model, case.args, case.kwargs, qrce_qubits=3, policy="all")
    aer = qgraph.compile(
        case.model,
        case.args,
        case.kwargs,
        backend=AerBackend(shots=None),
        qrce_qubits=3,
        policy="all",
    )
    with torch.no_grad():
        torch.testing.assert_close(
            aer(*case.args, **case.kwargs).last_hidden_state,
            reference(*case.args, **case.kwargs).last_hidden_state,
            rtol=1e-4,
            atol=1e-4,
        )


def test_one_forward_on_ibm_in_local_testing_mode() -> None:
    from qgraph.backends.ibm import IBMBackend

    case = hf_model("bert", layers=1, hidden=4, heads=2, vocab=12, batch=1, seq_len=2)
    backend = IBMBackend(device="fake_santiago", shots=256, seed=0)
    cm = qgraph.compile(
        case.model,
        case.args,
        case.kwargs,
        backend=backend,
        qrce_qubits=2,
        qrce_layers=1,
        policy="all",
    )
    out = cm(*case.args, **case.kwargs).last_hidden_state
    assert out.shape == (1, 2, 4) and torch.isfinite(out).all()
    assert [r.kernel for r in backend.stats.records] == ["qrce", "qaap"]


def test_use_backend_rebinds_every_graph_and_keeps_the_weights() -> None:
    case = tiny_bert()
    cm = qgraph.compile(
        case.model, case.args, case.kwargs, qrce_qubits=3, qrce_layers=2, policy="all"
    )
    cm.eval()
    with torch.no_grad():
        exact = cm(*case.args, **case.kwargs).last_hidden_state
    weights = {n: p.detach().clone() for n, p in cm.named_parameters()}
    shots = ShotsBackend(shots=64, seed=0)
    cm.use_backend(shots)
    assert cm.backend is shots and cm.report.backend.startswith("shots#")
    assert cm.gradients == {"qaap": "straight-through", "qrce": "parameter-shift"}
    with torch.no_grad():
        sampled = cm(*case.args, **case.kwargs).last_hidden_state
    assert shots.stats.jobs > 0 and not torch.allclose(sampled, exact, atol=1e-3)
    assert all(torch.equal(p, weights[n]) for n, p in cm.named_parameters())
    cm.use_backend("exact")
    with torch.no_grad():
        torch.testing.assert_close(cm(*case.args, **case.kwargs).last_hidden_state, exact)
    with pytest.raises(UnknownBackendError, match="unknown backend 'nowhere'"):
        cm.use_backend("nowhere")
