"""The paper's datasets as they ship, in miniature: each fixture is laid out like the real files
(names, keys, nesting) and goes import → train (2 steps) → eval.

- Pittsburgh-250k: NetVLAD ``pitts250k_{train,val,test}.mat`` written with scipy.io.savemat as a
  MATLAB struct ``dbStruct`` (cellstr file names, 2 × N UTM zone 17N), database images under the
  root and queries under ``queries_real/``; built with the OSM-style relabelling on a procedural
  city placed at Pittsburgh, keeping the source splits.
- SF-XL: ``@utm_e@utm_n@zone@band@lat@lon@pano@...@.jpg`` names, imported over 2 processes with
  header-only checks, a resumable progress file, then the usual build.
- Pitts-IAL: ``annotations/pitts_{train,database,queries}.json`` ({key: [caption, address,
  canonical address]}) + ``images/000/…``, ``images/queries_real/…``; GPS from the .mat files.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from _clip_fixtures import tiny_cfg
from data_gen.build_config import BuildConfig
from data_gen.builder import build_dataset, load_network
from data_gen.contract import read_addresses, read_manifest
from data_gen.importers_paper import (header_check, import_pitts_mat, import_sfxl_parallel, read_dbstruct,
                                      utm_array_to_latlon)
from llava_address.common.config import load_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PITTS = (40.4406, -79.9959)
CITY = ["map.source=procedural", "map.procedural.size_m=500", "map.procedural.block_m=120",
        "map.procedural.n_districts=2", "render.workers=1", "vote.min_confidence=0.5"]


def _jpeg(path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path, quality=80)


def _city_points(lat0: float, lon0: float, n: int):
    """(lat, lon) of n points along the streets of the procedural city placed at (lat0, lon0)."""
    from data_gen.synthcity.sampling import sample_points

    cfg = load_config("configs/data/tiny.yaml", BuildConfig, [*CITY, f"map.procedural.extra={{lat0: {lat0}, lon0: {lon0}}}"])
    net = load_network(cfg)
    sp = sample_points(net, 8.0, seed=0)
    idx = np.random.default_rng(0).choice(len(sp.x), min(n, len(sp.x)), replace=False)
    lat, lon = net.projection.to_latlon(sp.x[idx], sp.y[idx])
    return np.asarray(lat), np.asarray(lon)


def _to_utm(lat, lon, zone: int):
    import pyproj

    crs = pyproj.CRS.from_dict({"proj": "utm", "zone": zone})
    e, n = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    return np.asarray(e), np.asarray(n)


def _write_dbstruct(path, which: str, db: list[str], utm_db, q: list[str], utm_q) -> None:
    """A dbStruct with NetVLAD's field names, order and MATLAB types (cellstr N × 1, 2 × N doubles)."""
    cell = lambda xs: np.array(xs, dtype=object).reshape(-1, 1)  # noqa: E731
    savemat(path, {"dbStruct": {"whichSet": which, "dbImageFns": cell(db), "utmDb": np.asarray(utm_db, float),
                                "qImageFns": cell(q), "utmQ": np.asarray(utm_q, float),
                                "numImages": float(len(db)), "numQueries": float(len(q)), "posDistThr": 25.0,
                                "posDistSqThr": 625.0, "nonTrivPosDistSqThr": 100.0}})


@pytest.fixture(scope="module")
def pitts(tmp_path_factory):
    """Pittsburgh-250k root (images + queries_real) and its three .mat files."""
    root = tmp_path_factory.mktemp("pitts") / "Pittsburgh"
    lat, lon = _city_points(*PITTS, 240)
    e, n = _to_utm(lat, lon, 17)
    mats = []
    for which, sl in (("train", slice(0, 160)), ("val", slice(160, 200)), ("test", slice(200, 240))):
        ids = np.arange(len(lat))[sl]
        db_ids, q_ids = ids[::2], ids[1::2]
        db = [f"{i // 1000:03d}/{i:06d}_pitch1_yaw{1 + i % 12}.jpg" for i in db_ids]
        q = [f"{i // 1000:03d}/{i:06d}_pitch2_yaw{1 + i % 12}.jpg" for i in q_ids]
        for rel, i in zip(db, db_ids):
            _jpeg(root / rel, int(i))
        for rel, i in zip(q, q_ids):
            _jpeg(root / "queries_real" / rel, int(i))
        mp = root.parent / f"pitts250k_{which}.mat"
        _write_dbstruct(mp, which, db, np.stack([e[db_ids], n[db_ids]]), q, np.stack([e[q_ids], n[q_ids]]))
        mats.append(mp)
    return root, mats, (lat, lon)


