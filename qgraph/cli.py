"""The ``qgraph`` command line: the same functions as the Python API.

    qgraph devices [--json]
    qgraph compile SPEC [--backend B] [--policy P] [--device D] [--precision E]
                        [--batch N] [--seq-len N] [--json] [--html PATH]
    qgraph inspect SPEC [--policy P] [--batch N] [--seq-len N]
    qgraph export SPEC -o DIR [the compile options] [--no-verify] [--json]
    qgraph calibrate [--quick] [--out DIR]
    qgraph reproduce [--preset P] [--data DIR] [--arms A,B] [--seeds 0,1,2] [--out DIR]
                     [--resume] [--device cpu|cuda] [--json]

SPEC: ``minilm`` (real all-MiniLM-L6-v2 weights), ``hf:<arch>[:layers=N,hidden=N,heads=N]``
(bert, roberta, distilbert, gpt2, llama from configs, random weights),
``encoder:<layers>x<d_model>`` (a plain nn.TransformerEncoder), or
``module:package.module:factory`` (a callable returning (model, args) or (model, args, kwargs)).
Errors are one line on stderr; usage errors exit 2, other failures 1.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from rich.console import Console

import qgraph
from qgraph import models
from qgraph.costmodel import calibrate, devices

EXAMPLES = """examples:
  qgraph devices
  qgraph compile hf:bert:layers=2 --policy auto --device ibm_heron_r2
  qgraph compile minilm --policy all --json
  qgraph compile hf:gpt2 --report-device ionq_aria --html review.html
  qgraph inspect encoder:2x64 --policy all
  qgraph export hf:bert:layers=2 --policy all -o bert_onnx
  qgraph calibrate --quick
  qgraph reproduce --preset quick --out reproduce_out
  qgraph reproduce --preset cpu --data ../shared/data/sst2 --seeds 0,1,2 --resume
