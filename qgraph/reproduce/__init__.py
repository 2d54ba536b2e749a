"""``qgraph reproduce``: the source paper's experiment, classical against hybrid on SST-2.

``reproduce(preset="quick", arms=..., seeds=(0,), out="reproduce_out")`` trains every arm
(``qgraph.reproduce.arms``) with every seed under a preset (``qgraph.reproduce.presets``),
writes per-run metrics, checkpoints and results under ``out/<arm>/seed<k>/``, and then
``results.json`` and ``results.md`` (the accuracy table, step times, seed spread). Every
figure is measured by the run; nothing is typed in.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from qgraph.data import encode, load_sst2, resolve_tokenizer, sst2_sample
from qgraph.errors import InputError
from qgraph.reproduce.arms import ARMS, check_arms
from qgraph.reproduce.claims import claims_table
from qgraph.reproduce.noise import noisy_aer_lengths, shot_sweep
from qgraph.reproduce.presets import PRESETS, Preset, get_preset
from qgraph.reproduce.projection import cost_hybrid, project
from qgraph.reproduce.scale import project_scale
from qgraph.reproduce.sweep import step_time_sweep
from qgraph.reproduce.tables import results_markdown, summarise
from qgraph.reproduce.train import RESULT, EncodedData, rank_and_world, train_arm

__all__ = ["ARMS", "DEFAULT_ARMS", "PRESETS", "load_data", "reproduce", "summarise"]

#: the arms a run trains unless told otherwise
DEFAULT_ARMS = ("classical", "qaap", "qrce", "hybrid", "qrce_control", "qaap_shots")


def load_data(preset: Preset, data_dir: str | Path | None) -> EncodedData:
    """SST-2 from ``data_dir`` (GLUE train.tsv/dev.tsv) or the vendored sample, encoded with
    all-MiniLM-L6-v2's WordPiece tokenizer and cut to the preset's row counts (seeded)."""
    train, dev = sst2_sample() if data_dir is None else load_sst2(data_dir)
    if preset.train_rows is not None:
        train = train.head(preset.train_rows)
    if preset.dev_rows is not None:
        dev = dev.head(preset.dev_rows)
    tokenizer = resolve_tokenizer(None)
    return EncodedData(
        encode(train.texts, tokenizer, preset.max_length),
        train.labels,
        encode(dev.texts, tokenizer, preset.max_length),
        dev.labels,
        vocab_size=tokenizer.vocab_size,
        num_labels=max(train.num_labels, dev.num_labels),
        pad_id=tokenizer.pad_token_id or 0,
        source=f"{train.source} ({len(train)} rows), {dev.source} ({len(dev)} rows)",
    )


def reproduce(
    preset: str | Preset = "quick",
    *,
    data: str | Path | None = None,
    arms: Sequence[str] = DEFAULT_ARMS,
    seeds: Sequence[int] = (0,),
    out: str | Path = "reproduce_out",
    resume: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Train the arms × seeds of a preset; write and return the results (module doc).

    In a process group of several ranks (``qgraph reproduce --nproc N``) every arm trains
    data-parallel; rank 0 alone runs the analyses and writes the results, and the other
    ranks return only their runs.
    """
    chosen = preset if isinstance(preset, Preset) else get_preset(preset)
    arm_list = check_arms(list(arms))
    if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise InputError(f"seeds must be integers ≥ 0; got {list(seeds)}.")
    folder = Path(out)
    rank, world = rank_and_world()
    if folder.exists() and any(folder.iterdir()) and not resume:
        raise InputError(
            f"{folder} holds an earlier run; pass resume=True (--resume) to continue it, or "
            "another out folder."
        )
    if world > 1:
        dist.barrier()  # every rank has looked at the folder before rank 0 writes to it
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        check_same_setting(folder, chosen)
    if world > 1:
        dist.barrier()
    encoded = load_data(chosen, data)
    runs: list[dict[str, Any]] = []
    for arm in arm_list:
        for seed in seeds:
            run_folder = folder / arm.name / f"seed{seed}"
            finished = run_folder / RESULT
            if resume and finished.is_file():
                runs.append(json.loads(finished.read_text()))
                continue
            run = train_arm(
                arm,
                chosen,
                encoded,
                seed,
                run_folder,
                resume=resume,
                device=device,
                progress=progress,
            )
            runs.append(run.summary())
    if rank != 0:
        return {"runs": runs}  # rank 0 measures the rest and writes the results
    sweep = step_time_sweep(chosen, chosen.sweep_lengths, device=device)
    noise = cached_noise(folder, chosen, arm_list, seeds) or run_noise(
        chosen, encoded, folder, arm_list, seeds, device, progress
    )
    (folder / NOISE).write_text(json.dumps({"key": _noise_key(chosen, arm_list, seeds), **noise}))
    results = {
        "preset": chosen.to_dict(),
        "data": encoded.source,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": device,
        },
        "arms": {a.name: a.description for a in arm_list},
        "runs": runs,
        "table": summarise(runs),
        "sweep": sweep,
        "noise": noise,
    }
    classical = [r for r in runs if r["arm"] == "classical"]
    if classical:
        classical_step = statistics.median(r["median_step_s"] for r in classical)
        steps = classical[0]["steps"]
        costing = cost_hybrid(chosen, encoded)
        results["projection"] = project(chosen, encoded, classical_step, steps, costing=costing)
        results["scale"] = project_scale(chosen, encoded, classical_step, steps, costing=costing)
        results["classical_step_s"] = classical_step
    results["claims"] = claims_table(results)
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (folder / "results.md").write_text(results_markdown(results))
    if importlib.util.find_spec("matplotlib") is not None:
        from qgraph.reproduce.page import write_page

        write_page(results, folder)
    return results


