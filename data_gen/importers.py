"""Importers for real street-view photos: (image path, lat, lon) records from common layouts.

Supported: a folder of JPEGs with EXIF GPS, a CSV (path, lat, lon), SF-XL style file names
(``@utm_e@utm_n@zone@band@lat@lon@pano@...@.jpg``) and Pittsburgh-250k style UTM metadata.
Every bad record becomes a counted skip with a reason (``SKIP_REASONS``) — real photo dumps
always contain a few broken files, and one of them must not kill a 100k-image build.
"""

from __future__ import annotations

import csv
import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import pyproj
from PIL import Image

from llava_address.common.images import ImageLoadError, load_image

__all__ = ["ImageRecord", "ImportResult", "SKIP_REASONS", "import_exif_folder", "import_csv",
           "import_sfxl", "import_utm_csv", "exif_gps", "utm_to_latlon", "run_importer", "dedupe",
           "check_image", "sfxl_latlon"]

log = logging.getLogger(__name__)
SKIP_REASONS = ("no_gps", "corrupt_image", "gps_out_of_range", "unreadable", "duplicate", "too_large")
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff"}
GPS_IFD = 0x8825


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    lat: float
    lon: float
    tag: str = ""  # source set, e.g. Pittsburgh "train_db" / "test_q" (importer.split_by=source)


@dataclass
class ImportResult:
    """Kept records and skip counts per reason (reasons from ``SKIP_REASONS``)."""

    records: list[ImageRecord] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    def add(self, path: Path, lat: float | None, lon: float | None, verify: bool, tag: str = "") -> None:
        if lat is None or lon is None:
            self.skipped["no_gps"] += 1
            return
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0) or (lat != lat or lon != lon):
            self.skipped["gps_out_of_range"] += 1
            return
        if verify:
            reason = check_image(path)
            if reason:
                self.skipped[reason] += 1
                return
        self.records.append(ImageRecord(Path(path), float(lat), float(lon), tag))


def check_image(path: Path) -> str:
    """'' if the image decodes fully (the shared loader's checks), else the skip reason."""
    try:
        load_image(path, max_side=64)  # full decode at reduced scale: catches truncated JPEGs and bombs
    except ImageLoadError as exc:
        return exc.kind
    return ""


def _dms(value) -> float:
    d, m, s = (float(v) for v in value)
    return d + m / 60.0 + s / 3600.0


def exif_gps(path: Path) -> tuple[float, float] | None:
    """(lat, lon) from the EXIF GPS IFD, None if absent. Raises OSError for unreadable files
    and ``Image.DecompressionBombError`` (not an OSError) for images over Pillow's pixel limit."""
    with warnings.catch_warnings():  # over ~89 M pixels Pillow warns; the loader's cap decides later
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            gps = im.getexif().get_ifd(GPS_IFD)
    if not gps or 2 not in gps or 4 not in gps:
        return None
    try:
        lat, lon = _dms(gps[2]), _dms(gps[4])
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if str(gps.get(1, "N")).upper().startswith("S"):
        lat = -lat
    if str(gps.get(3, "E")).upper().startswith("W"):
        lon = -lon
    return lat, lon


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def import_exif_folder(folder: str | Path, verify: bool = True) -> ImportResult:
    """All images under ``folder`` (recursive) whose EXIF carries GPS."""
    res = ImportResult()
    for p in _images_in(Path(folder)):
        try:
            ll = exif_gps(p)
        except Image.DecompressionBombError:
            res.skipped["too_large"] += 1
            continue
        except (OSError, SyntaxError, ValueError):
            res.skipped["corrupt_image" if p.is_file() else "unreadable"] += 1
            continue
        res.add(p, *(ll if ll else (None, None)), verify=verify)
    return res


