"""ONNX export: the whole model, the partitioned form, the manifest checks and both runners."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

import qgraph
import qgraph.onnx as qonnx
from panel import main_output
from qgraph.models import ModelCase, example_ids, hf_model, minilm
from qgraph.onnx.manifest import MANIFEST_NAME, ManifestError

TOLERANCE = 1e-4  # the bound: partitioned ONNX vs PyTorch on the exact backend


def _export(case: ModelCase, folder: Path, **compile_options: Any) -> tuple[Any, qonnx.Manifest]:
    options = {"policy": "all", **compile_options}
    cm = qgraph.compile(case.model, case.args, case.kwargs, **options)
    manifest = qonnx.export_onnx(cm, case.args, folder, case.kwargs, progress=False)
    return cm, manifest


def _feeds(case: ModelCase) -> dict[str, torch.Tensor]:
    return {"input_ids": case.args[0], "attention_mask": case.kwargs["attention_mask"]}


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelCase, Any, Path]:
    case = hf_model("bert")
    folder = tmp_path_factory.mktemp("bert_export")
    cm, _ = _export(case, folder)
    return case, cm, folder


@pytest.fixture
def tampered(bert: tuple[ModelCase, Any, Path], tmp_path: Path) -> Path:
    """A private copy of the BERT export to damage."""
    folder = tmp_path / "copy"
    shutil.copytree(bert[2], folder)
    return folder


# ------------------------------------------------------------------ equivalence with PyTorch


@pytest.mark.parametrize(
    "make",
    [lambda: hf_model("bert"), lambda: hf_model("gpt2"), lambda: minilm()],
    ids=["bert", "gpt2", "minilm"],
)
def test_partitioned_run_matches_pytorch(make: Any, tmp_path: Path) -> None:
    case = make()
    cm, manifest = _export(case, tmp_path)
    expected = main_output(cm(*case.args, **case.kwargs)).detach().numpy()
    outputs = qonnx.run(tmp_path, _feeds(case), backend="exact")
    assert list(outputs) == [spec.name for spec in manifest.outputs]
    assert next(iter(outputs)) == "last_hidden_state"
    np.testing.assert_allclose(outputs["last_hidden_state"], expected, atol=TOLERANCE, rtol=0)
    # the export verified itself the same way and recorded it
    assert manifest.verification is not None
    assert manifest.verification["max_abs_diff"] < TOLERANCE
    # the whole model in one onnxruntime session (onnxruntime-extensions ops) agrees too
    whole = qonnx.run_model(tmp_path / "model.onnx", _feeds(case), backend="exact")
    np.testing.assert_allclose(whole["last_hidden_state"], expected, atol=TOLERANCE, rtol=0)


def test_dynamic_sizes_run_at_another_batch_and_length(bert: tuple[ModelCase, Any, Path]) -> None:
    case, cm, folder = bert
    ids, mask = example_ids(case.vocab_size, batch=3, seq_len=11, seed=7)
    expected = main_output(cm(ids, attention_mask=mask)).detach().numpy()
    outputs = qonnx.run(folder, [ids, mask])
    np.testing.assert_allclose(outputs["last_hidden_state"], expected, atol=TOLERANCE, rtol=0)


def test_only_chosen_sites_become_quantum_partitions(tmp_path: Path) -> None:
    case = hf_model("bert")
    cm, manifest = _export(case, tmp_path, policy=lambda s: s.path.startswith("encoder.layer.1"))
    assert [p.site for p in manifest.partitions if p.kind == "quantum"] == [
        "encoder.layer.1.attention.self"
    ]
    assert [p.id for p in manifest.order()] == ["c0", "q0", "c1"]
    expected = main_output(cm(*case.args, **case.kwargs)).detach().numpy()
    outputs = qonnx.run(tmp_path, _feeds(case))
    np.testing.assert_allclose(outputs["last_hidden_state"], expected, atol=TOLERANCE, rtol=0)


def test_no_offload_exports_one_classical_partition(tmp_path: Path) -> None:
    case = hf_model("bert", layers=1)
    _cm, manifest = _export(case, tmp_path, policy="none")
    assert [(p.id, p.kind) for p in manifest.partitions] == [("c0", "classical")]
    assert manifest.edges == []
    expected = main_output(case.model(*case.args, **case.kwargs)).detach().numpy()
    outputs = qonnx.run(tmp_path, _feeds(case))
    np.testing.assert_allclose(outputs["last_hidden_state"], expected, atol=TOLERANCE, rtol=0)


def test_quantum_partitions_run_on_a_sampling_backend(bert: tuple[ModelCase, Any, Path]) -> None:
    case, _cm, folder = bert
    from qgraph.backends.shots import ShotsBackend

    sampler = ShotsBackend(shots=256, seed=3)
    outputs = qonnx.run(folder, _feeds(case), backend=sampler)
    exact = qonnx.run(folder, _feeds(case), backend="exact")
    assert sampler.stats.jobs == 3  # one QRCE and two QAAP partitions, one job each
    difference = np.abs(outputs["last_hidden_state"] - exact["last_hidden_state"]).max()
    assert 0 < difference < 5  # sampled, so not equal, but the same model


# ------------------------------------------------------------------ what the files hold


def test_whole_model_is_valid_onnx_with_review_attributes(
    bert: tuple[ModelCase, Any, Path],
) -> None:
    _case, cm, folder = bert
    model = onnx.load(str(folder / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    quantum = [n for n in model.graph.node if n.domain == qonnx.REVIEW_DOMAIN]
    assert [n.op_type for n in quantum] == ["QRCE", "QAAP", "QAAP"]
    manifest = qonnx.load_manifest(folder)
    by_site = {p.site: p for p in manifest.partitions if p.kind == "quantum"}
    for node in quantum:
        attributes = qonnx.schemas.attributes_of(node)
        site = cm.report_site(attributes["site_key"])
        assert attributes["kernel"] == site.op
        assert attributes["path"] == site.path
        assert attributes["partition"] == by_site[site.key].id
        assert attributes["qubits"] == by_site[site.key].qubits > 0
        assert attributes["backend"] == "exact"
        assert attributes["precision"] == pytest.approx(cm.precision)
        assert attributes["qasm"].startswith("OPENQASM 3")
    qasm3 = pytest.importorskip("qiskit_qasm3_import")  # noqa: F841
    from qiskit import qasm3 as qiskit_qasm3

    circuit = qiskit_qasm3.loads(qonnx.schemas.attributes_of(quantum[1])["qasm"])
    assert circuit.num_qubits == qonnx.schemas.attributes_of(quantum[1])["qubits"]


def test_whole_model_checks_in_a_fresh_process(bert: tuple[ModelCase, Any, Path]) -> None:
    code = (
        "import sys, onnx, qgraph.onnx; "
        "onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True); print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(bert[2] / "model.onnx")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_manifest_describes_the_partition_dag(bert: tuple[ModelCase, Any, Path]) -> None:
    _case, cm, folder = bert
    data = json.loads((folder / MANIFEST_NAME).read_text())
    assert data["format"] == "qgraph.partitioned-onnx"
    assert data["versions"]["qgraph"] == qgraph.__version__
    assert data["versions"]["torch"] == torch.__version__
    manifest = qonnx.load_manifest(folder)
    # BERT with every site offloaded: word-embedding QRCE, then one QAAP per layer
    assert [p.id for p in manifest.order()] == ["c0", "q0", "c1", "q1", "c2", "q2", "c3"]
    quantum = [p for p in manifest.partitions if p.kind == "quantum"]
    assert [p.kernel for p in quantum] == ["qrce", "qaap", "qaap"]
    assert all(p.backend == "exact" and p.nodes == 1 for p in quantum)
    assert {p.site for p in quantum} == {s.key for s in cm.report.quantum_sites}
    assert [t.name for t in manifest.inputs] == ["input_ids", "attention_mask"]
    assert [t.name for t in manifest.outputs] == ["last_hidden_state", "pooler_output"]
    hidden = manifest.tensor("last_hidden_state")
    assert hidden.dtype == "float32" and hidden.shape[-1] == 64 and isinstance(hidden.shape[0], str)
    for source, target, tensors in manifest.edges:
        for name in tensors:
            assert name in manifest.partition(source).outputs
            assert name in manifest.partition(target).inputs
            assert manifest.tensor(name).dtype in ("float32", "int64", "bool")


def test_each_classical_partition_runs_alone_in_onnxruntime(
    bert: tuple[ModelCase, Any, Path],
) -> None:
    import onnxruntime as ort

    _, _, folder = bert
    manifest = qonnx.load_manifest(folder)
    for spec in manifest.partitions:
        model = onnx.load(str(folder / spec.file))
        if spec.kind == "classical":
            assert all(o.domain != qonnx.REVIEW_DOMAIN for o in model.opset_import)
            session = ort.InferenceSession(str(folder / spec.file))
            assert [i.name for i in session.get_inputs()] == spec.inputs
        else:
            assert [n.domain for n in model.graph.node] == [qonnx.REVIEW_DOMAIN]


def test_runnable_model_uses_the_contrib_domain(bert: tuple[ModelCase, Any, Path]) -> None:
    runnable = qonnx.runnable_model(bert[2] / "model.onnx", backend="exact")
    quantum = [n for n in runnable.graph.node if n.domain == qonnx.RUNNABLE_DOMAIN]
    assert [n.op_type for n in quantum] == ["QRCE", "QAAPMask", "QAAPMask"]
    assert not [o for o in runnable.opset_import if o.domain == qonnx.REVIEW_DOMAIN]
    with pytest.raises(qgraph.UnknownBackendError, match="unknown backend 'nope'"):
        qonnx.runnable_model(bert[2] / "model.onnx", backend="nope")


# ------------------------------------------------------------------ a damaged export


def _edit_manifest(folder: Path, edit: Any) -> None:
    path = folder / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _expect_refusal(folder: Path, match: str, feeds: dict[str, Any]) -> None:
    """The damage is found by the manifest check, before any partition runs."""
    from qgraph.backends.exact import ExactBackend

    backend = ExactBackend()
    with pytest.raises(ManifestError, match=match):
        qonnx.run(folder, feeds, backend=backend)
    assert backend.stats.jobs == 0 and not backend.stats.per_site


def test_missing_file_is_refused(tampered: Path, bert: tuple[ModelCase, Any, Path]) -> None:
    (tampered / "c1.onnx").unlink()
    _expect_refusal(tampered, r"c1: file c1.onnx is missing", _feeds(bert[0]))


def test_changed_file_is_refused(tampered: Path, bert: tuple[ModelCase, Any, Path]) -> None:
    with (tampered / "q1.onnx").open("ab") as handle:
        handle.write(b"\0")
    _expect_refusal(tampered, r"q1: q1.onnx has SHA-256 .* changed after export", _feeds(bert[0]))


def test_cycle_is_refused(tampered: Path, bert: tuple[ModelCase, Any, Path]) -> None:
    def add_back_edge(data: dict[str, Any]) -> None:
        c0 = next(p for p in data["partitions"] if p["id"] == "c0")
        c1 = next(p for p in data["partitions"] if p["id"] == "c1")
        c0["inputs"].append(c1["outputs"][0])
        data["edges"].append({"from": "c1", "to": "c0", "tensors": [c1["outputs"][0]]})

    _edit_manifest(tampered, add_back_edge)
    _expect_refusal(tampered, r"cycle \(", _feeds(bert[0]))


def test_shape_mismatch_is_refused(tampered: Path, bert: tuple[ModelCase, Any, Path]) -> None:
    def widen(data: dict[str, Any]) -> None:
        data["boundary"][0]["shape"][-1] = 12345

    _edit_manifest(tampered, widen)
    _expect_refusal(tampered, r"the manifest says .*12345.* but .* declares", _feeds(bert[0]))


def test_edges_that_disagree_are_refused(tampered: Path, bert: tuple[ModelCase, Any, Path]) -> None:
    _edit_manifest(tampered, lambda data: data["edges"].pop())
    _expect_refusal(tampered, r"edges disagree", _feeds(bert[0]))


def test_dangling_input_is_refused(tampered: Path, bert: tuple[ModelCase, Any, Path]) -> None:
    _edit_manifest(tampered, lambda data: data["partitions"][-1]["inputs"].append("ghost"))
    _expect_refusal(tampered, r"reads 'ghost', which no partition produces", _feeds(bert[0]))


def test_malformed_manifests_are_refused(tampered: Path, bert: tuple[ModelCase, Any, Path]) -> None:
    feeds = _feeds(bert[0])
    (tampered / MANIFEST_NAME).write_text("{not json")
    _expect_refusal(tampered, r"not valid JSON", feeds)
    (tampered / MANIFEST_NAME).write_text(json.dumps({"format": "something else"}))
    _expect_refusal(tampered, r"not a qgraph manifest", feeds)
    (tampered / MANIFEST_NAME).write_text(
        json.dumps({"format": "qgraph.partitioned-onnx", "format_version": 1})
    )
    _expect_refusal(tampered, r"malformed entry", feeds)
    (tampered / MANIFEST_NAME).unlink()
    _expect_refusal(tampered, r"has no manifest.json", feeds)


def test_file_outside_the_folder_is_refused(
    tampered: Path, bert: tuple[ModelCase, Any, Path]
) -> None:
    _edit_manifest(tampered, lambda data: data["partitions"][0].update(file="../c0.onnx"))
    _expect_refusal(tampered, r"points outside", _feeds(bert[0]))


def test_reordered_model_inputs_are_refused(
    tampered: Path, bert: tuple[ModelCase, Any, Path]
) -> None:
    _edit_manifest(tampered, lambda data: data["inputs"].reverse())
    _expect_refusal(tampered, r"model inputs .* \(order matters\)", _feeds(bert[0]))


def test_dropped_model_output_is_refused(tampered: Path, bert: tuple[ModelCase, Any, Path]) -> None:
    _edit_manifest(tampered, lambda data: data["outputs"].pop())
    _expect_refusal(tampered, r"has no shape and dtype in the manifest", _feeds(bert[0]))


def test_flipped_partition_kind_is_refused(
    tampered: Path, bert: tuple[ModelCase, Any, Path]
) -> None:
    def flip(data: dict[str, Any]) -> None:
        next(p for p in data["partitions"] if p["id"] == "q1")["kind"] = "classical"

    _edit_manifest(tampered, flip)
    _expect_refusal(tampered, r"q1 is listed as classical but", _feeds(bert[0]))


def test_false_review_metadata_is_refused(
    tampered: Path, bert: tuple[ModelCase, Any, Path]
) -> None:
    def lie(data: dict[str, Any]) -> None:
        next(p for p in data["partitions"] if p["id"] == "q1")["qubits"] = 2

    _edit_manifest(tampered, lie)
    _expect_refusal(tampered, r"q1: the manifest says qubits = 2 but", _feeds(bert[0]))


def test_a_file_listed_twice_is_refused(tampered: Path, bert: tuple[ModelCase, Any, Path]) -> None:
    def duplicate(data: dict[str, Any]) -> None:
        copy = dict(data["partitions"][-1], id="c9", outputs=[])
        data["partitions"].append(copy)

    _edit_manifest(tampered, duplicate)
    _expect_refusal(tampered, r"listed twice", _feeds(bert[0]))


def test_linked_files_are_refused(
    tampered: Path, bert: tuple[ModelCase, Any, Path], tmp_path: Path
) -> None:
    outside = tmp_path / "outside.onnx"
    shutil.copy(tampered / "c3.onnx", outside)
    (tampered / "c3.onnx").unlink()
    (tampered / "c3.onnx").symlink_to(outside)
    _expect_refusal(tampered, r"c3: c3.onnx is a link or leads outside", _feeds(bert[0]))


def test_control_flow_is_not_partitioned() -> None:
    from onnx import TensorProto, helper

    from qgraph.errors import UnsupportedGraphError
    from qgraph.onnx.partition import split

    def branch(name: str) -> onnx.GraphProto:
        out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [1])
        return helper.make_graph(
            [helper.make_node("Identity", ["x"], [f"{name}_out"])], name, [], [out]
        )

    condition = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    node = helper.make_node(
        "If", ["c"], ["y"], name="choose", then_branch=branch("then"), else_branch=branch("else")
    )
    model = helper.make_model(helper.make_graph([node], "g", [condition, x], [y]))
    with pytest.raises(UnsupportedGraphError, match=r"node choose has a subgraph \(If\)"):
        split(model)


# ------------------------------------------------------------------ bad inputs


def test_run_rejects_inputs_that_do_not_fit(bert: tuple[ModelCase, Any, Path]) -> None:
    case, _, folder = bert
    ids, mask = case.args[0], case.kwargs["attention_mask"]
    with pytest.raises(qgraph.InputError, match=r"missing \['attention_mask'\]"):
        qonnx.run(folder, {"input_ids": ids})
    with pytest.raises(qgraph.InputError, match=r"takes 2 input\(s\)"):
        qonnx.run(folder, [ids])
    with pytest.raises(qgraph.InputError, match=r"input 'input_ids' must be int64"):
        qonnx.run(folder, [ids.float(), mask])
    with pytest.raises(qgraph.InputError, match=r"got one Tensor. Wrap it"):
        qonnx.run(folder, ids)
    with pytest.raises(qgraph.InputError, match=r"sizes with the same name must agree"):
        qonnx.run(folder, [ids, mask[:, :-1]])


def test_export_rejects_bad_arguments(bert: tuple[ModelCase, Any, Path], tmp_path: Path) -> None:
    case, cm, _ = bert
    with pytest.raises(qgraph.InputError, match="takes the CompiledModule"):
        qonnx.export_onnx(case.model, case.args, tmp_path)
    with pytest.raises(qgraph.InputError, match="must be a tuple"):
        qonnx.export_onnx(cm, case.args[0], tmp_path)
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(qgraph.InputError, match="is not a folder"):
        qonnx.export_onnx(cm, case.args, a_file, case.kwargs)


def test_export_refuses_a_used_folder_unless_told_and_then_leaves_only_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qgraph.models import encoder_model

    case = encoder_model(layers=1, d_model=16, heads=2, vocab=50, seq_len=4)
    cm = qgraph.compile(case.model, case.args, case.kwargs, policy="all")
    (tmp_path / "model.onnx").write_text("the user's own model")
    (tmp_path / "partitions").mkdir()
    (tmp_path / "partitions" / "stale.onnx").write_text("from an older export")
    with pytest.raises(qgraph.InputError, match=r"not empty \(2 entries.*overwrite=True"):
        qonnx.export_onnx(cm, case.args, tmp_path, case.kwargs, progress=False)
    assert (tmp_path / "model.onnx").read_text() == "the user's own model"  # untouched
    manifest = qonnx.export_onnx(
        cm, case.args, tmp_path, case.kwargs, verify=False, progress=False, overwrite=True
    )
    written = {MANIFEST_NAME, "model.onnx", *(p.file for p in manifest.partitions)}
    found = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert found == written and "partitions/stale.onnx" not in found

    def no_files(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(qgraph.onnx.folders.tempfile, "TemporaryFile", no_files)
    with pytest.raises(qgraph.InputError, match=r"is not writable \(Permission denied\)"):
        qonnx.export_onnx(cm, case.args, tmp_path / "new", case.kwargs, progress=False)


def test_export_leaves_every_module_in_its_mode(tmp_path: Path) -> None:
    """symbolic_trace graphs call the user's own submodules: export must not flip them."""
    from qgraph.models import encoder_model

    case = encoder_model(layers=1, d_model=16, heads=2, vocab=50, seq_len=4)
    cm = qgraph.compile(case.model, case.args, case.kwargs, policy="all", frontend="symbolic_trace")
    cm.train()
    case.model.train()
    before = {name: m.training for name, m in case.model.named_modules()}
    qonnx.export_onnx(cm, case.args, tmp_path, case.kwargs, verify=False, progress=False)
    assert cm.training
    assert {name: m.training for name, m in case.model.named_modules()} == before
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["verification"] is None
    outputs = qonnx.run(tmp_path, _feeds(case))  # the eval graph was exported
    cm.eval()
    expected = cm(*case.args, **case.kwargs).detach().numpy()
    np.testing.assert_allclose(next(iter(outputs.values())), expected, atol=TOLERANCE, rtol=0)


