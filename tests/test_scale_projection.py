"""The scale-out projection (scale.py, scale_tables.py, rescale.py): N QPUs × M workers.

Estimates are built by hand through the cost model's own op-call arithmetic
(``qpu_call``), on hand-built profiles with the shipped billing numbers, so no circuit is
transpiled and no fake backend loaded; the figures asserted are the model's formulas.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from qgraph.costmodel.profiles import DeviceProfile, Quantity
from qgraph.costmodel.qpu_calls import QPUCall, qpu_call
from qgraph.costmodel.results import Estimate, ExplanationLog
from qgraph.costmodel.transpiled import CircuitCost
from qgraph.errors import InputError
from qgraph.reproduce.page import scale_figure
from qgraph.reproduce.presets import PRESETS
from qgraph.reproduce.rescale import _counts, data_dir_of, preset_of
from qgraph.reproduce.scale import (
    ALLREDUCE_BANDWIDTH_B_S,
    ALLREDUCE_LATENCY_S,
    allreduce_s,
    check_grid,
    scale_grid,
    split_call,
)
from qgraph.reproduce.scale_tables import scale_markdown, scale_table_rows


def _q(value: float, unit: str = "") -> Quantity:
    return Quantity(value, unit, "test (the shipped profile's figure)", "2026")


#: IBM runtime billing as ibm_heron_r2 has it: ≤10M executions and ≤3 h a job, 4.1 s minimum
IBM = DeviceProfile(
    "test_ibm",
    "qpu",
    "IBM-like QPU",
    numbers={
        "max_executions_per_job": _q(10_000_000, "circuits*shots"),
        "max_job_qpu_s": _q(10_800, "s"),
        "job_min_qpu_s": _q(4.1, "s"),
        "price_per_qpu_s": _q(1.60, "USD/s"),
    },
    time_model="ibm",
    pricing="qpu_seconds",
)
#: IonQ Aria's gate-shot prices and per-circuit minimum
IONQ = DeviceProfile(
    "test_ionq",
    "qpu",
    "IonQ-like QPU",
    numbers={
        "price_1q_gate_shot": _q(0.00022, "USD"),
        "price_2q_gate_shot": _q(0.00098, "USD"),
        "min_price_per_circuit": _q(1.0, "USD"),
    },
    time_model="gate_durations",
    pricing="gate_shots",
)
#: a machine nobody sells time on (ideal_ft's billing)
FREE = DeviceProfile("test_free", "qpu", "unpriced QPU", time_model="surface_code")
PROFILES = {p.name: p for p in (IBM, IONQ, FREE)}
CIRCUIT = CircuitCost("qrce", (8, 2), "test", 8, 20, 12, 40, 6, 16, 4, 8, None, "fit", "test")


def estimate_on(
    profile: DeviceProfile,
    circuits: int,
    shots: int,
    shot_s: float,
    backward: tuple[int, int] = (0, 0),
    site: str = "site",
) -> Estimate:
    """An estimate as ``qpu_costs`` composes one: both calls through ``qpu_call``."""
    log = ExplanationLog()
    fwd = qpu_call(QPUCall("qrce", circuits, shots, 16, "forward"), profile, CIRCUIT, shot_s, log)
    bwd = qpu_call(QPUCall("qrce", *backward, 16, "backward"), profile, CIRCUIT, shot_s, log)
    money = None if fwd.money_usd is None else fwd.money_usd + (bwd.money_usd or 0.0)
    return Estimate(
        site=site,
        kernel="qrce",
        device=profile.name,
        device_kind="qpu",
        supported=True,
        reason="",
        circuits_forward=circuits,
        circuits_backward=backward[0],
        shots_forward=shots,
        shots_backward=backward[1],
        jobs_forward=fwd.jobs,
        jobs_backward=bwd.jobs,
        forward=fwd.time,
        backward=bwd.time,
        money_usd=money,
        circuit=CIRCUIT,
    )


#: 1,000 circuits × 1,000 shots × 1 ms: 1,000 s a call, far above the 4.1 s job minimum
SHOTS_BOUND = (1000, 1000, 1e-3)
#: 10 circuits × 100 shots × 1 ms: 1 s a call, so the 4.1 s job minimum adds 3.1 s latency
LATENCY_BOUND = (10, 100, 1e-3)


def grid(device_estimates: dict[str, list[Estimate]], **kwargs: Any) -> list[dict[str, Any]]:
    options: dict[str, Any] = {
        "classical_s": 0.1,
        "gradient_bytes": 4_000_000,
        "run_steps": 100,
        "qpus": (1, 2),
        "workers": (1, 2),
        "profiles": PROFILES,
    }
    options.update(kwargs)
    return scale_grid(device_estimates, **options)


def row(rows: list[dict[str, Any]], qpus: int, workers: int, device: str = "") -> dict[str, Any]:
    (found,) = [
        r
        for r in rows
        if r["qpus"] == qpus and r["workers"] == workers and (not device or r["device"] == device)
    ]
    return found


# --------------------------------------------------------------------------- one op call


def test_one_qpu_reproduces_the_estimate() -> None:
    """At N = 1 the billing model on the whole call gives back the estimate's own figures."""
    for profile in (IBM, IONQ):
        for setting in (SHOTS_BOUND, LATENCY_BOUND):
            e = estimate_on(profile, *setting)
            share = split_call(e, "forward", profile, 1)
            assert share.time.latency_s == pytest.approx(e.forward.latency_s)
            assert share.time.execution_s == pytest.approx(e.forward.execution_s)
            assert share.time.total_s == pytest.approx(e.forward.total_s)
            assert share.jobs == e.jobs_forward
            assert share.money_usd == pytest.approx(e.money_usd)


