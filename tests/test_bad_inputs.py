"""The catalogue of bad inputs: each gets its own error, of a stated type, naming the problem
and the fix, raised when the user passes it (under every policy), not later from inside.

Rows are data: (what is wrong, how it is passed, the error type, key words of the message).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import qgraph
from qgraph.backends.faults import FaultyBackend
from qgraph.backends.job_policy import JobPolicy
from qgraph.backends.latency import LatencyBackend
from qgraph.backends.shots import ShotsBackend
from qgraph.cli import main as cli_main
from qgraph.errors import PolicyError, UnknownBackendError
from qgraph.models import ModelCase, encoder_model


@pytest.fixture(scope="module")
def tiny() -> ModelCase:
    return encoder_model(layers=1, d_model=16, heads=2, vocab=50, batch=2, seq_len=6)


#: (case id, compile keyword options, error type, regex of the message)
COMPILE_OPTIONS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    (
        "precision nan",
        {"policy": "all", "precision": float("nan")},
        qgraph.InputError,
        r"precision .* must be a number in \(0, 1\]; got nan",
    ),
    ("precision string", {"precision": "0.1"}, qgraph.InputError, r"in \(0, 1\]; got '0.1'"),
    ("precision zero", {"policy": "none", "precision": 0.0}, qgraph.InputError, r"got 0.0"),
    ("precision above one", {"policy": "all", "precision": 2}, qgraph.InputError, r"got 2"),
    ("seed string", {"policy": "all", "seed": "a"}, qgraph.InputError, r"seed must be an int"),
    ("seed bool", {"policy": "all", "seed": True}, qgraph.InputError, r"seed must be an int"),
    (
        "tables as one string",
        {"embedding_tables": "word"},
        PolicyError,
        r"sequence of table names, e\.g\. \('word',\).*letter by letter",
    ),
    ("unknown table", {"embedding_tables": ("wrd",)}, PolicyError, r"unknown embedding table"),
    (
        "one qrce qubit",
        {"policy": "all", "qrce_qubits": 1},
        qgraph.InputError,
        r"qrce_qubits must be an integer ≥ 2",
    ),
    (
        "no qrce layers",
        {"policy": "all", "qrce_layers": 0},
        qgraph.InputError,
        r"qrce_layers must be an integer ≥ 1",
    ),
    ("unknown qrce init", {"qrce_init": "zeros"}, qgraph.InputError, r"'distill' or 'random'"),
    ("no captures", {"max_captures": 0}, qgraph.InputError, r"max_captures must be .* ≥ 1"),
    ("unknown policy", {"policy": "some"}, PolicyError, r"unknown policy 'some'"),
    ("unknown backend", {"backend": "nowhere"}, UnknownBackendError, r"nowhere"),
    ("unknown gradient", {"gradient": "bogus"}, qgraph.InputError, r"unknown gradient method"),
    ("gradient for the wrong kernel", {"gradient": {"qrce": "spsa"}}, qgraph.InputError, r"spsa"),
    ("unknown device", {"device": "ibm_condor"}, qgraph.InputError, r"unknown device"),
    ("classical decision device", {"device": "cpu_local"}, qgraph.InputError, r"is classical"),
    ("fidelity above one", {"min_fidelity": 1.5}, qgraph.InputError, r"min_fidelity"),
]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [pytest.param(o, e, m, id=i) for i, o, e, m in COMPILE_OPTIONS],
)
def test_bad_compile_options(
    tiny: ModelCase, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        qgraph.compile(tiny.model, tiny.args, tiny.kwargs, **options)


#: (case id, a function of the tiny case giving (args, kwargs), regex of the InputError)
EXAMPLES: list[tuple[str, Callable[[ModelCase], tuple[Any, Any]], str]] = [
    ("empty batch", lambda c: ((c.args[0][:0],), {}), r"empty tensor \(shape \(0, 6\)\)"),
    ("empty sequence", lambda c: ((c.args[0][:, :0],), {}), r"empty tensor .*sequence length"),
    ("a bare tensor", lambda c: (c.args[0], {}), r"must be a tuple .*\(tensor,\)"),
    ("kwargs not a dict", lambda c: (c.args, [("mask", None)]), r"example_kwargs must be a dict"),
    ("an unknown keyword", lambda c: (c.args, {"bogus": 1}), r"do not fit .*forward"),
]


@pytest.mark.parametrize(("make", "message"), [pytest.param(f, m, id=i) for i, f, m in EXAMPLES])
def test_bad_examples(
    tiny: ModelCase, make: Callable[[ModelCase], tuple[Any, Any]], message: str
) -> None:
    args, kwargs = make(tiny)
    with pytest.raises(qgraph.InputError, match=message):
        qgraph.compile(tiny.model, args, kwargs, policy="none")


def test_a_policy_answer_that_is_not_a_bool_names_its_type(tiny: ModelCase) -> None:
    with pytest.raises(PolicyError, match=r"returned str \('yes'\) .* must return True"):
        qgraph.compile(tiny.model, tiny.args, tiny.kwargs, policy=lambda site: "yes")
    with pytest.raises(PolicyError, match=r"returned ndarray"):
        qgraph.compile(tiny.model, tiny.args, tiny.kwargs, policy=lambda site: np.array([1]))


def test_a_numpy_bool_from_a_policy_is_a_bool(tiny: ModelCase) -> None:
    cm = qgraph.compile(tiny.model, tiny.args, tiny.kwargs, policy=lambda site: np.float32(1.0) > 0)
    assert cm.report.quantum_sites


#: (case id, a backend constructor call, regex of the ValueError)
BACKENDS: list[tuple[str, Callable[[], Any], str]] = [
    ("no shots", lambda: ShotsBackend(shots=0), r"shots must be >= 1"),
    ("shots as float", lambda: ShotsBackend(shots=10.0), r"shots must be an int"),  # type: ignore[arg-type]
    ("seed as string", lambda: ShotsBackend(seed="a"), r"seed must be an int"),  # type: ignore[arg-type]
    ("readout error 0.5", lambda: ShotsBackend(readout_error=0.5), r"\[0, 0\.5\)"),
    ("negative latency", lambda: LatencyBackend("exact", -1.0), r"finite number ≥ 0"),
    ("infinite latency", lambda: LatencyBackend("exact", float("inf")), r"finite number ≥ 0"),
    ("zero timeout", lambda: JobPolicy(timeout_s=0), r"timeout_s must be .* > 0 or None"),
    ("negative retries", lambda: JobPolicy(retries=-1), r"retries must be an int ≥ 0"),
    ("retries as float", lambda: JobPolicy(retries=1.5), r"retries must be an int"),  # type: ignore[arg-type]
    ("nan backoff", lambda: JobPolicy(backoff_s=float("nan")), r"backoff_s must be a finite"),
    ("unknown fallback", lambda: JobPolicy(fallback="classical"), r"fallback must be one of"),  # type: ignore[arg-type]
    ("certain failure", lambda: FaultyBackend(ShotsBackend(), 1.0), r"probability in \[0, 1\)"),
    ("negative hang", lambda: FaultyBackend(ShotsBackend(), 0.1, hang_s=-1), r"hang_s must be"),
]


@pytest.mark.parametrize(("make", "message"), [pytest.param(f, m, id=i) for i, f, m in BACKENDS])
def test_bad_backend_settings(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


#: (case id, command line, what the usage error says)
COMMAND_LINES: list[tuple[str, list[str], str]] = [
    ("negative length", ["compile", "encoder:1x16", "--seq-len", "-3"], r"≥ 1; got -3"),
    ("zero batch", ["compile", "encoder:1x16", "--batch", "0"], r"≥ 1; got 0"),
    ("length not a number", ["compile", "encoder:1x16", "--seq-len", "ten"], r"got 'ten'"),
    ("cli precision above one", ["compile", "encoder:1x16", "--precision", "2"], r"\(0, 1\]"),
    ("cli precision nan", ["compile", "encoder:1x16", "--precision", "nan"], r"\(0, 1\]"),
]


@pytest.mark.parametrize(
    ("argv", "message"), [pytest.param(a, m, id=i) for i, a, m in COMMAND_LINES]
)
def test_bad_command_lines_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err


def test_every_row_is_a_distinct_case() -> None:
    ids = [
        row[0] for table in (COMPILE_OPTIONS, EXAMPLES, BACKENDS, COMMAND_LINES) for row in table
    ]
    assert len(ids) == len(set(ids))
