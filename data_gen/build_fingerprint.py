"""Fingerprint of a dataset build: the config fields that shape the output + the inputs' identity.

Why: "already built" must mean "built from the same settings and inputs". Rerunning the builder
with a changed ``--set`` (or after adding photos) used to return the old dataset with only an
INFO line. The builder stores this fingerprint in the dataset's marker file and compares it
before reusing a folder. Inputs are identified by name, size and modification time (photos)
or content hash (CSV/metadata files and local OSM extracts): cheap even for 100k photos.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from data_gen.build_config import BuildConfig

__all__ = ["build_fingerprint", "describe_change", "NOT_IN_FINGERPRINT"]

NOT_IN_FINGERPRINT = ("out_dir", "render.workers", "captions.device")
"""Fields that do not change the dataset's content (where it goes, how many processes render it)."""


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_items(cfg: BuildConfig) -> dict[str, Any]:
    """Dotted-key view of the config, minus ``NOT_IN_FINGERPRINT`` (JSON-safe values)."""
    flat = _flatten(cfg.model_dump(mode="json"))
    return {k: v for k, v in sorted(flat.items()) if k not in NOT_IN_FINGERPRINT}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stat_line(p: Path, rel_to: Path | None = None) -> str:
    try:
        st = p.stat()
        return f"{p.relative_to(rel_to) if rel_to else p}|{st.st_size}|{st.st_mtime_ns}"
    except (OSError, ValueError):
        return f"{p}|missing"


def _inputs(cfg: BuildConfig) -> list[str]:
    from data_gen.importers import _csv_rows, _images_in

    lines = []
    osm = cfg.map.osm_path
    if cfg.map.source == "osm" and osm and Path(osm).is_file():
        lines.append(f"osm|{_file_digest(Path(osm))}")
    im = cfg.importer
    if im.kind == "synthcity" or not im.path:
        return lines
    src = Path(im.path)
    if im.kind in ("csv", "utm_csv"):
        if src.is_file():
            lines.append(f"table|{_file_digest(src)}")
            lines += [_stat_line(p) for p, _ in _csv_rows(src, im.path_col, (), im.root, "CSV")]
    elif src.is_dir():
        lines += [_stat_line(p, src) for p in _images_in(src)]
    return lines


def build_fingerprint(cfg: BuildConfig) -> dict[str, Any]:
    """{"config_sha", "inputs_sha", "config"}: what the builder stores in the dataset marker."""
    items = config_items(cfg)
    return {"config_sha": _sha(json.dumps(items, sort_keys=True).encode()),
            "inputs_sha": _sha("\n".join(_inputs(cfg)).encode()),
            "config": items}


def describe_change(old: dict[str, Any], new: dict[str, Any], max_fields: int = 5) -> str:
    """'' if ``old`` (a stored marker) matches ``new``, else a short reason naming what changed."""
    reasons = []
    if old.get("config_sha") != new["config_sha"]:
        before, after = old.get("config") or {}, new["config"]
        keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        shown = [f"{k}: {before.get(k, '<unset>')!r} -> {after.get(k, '<unset>')!r}" for k in keys[:max_fields]]
        more = f" and {len(keys) - max_fields} more" if len(keys) > max_fields else ""
        reasons.append("config changed (" + ", ".join(shown or ["unknown fields"]) + more + ")")
    if old.get("inputs_sha") != new["inputs_sha"]:
        reasons.append("input files changed (map extract, CSV or photos added/removed/modified)")
    return "; ".join(reasons)
