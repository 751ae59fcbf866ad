"""Locate a folder (or list) of photos: CSV + GeoJSON out, resumable, bad files counted and skipped.

Why resumable: a mapping team runs thousands of photos; a killed run must not start over.
Results are rewritten atomically every ``flush_every`` images, so the CSV on disk is always
complete up to some image; a re-run reads it and skips every path already in it (and every path
recorded as unreadable in ``<csv>.skipped.json``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd
from tqdm.auto import tqdm

from llava_address.common.io import atomic_write_bytes, atomic_write_json, read_json

__all__ = ["IMAGE_EXTENSIONS", "list_images", "locate_images", "CSV_COLUMNS"]

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
CSV_COLUMNS = ["path", "level", "address", "confidence", "sub_street", "sub_street_confidence", "street",
               "street_confidence", "district", "district_confidence", "lat", "lon", "radius_m",
               "coordinate_method", "top_k"]


def list_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Images named by ``inputs``: folders (searched recursively by extension), ``.txt`` lists (one path a
    line, relative to the list's folder, ``#`` comments) or image files. Order kept, duplicates dropped."""
    out: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file() and p.suffix.lower() == ".txt":
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    q = Path(line)
                    out.append(q if q.is_absolute() else p.parent / q)
        elif p.suffix.lower() in IMAGE_EXTENSIONS or p.is_file():
            out.append(p)  # a missing file is reported per image, as a counted skip
        else:
            raise FileNotFoundError(f"no such folder, list or image: {p}")
    return list(dict.fromkeys(out))


def _geojson(df: pd.DataFrame) -> bytes:
    feats = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [float(r["lon"]), float(r["lat"])]},
              "properties": {k: r[k] for k in CSV_COLUMNS if k not in ("lat", "lon", "top_k")}
              | {"top_k": json.loads(r["top_k"])}} for r in df.to_dict("records")]
    return json.dumps({"type": "FeatureCollection", "features": feats}, ensure_ascii=False, default=float).encode()


def _row(path: str, a: dict[str, Any]) -> dict[str, Any]:
    return {"path": path, **{k: a[k] for k in CSV_COLUMNS if k not in ("path", "top_k")},
            "top_k": json.dumps([[n, round(p, 6)] for n, p in a["top_k"]], ensure_ascii=False)}


def _append(df: pd.DataFrame, rows: list[dict[str, Any]]) -> pd.DataFrame:
    new = pd.DataFrame(rows, columns=CSV_COLUMNS)
    return new if df.empty else pd.concat([df, new], ignore_index=True)


def _write(df: pd.DataFrame, out_csv: Path, out_geojson: Path, bad: dict[str, str], skipped_file: Path) -> None:
    atomic_write_bytes(out_csv, df.to_csv(index=False).encode("utf-8"))
    atomic_write_bytes(out_geojson, _geojson(df))
    atomic_write_json(skipped_file, bad)


def locate_images(locator, images: Sequence[str | Path], out_csv: str | Path, out_geojson: str | Path | None = None,
                  k: int = 5, batch_size: int = 32, flush_every: int = 256, progress: bool = True) -> dict[str, Any]:
    """Answer every image not yet in ``out_csv``; returns counts (done before, new, bad) and the paths."""
    from llava_address.clip.answers import build_answers
    from llava_address.clip.locator import _load_image

    out_csv = Path(out_csv)
    out_geojson = Path(out_geojson) if out_geojson else out_csv.with_suffix(".geojson")
    skipped_file = out_csv.with_name(out_csv.name + ".skipped.json")
    df = (pd.read_csv(out_csv, dtype={"path": str}, keep_default_na=False) if out_csv.is_file()
          else pd.DataFrame(columns=CSV_COLUMNS))
    if list(df.columns) != CSV_COLUMNS:
        raise ValueError(f"{out_csv} exists but is not a locate.py result (columns {list(df.columns)[:5]}...)")
    bad: dict[str, str] = read_json(skipped_file) if skipped_file.is_file() else {}
    done = set(df["path"]) | set(bad)
    todo = [str(p) for p in images if str(p) not in done]
    stats = {"images": len(images), "already_done": len(images) - len(todo), "new": 0, "bad": 0}
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(todo), desc="locate", unit="img", disable=not progress)
    since_flush = 0
    for start in range(0, len(todo), batch_size):
        paths, pil = [], []
        for p in todo[start:start + batch_size]:
            try:
                pil.append(_load_image(p))
                paths.append(p)
            except (OSError, ValueError) as exc:
                bad[p] = str(exc)
                stats["bad"] += 1
                log.warning("skipping unreadable image (%d so far): %s", stats["bad"], exc)
        if pil:
            answers = build_answers(locator, locator.encode_images(pil), k=k)
            rows += [_row(p, a) for p, a in zip(paths, answers)]
            stats["new"] += len(paths)
        bar.update(len(todo[start:start + batch_size]))
        since_flush += batch_size
        if since_flush >= flush_every:
            df, rows, since_flush = _append(df, rows), [], 0
            _write(df, out_csv, out_geojson, bad, skipped_file)
    bar.close()
    if rows or not out_csv.is_file() or stats["bad"]:
        df = _append(df, rows) if rows else df
        _write(df, out_csv, out_geojson, bad, skipped_file)
    stats.update(rows=len(df), bad_total=len(bad), csv=str(out_csv), geojson=str(out_geojson),
                 skipped_file=str(skipped_file))
    return stats
