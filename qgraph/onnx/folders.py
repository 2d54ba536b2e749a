"""The export folder: can it take files, and clearing what an overwriting export did not write."""

from __future__ import annotations

import tempfile
from pathlib import Path

from qgraph.errors import InputError

__all__ = ["check_writable", "make_folder", "remove_all_but"]


def make_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents) if needed; InputError if that cannot be done."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"out_dir {folder} exists and is not a folder; pick another path.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create out_dir {folder} ({exc.strerror or exc}); pick a folder you can "
            "write to."
        ) from None


def check_writable(folder: Path) -> None:
    """InputError now, before the export's minutes of work, if ``folder`` takes no files."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise InputError(
            f"out_dir {folder} is not writable ({exc.strerror or exc}); pick a folder you can "
            "write to."
        ) from None


def remove_all_but(folder: Path, keep: set[str]) -> None:
    """Delete every file under ``folder`` whose relative path is not in ``keep``, then the
    folders left empty (an overwritten export holds only what it wrote)."""
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        relative = path.relative_to(folder).as_posix()
        if path.is_dir():
            if not any(path.iterdir()):
                path.rmdir()
        elif relative not in keep:
            path.unlink()
