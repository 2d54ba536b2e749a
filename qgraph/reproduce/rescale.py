"""The scale-out projection of a finished run, without training again:

    python -m qgraph.reproduce.rescale docs/results/cpu [--data DIR] [--qpus 1,2,4] [--workers 1,2]

reads the run's results.json (preset, measured classical step, steps), costs the hybrid as
``qgraph reproduce`` does, writes ``scale.json`` and ``scale.md`` in the run's folder and
re-renders ``results.md`` (and ``results.html`` when matplotlib is there) with the section;
results.json is left as it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qgraph.errors import InputError
from qgraph.reproduce import load_data
from qgraph.reproduce.presets import Preset
from qgraph.reproduce.scale import DEFAULT_QPUS, DEFAULT_WORKERS, project_scale
from qgraph.reproduce.scale_tables import scale_markdown
from qgraph.reproduce.tables import results_markdown

__all__ = ["data_dir_of", "main", "preset_of", "rescale_run"]


def _counts(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give comma-separated whole numbers, e.g. 1,2,4"
        ) from None


def preset_of(results: dict[str, Any]) -> Preset:
    """The Preset a run's results.json stored (lists back to tuples)."""
    stored = results["preset"]
    known = {f.name for f in dataclasses.fields(Preset)}
    unknown = sorted(set(stored) - known)
    if unknown:
        raise InputError(
            f"results.json's preset has fields this qgraph does not know: {unknown}; "
            "use the qgraph version that wrote the run."
        )
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()}
    return Preset(**fields)


def data_dir_of(results: dict[str, Any]) -> Path:
    """The folder of the run's training data, read from results.json's ``data`` line
    ("<folder>/train.tsv (N rows), ..."); an InputError when it is not there."""
    first = results["data"].split(" (", 1)[0]
    folder = Path(first).parent
    if not folder.is_dir():
        raise InputError(
            f"the run's data folder {folder} (from results.json: {results['data']!r}) is not "
            "here; pass --data with the folder of its train.tsv and dev.tsv."
        )
    return folder


def rescale_run(
    folder: Path,
    data: Path | None = None,
    qpus: Sequence[int] = DEFAULT_QPUS,
    workers: Sequence[int] = DEFAULT_WORKERS,
) -> dict[str, Any]:
    """The scale-out projection of the finished run in ``folder`` (no training): writes
    ``scale.json`` and ``scale.md`` and re-renders ``results.md`` (and ``results.html``
    with matplotlib) with the section; results.json is left as it is."""
    path = folder / "results.json"
    if not path.is_file():
        raise InputError(f"no results.json in {folder}; pass the folder of a finished run.")
    results = json.loads(path.read_text())
    classical = [r for r in results["runs"] if r["arm"] == "classical"]
    if "classical_step_s" not in results or not classical:
        raise InputError(
            f"{path} has no classical arm's step time; the projection needs the classical arm."
        )
    preset = preset_of(results)
    encoded = load_data(preset, data if data is not None else data_dir_of(results))
    scale = project_scale(
        preset,
        encoded,
        results["classical_step_s"],
        classical[0]["steps"],
        qpus=qpus,
        workers=workers,
    )
    (folder / "scale.json").write_text(json.dumps(scale, indent=2) + "\n")
    (folder / "scale.md").write_text(
        f"# Scale-out projection: preset `{preset.name}`\n\n{scale_markdown(scale)}"
    )
    results["scale"] = scale
    (folder / "results.md").write_text(results_markdown(results))
    if importlib.util.find_spec("matplotlib") is not None:
        from qgraph.reproduce.page import write_page

        write_page(results, folder)
    return scale


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m qgraph.reproduce.rescale RUN_FOLDER [--data DIR]
    [--qpus 1,2,4] [--workers 1,2]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a finished run's folder (with results.json)")
    parser.add_argument(
        "--data", type=Path, default=None, help="the run's SST-2 folder (default: results.json's)"
    )
    parser.add_argument("--qpus", type=_counts, default=list(DEFAULT_QPUS))
    parser.add_argument("--workers", type=_counts, default=list(DEFAULT_WORKERS))
    args = parser.parse_args(argv)
    scale = rescale_run(args.folder, args.data, args.qpus, args.workers)
    print(scale_markdown(scale))


if __name__ == "__main__":
    main()