def test_shots_halve_over_two_qpus_latency_does_not() -> None:
    shots = estimate_on(IBM, *SHOTS_BOUND)
    one, two = (split_call(shots, "forward", IBM, n) for n in (1, 2))
    assert one.time.execution_s == pytest.approx(1000.0)
    assert two.time.execution_s == pytest.approx(500.0)
    assert one.time.latency_s == two.time.latency_s == 0.0  # each job runs past the minimum
    assert (two.jobs, two.qpus_used) == (2, 2)

    latency = estimate_on(IBM, *LATENCY_BOUND)
    latency.forward.transfer_s = 0.7  # the test profile has no link; as if it had
    one, two = (split_call(latency, "forward", IBM, n) for n in (1, 2))
    assert one.time.execution_s == pytest.approx(1.0)
    assert two.time.execution_s == pytest.approx(0.5)
    # each QPU still waits out its own job's 4.1 s minimum: the latency grows, not halves
    assert one.time.latency_s == pytest.approx(4.1 - 1.0)
    assert two.time.latency_s == pytest.approx(4.1 - 0.5)
    assert one.time.execution_s + one.time.latency_s == pytest.approx(4.1)
    assert two.time.execution_s + two.time.latency_s == pytest.approx(4.1)
    # transfer and pre/post stay whole (the scheduler's one link and CPU)
    assert two.time.transfer_s == one.time.transfer_s == 0.7
    assert two.time.classical_s == one.time.classical_s > 0


def test_uneven_split_takes_the_busiest_qpu() -> None:
    e = estimate_on(IBM, 5, 1000, 1e-2)  # 10 s a circuit
    two = split_call(e, "forward", IBM, 2)
    assert two.time.execution_s == pytest.approx(30.0)  # ⌈5/2⌉ = 3 circuits
    eight = split_call(e, "forward", IBM, 8)
    assert eight.qpus_used == 5
    assert eight.time.execution_s == pytest.approx(10.0)
    assert eight.money_usd == pytest.approx(5 * 10.0 * 1.60)  # five jobs of 10 s