def test_verification_uses_the_exact_backend_whatever_the_module_runs_on(
    tmp_path: Path,
) -> None:
    from qgraph.backends.shots import ShotsBackend

    case = hf_model("bert", layers=1)
    sampler = ShotsBackend(shots=64, seed=0)
    cm = qgraph.compile(case.model, case.args, case.kwargs, policy="all", backend=sampler)
    cm(*case.args, **case.kwargs)
    assert sampler.stats.jobs == 2  # one QRCE and one QAAP call
    manifest = qonnx.export_onnx(cm, case.args, tmp_path, case.kwargs, progress=False)
    assert sampler.stats.jobs == 2  # the export's check ran nothing on the sampler
    assert manifest.verification is not None
    assert manifest.verification["max_abs_diff"] < TOLERANCE
    assert all(p.backend.startswith("shots") for p in manifest.partitions if p.kind == "quantum")


def test_a_size_the_graph_fixed_is_static_in_the_export(tmp_path: Path) -> None:
    case = hf_model("bert", layers=1, batch=1)  # torch.export specialises batch 1
    _, manifest = _export(case, tmp_path)
    assert manifest.tensor("input_ids").shape[0] == 1
    assert any("axis 0 is fixed at 1" in note for note in manifest.notes)
    ids, mask = example_ids(case.vocab_size, batch=3, seq_len=8)
    with pytest.raises(qgraph.InputError, match=r"static shape \[1, "):
        qonnx.run(tmp_path, [ids, mask])
    longer_ids, longer_mask = example_ids(case.vocab_size, batch=1, seq_len=12)
    assert qonnx.run(tmp_path, [longer_ids, longer_mask])["last_hidden_state"].shape[1] == 12


