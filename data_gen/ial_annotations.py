"""The AddressCLIP authors' annotation files (Pitts-IAL, SF-IAL) → a dataset folder, labels kept.

Layout as distributed (and as the public reimplementation techie-kp/AddressCLIP reads it)::

    pitts-IAL/
      annotations/pitts_train.json      {image key: [caption, address, canonical address], ...}
      annotations/pitts_database.json   same form
      annotations/pitts_queries.json    same form
      images/000/000015_pitch1_yaw1.jpg ... images/010/..., images/queries_real/...

An image key is a path relative to ``images/`` (a leading "./" is ignored). The *address* is the
verbose sentence ("... located in {neighbourhood}, specifically on a section of {street} that
..."); the *canonical address* reads "{street}, {neighbourhood} ({cross streets})". We keep the
authors' labels and captions instead of relabelling from OpenStreetMap:

- ``sub_street`` = the canonical address (whitespace normalised): the SSA class;
- ``street`` = its text before the first comma: the SA class (a sub-street prediction counts for
  its street, as everywhere in this project);
- ``district`` = the neighbourhood, between the first comma and "(";
- ``caption`` = the authors' caption; the verbose address is kept in ``address_verbose``.

The annotations carry no coordinates: GPS comes from the source dataset where available,
Pittsburgh-250k's NetVLAD ``.mat`` files (``gps: pitts_mat``) or SF-XL file names
(``gps: sfxl_names``). An image without GPS, a missing image or a malformed entry is a counted skip.
Splits are the authors' (one per annotation file). ``images/`` in the output is a symlink to the
authors' image folder (no copy of 250k–2M photos); ``copy_images: true`` copies instead.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field
from tqdm.auto import tqdm

from data_gen.contract import (MANIFEST_COLUMNS, NETWORK_FILE, SPLITS, STATS_FILE, AddressVocabulary,
                               write_addresses, write_manifest)
from llava_address.common.config import StrictModel
from llava_address.common.io import atomic_dir, atomic_write_json, read_json

__all__ = ["AnnotationSet", "IALConfig", "parse_canonical_address", "import_ial"]

log = logging.getLogger(__name__)


class AnnotationSet(StrictModel):
    file: str = Field(description="JSON file name under annotations/")
    split: Literal["train", "val", "test"]
    query: bool = Field(False, description="its images are Pittsburgh queries (look in query_dir first)")


class IALConfig(StrictModel):
    """configs/data/*_ial*.yaml: where the authors' files are and where GPS comes from."""

    name: str = "pitts_ial"
    root: str = Field(description="dataset root holding the annotation and image folders")
    annotations_dir: str = Field("annotations", description="folder of the JSON files under root")
    images_dir: str = Field("images", description="image folder under root (SF-XL: 'processed')")
    out_dir: str | None = Field(None, description="default data/<name>")
    annotations: list[AnnotationSet] = Field(default_factory=lambda: [
        AnnotationSet(file="pitts_train.json", split="train"),
        AnnotationSet(file="pitts_database.json", split="val"),
        AnnotationSet(file="pitts_queries.json", split="test", query=True)], min_length=1)
    gps: Literal["pitts_mat", "sfxl_names", "none"] = "pitts_mat"
    mat_paths: list[str] = Field(default_factory=list, description="gps=pitts_mat: NetVLAD .mat files")
    utm_zone: int = Field(17, ge=1, le=60)
    query_dir: str = Field("queries_real", description="folder of query images under images/")
    copy_images: bool = Field(False, description="copy images instead of linking images/ to the source folder")


_WS = re.compile(r"\s+")


def parse_canonical_address(canonical: str) -> tuple[str, str, str]:
    """'Forbes Avenue, Oakland (Atwood Street & Meyran Avenue)' → (sub_street, street, district)."""
    sub = _WS.sub(" ", canonical).strip()
    head = sub.split("(", 1)[0].strip()
    street, _, rest = head.partition(",")
    return sub, street.strip(), rest.strip().rstrip(",").strip()


def _resolve(images: Path, key: str, query: bool, query_dir: str) -> str | None:
    """Relative path under images/ of an annotation key, or None when no file exists."""
    key = key.strip()
    key = key[2:] if key.startswith("./") else key
    key = key[len("images/"):] if key.startswith("images/") else key
    tries = [f"{query_dir}/{key}", key] if query else [key, f"{query_dir}/{key}"]
    for rel in tries:
        if (images / rel).is_file():
            return rel
    return None


def _gps_lookup(cfg: IALConfig):
    """rel path under images/ → (lat, lon) or None."""
    if cfg.gps == "pitts_mat":
        from data_gen.importers_paper import pitts_gps_lookup

        if not cfg.mat_paths:
            raise ValueError("gps=pitts_mat needs mat_paths (pitts250k_train.mat, pitts250k_val.mat, ...)")
        table = pitts_gps_lookup(cfg.mat_paths, cfg.utm_zone, cfg.query_dir)
        return table.get
    if cfg.gps == "sfxl_names":
        from data_gen.importers import sfxl_latlon

        return lambda rel: sfxl_latlon(os.path.basename(rel))
    return lambda rel: None


def _rows(cfg: IALConfig, images: Path, skipped: Counter) -> pd.DataFrame:
    gps = _gps_lookup(cfg)
    rows, seen = [], set()
    for aset in cfg.annotations:
        path = Path(cfg.root) / cfg.annotations_dir / aset.file
        data = read_json(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected an object {{image key: [caption, address, canonical]}}")
        for key, vals in tqdm(data.items(), desc=aset.file, unit="img"):
            if not (isinstance(vals, list) and len(vals) >= 3 and all(isinstance(v, str) for v in vals[:3])):
                skipped["malformed_annotation"] += 1
                continue
            rel = _resolve(images, key, aset.query, cfg.query_dir)
            if rel is None:
                skipped["unreadable"] += 1
                continue
            if (rel, aset.split) in seen:
                skipped["duplicate"] += 1
                continue
            seen.add((rel, aset.split))
            ll = gps(rel)
            if ll is None:
                skipped["no_gps"] += 1
                continue
            sub, street, district = parse_canonical_address(vals[2])
            if not sub or not street:
                skipped["malformed_annotation"] += 1
                continue
            rows.append({"image": f"images/{rel}", "lat": float(ll[0]), "lon": float(ll[1]), "street": street,
                         "sub_street": sub, "district": district, "caption": _WS.sub(" ", vals[0]).strip(),
                         "split": aset.split, "geocode_confidence": 1.0,
                         "address_verbose": _WS.sub(" ", vals[1]).strip()})
    if not rows:
        raise ValueError(f"no usable annotated images under {cfg.root} (skipped: {dict(skipped)})")
    return pd.DataFrame(rows)


def _vocab_and_network(df: pd.DataFrame) -> tuple[AddressVocabulary, dict]:
    """Candidates per level; each sub-street's midpoint = mean GPS of its train images (all if none),
    its line = the extreme images along its principal axis (for maps)."""
    from data_gen.road_network import LocalProjection

    proj = LocalProjection(float(df.lat.mean()), float(df.lon.mean()))
    x, y = proj.to_xy(df.lat.to_numpy(), df.lon.to_numpy())
    info, feats = {}, []
    for sub, g in df.groupby("sub_street", sort=True):
        idx = g.index.to_numpy()
        tr = idx[(g.split == "train").to_numpy()]
        use = tr if len(tr) else idx
        xy = np.c_[x[idx], y[idx]]
        mid = np.c_[x[use], y[use]].mean(0)
        c = xy - xy.mean(0)
        axis = np.linalg.svd(c, full_matrices=False)[2][0] if len(xy) > 1 else np.array([1.0, 0.0])
        s = c @ axis
        ends = xy[[int(np.argmin(s)), int(np.argmax(s))]]
        mlat, mlon = proj.to_latlon(np.array([mid[0]]), np.array([mid[1]]))
        elat, elon = proj.to_latlon(ends[:, 0], ends[:, 1])
        row = g.iloc[0]
        info[sub] = {"street": row.street, "district": row.district, "midpoint": [round(float(mlat[0]), 7),
                     round(float(mlon[0]), 7)], "length_m": round(float(s.max() - s.min()), 1), "from": None, "to": None}
        feats.append({"type": "Feature", "geometry": {"type": "LineString",
                      "coordinates": [[float(lo), float(la)] for la, lo in zip(elat, elon)]},
                      "properties": {"kind": "sub_street", "name": sub, "street": row.street}})
    vocab = AddressVocabulary(sorted(info), sorted(set(df.street)), sorted({d for d in df.district if d}), info)
    return vocab, {"type": "FeatureCollection", "features": feats,
                   "properties": {"lat0": proj.lat0, "lon0": proj.lon0, "source": "annotations"}}


def import_ial(cfg: IALConfig, out_dir: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write the dataset folder (data contract) from the authors' annotation files."""
    t0 = time.time()
    out = Path(out_dir or cfg.out_dir or f"data/{cfg.name}")
    if out.exists() and not overwrite and (out / STATS_FILE).is_file():
        log.info("dataset %s already complete; skipping", out)
        return out
    images = Path(cfg.root) / cfg.images_dir
    if not images.is_dir():
        raise FileNotFoundError(f"no {cfg.images_dir}/ folder under {cfg.root}")
    skipped: Counter = Counter()
    df = _rows(cfg, images, skipped)
    vocab, network = _vocab_and_network(df)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        if cfg.copy_images:
            for rel in tqdm(df.image, desc="copy images", unit="img"):
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(images / rel[len("images/"):], tmp / rel)
        else:
            os.symlink(images.resolve(), tmp / "images", target_is_directory=True)
        write_manifest(tmp, df[[*MANIFEST_COLUMNS, "address_verbose"]].copy())
        write_addresses(tmp, vocab)
        atomic_write_json(tmp / NETWORK_FILE, network)
        per_sub = df.groupby("sub_street").size()
        atomic_write_json(tmp / STATS_FILE, {
            "name": cfg.name, "source": "authors' annotations", "gps": cfg.gps,
            "images": {"kept": len(df), "dropped": dict(sorted(skipped.items())),
                       "dropped_total": int(sum(skipped.values()))},
            "splits": {s: int((df.split == s).sum()) for s in SPLITS},
            "classes": {lvl: {"all": int(df[lvl][df[lvl] != ""].nunique()),
                              **{s: int(df[lvl][(df.split == s) & (df[lvl] != "")].nunique()) for s in SPLITS}}
                        for lvl in ("sub_street", "street", "district")},
            "images_per_sub_street": {"min": int(per_sub.min()), "median": float(per_sub.median()),
                                      "max": int(per_sub.max())},
            "build_seconds": round(time.time() - t0, 1)})
    log.info("IAL dataset written to %s (%d images, skipped %s)", out, len(df), dict(skipped))
    return out
