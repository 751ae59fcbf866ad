"""Atomic file and directory writes: a killed job never leaves a file or dataset that looks complete.

Folders written by ``atomic_dir`` carry a marker file (``MARKER``); an existing folder is only
ever replaced when it carries one (or is empty), so ``--overwrite`` pointed at a user's own
folder (photos, CSVs) refuses instead of deleting it. Outputs get the usual permissions for the
process umask (``mkstemp``/``mkdtemp`` alone would leave them 0600/0700).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_write_text", "atomic_write_json", "atomic_write_bytes", "atomic_path", "atomic_dir", "read_json",
           "MARKER", "read_marker", "NotOurFolderError"]

MARKER = ".llava_address"
"""JSON file inside every folder ``atomic_dir`` writes: {"written_by": "llava-address", ...caller's fields}."""


class NotOurFolderError(FileExistsError):
    """An existing folder was not written by this project, so it is never deleted or replaced."""


def _umask() -> int:
    """The process umask without changing it (Linux /proc; elsewhere the set-and-restore fallback)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp path next to ``path`` for libraries that write files themselves (``to_parquet``,
    ``savefig``); renamed over ``path`` when the block succeeds, removed when it fails.
    The temp name keeps ``path``'s suffix, so format detection by extension still works."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file path to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600; a library writing into it keeps that
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc})") from None


def read_marker(folder: str | Path) -> dict[str, Any] | None:
    """The marker ``atomic_dir`` wrote into ``folder``; None if there is none (not our folder)."""
    p = Path(folder) / MARKER
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("written_by") == "llava-address" else None


def _check_replaceable(final: Path, overwrite: bool) -> None:
    if final.is_dir() and not any(final.iterdir()):
        return  # an empty folder holds nothing to lose
    if not final.is_dir() or read_marker(final) is None:
        what = "a file" if not final.is_dir() else f"a folder not written by llava-address (no {MARKER} marker)"
        raise NotOurFolderError(f"{final} exists and is {what}; it is never deleted or overwritten: "
                                "choose another output path")
    if not overwrite:
        raise FileExistsError(f"{final} already exists (pass overwrite=True to replace it)")


@contextlib.contextmanager
def atomic_dir(final: str | Path, overwrite: bool = False, marker: dict[str, Any] | None = None) -> Iterator[Path]:
    """Build a directory under a temporary sibling name; rename into place only on success.

    Readers treat a directory as complete only if it exists under its final name, so a
    crash mid-build leaves just a ``.<name>.partial-*`` folder that the next run removes.
    The folder gets a ``MARKER`` file (with ``marker``'s fields); an existing ``final`` is
    replaced only if ``overwrite`` and it carries a marker (or is empty), else
    ``NotOurFolderError`` / ``FileExistsError`` is raised before anything is written.
    """
    final = Path(final)
    if final.exists():
        _check_replaceable(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.partial-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.partial-"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        atomic_write_json(tmp / MARKER, {"written_by": "llava-address", **(marker or {})})
        yield tmp
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