#: preset fields that only shape the analyses after training; a resume may change them
ANALYSIS_FIELDS = ("name", "description", "sweep_lengths", "sweep_shots", "aer_lengths")
#: the training setting of a run folder, written when it starts, checked on resume
SETTING = "setting.json"


def check_same_setting(folder: Path, preset: Preset) -> None:
    """Refuse to resume a folder whose runs were trained under another setting.

    The first call writes the preset's training fields to ``folder/setting.json``; a later
    call (``--resume``) compares them, so finished runs are never mixed with runs of another
    size, rate or data cut.
    """
    setting = {k: v for k, v in preset.to_dict().items() if k not in ANALYSIS_FIELDS}
    path = folder / SETTING
    if not path.is_file():
        path.write_text(json.dumps(setting, indent=2) + "\n")
        return
    earlier = json.loads(path.read_text())
    current = json.loads(json.dumps(setting))  # tuples as lists, as they were stored
    changed = sorted(k for k in set(earlier) | set(current) if earlier.get(k) != current.get(k))
    if changed:
        details = ", ".join(
            f"{key}: {earlier.get(key)!r} then, {current.get(key)!r} now" for key in changed
        )
        raise InputError(
            f"{folder} was trained with another setting ({details}); resume with the same "
            "preset and --set options, or use another out folder."
        )


#: the noise runs of a folder, kept so that a resume does not repeat them (minutes each)
NOISE = "noise.json"


def _noise_key(preset: Preset, arms: Sequence[Any], seeds: Sequence[int]) -> dict[str, Any]:
    return json.loads(
        json.dumps(
            {
                "sweep_shots": preset.sweep_shots,
                "aer_lengths": preset.aer_lengths,
                "qaap": any(arm.name == "qaap" for arm in arms),
                "seeds": list(seeds),
            }
        )
    )


def cached_noise(
    folder: Path, preset: Preset, arms: Sequence[Any], seeds: Sequence[int]
) -> dict[str, Any] | None:
    """The noise runs a finished run of this folder wrote for the same shots, lengths and
    seeds (its QAAP weights cannot have changed: ``check_same_setting``), else None."""
    path = folder / NOISE
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    if stored.pop("key", None) != _noise_key(preset, arms, seeds):
        return None
    return stored


def run_noise(
    preset: Preset,
    data: EncodedData,
    folder: Path,
    arms: Sequence[Any],
    seeds: Sequence[int],
    device: str,
    progress: bool,
) -> dict[str, Any]:
    """The shot sweep (when the qaap arm ran) and the noisy Aer steps (when qiskit-aer and
    qiskit-ibm-runtime's fake devices are installed); ``qgraph.reproduce.noise``."""
    noise: dict[str, Any] = {}
    if preset.sweep_shots and any(arm.name == "qaap" for arm in arms):
        noise["shots"] = shot_sweep(
            preset, data, folder, seeds, preset.sweep_shots, device=device, progress=progress
        )
    if preset.aer_lengths:
        missing = [
            name
            for name in ("qiskit_aer", "qiskit_ibm_runtime")
            if importlib.util.find_spec(name) is None
        ]
        if missing:
            noise["aer_skipped"] = (
                f"{', '.join(missing)} not installed (pip install 'qgraph[aer,ibm]')"
            )
        else:
            noise["aer"] = noisy_aer_lengths(preset.aer_lengths, progress=progress)
    return noise
