"""Importers for the AddressCLIP paper's datasets, read as they ship.

- Pittsburgh-250k ground truth: NetVLAD's ``pitts250k_{train,val,test}.mat`` (and the 30k ones),
  a MATLAB struct ``dbStruct`` with fields ``whichSet`` (char), ``dbImageFns`` / ``qImageFns``
  (N × 1 cell arrays of relative paths such as ``000/000000_pitch1_yaw1.jpg``), ``utmDb`` / ``utmQ``
  (2 × N double: UTM easting; northing, zone 17N), ``numImages``, ``numQueries``, ``posDistThr``,
  ``posDistSqThr``, ``nonTrivPosDistSqThr``. Database images live under the dataset root, queries
  under ``queries_real/`` (NetVLAD's layout). Every record keeps its set tag ``{whichSet}_{db|q}``
  so the builder can keep the source split (``importer.split_by: source``).
- SF-XL at scale: file names ``@utm_e@utm_n@zone@band@lat@lon@pano@...@.jpg`` read over a process
  pool, with a header-only image check by default (PIL opens the file and reads its size: no
  pixel decode), optional full decode, and a JSON-lines progress file so a killed import resumes
  where it stopped. 1.96 M images (SF-IAL-Large) cannot be decoded one by one in one process.

The authors' own annotation files (address, caption) are read by ``data_gen.ial_annotations``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

import numpy as np
import pyproj
from PIL import Image
from tqdm.auto import tqdm

from data_gen.importers import IMAGE_EXTS, ImportResult, check_image, sfxl_latlon
from llava_address.common.images import MAX_PIXELS

__all__ = ["DbStruct", "read_dbstruct", "utm_array_to_latlon", "pitts_gps_lookup", "import_pitts_mat",
           "import_sfxl_parallel", "header_check", "list_images"]

PITTS_ZONE = 17  # Pittsburgh: UTM zone 17 north
QUERY_DIR = "queries_real"


@dataclass
class DbStruct:
    """One NetVLAD ``dbStruct``; UTM arrays are (N, 2) = (easting, northing) in metres."""

    which_set: str
    db_image_fns: list[str]
    utm_db: np.ndarray
    q_image_fns: list[str]
    utm_q: np.ndarray
    pos_dist_thr: float


def _cellstr(cell) -> list[str]:
    """MATLAB N × 1 cellstr as loaded by scipy → list of str (each cell is a 1-element char array)."""
    out = []
    for c in np.asarray(cell, dtype=object).ravel():
        c = np.asarray(c).ravel()
        out.append(str(c[0]).strip() if c.size else "")
    return out


def _utm(a, n: int, what: str, path: Path) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    if a.size == 0 and n == 0:
        return np.zeros((0, 2))
    if a.shape == (2, n):
        return a.T
    if a.shape == (n, 2):  # some re-exports store N × 2
        return a
    raise ValueError(f"{path}: dbStruct.{what} has shape {a.shape}, expected (2, {n})")


def read_dbstruct(path: str | Path) -> DbStruct:
    """Read a NetVLAD ground-truth ``.mat`` (``scipy.io.loadmat``; MATLAB v5 files as distributed)."""
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Pittsburgh ground truth not found: {path}")
    mat = loadmat(path)
    if "dbStruct" not in mat:
        raise ValueError(f"{path}: no 'dbStruct' variable (have {sorted(k for k in mat if not k.startswith('__'))})")
    s = mat["dbStruct"]
    names = s.dtype.names or ()
    need = ("whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ")
    missing = [f for f in need if f not in names]
    if missing:
        raise ValueError(f"{path}: dbStruct lacks fields {missing} (has {list(names)})")
    s = s[0, 0]
    db, q = _cellstr(s["dbImageFns"]), _cellstr(s["qImageFns"])
    thr = s["posDistThr"] if "posDistThr" in names else np.array([[25.0]])
    return DbStruct(str(np.asarray(s["whichSet"]).ravel()[0]).strip(), db, _utm(s["utmDb"], len(db), "utmDb", path),
                    q, _utm(s["utmQ"], len(q), "utmQ", path), float(np.asarray(thr).ravel()[0]))


def utm_array_to_latlon(utm: np.ndarray, zone: int = PITTS_ZONE, northern: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised (N, 2) UTM → (lat, lon) arrays (pyproj)."""
    crs = pyproj.CRS.from_dict({"proj": "utm", "zone": int(zone), "south": not northern})
    lon, lat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(utm[:, 0], utm[:, 1])
    return np.asarray(lat, float), np.asarray(lon, float)


