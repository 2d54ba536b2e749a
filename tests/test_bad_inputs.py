"""The catalogue of bad inputs: each gets its own error, of a stated type, naming the problem
and the fix, raised when the user passes it (under every policy), not later from inside.

Rows are data: (what is wrong, how it is passed, the error type, key words of the message).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import qgraph
from qgraph.backends.exact import ExactBackend
from qgraph.backends.faults import FaultyBackend
from qgraph.backends.frontend import BackendResultError, QAAPRows
from qgraph.backends.job_policy import JobPolicy, TransientJobError
from qgraph.backends.latency import LatencyBackend
from qgraph.backends.shots import ShotsBackend
from qgraph.cli import main as cli_main
from qgraph.errors import PolicyError, UnknownBackendError
from qgraph.models import ModelCase, encoder_model
from qgraph.scheduler import HybridScheduler


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
    ("negative fidelity", {"min_fidelity": -0.1}, qgraph.InputError, r"\[0, 1\]; got -0.1"),
    ("unknown frontend", {"frontend": "jit"}, qgraph.InputError, r"unknown frontend 'jit'"),
    ("unknown report device", {"report_devices": ("nope",)}, qgraph.InputError, r"'nope'"),
    ("unknown classical device", {"classical_device": "gpu9"}, qgraph.InputError, r"'gpu9'"),
    ("gradient for no kernel", {"gradient": {"attention": "spsa"}}, qgraph.InputError, r"'qaap'"),
    ("captures as string", {"max_captures": "16"}, qgraph.InputError, r"integer ≥ 1; got '16'"),
    ("policy as a number", {"policy": 3}, PolicyError, r"unknown policy 3; use 'auto'"),
    ("backend not a backend", {"backend": object()}, UnknownBackendError, r"not a qgraph backend"),
    (
        "job policy as a dict",
        {"job_policy": {"retries": 3}},
        qgraph.InputError,
        r"job_policy must be a JobPolicy .* got dict",
    ),
    (
        "statevector beyond memory",
        {"policy": "none", "qrce_qubits": 40},
        qgraph.InputError,
        r"qrce_qubits.*GiB",
    ),
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
    ("unknown fallback", lambda: JobPolicy(fallback="retry"), r"fallback must be one of"),  # type: ignore[arg-type]
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


@pytest.fixture(scope="module")
def compiled(tiny: ModelCase) -> qgraph.CompiledModule:
    return qgraph.compile(
        tiny.model, tiny.args, tiny.kwargs, policy="all", qrce_qubits=3, qrce_layers=1
    )


def _ids(case: ModelCase) -> torch.Tensor:
    return case.args[0]


def _mask(case: ModelCase) -> torch.Tensor:
    return case.kwargs["attention_mask"]


#: (case id, a call of the compiled tiny module, error type, regex of the message)
RUNTIME_CALLS: list[tuple[str, Callable[[Any, ModelCase], Any], type[Exception], str]] = [
    (
        "float ids",
        lambda cm, c: cm(_ids(c).float(), attention_mask=_mask(c)),
        qgraph.InputError,
        r"fails on the inputs of this call, .*scalar types",
    ),
    (
        "one-dimensional ids",
        lambda cm, c: cm(_ids(c)[0], attention_mask=_mask(c)[0]),
        qgraph.InputError,
        r"fails on the inputs of this call",
    ),
    (
        "mask shorter than the ids",
        lambda cm, c: cm(_ids(c), attention_mask=_mask(c)[:, :4]),
        qgraph.InputError,
        r"input_ids has shape \(2, 6\) but attention_mask has \(2, 4\): .*dimension 1 \(6 vs 4\)"
        r".*the same size",
    ),
    (
        "ids beyond the vocabulary",
        lambda cm, c: cm(_ids(c) + 100, attention_mask=_mask(c)),
        ValueError,
        r"token ids must lie in \[0, 50\); got max id",
    ),
    (
        "negative ids",
        lambda cm, c: cm(_ids(c) - 100, attention_mask=_mask(c)),
        ValueError,
        r"token ids must lie in \[0, 50\)",
    ),
    (
        "unknown keyword",
        lambda cm, c: cm(_ids(c), attention_mask=_mask(c), bogus=1),
        qgraph.InputError,
        r"does not fit EncoderClassifier.forward.*unexpected keyword argument 'bogus'",
    ),
    (
        "missing input ids",
        lambda cm, c: cm(attention_mask=_mask(c)),
        qgraph.InputError,
        r"missing a required argument: 'input_ids'",
    ),
    (
        "no micro-batches",
        lambda cm, c: HybridScheduler(cm, microbatches=0),
        ValueError,
        r"microbatches must be an integer ≥ 1; got 0",
    ),
    (
        "scheduler on a plain model",
        lambda cm, c: HybridScheduler(c.model),
        TypeError,
        r"runs a qgraph CompiledModule",
    ),
    (
        "micro-batches that do not divide the batch",
        lambda cm, c: HybridScheduler(cm, microbatches=5).run(_ids(c), attention_mask=_mask(c)),
        ValueError,
        r"microbatches=5 does not divide the batch size 2.*one of \[1, 2\]",
    ),
    (
        "switch to an unknown backend",
        lambda cm, c: cm.use_backend("nowhere"),
        UnknownBackendError,
        r"unknown backend 'nowhere'; known backends",
    ),
    (
        "a gradient the new backend lacks",
        lambda cm, c: cm.use_backend("shots", gradient="autograd"),
        qgraph.InputError,
        r"cannot compute gradients by 'autograd'",
    ),
    ("explain a site out of range", lambda cm, c: qgraph.explain(cm, 99), qgraph.InputError, r"99"),
    (
        "explain an unknown site",
        lambda cm, c: qgraph.explain(cm, "nope"),
        qgraph.InputError,
        r"no site 'nope'; sites: \[",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "message"), [pytest.param(f, e, m, id=i) for i, f, e, m in RUNTIME_CALLS]
)
def test_bad_runtime_inputs(
    compiled: qgraph.CompiledModule,
    tiny: ModelCase,
    call: Callable[[Any, ModelCase], Any],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        call(compiled, tiny)


def _saved(cm: qgraph.CompiledModule, folder: Path) -> Path:
    path = folder / "cm.pt"
    qgraph.save(cm, path)
    return path


def _write(path: Path, content: Any) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    return path


#: (case id, a function of (compiled module, tiny case, an empty folder), type, message)
STATE_AND_EXPORT: list[tuple[str, Callable[[Any, ModelCase, Path], Any], type[Exception], str]] = [
    (
        "load a missing file",
        lambda cm, c, d: qgraph.load(d / "nope.pt", c.model),
        qgraph.InputError,
        r"no file .*nope\.pt; pass the path qgraph\.save wrote",
    ),
    (
        "load a truncated file",
        lambda cm, c, d: qgraph.load(_write(d / "junk.pt", b"junk"), c.model),
        qgraph.InputError,
        r"junk\.pt is not a file qgraph\.save wrote \(torch\.load failed",
    ),
    (
        "load a plain checkpoint",
        lambda cm, c, d: qgraph.load(_write(d / "other.pt", {"format": "x"}), c.model),
        qgraph.InputError,
        r"was not written by qgraph\.save .*torch\.load",
    ),
    (
        "save a plain model",
        lambda cm, c, d: qgraph.save(c.model, d / "m.pt"),
        qgraph.InputError,
        r"takes the CompiledModule .*got EncoderClassifier",
    ),
    (
        "load into another class",
        lambda cm, c, d: qgraph.load(_saved(cm, d), torch.nn.Linear(2, 2)),
        qgraph.InputError,
        r"holds a compiled .*EncoderClassifier; got a .*Linear",
    ),
    (
        "load with an unknown option",
        lambda cm, c, d: qgraph.load(_saved(cm, d), c.model, bogus=1),
        qgraph.InputError,
        r"unknown compile option\(s\) \['bogus'\]",
    ),
    (
        "load without the configured backend",
        lambda cm, c, d: qgraph.load(
            _saved(
                qgraph.compile(c.model, c.args, c.kwargs, policy="none", backend=ShotsBackend()),
                d,
            ),
            c.model,
        ),
        qgraph.InputError,
        r"configured backend instance.*backend=ShotsBackend",
    ),
    (
        "a second job policy on one backend",
        lambda cm, c, d: [
            qgraph.compile(c.model, c.args, c.kwargs, backend=shared, job_policy=policy)
            for shared in [ShotsBackend()]
            for policy in (JobPolicy(retries=1), JobPolicy(retries=2))
        ],
        qgraph.InputError,
        r"already runs under JobPolicy\(.*retries=1.*own backend instance",
    ),
    (
        "export into a non-empty folder",
        lambda cm, c, d: qgraph.export_onnx(cm, c.args, _saved(cm, d).parent, c.kwargs),
        qgraph.InputError,
        r"is not empty \(1 entries, e\.g\. 'cm\.pt'\).*overwrite=True",
    ),
    (
        "export onto a file",
        lambda cm, c, d: qgraph.export_onnx(cm, c.args, _saved(cm, d), c.kwargs),
        qgraph.InputError,
        r"exists and is not a folder",
    ),
    (
        "export where no folder can be made",
        lambda cm, c, d: qgraph.export_onnx(cm, c.args, "/proc/qgraph-out", c.kwargs),
        qgraph.InputError,
        r"cannot create out_dir /proc/qgraph-out",
    ),
    (
        "export a plain model",
        lambda cm, c, d: qgraph.export_onnx(c.model, c.args, d, c.kwargs),
        qgraph.InputError,
        r"export_onnx takes the CompiledModule",
    ),
]


@pytest.mark.parametrize(
    ("act", "error", "message"), [pytest.param(f, e, m, id=i) for i, f, e, m in STATE_AND_EXPORT]
)
def test_bad_state_and_export(
    compiled: qgraph.CompiledModule,
    tiny: ModelCase,
    tmp_path: Path,
    act: Callable[[Any, ModelCase, Path], Any],
    error: type[Exception],
    message: str,
) -> None:
    pytest.importorskip("onnx")
    with pytest.raises(error, match=message):
        act(compiled, tiny, tmp_path)


class _Transposed(ExactBackend):
    def qaap_rows(self, keys: Any, queries: Any, keep: Any, site: str) -> QAAPRows:
        rows = super().qaap_rows(keys, queries, keep, site)
        return QAAPRows(rows.scores.mT.contiguous(), rows.scale)


class _NaNScores(ExactBackend):
    def qaap_rows(self, keys: Any, queries: Any, keep: Any, site: str) -> QAAPRows:
        rows = super().qaap_rows(keys, queries, keep, site)
        return QAAPRows(torch.full_like(rows.scores, float("nan")), rows.scale)


class _OutOfRange(ExactBackend):
    def qrce_rows(self, angles: Any, weights: Any, structure: Any, site: str) -> torch.Tensor:
        return 2.0 * super().qrce_rows(angles, weights, structure, site) + 3.0


class _Lost(ExactBackend):
    def qaap_rows(self, keys: Any, queries: Any, keep: Any, site: str) -> QAAPRows:
        raise TransientJobError("the queue dropped the job")


def _attention(backend: Any) -> Any:
    backend.job_policy = JobPolicy(retries=1, backoff_s=0.0)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 3, 4, generator=g) for _ in range(3))
    return backend.qaap(q, k[..., :2, :], v[..., :2, :], None, False, None, 0.0, "L0")


def _embedding(backend: Any) -> Any:
    from qgraph.kernels.qrce import QRCEStructure

    structure = QRCEStructure.from_seed(3, 1, 0)
    table, weights = torch.rand(5, 3), torch.rand(1, 3)
    return backend.qrce(torch.tensor([[0, 1, 4]]), table, weights, structure, "E0")


#: (case id, what a misbehaving backend is asked, error type, regex of the message)
FAULTS: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    (
        "transposed scores",
        lambda: _attention(_Transposed()),
        BackendResultError,
        r"'exact' returned QAAP scores with shape \(1, 2, 2, 3\) for site 'L0'; expected",
    ),
    (
        "NaN scores",
        lambda: _attention(_NaNScores()),
        BackendResultError,
        r"negative or NaN values for site 'L0'",
    ),
    (
        "features out of range",
        lambda: _embedding(_OutOfRange()),
        BackendResultError,
        r"QRCE features with values outside \[−1, 1\] or NaN for site 'E0'",
    ),
    (
        "a job lost every time",
        lambda: _attention(_Lost()),
        qgraph.JobFailedError,
        r"the qaap job of site 'L0' failed transiently 2 times: .*dropped.*fallback=",
    ),
    (
        "shots beyond float precision",
        lambda: ShotsBackend(shots=2**53),
        ValueError,
        r"2\*\*53|2\^53|9007199254740992",
    ),
]


@pytest.mark.parametrize(
    ("act", "error", "message"), [pytest.param(f, e, m, id=i) for i, f, e, m in FAULTS]
)
def test_misbehaving_backends(act: Callable[[], Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        act()


#: (case id, command line, what the one-line error on stderr says); the exit status is 2
COMMAND_LINE_INPUTS: list[tuple[str, list[str], str]] = [
    ("unknown model spec", ["compile", "bogus:1"], r"unknown model spec 'bogus:1'; use minilm"),
    ("cli unknown backend", ["compile", "encoder:1x16", "--backend", "nowhere"], r"'nowhere'"),
    ("cli unknown device", ["compile", "encoder:1x16", "--device", "ibm_nope"], r"'ibm_nope'"),
    ("malformed encoder spec", ["compile", "encoder:axb"], r"must look like encoder:6x64"),
    ("unknown architecture", ["compile", "hf:nosuch"], r"unknown architecture 'nosuch'"),
    ("missing factory module", ["compile", "module:nosuch:f"], r"cannot load 'nosuch:f'"),
    ("seeds not integers", ["reproduce", "--seeds", "a,b"], r"comma-separated integers"),
]


@pytest.mark.parametrize(
    ("argv", "message"), [pytest.param(a, m, id=i) for i, a, m in COMMAND_LINE_INPUTS]
)
def test_bad_command_line_inputs_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err


def test_every_row_is_a_distinct_case() -> None:
    ids = [
        row[0]
        for table in (
            COMPILE_OPTIONS,
            EXAMPLES,
            BACKENDS,
            COMMAND_LINES,
            RUNTIME_CALLS,
            STATE_AND_EXPORT,
            FAULTS,
            COMMAND_LINE_INPUTS,
        )
        for row in table
    ]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 60  # the catalogue size