def _float(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def import_csv(csv_path: str | Path, path_col: str = "path", lat_col: str = "lat", lon_col: str = "lon",
               root: str | Path | None = None, verify: bool = True) -> ImportResult:
    """Rows of a CSV; relative image paths resolve against ``root`` (default: the CSV's folder)."""
    res = ImportResult()
    for p, row in _csv_rows(csv_path, path_col, (lat_col, lon_col), root, "CSV"):
        res.add(p, _float(row[lat_col]), _float(row[lon_col]), verify)
    return res


def _csv_rows(csv_path: str | Path, path_col: str, value_cols: tuple[str, ...], root: str | Path | None,
              what: str) -> Iterator[tuple[Path, dict[str, str]]]:
    """(resolved image path, row) per CSV row; relative paths resolve against ``root`` or the CSV's folder."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"{what} not found: {csv_path}")
    base = Path(root) if root else csv_path.parent
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: Excel writes a byte-order mark
        reader = csv.DictReader(fh)
        missing = {path_col, *value_cols} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{csv_path}: missing columns {sorted(missing)} (have {reader.fieldnames})")
        for row in reader:
            p = Path(row[path_col])
            yield (p if p.is_absolute() else base / p), row


def utm_to_latlon(east: float, north: float, zone: int, northern: bool = True) -> tuple[float, float]:
    crs = pyproj.CRS.from_dict({"proj": "utm", "zone": int(zone), "south": not northern})
    t = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon, lat = t.transform(float(east), float(north))
    return float(lat), float(lon)


def sfxl_latlon(name: str) -> tuple[float, float] | None:
    """SF-XL names: '@utm_e@utm_n@zone@band@lat@lon@pano@...'. lat/lon are fields 5 and 6 of
    the '@' split; if they do not parse, fall back to the UTM fields (band >= 'N' = north)."""
    f = Path(name).name.split("@")
    if len(f) >= 7:
        lat, lon = _float(f[5]), _float(f[6])
        if lat is not None and lon is not None:
            return lat, lon
    if len(f) >= 5:
        e, n, z = _float(f[1]), _float(f[2]), _float(f[3])
        band = f[4].strip().upper()
        if None not in (e, n, z) and len(band) == 1 and band.isalpha():
            return utm_to_latlon(e, n, int(z), northern=band >= "N")
    return None


def import_sfxl(folder: str | Path, verify: bool = True) -> ImportResult:
    res = ImportResult()
    for p in _images_in(Path(folder)):
        ll = sfxl_latlon(p.name)
        res.add(p, *(ll if ll else (None, None)), verify=verify)
    return res


def import_utm_csv(csv_path: str | Path, zone: int = 17, northern: bool = True, path_col: str = "path",
                   east_col: str = "utm_east", north_col: str = "utm_north", root: str | Path | None = None,
                   verify: bool = True) -> ImportResult:
    """Pittsburgh-250k style metadata exported to CSV: image path + UTM easting/northing
    (Pittsburgh is UTM zone 17 north). A 'zone' column, when present, overrides ``zone``."""
    res = ImportResult()
    for p, row in _csv_rows(csv_path, path_col, (east_col, north_col), root, "UTM metadata"):
        e, n = _float(row[east_col]), _float(row[north_col])
        z = _float(row.get("zone")) or zone
        if e is None or n is None:
            res.skipped["no_gps"] += 1
            continue
        res.add(p, *utm_to_latlon(e, n, int(z), northern), verify=verify)
    return res


def run_importer(kind: str, path: str | Path, **kw) -> ImportResult:
    """Dispatch by name (the builder's ``importer.kind``)."""
    from data_gen.importers_paper import import_pitts_mat, import_sfxl_parallel

    fns = {"exif_folder": import_exif_folder, "csv": import_csv, "sfxl": import_sfxl, "utm_csv": import_utm_csv,
           "pitts_mat": import_pitts_mat, "sfxl_parallel": import_sfxl_parallel}
    if kind not in fns:
        raise ValueError(f"unknown importer kind {kind!r}; choose one of {sorted(fns)}")
    res = fns[kind](path, **kw)
    log.info("imported %d records from %s (%s); skipped %s", len(res.records), path, kind, dict(res.skipped))
    return res


def dedupe(records: Iterable[ImageRecord], res: ImportResult | None = None) -> list[ImageRecord]:
    """Drop repeated paths and byte-identical images (counted as 'duplicate').

    Identical positions with different images are kept: panorama crops (SF-XL) share a GPS fix.
    """
    import hashlib

    seen, out = set(), []
    for r in records:
        try:
            key = hashlib.blake2b(r.path.read_bytes(), digest_size=16).hexdigest()
        except OSError:
            key = str(r.path.resolve())
        if key in seen:
            if res is not None:
                res.skipped["duplicate"] += 1
            continue
        seen.add(key)
        out.append(r)
    return out
