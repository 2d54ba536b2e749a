"""Every bad input gets a specific, tested error message."""

from __future__ import annotations

import pytest
import torch

import qgraph
from panel import PANEL
from qgraph.backends import available, get_backend


class DataDependent(torch.nn.Module):
    """Branches on a tensor's value: neither torch.export nor symbolic_trace can capture it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x - 1


@pytest.fixture(scope="module")
def bert():
    return PANEL["bert"]()


def test_uncapturable_model_names_the_line_and_the_fix() -> None:
    with pytest.raises(qgraph.CaptureError) as info:
        qgraph.compile(DataDependent(), (torch.randn(3),), policy="all")
    message = str(info.value)
    assert "torch.export could not capture DataDependent" in message
    assert "test_errors.py" in message and "if x.sum() > 0" in message
    assert "fix:" in message and "torch.cond" in message


def test_not_a_module() -> None:
    with pytest.raises(qgraph.InputError, match=r"takes a torch\.nn\.Module; got function"):
        qgraph.compile(lambda x: x, (torch.randn(2),), policy="all")


def test_example_inputs_not_a_tuple(bert) -> None:
    with pytest.raises(qgraph.InputError, match=r"must be a tuple .* Wrap a single tensor"):
        qgraph.compile(bert.model, bert.args[0], policy="all")


def test_example_inputs_the_model_does_not_take() -> None:
    encoder = PANEL["encoder"]()
    with pytest.raises(qgraph.InputError, match=r"do not fit EncoderClassifier\.forward"):
        qgraph.compile(encoder.model, encoder.args, {"no_such_argument": 1}, policy="all")


def test_constant_inputs_in_var_keyword_keep_sizes_dynamic(bert) -> None:
    kwargs = {**bert.kwargs, "output_hidden_states": False}  # lands in BertModel's **kwargs
    cm = qgraph.compile(bert.model, bert.args, kwargs, policy="all")
    ids, mask = torch.randint(0, 1000, (3, 5)), torch.ones(3, 5, dtype=torch.long)
    assert cm(ids, attention_mask=mask, output_hidden_states=False).last_hidden_state.shape == (
        3,
        5,
        64,
    )
    assert len(cm.captures) == 1  # the constant reached forward by a hook, sizes stayed dynamic
    hidden = cm(ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert len(hidden) == bert.layers + 1  # another value of the constant: its own capture
    assert len(cm.captures) == 2


def test_example_inputs_the_model_fails_on(bert) -> None:
    bad_ids = torch.full((2, 8), 10_000)  # beyond the 1,000-token vocabulary
    with pytest.raises(qgraph.InputError, match="itself fails on the example inputs"):
        qgraph.compile(bert.model, (bad_ids,), frontend="export", policy="all")


def test_unknown_backend_lists_the_known_ones(bert) -> None:
    with pytest.raises(
        qgraph.UnknownBackendError, match=r"unknown backend 'qpu'; known backends: exact"
    ):
        qgraph.compile(bert.model, bert.args, bert.kwargs, backend="qpu", policy="all")
    assert "exact" in available()
    assert get_backend("exact").capabilities.differentiable


def test_unknown_policy(bert) -> None:
    with pytest.raises(qgraph.PolicyError, match="unknown policy 'most'"):
        qgraph.compile(bert.model, bert.args, bert.kwargs, policy="most")


def test_auto_policy_with_an_unknown_device_lists_the_known_ones(bert) -> None:
    with pytest.raises(
        qgraph.InputError, match=r"unknown device 'ibm_condor'; known devices: .*ibm_heron_r2"
    ):
        qgraph.compile(bert.model, bert.args, bert.kwargs, device="ibm_condor")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("precision", 0.0, r"precision is the target standard error .* in \(0, 1\]; got 0.0"),
        ("precision", "0.1", r"must be a number in \(0, 1\]; got '0.1'"),
        ("precision", float("nan"), r"must be a number in \(0, 1\]; got nan"),
        ("min_fidelity", 1.5, r"min_fidelity must lie in \[0, 1\]"),
        ("device", "cpu_local", "is classical; name a quantum device"),
        ("classical_device", "ibm_heron_r2", "is not classical"),
    ],
)
def test_bad_cost_options(bert, option: str, value: object, message: str) -> None:
    with pytest.raises(qgraph.InputError, match=message):
        qgraph.compile(bert.model, bert.args, bert.kwargs, **{option: value})


def test_precision_is_checked_under_every_policy(bert) -> None:
    # the ONNX export writes it into the quantum nodes' attributes, costed or not
    with pytest.raises(qgraph.InputError, match=r"must be a number in \(0, 1\]; got nan"):
        qgraph.compile(bert.model, bert.args, bert.kwargs, policy="all", precision=float("nan"))


def test_policy_callable_must_return_bool(bert) -> None:
    with pytest.raises(qgraph.PolicyError, match=r"returned str .* must return True"):
        qgraph.compile(bert.model, bert.args, bert.kwargs, policy=lambda site: "yes")


def test_unknown_embedding_table(bert) -> None:
    with pytest.raises(qgraph.PolicyError, match="unknown embedding table"):
        qgraph.compile(
            bert.model, bert.args, bert.kwargs, embedding_tables=("words",), policy="all"
        )


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("qrce_qubits", 1, "qrce_qubits must be an integer ≥ 2"),
        ("qrce_layers", 0, "qrce_layers must be an integer ≥ 1"),
        ("qrce_init", "zeros", "qrce_init must be 'distill' or 'random'"),
        ("frontend", "jit", "unknown frontend 'jit'"),
    ],
)
def test_bad_options(bert, option: str, value: object, message: str) -> None:
    with pytest.raises(qgraph.InputError, match=message):
        qgraph.compile(bert.model, bert.args, bert.kwargs, **{option: value}, policy="all")