def test_money_follows_the_billing_model() -> None:
    # QPU-seconds: the same seconds spread over two QPUs cost the same ...
    shots = estimate_on(IBM, *SHOTS_BOUND)
    one, two = (split_call(shots, "forward", IBM, n).money_usd for n in (1, 2))
    assert one == two == pytest.approx(1000.0 * 1.60)
    # ... until a share is under the per-job minimum: then each QPU bills 4.1 s
    latency = estimate_on(IBM, *LATENCY_BOUND)
    one, two = (split_call(latency, "forward", IBM, n).money_usd for n in (1, 2))
    assert one == pytest.approx(4.1 * 1.60)
    assert two == pytest.approx(2 * 4.1 * 1.60)
    # gate-shots with a per-circuit minimum: independent of the QPUs
    ion = estimate_on(IONQ, *LATENCY_BOUND)
    per_circuit = max(1.0, 100 * (40 * 0.00022 + 12 * 0.00098))
    for n in (1, 2, 4, 16):
        assert split_call(ion, "forward", IONQ, n).money_usd == pytest.approx(10 * per_circuit)
    # no price: None at any N
    assert split_call(estimate_on(FREE, *SHOTS_BOUND), "forward", FREE, 4).money_usd is None


def test_straight_through_backward_is_its_classical_time() -> None:
    e = estimate_on(IBM, *SHOTS_BOUND)  # no backward circuits
    share = split_call(e, "backward", IBM, 4)
    assert (share.jobs, share.money_usd, share.qpus_used) == (0, 0.0, 0)
    assert share.time == e.backward


# --------------------------------------------------------------------------- the grid


def test_classical_halves_over_two_workers_plus_the_all_reduce() -> None:
    rows = grid({"test_ibm": [estimate_on(IBM, *SHOTS_BOUND)]}, classical_s=2.0)
    m1, m2 = row(rows, 1, 1), row(rows, 1, 2)
    reduce = 2 * 1 / 2 * 4_000_000 / ALLREDUCE_BANDWIDTH_B_S + 2 * ALLREDUCE_LATENCY_S
    assert m1["classical_s"] == 2.0 and m1["allreduce_s"] == 0.0
    assert m2["classical_s"] == 1.0
    assert m2["allreduce_s"] == pytest.approx(reduce)
    assert m1["step_s"] - m2["step_s"] == pytest.approx(1.0 - reduce)
    assert m2["quantum_s"] == m1["quantum_s"]  # the workers do not change the quantum work
    assert allreduce_s(10**9, 4, 1e9, 1e-3) == pytest.approx(2 * 3 / 4 + 6e-3)


def test_step_run_and_money_per_row() -> None:
    sites = [estimate_on(IBM, *SHOTS_BOUND, backward=(2000, 500)), estimate_on(IBM, 3, 10, 1e-3)]
    rows = grid({"test_ibm": sites}, classical_s=0.5)
    first = row(rows, 1, 1)
    # one QPU, one worker: the projection's step (classical + every site's time, in turn)
    assert first["step_s"] == pytest.approx(0.5 + sum(e.time_s or 0.0 for e in sites))
    assert first["usd_per_step"] == pytest.approx(sum(e.money_usd or 0.0 for e in sites))
    assert first["speedup"] == 1.0
    for r in rows:
        parts = sum(r[f"{k}_s"] for k in ("queue", "latency", "execution", "transfer"))
        parts += r["pre_post_s"] + r["classical_s"] + r["allreduce_s"]
        assert r["step_s"] == pytest.approx(parts)
        assert r["run_s"] == pytest.approx(100 * r["step_s"])
        assert r["overlapped_step_s"] == max(r["quantum_s"], r["classical_side_s"])
        assert r["usd_per_run"] == pytest.approx(100 * r["usd_per_step"])
        assert r["queue_s"] == 0.0
    assert row(rows, 2, 1)["speedup"] == pytest.approx(first["step_s"] / row(rows, 2, 1)["step_s"])