def test_runnable_model_takes_float32_only(tmp_path: Path) -> None:
    case = hf_model("bert", layers=1)
    case.model.double()
    cm = qgraph.compile(case.model, case.args, case.kwargs, policy="all")
    qonnx.export_onnx(cm, case.args, tmp_path, case.kwargs, verify=False, progress=False)
    with pytest.raises(qgraph.InputError, match="Python ops take float32"):
        qonnx.runnable_model(tmp_path / "model.onnx")


@pytest.mark.parametrize("name", ["encoder", "distilbert", "roberta", "llama"])
def test_the_rest_of_the_panel_exports_and_verifies(name: str, tmp_path: Path) -> None:
    """Eager softmax chains (DistilBERT), fused encoder layers, GQA with rotary (Llama)."""
    from panel import PANEL

    case = PANEL[name]()
    cm, manifest = _export(case, tmp_path)
    quantum = [p.kernel for p in manifest.partitions if p.kind == "quantum"]
    assert quantum == [s.op for s in cm.report.quantum_sites]
    assert manifest.verification is not None
    assert manifest.verification["max_abs_diff"] < TOLERANCE
    whole = qonnx.run_model(tmp_path / "model.onnx", _feeds(case))
    expected = main_output(cm(*case.args, **case.kwargs)).detach().numpy()
    np.testing.assert_allclose(next(iter(whole.values())), expected, atol=TOLERANCE, rtol=0)
