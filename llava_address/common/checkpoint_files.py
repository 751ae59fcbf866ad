"""Is a saved checkpoint file loadable? Cheap checks shared by the CLIP and LLaVA resume paths.

Reading a whole optimizer state to find out that it is truncated costs as much as resuming; the
checks here read only headers and archive directories: a safetensors header must cover the file,
a torch.save zip archive (``.pt``/``.pth``/``.bin``, accelerate's ``.pkl``) must have its
central directory (written last, so a killed save or a truncated copy fails), JSON must parse.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from safetensors import safe_open

__all__ = ["CheckpointError", "file_problem", "folder_problem"]

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