def _entries(mat_paths: Iterable[str | Path], sets: Iterable[str], zone: int, query_dir: str):
    """(relative path under the dataset root, lat, lon, tag) for every image of the chosen sets."""
    sets = set(sets)
    bad = sets - {"db", "q"}
    if bad:
        raise ValueError(f"importer.sets must be among ['db', 'q'], got {sorted(bad)}")
    for mp in mat_paths:
        st = read_dbstruct(mp)
        for kind, fns, utm, prefix in (("db", st.db_image_fns, st.utm_db, ""),
                                       ("q", st.q_image_fns, st.utm_q, query_dir)):
            if kind not in sets or not fns:
                continue
            lat, lon = utm_array_to_latlon(utm, zone)
            for fn, la, lo in zip(fns, lat, lon):
                yield (f"{prefix}/{fn}" if prefix else fn), float(la), float(lo), f"{st.which_set}_{kind}"


def pitts_gps_lookup(mat_paths: Iterable[str | Path], zone: int = PITTS_ZONE,
                     query_dir: str = QUERY_DIR) -> dict[str, tuple[float, float]]:
    """Relative image path → (lat, lon) over the given ``.mat`` files (database and queries)."""
    return {rel: (la, lo) for rel, la, lo, _ in _entries(mat_paths, ("db", "q"), zone, query_dir)}


def import_pitts_mat(mat_paths: str | Path | Iterable[str | Path], root: str | Path, sets: Iterable[str] = ("db", "q"),
                     zone: int = PITTS_ZONE, query_dir: str = QUERY_DIR, verify: bool = True) -> ImportResult:
    """Images listed in NetVLAD ``.mat`` files; each record's ``tag`` is ``{whichSet}_{db|q}``.

    A path listed twice (the same database image in two ``.mat`` files) is kept once.
    """
    if isinstance(mat_paths, (str, Path)):
        mat_paths = [mat_paths]
    root = Path(root)
    res, seen = ImportResult(), set()
    for rel, la, lo, tag in _entries(mat_paths, sets, zone, query_dir):
        if rel in seen:
            res.skipped["duplicate"] += 1
            continue
        seen.add(rel)
        res.add(root / rel, la, lo, verify=verify, tag=tag)
    return res


# ---------------------------------------------------------------------------------------------- SF-XL