def test_critical_path_names_the_largest_component() -> None:
    cases = {
        "latency": grid({"test_ibm": [estimate_on(IBM, 1, 10, 1e-3)]}, classical_s=0.01),
        "execution": grid({"test_ibm": [estimate_on(IBM, *SHOTS_BOUND)]}, classical_s=0.01),
        "classical": grid({"test_ibm": [estimate_on(IBM, *SHOTS_BOUND)]}, classical_s=1e5),
        "allreduce": grid(
            {"test_ionq": [estimate_on(IONQ, 1, 10, 1e-6)]},
            classical_s=0.0,
            gradient_bytes=10**12,
        ),
    }
    for expected, rows in cases.items():
        workers = 2 if expected == "allreduce" else 1
        r = row(rows, 1, workers)
        assert r["critical_path"] == expected, (expected, r)
        assert r["critical_share"] == pytest.approx(r[f"{expected}_s"] / r["step_s"])
    # the best case overlaps the two sides: here the all-reduce is the longer one
    r = row(cases["allreduce"], 1, 2)
    assert r["overlapped_step_s"] == r["allreduce_s"] > r["quantum_s"]


def test_no_price_stays_no_price() -> None:
    rows = grid({"test_free": [estimate_on(FREE, *SHOTS_BOUND)]}, qpus=(1, 4))
    assert all(r["usd_per_step"] is None and r["usd_per_run"] is None for r in rows)
    assert "| no price | no price |" in scale_markdown(_scale(rows))


def test_unsupported_device_rows_say_why() -> None:
    bad = Estimate("site", "qaap", "test_ibm", "qpu", False, "needs 200 qubits; device has 156")
    rows = grid({"test_ibm": [bad], "test_ionq": [estimate_on(IONQ, *SHOTS_BOUND)]})
    ibm = [r for r in rows if r["device"] == "test_ibm"]
    assert len(ibm) == 4 and not any(r["supported"] for r in ibm)
    assert "step_s" not in ibm[0]
    scale = _scale(rows)
    text = scale_markdown(scale)
    assert "| test_ibm |  |  | not supported: needs 200 qubits; device has 156 |" in text
    assert text.count("test_ibm |") == 1


# --------------------------------------------------------------------------- rendering


def _scale(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "preset": "test",
        "batch": 4,
        "length": 8,
        "quantum_sites": 1,
        "classical_step_s": 0.1,
        "classical_regions_s": 0.001,
        "gradient_bytes": 4_000_000,
        "run_steps": 100,
        "devices": sorted({r["device"] for r in rows}),
        "qpus": sorted({r["qpus"] for r in rows}),
        "workers": sorted({r["workers"] for r in rows}),
        "allreduce_bandwidth_B_s": ALLREDUCE_BANDWIDTH_B_S,
        "allreduce_latency_s": ALLREDUCE_LATENCY_S,
        "allreduce_source": "ASSUMPTION (test)",
        "queue_source": "0: none sourced (test)",
        "rows": rows,
    }


def test_table_and_figure_render() -> None:
    rows = grid(
        {"test_ibm": [estimate_on(IBM, *SHOTS_BOUND)], "test_ionq": [estimate_on(IONQ, 4, 10, 1)]}
    )
    scale = _scale(rows)
    header, body = scale_table_rows(scale)
    assert len(body) == 8 and len(header) == len(body[0])
    assert body[0][:3] == ["test_ibm", "1", "1"]
    assert body[0][8] == "shots (execution) (100 %)"
    text = scale_markdown(scale)
    assert "ASSUMPTION" in text and "Queue wait: 0" in text
    assert (
        "- test_ibm: 1000 s a step on 1 QPU(s) and 1 worker(s), 500.1 s on 2 and 2 (2×; "
        "5,000× the measured classical step)"
    ) in text
    assert "| test_ionq | 2 | 2 |" in text
    svg = scale_figure(scale)
    assert svg.startswith("<svg ")
    for name in ("test_ibm, 1 worker", "test_ibm, 2 workers", "test_ionq, 1 worker"):
        assert name in svg