def _train_eval(data, tmp_path, *over):
    from llava_address.clip.evaluate import evaluate_locator
    from llava_address.clip.locator import AddressLocator
    from llava_address.clip.train import train

    info = train(tiny_cfg("train.max_steps=2", "train.batch_size=8", "train.save_every=2", *over), data,
                 tmp_path / "clip")
    assert info["step"] == 2
    metrics, per_image = evaluate_locator(AddressLocator.from_pretrained(info["model_dir"]), data, "test",
                                          progress=False)
    assert len(per_image) == len(read_manifest(data, "test")) > 0
    assert 0.0 <= metrics["SSA-1"] <= metrics["SSA-5"] <= 100.0 and metrics["SA-1"] >= metrics["SSA-1"]
    return metrics


def test_read_dbstruct_exact_nesting(pitts):
    root, mats, (lat, lon) = pitts
    st = read_dbstruct(mats[0])
    assert st.which_set == "train" and st.pos_dist_thr == 25.0
    assert st.db_image_fns[0] == "000/000000_pitch1_yaw1.jpg" and len(st.db_image_fns) == 80
    la, lo = utm_array_to_latlon(st.utm_db)
    assert np.allclose(la, lat[0:160:2], atol=1e-7) and np.allclose(lo, lon[0:160:2], atol=1e-7)
    res = import_pitts_mat(mats, root, sets=["q"])
    assert len(res.records) == 120 and {r.tag for r in res.records} == {"train_q", "val_q", "test_q"}
    assert all("queries_real" in str(r.path) for r in res.records)
    savemat(root.parent / "bad.mat", {"dbStruct": {"whichSet": "x"}})
    with pytest.raises(ValueError, match="lacks fields"):
        read_dbstruct(root.parent / "bad.mat")


def test_pitts250k_mat_import_train_eval(pitts, tmp_path):
    root, mats, _ = pitts
    cfg = load_config("configs/data/tiny.yaml", BuildConfig, [
        *CITY, f"map.procedural.extra={{lat0: {PITTS[0]}, lon0: {PITTS[1]}}}", "importer.kind=pitts_mat",
        f"importer.path={root}", f"importer.mat_paths=[{','.join(map(str, mats))}]", "importer.split_by=source",
        "captions.kind=none", "partition.min_images=3"])
    data = build_dataset(cfg, tmp_path / "pitts_data")
    df = read_manifest(data)
    stats = json.loads((data / "stats.json").read_text())
    assert set(df.split) == {"train", "val", "test"} and len(df) + stats["images"]["dropped_total"] == 240
    assert 40 <= (df.split == "train").sum() <= 160
    _train_eval(data, tmp_path, "loss.geo_form=paper", "loss.use_semantic=false")


def test_sfxl_parallel_import_resumes_train_eval(tmp_path):
    folder = tmp_path / "sfxl" / "raw" / "train" / "database"
    lat, lon = _city_points(37.76, -122.42, 200)
    e, n = _to_utm(lat, lon, 10)
    for i, (la, lo, ee, nn) in enumerate(zip(lat, lon, e, n)):
        _jpeg(folder / f"{i // 50:02d}" / f"@{ee:.2f}@{nn:.2f}@10@S@{la:.5f}@{lo:.5f}@{i:022d}@@@@@201311@@.jpg", i)
    (folder / "00" / "@east@north@10@S@nope@x@y@@.jpg").write_bytes(b"not a jpeg")  # no GPS
    (folder / "00" / f"@{e[0]:.2f}@{n[0]:.2f}@10@S@{lat[0]:.5f}@{lon[0]:.5f}@bad@@.jpg").write_bytes(b"\xff\xd8junk")
    assert header_check(folder / "00" / f"@{e[0]:.2f}@{n[0]:.2f}@10@S@{lat[0]:.5f}@{lon[0]:.5f}@bad@@.jpg") \
        == "corrupt_image"
    prog = tmp_path / "progress.jsonl"
    full = import_sfxl_parallel(folder, workers=2, progress_file=prog, chunk_size=40, progress=False)
    assert len(full.records) == 200 and full.skipped == {"no_gps": 1, "corrupt_image": 1}
    lines = prog.read_text().splitlines()
    assert len(lines) == 1 + 6
    prog.write_text("\n".join(lines[:3]) + "\n{\"chunk\": 5, \"rec")  # killed mid-write after 2 chunks
    again = import_sfxl_parallel(folder, workers=2, progress_file=prog, chunk_size=40, progress=False)
    assert [r.path for r in again.records] == [r.path for r in full.records]
    _jpeg(folder / "03" / f"@{e[1]:.2f}@{n[1]:.2f}@10@S@{lat[1]:.5f}@{lon[1]:.5f}@new@@.jpg", 999)
    grown = import_sfxl_parallel(folder, workers=1, progress_file=prog, chunk_size=40, progress=False)
    assert len(grown.records) == 201  # another file list: the old progress file is not trusted
    cfg = load_config("configs/data/tiny.yaml", BuildConfig, [
        *CITY, "importer.kind=sfxl_parallel", f"importer.path={folder}", "importer.workers=2",
        "importer.dedupe_bytes=false", "captions.kind=none", "splits.min_points=3", "splits.buffer_m=1"])
    data = build_dataset(cfg, tmp_path / "sf_data")
    assert len(read_manifest(data, "test")) > 0
    _train_eval(data, tmp_path, "loss.use_semantic=false")