"""


class UsageError(Exception):
    """A command line that cannot be carried out as written (exit 2)."""


def load_spec(spec: str, batch: int, seq_len: int) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """(model, args, kwargs) for a SPEC string (see the module docstring)."""
    kind, _, rest = spec.partition(":")
    if kind == "minilm" and not rest:
        case = models.minilm(batch=batch, seq_len=seq_len)
    elif kind == "hf":
        arch, _, options = rest.partition(":")
        if arch not in models.HF_ARCHITECTURES:
            raise UsageError(
                f"unknown architecture {arch!r} in {spec!r}; choose from "
                f"{', '.join(models.HF_ARCHITECTURES)}."
            )
        sizes = _options(options, spec, allowed=("layers", "hidden", "heads", "vocab"))
        case = models.hf_model(arch, batch=batch, seq_len=seq_len, **sizes)
    elif kind == "encoder":
        layers, _, width = rest.partition("x")
        if not (layers.isdigit() and width.isdigit()):
            raise UsageError(f"encoder spec must look like encoder:6x64; got {spec!r}.")
        case = models.encoder_model(
            layers=int(layers), d_model=int(width), batch=batch, seq_len=seq_len
        )
    elif kind == "module":
        return _factory(rest, spec)
    else:
        raise UsageError(
            f"unknown model spec {spec!r}; use minilm, hf:<arch>, encoder:<layers>x<d_model> "
            "or module:package.module:factory."
        )
    return case.model, case.args, case.kwargs


def _options(text: str, spec: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    sizes: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in allowed or not value.isdigit():
            raise UsageError(
                f"bad option {item!r} in {spec!r}; use {', '.join(k + '=N' for k in allowed)}."
            )
        sizes[key] = int(value)
    return sizes


def _factory(target: str, spec: str) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"module spec must look like module:package.module:factory; got {spec!r}.")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"cannot load {target!r}: {exc}.") from None
    result = factory()
    if not isinstance(result, tuple) or len(result) not in (2, 3):
        raise UsageError(
            f"{target} must return (model, args) or (model, args, kwargs); got "
            f"{type(result).__name__}."
        )
    model, args = result[0], tuple(result[1])
    kwargs = dict(result[2]) if len(result) == 3 else {}
    return model, args, kwargs


def _status(text: str) -> Any:
    """A spinner on stderr while long work runs (silent when stderr is not a terminal)."""
    return Console(stderr=True).status(text)


def _load_and_compile(arguments: argparse.Namespace) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """(compiled module, example args, example kwargs) for the SPEC and options given."""
    with _status(f"loading {arguments.spec}"):
        model, args, kwargs = load_spec(arguments.spec, arguments.batch, arguments.seq_len)
    options: dict[str, Any] = {"backend": arguments.backend, "policy": arguments.policy}
    if getattr(arguments, "device", None):
        options["device"] = arguments.device
    if getattr(arguments, "precision", None) is not None:
        options["precision"] = arguments.precision
    if getattr(arguments, "report_device", None):
        options["report_devices"] = tuple(arguments.report_device)
    with _status(f"compiling {arguments.spec}"):
        return qgraph.compile(model, args, kwargs, **options), args, kwargs


def _compile(arguments: argparse.Namespace) -> Any:
    return _load_and_compile(arguments)[0]


def _check_output_path(path: str, what: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"cannot write the {what} to {path}: folder {parent} does not exist.")


def command_devices(arguments: argparse.Namespace) -> None:
    profiles = devices()
    if arguments.json:
        print(
            json.dumps(
                [
                    {
                        "name": p.name,
                        "kind": p.kind,
                        "description": p.description,
                        "numbers": {k: q.value for k, q in p.numbers.items()},
                    }
                    for p in profiles
                ],
                indent=2,
                default=str,
            )
        )
        return
    for profile in profiles:
        print(f"{profile.name:14s} {profile.kind:10s} {profile.description}")


def command_compile(arguments: argparse.Namespace) -> None:
    if arguments.html:
        _check_output_path(arguments.html, "HTML report")
    cm = _compile(arguments)
    if arguments.html:
        with _status("writing the HTML report"):
            written = cm.report.to_html(arguments.html)
        print(f"wrote the review report to {written}", file=sys.stderr)
    if arguments.json:
        print(
            json.dumps(
                {"model": cm.report.model, "sites": cm.report.to_dicts(), "notes": cm.report.notes},
                indent=2,
                default=str,
            )
        )
    else:
        print(cm.report)


def command_inspect(arguments: argparse.Namespace) -> None:
    cm = _compile(arguments)
    code = cm.graph_module.print_readable(print_output=False)
    for line in code.splitlines():
        marked = "torch.ops.qgraph." in line
        print(("[quantum] " if marked else "          ") + line)


def command_export(arguments: argparse.Namespace) -> None:
    from qgraph.onnx import export_onnx  # the optional onnx extra

    if os.path.exists(arguments.out) and not os.path.isdir(arguments.out):
        raise UsageError(f"-o {arguments.out} is a file; name a folder (it is created).")
    cm, args, kwargs = _load_and_compile(arguments)
    manifest = export_onnx(
        cm,
        args,
        arguments.out,
        kwargs,
        verify=not arguments.no_verify,
        overwrite=arguments.overwrite,
    )
    if arguments.json:
        print(json.dumps(manifest.to_json(), indent=2))
        return
    print(f"exported {cm.report.model} to {arguments.out}: model.onnx, manifest.json and")
    for spec in manifest.order():
        what = f"{spec.kernel} {spec.path}" if spec.kind == "quantum" else f"{spec.nodes} nodes"
        print(
            f"  {spec.file:10s} {spec.kind:9s} {what}  "
            f"({len(spec.inputs)} inputs, {len(spec.outputs)} outputs)"
        )
    check = manifest.verification
    if check is not None and check.get("non_finite"):
        print("verified on the exact backend: the outputs hold NaN or infinite differences")
    elif check is not None:
        print(
            f"verified on the exact backend: largest |ONNX - PyTorch| = {check['max_abs_diff']:.3g}"
        )
    for note in manifest.notes:
        print(f"note: {note}")


def command_calibrate(arguments: argparse.Namespace) -> None:
    written = calibrate(arguments.out, quick=arguments.quick)
    for name, profile in written.items():
        print(f"wrote {name}: {profile.path}")


def _int_list(text: str, what: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(
            f"{what} must be comma-separated integers, e.g. 0,1,2; got {text!r}."
        ) from None


def _preset_changes(settings: list[str]) -> dict[str, Any]:
    """``--set key=value`` pairs, values read as Python literals (numbers, None, tuples)."""
    changes: dict[str, Any] = {}
    for setting in settings:
        key, sep, text = setting.partition("=")
        if not sep or not key:
            raise UsageError(f"--set takes key=value, e.g. --set epochs=3; got {setting!r}.")
        try:
            changes[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            changes[key] = text
    return changes


def _torchrun_reproduce(arguments: argparse.Namespace) -> int:
    """Start ``arguments.nproc`` ranks of the same reproduce command with torchrun (this
    machine; a cluster starts torchrun itself, docs/scale.md); their exit status."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={arguments.nproc}",
        "-m",
        "qgraph.cli",
        "reproduce",
        f"--preset={arguments.preset}",
        f"--arms={arguments.arms}",
        f"--seeds={arguments.seeds}",
        f"--out={arguments.out}",
        f"--device={arguments.device}",
        *([f"--data={arguments.data}"] if arguments.data else []),
        *(["--resume"] if arguments.resume else []),
        *(["--json"] if arguments.json else []),
        *[f"--set={change}" for change in arguments.set],
    ]
    return subprocess.run(command, check=False).returncode


def _join_process_group(device: str) -> str:
    """Under torchrun: join the ranks' group (NCCL on CUDA, one GPU per local rank; gloo on
    CPU) and return this rank's device."""
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return device