# a page without runs has empty loss curves, whose legends matplotlib warns about
@pytest.mark.filterwarnings("ignore:No artists with labels found")
def test_page_and_results_md_get_the_section(tmp_path: Path) -> None:
    from qgraph.reproduce.page import render_page
    from qgraph.reproduce.tables import results_markdown

    results: dict[str, Any] = {
        "preset": {"name": "test", "description": "a test"},
        "data": "none",
        "machine": {"platform": "test", "torch": "0", "threads": 1, "device": "cpu"},
        "arms": {"classical": "the model"},
        "runs": [],
        "table": [
            {
                "arm": "classical",
                "seeds": [0],
                "accuracy_mean": 0.8,
                "accuracy_std": None,
                "median_step_s": 0.1,
                "step_time_vs_classical": 1.0,
                "parameters": 10,
                "quantum_calls": 0,
            }
        ],
        "claims": [],
    }
    assert "Scale-out projection" not in results_markdown(results)
    assert "Scale-out projection" not in render_page(results, tmp_path)
    results["scale"] = _scale(grid({"test_ibm": [estimate_on(IBM, *SHOTS_BOUND)]}))
    markdown = results_markdown(results)
    assert "## Scale-out projection (cost model)" in markdown
    assert markdown.index("Scale-out") < markdown.index("## The paper's claims")
    page = render_page(results, tmp_path)
    assert "<h2>Scale-out projection</h2>" in page and "test_ibm, 2 workers" in page


# --------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    ("qpus", "workers", "message"),
    [
        ((), (1,), "qpus is empty"),
        ((1,), [], "workers is empty"),
        ((0, 2), (1,), r"qpus must be whole numbers ≥ 1 .*got \[0\]"),
        ((1,), (1, -2), r"workers must be whole numbers ≥ 1 .*got \[-2\]"),
        ((1.5,), (1,), "qpus must be whole numbers"),
    ],
)
def test_bad_grid(qpus: Any, workers: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        check_grid(qpus, workers)
    with pytest.raises(InputError, match=message):
        grid({"test_ibm": [estimate_on(IBM, *SHOTS_BOUND)]}, qpus=qpus, workers=workers)


def test_bad_inputs_name_the_problem() -> None:
    e = estimate_on(IBM, *SHOTS_BOUND)
    assert check_grid((4, 1, 4), (2, 1)) == ([1, 4], [1, 2])
    with pytest.raises(InputError, match="no devices to project"):
        grid({})
    with pytest.raises(InputError, match="qpus must be ≥ 1; got 0"):
        split_call(e, "forward", IBM, 0)
    with pytest.raises(InputError, match="direction must be 'forward' or 'backward'"):
        split_call(e, "sideways", IBM, 1)
    with pytest.raises(InputError, match="workers must be ≥ 1; got 0"):
        allreduce_s(100, 0)
    with pytest.raises(InputError, match="classical_s must be a finite number"):
        grid({"test_ibm": [e]}, classical_s=math.nan)
    simulator = Estimate("site", "qrce", "aer", "simulator", True, "")
    with pytest.raises(InputError, match="aer is a simulator, not a QPU"):
        grid({"aer": [simulator]})
    import argparse

    assert _counts("1,2, 4") == [1, 2, 4]
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated whole numbers"):
        _counts("1,two")


def test_a_runs_preset_and_data_folder_are_read_back(tmp_path: Path) -> None:
    stored = json.loads(json.dumps({"preset": PRESETS["cpu"].to_dict()}))
    assert preset_of(stored) == PRESETS["cpu"]
    stored["preset"]["future_field"] = 1
    with pytest.raises(InputError, match=r"fields this qgraph does not know: \['future_field'\]"):
        preset_of(stored)
    (tmp_path / "sst2").mkdir()
    found = {"data": f"{tmp_path}/sst2/train.tsv (10 rows), {tmp_path}/sst2/dev.tsv (5 rows)"}
    assert data_dir_of(found) == tmp_path / "sst2"
    with pytest.raises(InputError, match="pass --data"):
        data_dir_of({"data": "/nowhere/train.tsv (10 rows)"})