def test_pitts_ial_annotations_import_train_eval(pitts, tmp_path):
    from data_gen.ial_annotations import IALConfig, import_ial, parse_canonical_address

    assert parse_canonical_address(" Forbes Avenue,  Oakland (Atwood Street & Meyran Avenue)") == (
        "Forbes Avenue, Oakland (Atwood Street & Meyran Avenue)", "Forbes Avenue", "Oakland")
    root, mats, _ = pitts
    ial = tmp_path / "pitts-IAL"
    (ial / "annotations").mkdir(parents=True)
    os.symlink(root, ial / "images")  # the authors ship images/000/…, images/queries_real/…
    subs = ["Forbes Avenue, Oakland (Atwood Street & Meyran Avenue)", "Forbes Avenue, Oakland (Meyran Avenue & Oakland Avenue)",
            "Penn Avenue, Strip District (16th Street & 17th Street)", "Smithfield Street, Downtown (Fifth Avenue & Sixth Avenue)"]
    files = {"pitts_train.json": ("train", 0), "pitts_database.json": ("val", 1), "pitts_queries.json": ("test", 2)}
    for fname, (which, k) in files.items():
        st = read_dbstruct(mats[k])
        fns = st.q_image_fns if fname == "pitts_queries.json" else st.db_image_fns
        ann = {}
        for j, fn in enumerate(fns):
            sub = subs[j % len(subs)]
            street, hood = sub.split(",")[0], sub.split(", ")[1].split(" (")[0]
            ann[("./" if j % 2 else "") + fn] = [f"a street view of a road with buildings {j % 3}",
                                                 f"This image is located in {hood}, specifically on a section of "
                                                 f"{street} that lies between two cross streets.", sub]
        ann["999/missing.jpg"] = ["a", "b", subs[0]]
        ann["000/000000_pitch1_yaw1.jpg" if which != "train" else "bad"] = ["only a caption"]
        (ial / "annotations" / fname).write_text(json.dumps(ann))
    cfg = load_config(None, IALConfig, [f"root={ial}", f"mat_paths=[{','.join(map(str, mats))}]"])
    data = import_ial(cfg, tmp_path / "pitts_ial")
    df, voc = read_manifest(data), read_addresses(data)
    stats = json.loads((data / "stats.json").read_text())
    assert stats["splits"] == {"train": 80, "val": 20, "test": 20}
    assert stats["images"]["dropped"] == {"malformed_annotation": 3, "unreadable": 3}
    assert sorted(voc.sub_street) == sorted(subs) and set(voc.street) == {"Forbes Avenue", "Penn Avenue",
                                                                         "Smithfield Street"}
    assert set(voc.district) == {"Oakland", "Strip District", "Downtown"}
    assert voc.street_of(subs[1]) == "Forbes Avenue" and df.caption[0].startswith("a street view of")
    assert all((data / p).is_file() for p in df.image) and df.image[df.split == "test"].str.contains("queries_real").all()
    lat, lon = voc.midpoint(subs[0])
    assert abs(lat - PITTS[0]) < 0.02 and abs(lon - PITTS[1]) < 0.02
    _train_eval(data, tmp_path, "loss.geo_form=paper")


def test_header_check_reads_the_size_without_decoding(tmp_path):
    import struct
    import zlib

    p = tmp_path / "bomb.png"
    Image.new("RGB", (1, 1)).save(p)
    raw = bytearray(p.read_bytes())
    ihdr = struct.pack(">II", 20000, 20000) + bytes(raw[24:29])  # claim 20000 × 20000, keep depth/colour
    raw[16:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    p.write_bytes(bytes(raw))
    assert header_check(p) == "too_large"  # refused from the header alone: 400 M pixels are never decoded
    assert header_check(tmp_path / "missing.jpg") == "unreadable"
