"""Is a saved checkpoint file loadable? Cheap checks shared by the CLIP and LLaVA resume paths.

Reading a whole optimizer state to find out that it is truncated costs as much as resuming; the
checks here read only headers and archive directories: a safetensors header must cover the file,
a torch.save zip archive (``.pt``/``.pth``/``.bin``, accelerate's ``.pkl``) must have its
central directory (written last, so a killed save or a truncated copy fails), JSON must parse.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Callable, Iterable

from safetensors import safe_open

__all__ = ["CheckpointError", "file_problem", "folder_problem", "first_usable"]

log = logging.getLogger(__name__)

_TORCH_ZIP = (".pt", ".pth", ".bin", ".pkl")


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and the flag to start fresh."""


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be loaded, or None when its header/directory is whole."""
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as fh:
                fh.keys()
        elif path.suffix in _TORCH_ZIP:
            with zipfile.ZipFile(path) as zf:
                zf.namelist()
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001 - any failure to open is the answer
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return None


def folder_problem(folder: Path, required: tuple[str, ...] = ()) -> tuple[Path, str] | None:
    """(file, reason) for the first missing required file or unloadable file under ``folder``, else None."""
    for name in required:
        if not (folder / name).is_file():
            return folder / name, "missing (the save did not finish)"
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        reason = file_problem(f)
        if reason:
            return f, reason
    return None


def first_usable(candidates: Iterable[Path], problem: Callable[[Path], tuple[Path, str] | None], what: str,
                 hint: str) -> Path | None:
    """The first candidate (give them newest first) with no ``problem``; falls back past broken ones.

    None when there is no candidate; :class:`CheckpointError` naming the newest broken file (and
    ``hint``, the flag to start fresh) when there are some and none is usable.
    """
    broken: list[tuple[Path, str]] = []
    for cand in candidates:
        found = problem(cand)
        if found is None:
            for f, why in broken:
                log.warning("unusable %s file %s (%s): resuming from %s instead", what, f, why, cand)
            return cand
        broken.append(found)
    if broken:
        f, why = broken[0]
        raise CheckpointError(f"cannot resume: {f} is unusable ({why}) and no older {what} loads; {hint}")
    return None