def command_reproduce(arguments: argparse.Namespace) -> None:
    """Train the preset's arms × seeds and write results.json, results.md and results.html."""
    from qgraph.reproduce import reproduce  # the optional hf extra (transformers, tqdm)
    from qgraph.reproduce.presets import get_preset

    preset = get_preset(arguments.preset).with_options(**_preset_changes(arguments.set))
    seeds = _int_list(arguments.seeds, "--seeds")
    if arguments.nproc > 1 and "RANK" not in os.environ:
        raise SystemExit(_torchrun_reproduce(arguments))
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    device = _join_process_group(arguments.device) if ranks > 1 else arguments.device
    try:
        results = reproduce(
            preset,
            data=arguments.data,
            arms=[a for a in arguments.arms.split(",") if a],
            seeds=seeds,
            out=arguments.out,
            resume=arguments.resume,
            device=device,
            progress=not arguments.json,
        )
    finally:
        if ranks > 1:
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) != 0:
        return  # rank 0 prints
    if arguments.json:
        print(json.dumps(results["table"], indent=2))
    else:
        print(Path(arguments.out, "results.md").read_text(), end="")
        page = Path(arguments.out, "results.html")
        if page.is_file():
            print(f"\nThe page with the curves: {page}")


def _positive_int(text: str) -> int:
    """An argparse type: a whole number ≥ 1 (a bad one is a usage error, exit status 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1; got {value}")
    return value


def _precision(text: str) -> float:
    """An argparse type: a target standard error in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1]; got {text!r}") from None
    if not 0.0 < value <= 1.0:  # nan fails too
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1]; got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (one sub-command per entry point)."""
    parser = argparse.ArgumentParser(
        prog="qgraph",
        description=__doc__.splitlines()[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    devices = commands.add_parser("devices", help="list the device profiles")
    devices.add_argument("--json", action="store_true")
    devices.set_defaults(run=command_devices)
    for name, run, help_text in (
        ("compile", command_compile, "compile a model and print the report"),
        ("inspect", command_inspect, "print the rewritten graph, quantum nodes marked"),
        ("export", command_export, "export the compiled model as partitioned ONNX"),
    ):
        sub = commands.add_parser(
            name,
            help=help_text,
            epilog=EXAMPLES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("spec", help="minilm | hf:<arch>[:k=v,...] | encoder:LxD | module:m:f")
        sub.add_argument("--backend", default="exact")
        sub.add_argument("--policy", default="auto", choices=("auto", "all", "none"))
        sub.add_argument("--device", default=None, help="quantum device for the cost model")
        sub.add_argument("--precision", type=_precision, default=None)
        sub.add_argument(
            "--report-device",
            action="append",
            default=None,
            help="another quantum device to cost for the report (repeatable)",
        )
        sub.add_argument("--batch", type=_positive_int, default=2)
        sub.add_argument("--seq-len", type=_positive_int, default=16)
        sub.add_argument("--json", action="store_true")
        if name == "compile":
            sub.add_argument("--html", default=None, metavar="PATH", help="write the review report")
        if name == "export":
            sub.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
            sub.add_argument(
                "--no-verify", action="store_true", help="skip the check run against PyTorch"
            )
            sub.add_argument(
                "--overwrite",
                action="store_true",
                help="replace a non-empty output folder (files the export does not write go)",
            )
        sub.set_defaults(run=run)
    calibrate = commands.add_parser("calibrate", help="measure this machine, write profiles")
    calibrate.add_argument("--quick", action="store_true")
    calibrate.add_argument("--out", default=None, help="directory (default: user profiles)")
    calibrate.set_defaults(run=command_calibrate)
    # the optional hf extra (transformers, tqdm) loads with the reproduction package
    from qgraph.reproduce.arms import ARMS
    from qgraph.reproduce.presets import PRESETS

    reproduce = commands.add_parser(
        "reproduce", help="train classical and hybrid arms on SST-2 (the paper's experiment)"
    )
    reproduce.add_argument("--preset", default="quick", choices=list(PRESETS))
    reproduce.add_argument(
        "--data", default=None, metavar="DIR", help="GLUE SST-2 folder (default: the sample)"
    )
    reproduce.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms")
    reproduce.add_argument("--seeds", default="0", help="comma-separated seeds")
    reproduce.add_argument("--out", default="reproduce_out", metavar="DIR")
    reproduce.add_argument("--resume", action="store_true", help="continue a killed run")
    reproduce.add_argument("--device", default="cpu", help="cpu or cuda")
    reproduce.add_argument("--json", action="store_true", help="print the table as JSON")
    reproduce.add_argument(
        "--nproc",
        type=_positive_int,
        default=1,
        metavar="N",
        help="train every arm data-parallel on N ranks of this machine (torchrun, gloo/NCCL)",
    )
    reproduce.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a preset field, e.g. --set epochs=3 (repeatable)",
    )
    reproduce.set_defaults(run=command_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    arguments = build_parser().parse_args(argv)
    try:
        arguments.run(arguments)
    except (UsageError, ValueError) as exc:  # qgraph's input errors are ValueErrors too
        print(f"qgraph: error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    except Exception as exc:  # one clear line, not a traceback
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"qgraph: error: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