def header_check(path: str | Path) -> str:
    """'' if PIL recognises the file and its header gives a size the shared image loader accepts
    (``llava_address.common.images.MAX_PIXELS``); no pixel is decoded."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (FileNotFoundError, PermissionError):
        return "unreadable"
    except Image.DecompressionBombError:  # Pillow refuses sizes over 2 × MAX_IMAGE_PIXELS at open
        return "too_large"
    except (OSError, SyntaxError, ValueError):
        return "corrupt_image"
    if w <= 0 or h <= 0:
        return "corrupt_image"
    return "too_large" if w * h > MAX_PIXELS else ""  # the shared loader would refuse it later


def list_images(folder: str | Path) -> list[str]:
    """Image files under ``folder`` (recursive, sorted); ``os.scandir`` for speed at millions of files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    out, stack = [], [str(folder)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif os.path.splitext(e.name)[1].lower() in IMAGE_EXTS:
                    out.append(e.path)
    out.sort()
    return out


def _sfxl_chunk(args: tuple[int, list[str], str]) -> tuple[int, list[list], dict[str, int]]:
    """Worker: parse names and check images of one chunk → (chunk id, [[path, lat, lon]], skips)."""
    cid, paths, check = args
    keep, skipped = [], Counter()
    for p in paths:
        ll = sfxl_latlon(os.path.basename(p))
        if ll is None:
            skipped["no_gps"] += 1
            continue
        lat, lon = ll
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            skipped["gps_out_of_range"] += 1
            continue
        reason = "" if check == "none" else (header_check(p) if check == "header" else check_image(Path(p)))
        if reason:
            skipped[reason] += 1
            continue
        keep.append([p, lat, lon])
    return cid, keep, dict(skipped)


def _progress_head(paths: list[str], chunk_size: int, check: str) -> dict:
    """Identifies one import: the exact file list (digest) and the settings that shape the chunks."""
    import hashlib

    digest = hashlib.blake2b("\n".join(paths).encode(), digest_size=16).hexdigest()
    return {"files": len(paths), "digest": digest, "chunk_size": chunk_size, "check": check}


def _read_progress(path: Path, head: dict) -> dict[int, tuple[list, dict]]:
    """Finished chunks from a progress file of the same import; a torn last line is ignored."""
    done: dict[int, tuple[list, dict]] = {}
    if not path.is_file():
        return done
    with path.open() as fh:
        lines = fh.read().splitlines()
    if not lines:
        return done
    try:
        if json.loads(lines[0]) != head:
            return done  # another file list or settings: start over
    except json.JSONDecodeError:
        return done
    for line in lines[1:]:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        done[int(row["chunk"])] = (row["records"], row["skipped"])
    return done


def import_sfxl_parallel(folder: str | Path, workers: int | None = None, check: Literal["header", "full", "none"] = "header",
                         progress_file: str | Path | None = None, chunk_size: int = 2000,
                         progress: bool = True) -> ImportResult:
    """SF-XL file names under ``folder`` over ``workers`` processes (default: all cores).

    ``check``: ``header`` (default) opens each image and reads its size without decoding pixels;
    ``full`` decodes every image (catches truncated files, ~50× slower); ``none`` trusts the files.
    ``progress_file`` (JSON lines, one per finished chunk) makes the import resumable: a re-run with
    the same folder and settings skips the chunks already listed there.
    """
    if check not in ("header", "full", "none"):
        raise ValueError(f"importer.check must be header, full or none, got {check!r}")
    paths = list_images(folder)
    chunks = [paths[i:i + chunk_size] for i in range(0, len(paths), chunk_size)]
    pf = Path(progress_file) if progress_file else None
    head = _progress_head(paths, chunk_size, check)
    done = _read_progress(pf, head) if pf else {}
    if pf and not done:
        pf.parent.mkdir(parents=True, exist_ok=True)
        pf.write_text(json.dumps(head) + "\n")
    todo = [(i, c, check) for i, c in enumerate(chunks) if i not in done]
    workers = workers or os.cpu_count() or 1
    with ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=len(paths), initial=sum(len(chunks[i]) for i in done),
                                       desc="SF-XL import", unit="img", disable=not progress))
        fh = stack.enter_context(pf.open("a")) if pf else None
        pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers)) if workers > 1 else None
        for cid, recs, skipped in (pool.map(_sfxl_chunk, todo) if pool else map(_sfxl_chunk, todo)):
            done[cid] = (recs, skipped)
            if fh:  # one line per finished chunk, flushed: a kill loses at most the chunks in flight
                fh.write(json.dumps({"chunk": cid, "records": recs, "skipped": skipped}) + "\n")
                fh.flush()
            bar.update(len(chunks[cid]))
    res = ImportResult()
    for cid in sorted(done):
        recs, skipped = done[cid]
        res.skipped.update(skipped)
        for p, lat, lon in recs:
            res.add(Path(p), lat, lon, verify=False)
    return res
