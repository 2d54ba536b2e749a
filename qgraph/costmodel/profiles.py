"""Device profiles: data files with a source and a date for every number.

A profile is one TOML file in ``qgraph/costmodel/devices/`` (or in a user directory of
calibrated profiles, see ``user_profile_dir``). Every number is a table
``{ value, unit, source, date }`` and becomes a :class:`Quantity`; nothing in the cost model
uses a number that has no source.

IBM profiles name a qiskit-ibm-runtime fake backend (``from_fake = "fake_fez"``). At load
time the calibration numbers (qubit count, 2-qubit and 1-qubit gate error and duration,
readout error and duration, T1, T2, repetition delay, basis gates) are re-read from that
fake backend's ``Target``, as medians over qubits or pairs, so the profile follows the
installed calibration snapshot; the values written in the file are the fallback when
qiskit-ibm-runtime is not installed (their source says where they came from).

    >>> from qgraph.costmodel import load, devices
    >>> load("ibm_heron_r2")["two_qubit_error"]          # a Quantity
    >>> [p.name for p in devices()]
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import statistics
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

from qgraph.backends.qiskit_shared import cached_fake_backend

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "ALIASES",
    "DEVICE_DIR",
    "DeviceProfile",
    "Kind",
    "Quantity",
    "device_names",
    "devices",
    "format_quantity",
    "load",
    "user_profile_dir",
    "write_profile",
]

Kind = Literal["qpu", "simulator", "classical"]

#: the profiles shipped with qgraph
DEVICE_DIR = Path(__file__).resolve().parent / "devices"

#: other names people use for the shipped profiles
ALIASES: dict[str, str] = {
    "ibm_heron": "ibm_heron_r2",
    "ibm_fez": "ibm_heron_r2",
    "ibm_boston": "ibm_heron_r3",
    "ibm_eagle": "ibm_eagle_r3",
    "ibm_sherbrooke": "ibm_eagle_r3",
    "ionq": "ionq_aria",
    "ft": "ideal_ft",
    "cpu": "cpu_local",
    "h100": "gpu_h100",
}

#: profile keys re-read from a fake backend's Target when ``from_fake`` is set
FAKE_KEYS = (
    "num_qubits",
    "two_qubit_error",
    "two_qubit_time",
    "one_qubit_error",
    "one_qubit_time",
    "readout_error",
    "readout_time",
    "t1",
    "t2",
    "rep_delay",
    "clops_h",
)


@dataclass(frozen=True)
class Quantity:
    """A number with its unit, where it came from, and when."""

    value: float
    unit: str
    source: str
    date: str

    def __float__(self) -> float:
        return float(self.value)

    def __str__(self) -> str:
        return f"{format_quantity(self.value, self.unit)} [{self.source}; {self.date}]"


def format_quantity(value: float, unit: str = "") -> str:
    """A compact human form: 3.8e-03, 1,024, 0.25 s (unit appended when non-empty)."""
    if isinstance(value, bool):
        text = str(value)
    elif isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e15):
        text = f"{int(value):,}"
    elif value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e6):
        text = f"{value:.3e}"
    else:
        text = f"{value:.4g}"
    return f"{text} {unit}".rstrip() if unit else text


@dataclass
class DeviceProfile:
    """One device: a QPU, a local simulator or a classical processor.

    ``numbers`` maps a key (e.g. ``"two_qubit_error"``, ``"qaap.per_draw"``) to a
    :class:`Quantity`. ``basis`` and ``coupling`` say how circuits are transpiled for it:
    ``coupling`` is ``"all-to-all"``, ``"fake"`` (the fake backend's coupling map) or
    ``"aer"`` (qiskit-aer's own target, as the aer backend transpiles). ``time_model`` picks
    the time formula (``ibm``, ``gate_durations``, ``surface_code``, ``simulator``,
    ``roofline``) and ``pricing`` the money formula (``qpu_seconds``, ``gate_shots`` or "").
    """

    name: str
    kind: Kind
    description: str
    numbers: dict[str, Quantity] = field(default_factory=dict)
    basis: tuple[str, ...] = ()
    coupling: str = "all-to-all"
    from_fake: str | None = None
    time_model: str = ""
    pricing: str = ""
    backend: str | None = None  # the qgraph backend a simulator profile describes
    notes: tuple[str, ...] = ()
    path: Path | None = None

    def __getitem__(self, key: str) -> Quantity:
        try:
            return self.numbers[key]
        except KeyError:
            known = ", ".join(sorted(self.numbers))
            raise KeyError(
                f"device profile {self.name!r} has no number {key!r}; it has: {known}."
            ) from None

    def __contains__(self, key: object) -> bool:
        return key in self.numbers

    def value(self, key: str) -> float:
        """The value of number ``key`` (KeyError naming the known keys when absent)."""
        return float(self[key].value)

    def get(self, key: str, default: float | None = None) -> float | None:
        """The value of ``key``, or ``default`` when the profile has no such number."""
        found = self.numbers.get(key)
        return default if found is None else float(found.value)

    def items(self) -> Iterator[tuple[str, Quantity]]:
        """(key, Quantity) pairs, sorted by key."""
        return iter(sorted(self.numbers.items()))

    @property
    def max_qubits(self) -> int | None:
        """Qubits available (``num_qubits``), None when not limited by a device size."""
        found = self.get("num_qubits")
        return None if found is None else int(found)

    def fake_backend(self) -> Any:
        """The qiskit-ibm-runtime fake backend named by ``from_fake`` (ImportError if absent)."""
        if self.from_fake is None:
            raise ValueError(f"device profile {self.name!r} names no fake backend.")
        return cached_fake_backend(self.from_fake)

    def with_numbers(self, **numbers: Quantity) -> DeviceProfile:
        """A copy with some numbers replaced or added (for what-if studies and tests)."""
        merged = {**self.numbers, **numbers}
        return dataclasses.replace(self, numbers=merged)


# --------------------------------------------------------------------------- fake backends


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _runtime_version() -> str:
    try:
        return version("qiskit-ibm-runtime")
    except Exception:  # pragma: no cover - metadata missing
        return "?"


def _two_qubit_op(target: Any) -> str:
    for name in ("cz", "ecr", "cx", "rzz"):
        if name in target.operation_names:
            return name
    raise ValueError("fake backend target has no 2-qubit gate among cz, ecr, cx.")


def _fake_numbers(fake_name: str) -> tuple[dict[str, Quantity], tuple[str, ...]]:
    """Medians from the fake backend's Target, each with its source; and its basis gates."""
    backend = cached_fake_backend(fake_name)
    target = backend.target
    try:
        stamp = backend.properties().last_update_date
        date = stamp.strftime("%Y-%m-%d")
    except Exception:  # pragma: no cover - snapshot without a date
        date = "unknown"
    origin = f"qiskit-ibm-runtime {_runtime_version()} {fake_name} Target (calibration snapshot)"
    out: dict[str, Quantity] = {}

    def stat(op: str, attr: str) -> tuple[float, int] | None:
        values = [
            float(getattr(p, attr))
            for p in target[op].values()
            if p is not None and getattr(p, attr) is not None
        ]
        return (_median(values), len(values)) if values else None

    out["num_qubits"] = Quantity(target.num_qubits, "qubits", f"{origin}: num_qubits", date)
    two = _two_qubit_op(target)
    for key, op, attr, unit in (
        ("two_qubit_error", two, "error", ""),
        ("two_qubit_time", two, "duration", "s"),
        ("one_qubit_error", "sx", "error", ""),
        ("one_qubit_time", "sx", "duration", "s"),
        ("readout_error", "measure", "error", ""),
        ("readout_time", "measure", "duration", "s"),
    ):
        found = stat(op, attr) if op in target.operation_names else None
        if found is not None:
            value, count = found
            out[key] = Quantity(value, unit, f"{origin}: median {op} {attr} over {count}", date)
    props = [p for p in (target.qubit_properties or []) if p is not None]
    for key in ("t1", "t2"):
        values = [float(getattr(p, key)) for p in props if getattr(p, key, None)]
        if values:
            out[key] = Quantity(
                _median(values), "s", f"{origin}: median {key.upper()} over {len(values)}", date
            )
    config = backend.configuration()
    rep_delay = getattr(config, "default_rep_delay", None)
    if rep_delay is not None:
        out["rep_delay"] = Quantity(
            float(rep_delay), "s", f"{origin}: configuration default_rep_delay", date
        )
    clops = getattr(config, "clops_h", None)
    if clops:
        out["clops_h"] = Quantity(
            float(clops), "layers/s", f"{origin}: configuration clops_h", date
        )
    basis = tuple(
        sorted(
            name
            for name in target.operation_names
            if name not in ("delay", "measure", "reset", "id", "if_else", "for_loop")
            and name not in ("switch_case", "while_loop", "measure_2", "reset_2", "box")
        )
    )
    return out, basis


# --------------------------------------------------------------------------- loading


def user_profile_dir() -> Path:
    """Where ``calibrate`` writes this machine's profiles: $QGRAPH_DEVICE_DIR, else
    ~/.config/qgraph/devices. Profiles there take precedence over the shipped ones."""
    env = os.environ.get("QGRAPH_DEVICE_DIR")
    return Path(env) if env else Path.home() / ".config" / "qgraph" / "devices"


def _search_dirs() -> list[Path]:
    return [user_profile_dir(), DEVICE_DIR]


def device_names() -> list[str]:
    """Names of every loadable profile (shipped and user-calibrated), sorted."""
    names: set[str] = set()
    for directory in _search_dirs():
        if directory.is_dir():
            names.update(p.stem for p in directory.glob("*.toml"))
    return sorted(names)


def _quantity(key: str, raw: Any, path: Path) -> Quantity:
    if not isinstance(raw, Mapping):
        raise ValueError(
            f"{path}: number {key!r} must be a table {{ value, unit, source, date }}; got {raw!r}."
        )
    missing = [k for k in ("value", "unit", "source", "date") if k not in raw]
    if missing:
        raise ValueError(f"{path}: number {key!r} lacks {missing} (every number has a source).")
    value = raw["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{path}: number {key!r} must be a finite number; got {value!r}.")
    source, date = str(raw["source"]).strip(), str(raw["date"]).strip()
    if not source or not date:
        raise ValueError(f"{path}: number {key!r} has an empty source or date.")
    return Quantity(value, str(raw["unit"]), source, date)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, raw in table.items():
        name = f"{prefix}{key}"
        if isinstance(raw, Mapping) and "value" not in raw:
            yield from _flatten(raw, f"{name}.")
        else:
            yield name, raw


def _parse(path: Path) -> DeviceProfile:
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    kind = data.get("kind")
    if kind not in ("qpu", "simulator", "classical"):
        raise ValueError(f"{path}: kind must be qpu, simulator or classical; got {kind!r}.")
    numbers = {key: _quantity(key, raw, path) for key, raw in _flatten(data.get("numbers", {}))}
    profile = DeviceProfile(
        name=str(data.get("name", path.stem)),
        kind=kind,
        description=str(data.get("description", "")),
        numbers=numbers,
        basis=tuple(data.get("basis", ())),
        coupling=str(data.get("coupling", "all-to-all")),
        from_fake=data.get("from_fake"),
        time_model=str(data.get("time_model", "")),
        pricing=str(data.get("pricing", "")),
        backend=data.get("backend"),
        notes=tuple(data.get("notes", ())),
        path=path,
    )
    if profile.from_fake:
        try:
            fresh, basis = _fake_numbers(profile.from_fake)
        except ImportError:
            profile.notes = (
                *profile.notes,
                f"qiskit-ibm-runtime is not installed: calibration numbers are the file's "
                f"fallback values, not re-read from {profile.from_fake}.",
            )
        else:
            profile.numbers.update({k: v for k, v in fresh.items() if k in FAKE_KEYS})
            profile.basis = basis
    return profile


@functools.lru_cache(maxsize=64)
def _load_path(path: Path, mtime: float) -> DeviceProfile:
    return _parse(path)


def load(name: str | DeviceProfile) -> DeviceProfile:
    """The profile called ``name`` (user-calibrated first, then shipped).

    Raises ValueError listing the known names when there is none. The returned profile is a
    fresh copy: changing it does not change what later calls return.
    """
    if isinstance(name, DeviceProfile):
        return name
    if not isinstance(name, str):
        raise ValueError(f"device must be a profile name (str); got {type(name).__name__}.")
    key = ALIASES.get(name, name)
    for directory in _search_dirs():
        path = directory / f"{key}.toml"
        if path.is_file():
            cached = _load_path(path.resolve(), path.stat().st_mtime)
            return dataclasses.replace(cached, numbers=dict(cached.numbers))
    aliases = ", ".join(f"{a}→{t}" for a, t in sorted(ALIASES.items()))
    raise ValueError(
        f"unknown device {name!r}; known devices: {', '.join(device_names())} (aliases: {aliases})."
    )


def devices(kind: Kind | None = None) -> list[DeviceProfile]:
    """Every loadable profile (optionally only one kind), sorted by name."""
    found = [load(name) for name in device_names()]
    return [p for p in found if kind is None or p.kind == kind]


# --------------------------------------------------------------------------- writing


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def write_profile(profile: DeviceProfile, path: Path, header: str = "") -> Path:
    """Write ``profile`` as a TOML file that :func:`load` reads back unchanged."""
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    for key in ("name", "kind", "description"):
        lines.append(f"{key} = {_toml_value(getattr(profile, key))}")
    if profile.basis:
        lines.append(f"basis = {_toml_value(list(profile.basis))}")
    lines.append(f"coupling = {_toml_value(profile.coupling)}")
    for key in ("from_fake", "time_model", "pricing", "backend"):
        value = getattr(profile, key)
        if value:
            lines.append(f"{key} = {_toml_value(value)}")
    if profile.notes:
        lines.append("notes = [")
        lines.extend(f"  {_toml_value(note)}," for note in profile.notes)
        lines.append("]")
    lines.append("")
    lines.append("[numbers]")
    for key, q in sorted(profile.numbers.items()):
        name = key if key.replace("_", "").isalnum() else _toml_value(key)
        lines.append(
            f"{name} = {{ value = {_toml_value(q.value)}, unit = {_toml_value(q.unit)}, "
            f"source = {_toml_value(q.source)}, date = {_toml_value(q.date)} }}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
